/* nn_attention.c: scaled dot-product attention, fused (blocked online softmax over BLAS
 * tiles, float32 and float64) with its naive twin that materializes the score matrix. */
#include "ddl/nn_attention.h"

#include "core/blas.h"
#include "core/internal.h"

#include "kernels/common.h"

#include <math.h>
#include <stdlib.h>

/* Query and key block sizes: a (BQ, BK) tile of scores is all the fused kernels hold. */
#define BQ 64
#define BK 128

static ddl_status check_dims(const char *who, const ddl_sdpa_dims *d) {
    if (d == NULL) DDL_FAIL(DDL_E_VALUE, "%s: dims is NULL", who);
    const int64_t v[6] = {d->B, d->H, d->L, d->S, d->D, d->E};
    for (int i = 0; i < 6; i++)
        if (v[i] < 0 || v[i] > MAX_DIM)
            DDL_FAIL(DDL_E_VALUE, "%s: sizes must be in [0, 2^31), got %lld", who, (ll)v[i]);
    int64_t n;
    if (!prod4(&n, d->B, d->H, d->L,
               d->S > d->D ? (d->S > d->E ? d->S : d->E) : (d->D > d->E ? d->D : d->E)))
        DDL_FAIL(DDL_E_VALUE, "%s: sizes overflow", who);
    if (!(d->scale == d->scale)) DDL_FAIL(DDL_E_VALUE, "%s: scale is NaN", who);
    return DDL_OK;
}

static ddl_status check_io(const char *who, const void *q, const void *k, const void *v,
                           const ddl_sdpa_dims *d) {
    DDL_TRY(check_dims(who, d));
    DDL_TRY(check_buf(who, "q", q, d->B * d->H * d->L * d->D));
    DDL_TRY(check_buf(who, "k", k, d->B * d->H * d->S * d->D));
    return check_buf(who, "v", v, d->B * d->H * d->S * d->E);
}

/* scores[r, c] += mask + causal (-inf) for the tile of queries i0.. and keys j0.. */
#define DEFINE_TILE_MASK(T)                                                                        \
    static void tile_mask_##T(T *s, const T *mask, const ddl_sdpa_dims *d, int64_t b, int64_t h,   \
                              int64_t i0, int64_t bq, int64_t j0, int64_t bk, int64_t lds) {       \
        for (int64_t r = 0; r < bq; r++) {                                                         \
            T *row = s + r * lds;                                                                  \
            if (mask) {                                                                            \
                const T *m = mask + b * d->mstride[0] + h * d->mstride[1] +                        \
                             (i0 + r) * d->mstride[2] + j0 * d->mstride[3];                        \
                for (int64_t c = 0; c < bk; c++) row[c] += m[c * d->mstride[3]];                   \
            }                                                                                      \
            if (d->causal)                                                                         \
                for (int64_t c = (i0 + r) - j0 + 1; c < bk; c++)                                   \
                    if (c >= 0) row[c] = -INFINITY;                                                \
        }                                                                                          \
    }
DEFINE_TILE_MASK(float)
DEFINE_TILE_MASK(double)

#define GEMM_float ddl_cblas_sgemm
#define GEMM_double ddl_cblas_dgemm

#define DEFINE_SDPA(T, SFX, EXP, LOG)                                                              \
    ddl_status ddl_sdpa_forward_##SFX(T *out, T *lse, const T *q, const T *k, const T *v,          \
                                      const T *mask, const ddl_sdpa_dims *d) {                     \
        const char *who = "sdpa_forward";                                                          \
        DDL_TRY(check_io(who, q, k, v, d));                                                        \
        const int64_t B = d->B, H = d->H, L = d->L, S = d->S, D = d->D, E = d->E;                  \
        DDL_TRY(check_buf(who, "out", out, B *H *L *E));                                           \
        DDL_TRY(check_buf(who, "lse", lse, B *H *L));                                              \
        if (B * H * L == 0) return DDL_OK;                                                         \
        T *s = malloc(sizeof(T) * (BQ * BK + 2 * BQ)); /* (BQ, BK) scores, m (BQ,), l (BQ,) */     \
        if (!s) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for the score tile", who);                \
        T *mx = s + BQ * BK, *l = mx + BQ;                                                         \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t h = 0; h < H; h++) {                                                      \
                const int64_t bh = b * H + h;                                                      \
                const T *qb = q + bh * L * D, *kb = k + bh * S * D, *vb = v + bh * S * E;          \
                T *ob = out + bh * L * E, *lb = lse + bh * L;                                      \
                for (int64_t i0 = 0; i0 < L; i0 += BQ) {                                           \
                    const int64_t bq = min64(BQ, L - i0);                                          \
                    T *o = ob + i0 * E; /* (bq, E) */                                              \
                    for (int64_t i = 0; i < bq * E; i++) o[i] = 0;                                 \
                    for (int64_t r = 0; r < bq; r++) mx[r] = -INFINITY, l[r] = 0;                  \
                    int64_t jend = d->causal ? min64(S, i0 + bq) : S;                              \
                    for (int64_t j0 = 0; j0 < jend; j0 += BK) {                                    \
                        const int64_t bk = min64(BK, jend - j0);                                   \
                        if (D > 0)                                                                 \
                            GEMM_##T(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)bk,    \
                                     (int)D, (T)d->scale, qb + i0 * D, (int)D, kb + j0 * D,        \
                                     (int)D, 0, s, BK);                                            \
                        else                                                                       \
                            for (int64_t i = 0; i < bq * BK; i++) s[i] = 0;                        \
                        tile_mask_##T(s, mask, d, b, h, i0, bq, j0, bk, BK);                       \
                        for (int64_t r = 0; r < bq; r++) {                                         \
                            T *row = s + r * BK, m = mx[r];                                        \
                            for (int64_t c = 0; c < bk; c++) m = row[c] > m ? row[c] : m;          \
                            if (m == -INFINITY) { /* every key so far hidden */                    \
                                for (int64_t c = 0; c < bk; c++) row[c] = 0;                       \
                                continue;                                                          \
                            }                                                                      \
                            T alpha = EXP(mx[r] - m);                                              \
                            double sum = 0;                                                        \
                            for (int64_t c = 0; c < bk; c++) {                                     \
                                T p = EXP(row[c] - m);                                             \
                                row[c] = p;                                                        \
                                sum += p;                                                          \
                            }                                                                      \
                            l[r] = (T)(l[r] * alpha + sum);                                        \
                            mx[r] = m;                                                             \
                            if (alpha != 1)                                                        \
                                for (int64_t e = 0; e < E; e++) o[r * E + e] *= alpha;             \
                        }                                                                          \
                        if (E > 0)                                                                 \
                            GEMM_##T(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)E,   \
                                     (int)bk, 1, s, BK, vb + j0 * E, (int)E, 1, o, (int)E);        \
                    }                                                                              \
                    for (int64_t r = 0; r < bq; r++) {                                             \
                        T inv = l[r] > 0 ? 1 / l[r] : 0;                                           \
                        for (int64_t e = 0; e < E; e++) o[r * E + e] *= inv;                       \
                        lb[i0 + r] = l[r] > 0 ? mx[r] + LOG(l[r]) : -INFINITY;                     \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(s);                                                                                   \
        return DDL_OK;                                                                             \
    }                                                                                              \
                                                                                                   \
    ddl_status ddl_sdpa_backward_##SFX(T *dq, T *dk, T *dv, const T *dout, const T *out,           \
                                       const T *lse, const T *q, const T *k, const T *v,           \
                                       const T *mask, const ddl_sdpa_dims *d) {                    \
        const char *who = "sdpa_backward";                                                         \
        DDL_TRY(check_io(who, q, k, v, d));                                                        \
        const int64_t B = d->B, H = d->H, L = d->L, S = d->S, D = d->D, E = d->E;                  \
        if (!dq && !dk && !dv) return DDL_OK;                                                      \
        DDL_TRY(check_buf(who, "dout", dout, B *H *L *E));                                         \
        DDL_TRY(check_buf(who, "out", out, B *H *L *E));                                           \
        DDL_TRY(check_buf(who, "lse", lse, B *H *L));                                              \
        if (B * H * L * S == 0) return DDL_OK;                                                     \
        /* (BQ, BK) p, (BQ, BK) dp, (BQ,) rowsum(dout * out) */                                    \
        T *p = malloc(sizeof(T) * (2 * BQ * BK + BQ));                                             \
        if (!p) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for the score tiles", who);               \
        T *dp = p + BQ * BK, *di = dp + BQ * BK;                                                   \
        const T sc = (T)d->scale;                                                                  \
        for (int64_t b = 0; b < B; b++)                                                            \
            for (int64_t h = 0; h < H; h++) {                                                      \
                const int64_t bh = b * H + h;                                                      \
                const T *qb = q + bh * L * D, *kb = k + bh * S * D, *vb = v + bh * S * E;          \
                const T *gb = dout + bh * L * E, *ob = out + bh * L * E, *lb = lse + bh * L;       \
                for (int64_t i0 = 0; i0 < L; i0 += BQ) {                                           \
                    const int64_t bq = min64(BQ, L - i0);                                          \
                    for (int64_t r = 0; r < bq; r++) {                                             \
                        double acc = 0;                                                            \
                        for (int64_t e = 0; e < E; e++)                                            \
                            acc += (double)gb[(i0 + r) * E + e] * ob[(i0 + r) * E + e];            \
                        di[r] = (T)acc;                                                            \
                    }                                                                              \
                    int64_t jend = d->causal ? min64(S, i0 + bq) : S;                              \
                    for (int64_t j0 = 0; j0 < jend; j0 += BK) {                                    \
                        const int64_t bk = min64(BK, jend - j0);                                   \
                        if (D > 0)                                                                 \
                            GEMM_##T(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)bk,    \
                                     (int)D, sc, qb + i0 * D, (int)D, kb + j0 * D, (int)D, 0, p,   \
                                     BK);                                                          \
                        else                                                                       \
                            for (int64_t i = 0; i < bq * BK; i++) p[i] = 0;                        \
                        tile_mask_##T(p, mask, d, b, h, i0, bq, j0, bk, BK);                       \
                        for (int64_t r = 0; r < bq; r++) {                                         \
                            T lr = lb[i0 + r];                                                     \
                            for (int64_t c = 0; c < bk; c++)                                       \
                                p[r * BK + c] = lr == -INFINITY ? 0 : EXP(p[r * BK + c] - lr);     \
                        }                                                                          \
                        if (dv && E > 0)                                                           \
                            GEMM_##T(CblasRowMajor, CblasTrans, CblasNoTrans, (int)bk, (int)E,     \
                                     (int)bq, 1, p, BK, gb + i0 * E, (int)E, 1,                    \
                                     dv + (bh * S + j0) * E, (int)E);                              \
                        if (!dq && !dk) continue;                                                  \
                        if (E > 0)                                                                 \
                            GEMM_##T(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bq, (int)bk,    \
                                     (int)E, 1, gb + i0 * E, (int)E, vb + j0 * E, (int)E, 0, dp,   \
                                     BK);                                                          \
                        else                                                                       \
                            for (int64_t i = 0; i < bq * BK; i++) dp[i] = 0;                       \
                        for (int64_t r = 0; r < bq; r++)                                           \
                            for (int64_t c = 0; c < bk; c++)                                       \
                                dp[r * BK + c] = PLANT(p[r * BK + c] * (dp[r * BK + c] - di[r]));  \
                        if (dq && D > 0)                                                           \
                            GEMM_##T(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)bq, (int)D,   \
                                     (int)bk, sc, dp, BK, kb + j0 * D, (int)D, 1,                  \
                                     dq + (bh * L + i0) * D, (int)D);                              \
                        if (dk && D > 0)                                                           \
                            GEMM_##T(CblasRowMajor, CblasTrans, CblasNoTrans, (int)bk, (int)D,     \
                                     (int)bq, sc, dp, BK, qb + i0 * D, (int)D, 1,                  \
                                     dk + (bh * S + j0) * D, (int)D);                              \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        free(p);                                                                                   \
        return DDL_OK;                                                                             \
    }

DEFINE_SDPA(float, f32, expf, logf)
DEFINE_SDPA(double, f64, exp, log)

/* ---- the naive twin (float32): the whole (L, S) matrix, plain loops in double ------------- */

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
                                      const float *v, const float *mask, const ddl_sdpa_dims *d) {
    const char *who = "sdpa_forward_naive";
    DDL_TRY(check_io(who, q, k, v, d));
    const int64_t B = d->B, H = d->H, L = d->L, S = d->S, D = d->D, E = d->E;
    DDL_TRY(check_buf(who, "out", out, B * H * L * E));
    DDL_TRY(check_buf(who, "lse", lse, B * H * L));
    double *sc = malloc(sizeof(double) * (size_t)(L * S > 0 ? L * S : 1)); /* (L, S) */
    if (!sc) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for the (L, S) scores", who);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t bh = b * H + h;
            for (int64_t i = 0; i < L; i++) {
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < S; j++) {
                    double s = naive_score(q + (bh * L + i) * D, k + (bh * S + j) * D, mask, d, b,
                                           h, i, j);
                    sc[i * S + j] = s;
                    m = s > m ? s : m;
                }
                for (int64_t j = 0; j < S; j++) sum += m == -INFINITY ? 0 : exp(sc[i * S + j] - m);
                for (int64_t e = 0; e < E; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < S && sum > 0; j++)
                        acc += exp(sc[i * S + j] - m) / sum * v[(bh * S + j) * E + e];
                    out[(bh * L + i) * E + e] = (float)acc;
                }
                lse[bh * L + i] = sum > 0 ? (float)(m + log(sum)) : -INFINITY;
            }
        }
    free(sc);
    return DDL_OK;
}

ddl_status ddl_sdpa_backward_naive_f32(float *dq, float *dk, float *dv, const float *dout,
                                       const float *out, const float *lse, const float *q,
                                       const float *k, const float *v, const float *mask,
                                       const ddl_sdpa_dims *d) {
    const char *who = "sdpa_backward_naive";
    DDL_TRY(check_io(who, q, k, v, d));
    const int64_t B = d->B, H = d->H, L = d->L, S = d->S, D = d->D, E = d->E;
    if (!dq && !dk && !dv) return DDL_OK;
    DDL_TRY(check_buf(who, "dout", dout, B * H * L * E));
    DDL_TRY(check_buf(who, "out", out, B * H * L * E));
    DDL_TRY(check_buf(who, "lse", lse, B * H * L));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t bh = b * H + h;
            for (int64_t i = 0; i < L; i++) {
                const float *gi = dout + (bh * L + i) * E, *oi = out + (bh * L + i) * E;
                double di = 0, lr = lse[bh * L + i];
                for (int64_t e = 0; e < E; e++) di += (double)gi[e] * oi[e];
                if (lr == -INFINITY) continue;
                for (int64_t j = 0; j < S; j++) {
                    const float *kj = k + (bh * S + j) * D, *vj = v + (bh * S + j) * E;
                    const float *qi = q + (bh * L + i) * D;
                    double p = exp(naive_score(qi, kj, mask, d, b, h, i, j) - lr), dpij = 0;
                    for (int64_t e = 0; e < E; e++) {
                        dpij += (double)gi[e] * vj[e];
                        if (dv) dv[(bh * S + j) * E + e] += (float)(p * gi[e]);
                    }
                    double ds = p * (dpij - di) * d->scale;
                    for (int64_t x = 0; x < D; x++) {
                        if (dq) dq[(bh * L + i) * D + x] += (float)(ds * kj[x]);
                        if (dk) dk[(bh * S + j) * D + x] += (float)(ds * qi[x]);
                    }
                }
            }
        }
    return DDL_OK;
}
