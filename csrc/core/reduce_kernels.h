/* reduce_kernels.h: the inner kernels of ddl_reduce (ops_reduce.c), generated per dtype: row
 * kernels over one contiguous row, column kernels over rows of contiguous columns. Private to
 * ops_reduce.c, which plans the walk and picks a kernel; the kernels trust their sizes. */
#ifndef DDL_CORE_REDUCE_KERNELS_H
#define DDL_CORE_REDUCE_KERNELS_H

#include "core/internal.h"

#include <math.h>

/* Independent accumulators per loop: gcc may not reassociate float sums by itself, so without
 * them it cannot vectorize a reduction; they also shorten the dependency chain. */
#define LANES 8
/* max/min keep this many running values in memory: a loop too long for gcc to unroll away, so
 * it vectorizes like the column kernels (an 8-lane loop is unrolled and then left scalar). */
#define EXT_LANES 64
/* Elements row_find tests at once before looking for the one that matched. */
#define FIND_BLOCK 64
/* Pairwise summation (NumPy's scheme) bottoms out in a flat LANES loop below this length. */
#define PAIRWISE_BLOCK 128
/* Columns reduced together by the column kernels: keeps their accumulators in L1. */
#define COL_BLOCK 1024
static inline int nan_f32(float v) { return v != v; }
static inline int nan_f64(double v) { return v != v; }
static inline int nan_i64(int64_t v) { return (void)v, 0; }
static inline int nan_u8(uint8_t v) { return (void)v, 0; }

/* ---- row kernels: one contiguous row of n >= 1 elements ------------------------------------ */

/* Sum in double, pairwise: error grows with log(n), not n. */
#define DEF_ROW_SUM(S, T)                                                                          \
    static double pairwise_##S(const T *x, int64_t n) {                                            \
        if (n < LANES) {                                                                           \
            double s = -0.0; /* -0.0 + v == v, so one-element sums are exact, -0.0 included */     \
            for (int64_t i = 0; i < n; i++) s += (double)x[i];                                     \
            return s;                                                                              \
        }                                                                                          \
        if (n <= PAIRWISE_BLOCK) {                                                                 \
            double r[LANES];                                                                       \
            for (int j = 0; j < LANES; j++) r[j] = (double)x[j];                                   \
            int64_t i = LANES;                                                                     \
            for (; i + LANES <= n; i += LANES)                                                     \
                for (int j = 0; j < LANES; j++) r[j] += (double)x[i + j];                          \
            double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));          \
            for (; i < n; i++) s += (double)x[i];                                                  \
            return s;                                                                              \
        }                                                                                          \
        int64_t m = n / 2;                                                                         \
        m -= m % LANES;                                                                            \
        return pairwise_##S(x, m) + pairwise_##S(x + m, n - m);                                    \
    }                                                                                              \
    static void row_sum_##S(double *out, const char *x, int64_t n) {                               \
        *out = pairwise_##S((const T *)x, n);                                                      \
    }

/* Sum of squared deviations from `mean`, in double (the second pass of var). */
#define DEF_ROW_SUMSQ(S, T)                                                                        \
    static void row_sumsq_##S(double *out, const char *xb, int64_t n, double mean) {               \
        const T *x = (const T *)xb;                                                                \
        double r[LANES] = {0};                                                                     \
        int64_t i = 0;                                                                             \
        for (; i + LANES <= n; i += LANES)                                                         \
            for (int j = 0; j < LANES; j++) {                                                      \
                double d = (double)x[i + j] - mean;                                                \
                r[j] += d * d;                                                                     \
            }                                                                                      \
        double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));              \
        for (; i < n; i++) {                                                                       \
            double d = (double)x[i] - mean;                                                        \
            s += d * d;                                                                            \
        }                                                                                          \
        *out = s;                                                                                  \
    }

/* Product in double (floats). */
#define DEF_ROW_PROD(S, T)                                                                         \
    static void row_prod_##S(double *out, const char *xb, int64_t n) {                             \
        const T *x = (const T *)xb;                                                                \
        double r[LANES];                                                                           \
        for (int j = 0; j < LANES; j++) r[j] = 1.0;                                                \
        int64_t i = 0;                                                                             \
        for (; i + LANES <= n; i += LANES)                                                         \
            for (int j = 0; j < LANES; j++) r[j] *= (double)x[i + j];                              \
        double p = ((r[0] * r[1]) * (r[2] * r[3])) * ((r[4] * r[5]) * (r[6] * r[7]));              \
        for (; i < n; i++) p *= (double)x[i];                                                      \
        *out = p;                                                                                  \
    }

/* Sum and product of integers in uint64: they wrap like NumPy's int64 instead of overflowing
 * a signed type (undefined behaviour). */
#define DEF_ROW_INT(S, T)                                                                          \
    static void row_isum_##S(uint64_t *out, const char *xb, int64_t n) {                           \
        const T *x = (const T *)xb;                                                                \
        uint64_t s = 0;                                                                            \
        for (int64_t i = 0; i < n; i++) s += (uint64_t)x[i];                                       \
        *out = s;                                                                                  \
    }                                                                                              \
    static void row_iprod_##S(uint64_t *out, const char *xb, int64_t n) {                          \
        const T *x = (const T *)xb;                                                                \
        uint64_t p = 1;                                                                            \
        for (int64_t i = 0; i < n; i++) p *= (uint64_t)x[i];                                       \
        *out = p;                                                                                  \
    }

/* max (OP >) or min (OP <); a NaN wins and sticks, like NumPy. `first`: ignore *out, else fold
 * it in (when several rows reduce into one output). */
#define DEF_ROW_EXT(S, T, NAME, OP)                                                                \
    static void row_##NAME##_##S(char *outb, const char *xb, int64_t n, int first) {               \
        const T *x = (const T *)xb;                                                                \
        T m;                                                                                       \
        int64_t i;                                                                                 \
        if (n >= 2 * EXT_LANES) {                                                                  \
            T r[EXT_LANES];                                                                        \
            for (int j = 0; j < EXT_LANES; j++) r[j] = x[j];                                       \
            for (i = EXT_LANES; i + EXT_LANES <= n; i += EXT_LANES)                                \
                for (int j = 0; j < EXT_LANES; j++) {                                              \
                    T v = x[i + j];                                                                \
                    r[j] = ((v OP r[j]) | nan_##S(v)) ? v : r[j];                                  \
                }                                                                                  \
            m = r[0];                                                                              \
            for (int j = 1; j < EXT_LANES; j++) m = ((r[j] OP m) | nan_##S(r[j])) ? r[j] : m;      \
        } else {                                                                                   \
            m = x[0];                                                                              \
            i = 1;                                                                                 \
        }                                                                                          \
        for (; i < n; i++) {                                                                       \
            T v = x[i];                                                                            \
            m = ((v OP m) | nan_##S(v)) ? v : m;                                                   \
        }                                                                                          \
        T *out = (T *)outb;                                                                        \
        if (!first) m = ((*out OP m) | nan_##S(*out)) ? *out : m;                                  \
        *out = m;                                                                                  \
    }

/* Index of the first element equal to *v (or of the first NaN when *v is NaN): whole blocks
 * are tested first in a loop that vectorizes, then the block that holds it is scanned. */
#define DEF_ROW_FIND(S, T)                                                                         \
    static void row_find_##S(int64_t *out, const char *xb, int64_t n, const char *vb) {            \
        const T *x = (const T *)xb;                                                                \
        T v = *(const T *)vb;                                                                      \
        int64_t i = 0;                                                                             \
        if (nan_##S(v)) {                                                                          \
            while (i < n - 1 && !nan_##S(x[i])) i++;                                               \
        } else {                                                                                   \
            for (; i + FIND_BLOCK <= n; i += FIND_BLOCK) {                                         \
                T hit = 0; /* a T select vectorizes where an int OR of T compares may not */       \
                for (int j = 0; j < FIND_BLOCK; j++) hit = x[i + j] == v ? 1 : hit;                \
                if (hit) break;                                                                    \
            }                                                                                      \
            while (i < n - 1 && x[i] != v) i++;                                                    \
        }                                                                                          \
        *out = i;                                                                                  \
    }

/* ---- column kernels: nr rows of k contiguous elements, rows `rs` bytes apart ------------- */
/* Each walks the rows in order, updating a k-long accumulator: the inner loop is contiguous
 * and vectorizes, and every column still accumulates in row order (same result as a row walk). */

#define DEF_COL_SUM(S, T)                                                                          \
    static void col_sum_##S(double *restrict acc, const char *xb, int64_t nr, int64_t k,           \
                            int64_t rs) {                                                          \
        const T *restrict r0 = (const T *)xb;                                                      \
        for (int64_t j = 0; j < k; j++) acc[j] = (double)r0[j];                                    \
        for (int64_t i = 1; i < nr; i++) {                                                         \
            const T *restrict row = (const T *)(xb + i * rs);                                      \
            for (int64_t j = 0; j < k; j++) acc[j] += (double)row[j];                              \
        }                                                                                          \
    }                                                                                              \
    static void col_sumsq_##S(double *restrict acc, const double *restrict mean, const char *xb,   \
                              int64_t nr, int64_t k, int64_t rs) {                                 \
        for (int64_t j = 0; j < k; j++) acc[j] = 0.0;                                              \
        for (int64_t i = 0; i < nr; i++) {                                                         \
            const T *restrict row = (const T *)(xb + i * rs);                                      \
            for (int64_t j = 0; j < k; j++) {                                                      \
                double d = (double)row[j] - mean[j];                                               \
                acc[j] += d * d;                                                                   \
            }                                                                                      \
        }                                                                                          \
    }

/* acc[j] = INIT, then acc[j] OP= (A)row[j] over the rows, in row order. */
#define DEF_COL_FOLD(NAME, S, T, A, INIT, OP)                                                      \
    static void col_##NAME##_##S(A *restrict acc, const char *xb, int64_t nr, int64_t k,           \
                                 int64_t rs) {                                                     \
        for (int64_t j = 0; j < k; j++) acc[j] = INIT;                                             \
        for (int64_t i = 0; i < nr; i++) {                                                         \
            const T *restrict row = (const T *)(xb + i * rs);                                      \
            for (int64_t j = 0; j < k; j++) acc[j] OP(A) row[j];                                   \
        }                                                                                          \
    }
#define DEF_COL_PROD(S, T) DEF_COL_FOLD(prod, S, T, double, 1.0, *=)
#define DEF_COL_INT(S, T)                                                                          \
    DEF_COL_FOLD(isum, S, T, uint64_t, 0, +=)                                                      \
    DEF_COL_FOLD(iprod, S, T, uint64_t, 1, *=)

#define DEF_COL_EXT(S, T, NAME, OP)                                                                \
    static void col_##NAME##_##S(char *outb, const char *xb, int64_t nr, int64_t k, int64_t rs) {  \
        T *restrict m = (T *)outb;                                                                 \
        const T *restrict r0 = (const T *)xb;                                                      \
        for (int64_t j = 0; j < k; j++) m[j] = r0[j];                                              \
        for (int64_t i = 1; i < nr; i++) {                                                         \
            const T *restrict row = (const T *)(xb + i * rs);                                      \
            for (int64_t j = 0; j < k; j++) {                                                      \
                T v = row[j];                                                                      \
                m[j] = ((v OP m[j]) | nan_##S(v)) ? v : m[j];                                      \
            }                                                                                      \
        }                                                                                          \
    }

/* arg of max/min: a strictly better value replaces the best so far, so the first of equal
 * values wins; the first NaN wins over everything (NumPy's argmax). NOP is the negated
 * comparison: !(v NOP best) is "v better, or v NaN, or best NaN", and a NaN best never loses.
 * Indices are kept as IT, as wide as T (int32 for float32: mixed widths defeat vectorizing),
 * in `scratch` after the best values, and widened into `out` at the end; the caller keeps
 * nr <= INT32_MAX. */
#define DEF_COL_ARG(S, T, IT, NAME, NOP)                                                           \
    static void col_##NAME##_##S##_(int64_t *restrict out, T *restrict best, IT *restrict idx,     \
                                    const char *xb, int64_t nr, int64_t k, int64_t rs) {           \
        const T *restrict r0 = (const T *)xb;                                                      \
        for (int64_t j = 0; j < k; j++) {                                                          \
            best[j] = r0[j];                                                                       \
            idx[j] = 0;                                                                            \
        }                                                                                          \
        for (int64_t i = 1; i < nr; i++) {                                                         \
            const T *restrict row = (const T *)(xb + i * rs);                                      \
            IT ii = (IT)i;                                                                         \
            for (int64_t j = 0; j < k; j++) {                                                      \
                T v = row[j];                                                                      \
                IT take = !(v NOP best[j]) & !nan_##S(best[j]);                                    \
                best[j] = take ? v : best[j];                                                      \
                idx[j] = take ? ii : idx[j];                                                       \
            }                                                                                      \
        }                                                                                          \
        for (int64_t j = 0; j < k; j++) out[j] = idx[j];                                           \
    }                                                                                              \
    static void col_##NAME##_##S(int64_t *out, double *scratch, const char *xb, int64_t nr,        \
                                 int64_t k, int64_t rs) {                                          \
        col_##NAME##_##S##_(out, (T *)scratch, (IT *)(scratch + COL_BLOCK), xb, nr, k, rs);        \
    }

#define DEF_ALL(S, T, IT)                                                                          \
    DEF_ROW_SUM(S, T)                                                                              \
    DEF_ROW_SUMSQ(S, T)                                                                            \
    DEF_ROW_EXT(S, T, max, >)                                                                      \
    DEF_ROW_EXT(S, T, min, <)                                                                      \
    DEF_ROW_FIND(S, T)                                                                             \
    DEF_COL_SUM(S, T)                                                                              \
    DEF_COL_EXT(S, T, max, >)                                                                      \
    DEF_COL_EXT(S, T, min, <)                                                                      \
    DEF_COL_ARG(S, T, IT, argmax, <=)                                                              \
    DEF_COL_ARG(S, T, IT, argmin, >=)

DEF_ALL(f32, float, int32_t)
DEF_ALL(f64, double, int64_t)
DEF_ALL(i64, int64_t, int64_t)
DEF_ALL(u8, uint8_t, int32_t)
DEF_ROW_PROD(f32, float)
DEF_ROW_PROD(f64, double)
DEF_COL_PROD(f32, float)
DEF_COL_PROD(f64, double)
DEF_ROW_INT(i64, int64_t)
DEF_ROW_INT(u8, uint8_t)
DEF_COL_INT(i64, int64_t)
DEF_COL_INT(u8, uint8_t)

/* Call fn_<dtype>(...) for a dtype. */
#define SWITCH_ALL(dt, fn, ...)                                                                    \
    switch (dt) {                                                                                  \
    case DDL_FLOAT32: fn##_f32(__VA_ARGS__); break;                                                \
    case DDL_FLOAT64: fn##_f64(__VA_ARGS__); break;                                                \
    case DDL_INT64: fn##_i64(__VA_ARGS__); break;                                                  \
    default: fn##_u8(__VA_ARGS__); break;                                                          \
    }
#define SWITCH_FLOAT(dt, fn, ...)                                                                  \
    if ((dt) == DDL_FLOAT32)                                                                       \
        fn##_f32(__VA_ARGS__);                                                                     \
    else                                                                                           \
        fn##_f64(__VA_ARGS__);
#define SWITCH_INT(dt, fn, ...)                                                                    \
    if ((dt) == DDL_INT64)                                                                         \
        fn##_i64(__VA_ARGS__);                                                                     \
    else                                                                                           \
        fn##_u8(__VA_ARGS__);

#endif
