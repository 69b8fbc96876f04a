/* nn_attention.c: scaled dot-product attention, fused (flash-style: tiles of scores through
 * sgemm/dgemm, a vectorized online softmax, the backward recomputing tiles from the saved
 * logsumexp; (b, h) pairs over ddl's threads; float32 and float64). Its naive twin, which
 * materializes the score matrix, is in nn_attention_naive.c; shared checks in attention.h. */
#include "kernels/attention.h"

#include "core/blas.h"
#include "core/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tile sizes and product shapes. Every product is NN with M N K <= 10^6 (head dims up to
 * 64): OpenBLAS's small-matrix kernel without packing, ~110 GFLOP/s at one thread on this
 * Zen 4, where NT runs ~87 and TN (which packs) ~3x slower. The operand that would need a
 * transpose (K for q k^T; q and dout for the backward's k q^T and v dout^T) is copied once per
 * (b, h) into tiles of (features, block) in the thread's scratch: O(L D), against O(L^2 D)
 * products. Forward: (FBQ, FBK) scores (32 KiB in float32, L1/L2), the output rescaled once
 * per FBK keys. Backward: tiles of (BBK keys, BBQ queries), two of them (p^T, dp^T); dq
 * accumulates transposed (dq^T += k^T ds^T) and is added to dq once per (b, h). */
#ifndef FBQ
#define FBQ 64
#define FBK 128
#define BBK 128
#define BBQ 64
#endif

/* Float32 loops over a tile row: compiled for AVX-512, AVX2 and baseline x86-64 (vm_exp_f32
 * inlines into them); no-trapping-math lets gcc if-convert the max selects. */
#define VEC_f32                                                                                    \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),                   \
                   optimize("no-trapping-math")))
#define VEC_f64
#define EXP_f32 exp_nonpos_f32
#define EXP_f64 exp
#define LOG_f32 logf
#define LOG_f64 log
#define GEMM_f32 ddl_cblas_sgemm
#define GEMM_f64 ddl_cblas_dgemm
#define NN CblasRowMajor, CblasNoTrans, CblasNoTrans

/* e^x for the x <= 0 (or NaN) of a softmax, the exponent of the max being 0: vm_exp_f32
 * without its overflow clamp and NaN select (a NaN stays NaN through the arithmetic). */
static inline __attribute__((always_inline)) float exp_nonpos_f32(float x) {
    return vm_exp_core_f32(x < -104.0f ? -104.0f : x);
}

/* max(m0, row[0 .. n)) by `>` (a NaN is passed over, as the scalar loop): in 16-wide vectors,
 * which gcc does not form from the scalar loop by itself. */
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
VEC_f32 static float rowmax_f32(const float *row, int64_t n, float m0) {
    v16f acc = m0 - (v16f){0};
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        v16f x;
        memcpy(&x, row + c, sizeof x);
        v16i gt = x > acc;
        acc = (v16f)(((v16i)x & gt) | ((v16i)acc & ~gt));
    }
    float m = m0;
    for (int j = 0; j < 16; j++) m = acc[j] > m ? acc[j] : m;
    for (; c < n; c++) m = row[c] > m ? row[c] : m;
    return m;
}

static double rowmax_f64(const double *row, int64_t n, double m0) {
    double m = m0;
    for (int64_t c = 0; c < n; c++) m = row[c] > m ? row[c] : m;
    return m;
}

/* The threads of one call: each runs whole (b, h) pairs, with its own block of scratch. */
static int sdpa_threads(const ddl_sdpa_dims *d) {
    int64_t n = d->B * d->H, t = ddl_num_threads;
    if (t > 64) t = 64;
    return (int)(n < t ? (n < 1 ? 1 : n) : t);
}

#define DEFINE_SDPA(T, SFX)                                                                        \
    /* Online softmax over a (bq, bk) tile of scores s (row stride lds), in place: s becomes   \
     * exp(s - m) with m each row's running max (mx, updated); l the running sums; alpha[r]    \
     * the factor the row's accumulated output must be scaled by (1 when unchanged). A row     \
     * whose keys are all hidden so far stays at m = -inf with p = 0. */   \
    VEC_##SFX static void softmax_tile_##SFX(T *s, int64_t lds, int64_t bq, int64_t bk, T *mx,     \
                                             T *l, T *alpha) {                                     \
        for (int64_t r = 0; r < bq; r++) {                                                         \
            T *row = s + r * lds, acc[16];                                                         \
            T m = rowmax_##SFX(row, bk, mx[r]);                                                    \
            if (m == -INFINITY) {                                                                  \
                for (int64_t c = 0; c < bk; c++) row[c] = 0;                                       \
                alpha[r] = 1;                                                                      \
                continue;                                                                          \
            }                                                                                      \
            for (int j = 0; j < 16; j++) acc[j] = 0;                                               \
            int64_t c = 0;                                                                         \
            for (; c + 16 <= bk; c += 16)                                                          \
                for (int j = 0; j < 16; j++) {                                                     \
                    T p = EXP_##SFX(row[c + j] - m);                                               \
                    row[c + j] = p;                                                                \
                    acc[j] += p;                                                                   \
                }                                                                                  \
            T sum = 0;                                                                             \
            for (; c < bk; c++) {                                                                  \
                T p = EXP_##SFX(row[c] - m);                                                       \
                row[c] = p;                                                                        \
                sum += p;                                                                          \
            }                                                                                      \
            for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];                                      \
            for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];                                      \
            sum += (acc[0] + acc[2]) + (acc[1] + acc[3]);                                          \
            T a = EXP_##SFX(mx[r] - m); /* 0 when mx was -inf */                                   \
            l[r] = l[r] * a + sum;                                                                 \
            mx[r] = m;                                                                             \
            alpha[r] = a;                                                                          \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* o[r, :] *= f[r] for bq rows of E (row stride ldo), skipping factors of 1. */                \
    VEC_##SFX static void scale_rows_##SFX(T *o, int64_t ldo, int64_t bq, int64_t E, const T *f) { \
        for (int64_t r = 0; r < bq; r++) {                                                         \
            if (f[r] == 1) continue;                                                               \
            T a = f[r], *x = o + r * ldo;                                                          \
            for (int64_t e = 0; e < E; e++) x[e] *= a;                                             \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* dst[c * ldd + r] = (or += when add) src[r * lds + c] for a (rows, cols) block of src,  \
     * in 16 x 16 sub-blocks so both sides stay in L1. */    \
    VEC_##SFX static void transpose_##SFX(T *dst, int64_t ldd, const T *src, int64_t lds,          \
                                          int64_t rows, int64_t cols, int add) {                   \
        for (int64_t r0 = 0; r0 < rows; r0 += 16)                                                  \
            for (int64_t c0 = 0; c0 < cols; c0 += 16) {                                            \
                const int64_t re = min64(r0 + 16, rows), ce = min64(c0 + 16, cols);                \
                for (int64_t c = c0; c < ce; c++) {                                                \
                    T *d = dst + c * ldd;                                                          \
                    if (add)                                                                       \
                        for (int64_t r = r0; r < re; r++) d[r] += src[r * lds + c];                \
                    else                                                                           \
                        for (int64_t r = r0; r < re; r++) d[r] = src[r * lds + c];                 \
                }                                                                                  \
            }                                                                                      \
    }                                                                                              \
                                                                                                   \
    /* t = x^T in tiles: rows [i0, i0 + bt) of x (n rows of F, row stride rx) become tile    \
     * i0 / bt of t, (F, bt) row-major. */     \
    static void transpose_tiles_##SFX(T *t, const T *x, int64_t n, int64_t F, int64_t rx,          \
                                      int64_t bt) {                                                \
        for (int64_t i0 = 0; i0 < n; i0 += bt)                                                     \
            transpose_##SFX(t + i0 * F, bt, x + i0 * rx, rx, min64(bt, n - i0), F, 0);             \
    }                                                                                              \
                                                                                                   \
    /* sum of a[e] * b[e] in double, 8 partials */                                                 \
    VEC_##SFX static T dot_##SFX(const T *a, const T *b, int64_t n) {                              \
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, t = 0;                                           \
        int64_t e = 0;                                                                             \
        for (; e + 8 <= n; e += 8)                                                                 \
            for (int j = 0; j < 8; j++) acc[j] += (double)a[e + j] * b[e + j];                     \
        for (; e < n; e++) t += (double)a[e] * b[e];                                               \
        return (T)(((acc[0] + acc[1]) + (acc[2] + acc[3])) +                                       \
                   ((acc[4] + acc[5]) + (acc[6] + acc[7])) + t);                                   \
    }                                                                                              \
                                                                                                   \
    /* One (b, h) pair: out (L, E) and lse (L,) from q (L, D), k (S, D), v (S, E). */              \
    static void forward_one_##SFX(T *ob, T *lb, const T *qb, const T *kb, const T *vb,             \
                                  const T *mask, const ddl_sdpa_dims *d, int64_t b, int64_t h,     \
                                  T *s) {                                                          \
        const int64_t L = d->L, S = d->S, D = d->D, E = d->E;                                      \
        const int64_t rq = d->q.r, rk = d->k.r, rv = d->v.r, ro = d->out.r;                        \
        T *mx = s + FBQ * FBK, *l = mx + FBQ, *alpha = l + FBQ, *kt = alpha + FBQ; /* k^T tiles */ \
        transpose_tiles_##SFX(kt, kb, S, D, rk, FBK);                                              \
        for (int64_t i0 = 0; i0 < L; i0 += FBQ) {                                                  \
            const int64_t bq = min64(FBQ, L - i0);                                                 \
            T *o = ob + i0 * ro; /* (bq, E), row stride ro */                                      \
            for (int64_t r = 0; r < bq; r++) mx[r] = -INFINITY, l[r] = 0;                          \
            const int64_t jend = d->causal ? min64(S, i0 + bq) : S;                                \
            if (jend == 0)                                                                         \
                for (int64_t r = 0; r < bq; r++)                                                   \
                    for (int64_t e = 0; e < E; e++) o[r * ro + e] = 0;                             \
            for (int64_t j0 = 0; j0 < jend; j0 += FBK) {                                           \
                const int64_t bk = min64(FBK, jend - j0);                                          \
                if (D > 0)                                                                         \
                    GEMM_##SFX(NN, (int)bq, (int)bk, (int)D, (T)d->scale, qb + i0 * rq, (int)rq,   \
                               kt + j0 * D, FBK, 0, s, FBK);                                       \
                else                                                                               \
                    for (int64_t i = 0; i < bq * FBK; i++) s[i] = 0;                               \
                mask_tile_##SFX(s, FBK, 1, mask, d, b, h, i0, bq, j0, bk);                         \
                softmax_tile_##SFX(s, FBK, bq, bk, mx, l, alpha);                                  \
                if (j0 > 0) scale_rows_##SFX(o, ro, bq, E, alpha);                                 \
                if (E > 0)                                                                         \
                    GEMM_##SFX(NN, (int)bq, (int)E, (int)bk, 1, s, FBK, vb + j0 * rv, (int)rv,     \
                               j0 > 0 ? 1 : 0, o, (int)ro);                                        \
            }                                                                                      \
            for (int64_t r = 0; r < bq; r++) {                                                     \
                lb[i0 + r] = l[r] > 0 ? mx[r] + LOG_##SFX(l[r]) : -INFINITY;                       \
                l[r] = l[r] > 0 ? 1 / l[r] : 0;                                                    \
            }                                                                                      \
            if (jend > 0) scale_rows_##SFX(o, ro, bq, E, l);                                       \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    typedef struct {                                                                               \
        T *out, *lse, *dq, *dk, *dv, *scratch; /* out, lse: forward's outputs */                   \
        const T *q, *k, *v, *mask, *dout, *saved_out, *saved_lse; /* the last three: backward */   \
        const ddl_sdpa_dims *d;                                                                    \
        int64_t per; /* scratch elements per thread */                                             \
    } job_##SFX;                                                                                   \
                                                                                                   \
    /* fn over the (b, h) pairs on ddl's threads, each with j->per elements of scratch. */         \
    static ddl_status run_##SFX(job_##SFX *j, ddl_parallel_fn fn, const char *who) {               \
        const int nt = sdpa_threads(j->d);                                                         \
        j->scratch = malloc(sizeof(T) * (size_t)(j->per * nt));                                    \
        if (!j->scratch) DDL_FAIL(DDL_E_NOMEM, "%s: out of memory for the score tiles", who);      \
        ddl_parallel_run(nt, fn, j);                                                               \
        free(j->scratch);                                                                          \
        return DDL_OK;                                                                             \
    }                                                                                              \
                                                                                                   \
    static void forward_worker_##SFX(void *p, int tid, int nt) {                                   \
        const job_##SFX *j = p;                                                                    \
        const ddl_sdpa_dims *d = j->d;                                                             \
        const int64_t n = d->B * d->H;                                                             \
        for (int64_t bh = n * tid / nt; bh < n * (tid + 1) / nt; bh++) {                           \
            const int64_t b = bh / d->H, h = bh % d->H;                                            \
            forward_one_##SFX(j->out + at(&d->out, b, h), j->lse + bh * d->L,                      \
                              j->q + at(&d->q, b, h), j->k + at(&d->k, b, h),                      \
                              j->v + at(&d->v, b, h), j->mask, d, b, h,                            \
                              j->scratch + tid * j->per);                                          \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    ddl_status ddl_sdpa_forward_##SFX(T *out, T *lse, const T *q, const T *k, const T *v,          \
                                      const T *mask, const ddl_sdpa_dims *dims) {                  \
        const char *who = "sdpa_forward";                                                          \
        ddl_sdpa_dims d;                                                                           \
        DDL_TRY(sdpa_check_io(who, &d, dims, q, k, v));                                            \
        DDL_TRY(check_buf(who, "out", out, d.B *d.H *d.L *d.E));                                   \
        DDL_TRY(check_buf(who, "lse", lse, d.B *d.H *d.L));                                        \
        if (d.B * d.H * d.L == 0) return DDL_OK;                                                   \
        job_##SFX j = {.q = q, .k = k, .v = v, .mask = mask, .d = &d};                             \
        j.out = out, j.lse = lse;                                                                  \
        /* (FBQ, FBK) scores; m, l, alpha (FBQ,); k^T tiles (D, S rounded up to FBK) */            \
        j.per = FBQ * FBK + 3 * FBQ + d.D * ((d.S + FBK - 1) / FBK * FBK);                         \
        return run_##SFX(&j, forward_worker_##SFX, who);                                           \
    }                                                                                              \
                                                                                                   \
    /* pt[c, r] = exp(pt[c, r] - lse[r]) (0 where lse is -inf: a query with no visible key),    \
     * a (bk, bq) tile with row stride BBQ. */  \
    VEC_##SFX static void probs_t_##SFX(T *pt, int64_t bk, int64_t bq, const T *lse) {             \
        for (int64_t c = 0; c < bk; c++) {                                                         \
            T *row = pt + c * BBQ;                                                                 \
            for (int64_t r = 0; r < bq; r++) {                                                     \
                T p = EXP_##SFX(row[r] - lse[r]);                                                  \
                row[r] = lse[r] == -INFINITY ? 0 : p;                                              \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* ds^T = p^T * (dp^T - di) in place of dp^T, a (bk, bq) tile with row stride BBQ. */          \
    VEC_##SFX static void dscores_t_##SFX(T *dpt, const T *pt, int64_t bk, int64_t bq,             \
                                          const T *di) {                                           \
        for (int64_t c = 0; c < bk; c++) {                                                         \
            T *g = dpt + c * BBQ;                                                                  \
            const T *p = pt + c * BBQ;                                                             \
            for (int64_t r = 0; r < bq; r++) g[r] = PLANT(p[r] * (g[r] - di[r]));                  \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    /* One (b, h) pair's gradients, over tiles of (BBK keys, BBQ queries). */                      \
    static void backward_one_##SFX(const job_##SFX *j, int64_t b, int64_t h, T *pt) {              \
        const ddl_sdpa_dims *d = j->d;                                                             \
        const int64_t L = d->L, S = d->S, D = d->D, E = d->E, bh = b * d->H + h;                   \
        const int64_t rq = d->q.r, rk = d->k.r, rv = d->v.r, ro = d->out.r, rg = d->dout.r;        \
        const int64_t rdq = d->dq.r, rdk = d->dk.r, rdv = d->dv.r;                                 \
        const T *qb = j->q + at(&d->q, b, h), *kb = j->k + at(&d->k, b, h);                        \
        const T *vb = j->v + at(&d->v, b, h), *gb = j->dout + at(&d->dout, b, h);                  \
        const T *ob = j->saved_out + at(&d->out, b, h), *lb = j->saved_lse + bh * L;               \
        T *dqb = j->dq ? j->dq + at(&d->dq, b, h) : NULL;                                          \
        T *dkb = j->dk ? j->dk + at(&d->dk, b, h) : NULL;                                          \
        T *dvb = j->dv ? j->dv + at(&d->dv, b, h) : NULL;                                          \
        const int64_t Lp = (L + BBQ - 1) / BBQ * BBQ;                                              \
        T *dpt = pt + BBK * BBQ, *di = dpt + BBK * BBQ; /* di (L,) */                              \
        /* q^T (D, Lp), dout^T (E, Lp), dq^T (D, Lp) in BBQ tiles; k^T (D, S) in BBK tiles */      \
        T *qt = di + L, *gt = qt + D * Lp, *dqt = gt + E * Lp, *kt = dqt + D * Lp;                 \
        transpose_tiles_##SFX(qt, qb, L, D, rq, BBQ);                                              \
        transpose_tiles_##SFX(gt, gb, L, E, rg, BBQ);                                              \
        if (dqb) {                                                                                 \
            transpose_tiles_##SFX(kt, kb, S, D, rk, BBK);                                          \
            for (int64_t i = 0; i < D * Lp; i++) dqt[i] = 0;                                       \
        }                                                                                          \
        const T sc = (T)d->scale;                                                                  \
        for (int64_t i = 0; i < L; i++) di[i] = dot_##SFX(gb + i * rg, ob + i * ro, E);            \
        for (int64_t j0 = 0; j0 < S; j0 += BBK) {                                                  \
            const int64_t bk = min64(BBK, S - j0);                                                 \
            /* causal: key j0 is visible to queries i >= j0 only */                                \
            for (int64_t i0 = d->causal ? j0 / BBQ * BBQ : 0; i0 < L; i0 += BBQ) {                 \
                const int64_t bq = min64(BBQ, L - i0);                                             \
                if (D > 0)                                                                         \
                    GEMM_##SFX(NN, (int)bk, (int)bq, (int)D, sc, kb + j0 * rk, (int)rk,            \
                               qt + i0 * D, BBQ, 0, pt, BBQ);                                      \
                else                                                                               \
                    for (int64_t i = 0; i < bk * BBQ; i++) pt[i] = 0;                              \
                mask_tile_##SFX(pt, 1, BBQ, j->mask, d, b, h, i0, bq, j0, bk);                     \
                probs_t_##SFX(pt, bk, bq, lb + i0);                                                \
                if (dvb && E > 0)                                                                  \
                    GEMM_##SFX(NN, (int)bk, (int)E, (int)bq, 1, pt, BBQ, gb + i0 * rg, (int)rg, 1, \
                               dvb + j0 * rdv, (int)rdv);                                          \
                if (!dqb && !dkb) continue;                                                        \
                if (E > 0)                                                                         \
                    GEMM_##SFX(NN, (int)bk, (int)bq, (int)E, 1, vb + j0 * rv, (int)rv,             \
                               gt + i0 * E, BBQ, 0, dpt, BBQ);                                     \
                else                                                                               \
                    for (int64_t i = 0; i < bk * BBQ; i++) dpt[i] = 0;                             \
                dscores_t_##SFX(dpt, pt, bk, bq, di + i0);                                         \
                if (dkb && D > 0)                                                                  \
                    GEMM_##SFX(NN, (int)bk, (int)D, (int)bq, sc, dpt, BBQ, qb + i0 * rq, (int)rq,  \
                               1, dkb + j0 * rdk, (int)rdk);                                       \
                if (dqb && D > 0) /* dq^T += k^T ds^T */                                           \
                    GEMM_##SFX(NN, (int)D, (int)bq, (int)bk, sc, kt + j0 * D, BBK, dpt, BBQ, 1,    \
                               dqt + i0 * D, BBQ);                                                 \
            }                                                                                      \
        }                                                                                          \
        if (dqb) /* dq += (dq^T tiles)^T */                                                        \
            for (int64_t i0 = 0; i0 < L; i0 += BBQ)                                                \
                transpose_##SFX(dqb + i0 * rdq, rdq, dqt + i0 * D, BBQ, D, min64(BBQ, L - i0), 1); \
    }                                                                                              \
                                                                                                   \
    static void backward_worker_##SFX(void *p, int tid, int nt) {                                  \
        const job_##SFX *j = p;                                                                    \
        const int64_t n = j->d->B * j->d->H;                                                       \
        for (int64_t bh = n * tid / nt; bh < n * (tid + 1) / nt; bh++)                             \
            backward_one_##SFX(j, bh / j->d->H, bh % j->d->H, j->scratch + tid * j->per);          \
    }                                                                                              \
                                                                                                   \
    ddl_status ddl_sdpa_backward_##SFX(T *dq, T *dk, T *dv, const T *dout, const T *out,           \
                                       const T *lse, const T *q, const T *k, const T *v,           \
                                       const T *mask, const ddl_sdpa_dims *dims) {                 \
        const char *who = "sdpa_backward";                                                         \
        ddl_sdpa_dims d;                                                                           \
        DDL_TRY(sdpa_check_io(who, &d, dims, q, k, v));                                            \
        if (!dq && !dk && !dv) return DDL_OK;                                                      \
        DDL_TRY(sdpa_check_grads(who, &d, dout, out, lse));                                        \
        if (d.B * d.H * d.L * d.S == 0) return DDL_OK;                                             \
        job_##SFX j = {.q = q, .k = k, .v = v, .mask = mask, .d = &d};                             \
        j.dq = dq, j.dk = dk, j.dv = dv, j.dout = dout, j.saved_out = out, j.saved_lse = lse;      \
        /* p^T, dp^T tiles; di (L,); q^T, dout^T, dq^T ((2 D + E), L rounded up to BBQ); k^T */    \
        j.per = 2 * BBK * BBQ + d.L + (2 * d.D + d.E) * ((d.L + BBQ - 1) / BBQ * BBQ) +            \
                d.D * ((d.S + BBK - 1) / BBK * BBK);                                               \
        return run_##SFX(&j, backward_worker_##SFX, who);                                          \
    }

DEFINE_SDPA(float, f32)
DEFINE_SDPA(double, f64)
