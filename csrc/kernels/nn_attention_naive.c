/* nn_attention_naive.c: the naive twin of the fused attention kernels (nn_attention.c), float32:
 * the whole (L, S) score matrix per (b, h), plain loops summing in double (tests, benchmarks). */
#include "kernels/attention.h"

#include <stdlib.h>

static double naive_score(const float *qi, const float *kj, const float *mask,
                          const ddl_sdpa_dims *d, int64_t b, int64_t h, int64_t i, int64_t j) {
    if (d->causal && j > i) return -INFINITY;
    double s = 0;
    for (int64_t x = 0; x < d->D; x++) s += (double)qi[x] * kj[x];
    s *= d->scale;
    if (mask)
        s += mask[b * d->mstride[0] + h * d->mstride[1] + i * d->mstride[2] + j * d->mstride[3]];
    return s;
}

ddl_status ddl_sdpa_forward_naive_f32(float *out, float *lse, const float *q, const float *k,
                                      const float *v, const float *mask,
                                      const ddl_sdpa_dims *dims) {
    const char *who = "sdpa_forward_naive";
    ddl_sdpa_dims d;
    DDL_TRY(sdpa_check_io(who, &d, dims, q, k, v));
    const int64_t B = d.B, H = d.H, L = d.L, S = d.S, E = d.E;
    DDL_TRY(check_buf(who, "out", out, B * H * L * E));
    DDL_TRY(check_buf(who, "lse", lse, B * H * L));
    double *sc = malloc(sizeof(double) * (size_t)(L * S > 0 ? L * S : 1)); /* (L, S) */
    if (!sc) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for the (L, S) scores", who);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *qb = q + at(&d.q, b, h), *kb = k + at(&d.k, b, h);
            const float *vb = v + at(&d.v, b, h);
            float *ob = out + at(&d.out, b, h);
            for (int64_t i = 0; i < L; i++) {
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < S; j++) {
                    double s = naive_score(qb + i * d.q.r, kb + j * d.k.r, mask, &d, b, h, i, j);
                    sc[i * S + j] = s;
                    m = s > m ? s : m;
                }
                for (int64_t j = 0; j < S; j++) sum += m == -INFINITY ? 0 : exp(sc[i * S + j] - m);
                for (int64_t e = 0; e < E; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < S && sum > 0; j++)
                        acc += exp(sc[i * S + j] - m) / sum * vb[j * d.v.r + e];
                    ob[i * d.out.r + e] = (float)acc;
                }
                lse[(b * H + h) * L + i] = sum > 0 ? (float)(m + log(sum)) : -INFINITY;
            }
        }
    free(sc);
    return DDL_OK;
}

ddl_status ddl_sdpa_backward_naive_f32(float *dq, float *dk, float *dv, const float *dout,
                                       const float *out, const float *lse, const float *q,
                                       const float *k, const float *v, const float *mask,
                                       const ddl_sdpa_dims *dims) {
    const char *who = "sdpa_backward_naive";
    ddl_sdpa_dims d;
    DDL_TRY(sdpa_check_io(who, &d, dims, q, k, v));
    const int64_t H = d.H, L = d.L, S = d.S, D = d.D, E = d.E;
    if (!dq && !dk && !dv) return DDL_OK;
    DDL_TRY(sdpa_check_grads(who, &d, dout, out, lse));
    for (int64_t b = 0; b < d.B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *qb = q + at(&d.q, b, h), *kb = k + at(&d.k, b, h);
            const float *vb = v + at(&d.v, b, h), *gb = dout + at(&d.dout, b, h);
            const float *ob = out + at(&d.out, b, h);
            float *dqb = dq ? dq + at(&d.dq, b, h) : NULL, *dkb = dk ? dk + at(&d.dk, b, h) : NULL;
            float *dvb = dv ? dv + at(&d.dv, b, h) : NULL;
            for (int64_t i = 0; i < L; i++) {
                const float *gi = gb + i * d.dout.r, *oi = ob + i * d.out.r, *qi = qb + i * d.q.r;
                double di = 0, lr = lse[(b * H + h) * L + i];
                for (int64_t e = 0; e < E; e++) di += (double)gi[e] * oi[e];
                if (lr == -INFINITY) continue;
                for (int64_t j = 0; j < S; j++) {
                    const float *kj = kb + j * d.k.r, *vj = vb + j * d.v.r;
                    double p = exp(naive_score(qi, kj, mask, &d, b, h, i, j) - lr), dpij = 0;
                    for (int64_t e = 0; e < E; e++) {
                        dpij += (double)gi[e] * vj[e];
                        if (dvb) dvb[j * d.dv.r + e] += (float)(p * gi[e]);
                    }
                    double ds = p * (dpij - di) * d.scale;
                    for (int64_t x = 0; x < D; x++) {
                        if (dqb) dqb[i * d.dq.r + x] += (float)(ds * kj[x]);
                        if (dkb) dkb[j * d.dk.r + x] += (float)(ds * qi[x]);
                    }
                }
            }
        }
    return DDL_OK;
}
