/* fixed_point.c: int64 fixed-point accumulation of float32 values (see ddl/fixed_point.h). */
#include "ddl/fixed_point.h"

#include <math.h>
#include <string.h>

/* KERNEL: the segment kernels below are compiled for AVX-512 (x86-64-v4), AVX2 (x86-64-v3) and
 * the baseline (gcc's target_clones, as in core/ops_elementwise.c, but without
 * no-trapping-math: under it gcc turns nearbyint into a scalar lrint). Every operation in them
 * is exact or a single IEEE rounding (nearbyint, an integer add, one multiply then one
 * conversion), so the clones give the same bits on every x86-64 CPU. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) &&           \
    defined(__ELF__) && !defined(DDL_NO_CLONES)
#define KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KERNEL
#endif

/* Columns per block of the segment kernels: the block's int64 accumulators (8 KiB) stay in L1
 * while the k rows stream through. */
#define BLOCK 1024

/* |x| as its bit pattern: ordered like |x| for finite values, >= 0x7f800000 for inf and NaN. */
static inline uint32_t abs_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

void ddl_fixed_exponents(const float *rows, int64_t k, int64_t n, int64_t nseg,
                         const int64_t *lengths, int64_t *exps, int64_t *bad) {
    int64_t start = 0;
    for (int64_t s = 0; s < nseg; s++) {
        uint32_t top = 0;
        for (int64_t r = 0; r < k; r++) {
            const float *p = rows + r * n + start;
            for (int64_t i = 0; i < lengths[s]; i++) {
                uint32_t b = abs_bits(p[i]);
                top = b > top ? b : top;
            }
        }
        bad[s] = top >= 0x7f800000u;
        if (top == 0 || bad[s]) {
            exps[s] = DDL_FIXED_NO_EXP;
        } else {
            float v;
            int e;
            memcpy(&v, &top, sizeof v);
            frexpf(v, &e);
            exps[s] = e;
        }
        start += lengths[s];
    }
}

void ddl_fixed_accumulate(const float *rows, int64_t k, int64_t n, int64_t nseg,
                          const int64_t *lengths, const int64_t *shift, const int64_t *skip,
                          int64_t *acc) {
    int64_t start = 0;
    for (int64_t s = 0; s < nseg; s++) {
        int64_t len = lengths[s];
        if (!skip[s]) {
            /* the scale is a power of two: x * scale is exact in double (float32 has 24
             * significant bits and a small exponent range), and llrint rounds it to the
             * nearest integer, ties to even, the same on every machine */
            double scale = ldexp(1.0, (int)shift[s]);
            int64_t *a = acc + start;
            for (int64_t r = 0; r < k; r++) {
                const float *p = rows + r * n + start;
                for (int64_t i = 0; i < len; i++) a[i] += (int64_t)llrint((double)p[i] * scale);
            }
        }
        start += len;
    }
}

KERNEL static void fixed_to_float_kernel(const int64_t *acc, int64_t n, int64_t nseg,
                                         const int64_t *lengths, const int64_t *shift,
                                         const int64_t *bad, double divisor, float *out) {
    int64_t start = 0;
    (void)n;
    for (int64_t s = 0; s < nseg; s++) {
        int64_t len = lengths[s];
        float *o = out + start;
        const int64_t *a = acc + start;
        if (bad[s]) {
            for (int64_t i = 0; i < len; i++) o[i] = NAN;
        } else {
            /* one factor: 2^-shift / divisor (rounded once, the same everywhere) */
            double f = ldexp(1.0, (int)-shift[s]) / divisor;
            /* (double)a[i] is correctly rounded (nearest even), the same on every clone */
            for (int64_t i = 0; i < len; i++) o[i] = (float)((double)a[i] * f);
        }
        start += len;
    }
}

KERNEL static void fixed_pack_kernel(const int64_t *acc, int64_t n, int64_t bias_value,
                                     int64_t *words) {
    uint64_t bias = (uint64_t)bias_value;
    for (int64_t j = 0; j < n / 2; j++)
        words[j] =
            (int64_t)(((uint64_t)acc[2 * j] + bias) | (((uint64_t)acc[2 * j + 1] + bias) << 32));
    if (n % 2) words[n / 2] = (int64_t)(((uint64_t)acc[n - 1] + bias) | (bias << 32));
}

KERNEL static void fixed_unpack_kernel(const int64_t *words, int64_t n, int64_t total_bias,
                                       int64_t *acc) {
    int64_t bias = total_bias;
    for (int64_t j = 0; j < n / 2; j++) {
        uint64_t w = (uint64_t)words[j];
        acc[2 * j] = (int64_t)(w & 0xffffffffu) - bias;
        acc[2 * j + 1] = (int64_t)(w >> 32) - bias;
    }
    if (n % 2) acc[n - 1] = (int64_t)((uint64_t)words[n / 2] & 0xffffffffu) - bias;
}

/* ---- one segment held as k separate rows (no copy into a matrix) ---------------------------- */
/* The KERNEL functions call no static helper: a clone cannot inline a function compiled for
 * another target, and a call per element would undo the vectorization. */

KERNEL static void fixed_segment_exponent_kernel(int64_t *exp, int64_t *bad, const float *const *xs,
                                                 int64_t k, int64_t n) {
    uint32_t top = 0;
    for (int64_t r = 0; r < k; r++) {
        const uint32_t *u = (const uint32_t *)(const void *)xs[r];
        for (int64_t i = 0; i < n; i++) {
            uint32_t b = u[i] & 0x7fffffffu;
            top = b > top ? b : top;
        }
    }
    *bad = top >= 0x7f800000u;
    if (top == 0 || *bad) {
        *exp = DDL_FIXED_NO_EXP;
    } else {
        float v;
        int e;
        memcpy(&v, &top, sizeof v);
        frexpf(v, &e);
        *exp = e;
    }
}

/* (int64_t)nearbyint(v) is llrint(v) (the current rounding mode, nearest even; nearbyint only
 * leaves the inexact flag alone) for |v| < 2^63, and vectorizes (vrndscalepd and vcvttpd2qq on
 * AVX-512) where llrint and rint do not. */
KERNEL static void fixed_quantize_sum_kernel(int64_t *restrict acc, const float *const *xs,
                                             int64_t k, int64_t n, int64_t shift) {
    double scale = ldexp(1.0, (int)shift);
    if (k == 0) {
        memset(acc, 0, (size_t)n * sizeof *acc);
        return;
    }
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int64_t m = n - i0 < BLOCK ? n - i0 : BLOCK;
        int64_t *restrict a = acc + i0;
        const float *restrict x = xs[0] + i0;
        for (int64_t i = 0; i < m; i++) a[i] = (int64_t)nearbyint((double)x[i] * scale);
        for (int64_t r = 1; r < k; r++) {
            const float *restrict y = xs[r] + i0;
            for (int64_t i = 0; i < m; i++) a[i] += (int64_t)nearbyint((double)y[i] * scale);
        }
    }
}

/* The compact wire format fused with the quantization: the block's sums go to a stack buffer,
 * then straight into words (pairs never straddle a block: BLOCK is even). */
KERNEL static void fixed_quantize_pack_kernel(int64_t *restrict words, const float *const *xs,
                                              int64_t k, int64_t n, int64_t shift,
                                              int64_t bias_value) {
    double scale = ldexp(1.0, (int)shift);
    uint64_t bias = (uint64_t)bias_value;
    int64_t q[BLOCK];
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {
        int64_t m = n - i0 < BLOCK ? n - i0 : BLOCK;
        for (int64_t i = 0; i < m; i++) q[i] = 0;
        for (int64_t r = 0; r < k; r++) {
            const float *restrict y = xs[r] + i0;
            for (int64_t i = 0; i < m; i++) q[i] += (int64_t)nearbyint((double)y[i] * scale);
        }
        if (m % 2) q[m++] = 0; /* the last segment value's partner: a lane of just the bias */
        int64_t *restrict w = words + i0 / 2;
        for (int64_t j = 0; j < m / 2; j++)
            w[j] = (int64_t)(((uint64_t)q[2 * j] + bias) | (((uint64_t)q[2 * j + 1] + bias) << 32));
    }
}

KERNEL static void fixed_unpack_to_float_kernel(float *restrict out, const int64_t *restrict words,
                                                int64_t n, int64_t shift, int64_t bad,
                                                int64_t total_bias, double divisor) {
    if (bad) {
        for (int64_t i = 0; i < n; i++) out[i] = NAN;
        return;
    }
    double f = ldexp(1.0, (int)-shift) / divisor;
    for (int64_t j = 0; j < n / 2; j++) {
        uint64_t w = (uint64_t)words[j];
        out[2 * j] = (float)((double)((int64_t)(w & 0xffffffffu) - total_bias) * f);
        out[2 * j + 1] = (float)((double)((int64_t)(w >> 32) - total_bias) * f);
    }
    if (n % 2)
        out[n - 1] =
            (float)((double)((int64_t)((uint64_t)words[n / 2] & 0xffffffffu) - total_bias) * f);
}

/* The public entry points: plain functions over the cloned kernels. An exported
 * target_clones function is an IFUNC symbol whose resolver the loader runs while it is still
 * relocating _C (GLOB_DAT against an IFUNC), before the sanitizer runtime's calls inside the
 * resolver are bound: a TSan build died at import. Static clones resolve through IRELATIVE,
 * after everything else. */
void ddl_fixed_to_float(const int64_t *acc, int64_t n, int64_t nseg, const int64_t *lengths,
                        const int64_t *shift, const int64_t *bad, double divisor, float *out) {
    fixed_to_float_kernel(acc, n, nseg, lengths, shift, bad, divisor, out);
}

void ddl_fixed_pack(const int64_t *acc, int64_t n, int64_t bias_value, int64_t *words) {
    fixed_pack_kernel(acc, n, bias_value, words);
}

void ddl_fixed_unpack(const int64_t *words, int64_t n, int64_t total_bias, int64_t *acc) {
    fixed_unpack_kernel(words, n, total_bias, acc);
}

void ddl_fixed_segment_exponent(int64_t *exp, int64_t *bad, const float *const *xs, int64_t k,
                                int64_t n) {
    fixed_segment_exponent_kernel(exp, bad, xs, k, n);
}

void ddl_fixed_quantize_sum(int64_t *restrict acc, const float *const *xs, int64_t k, int64_t n,
                            int64_t shift) {
    fixed_quantize_sum_kernel(acc, xs, k, n, shift);
}

void ddl_fixed_quantize_pack(int64_t *restrict words, const float *const *xs, int64_t k, int64_t n,
                             int64_t shift, int64_t bias_value) {
    fixed_quantize_pack_kernel(words, xs, k, n, shift, bias_value);
}

void ddl_fixed_unpack_to_float(float *restrict out, const int64_t *restrict words, int64_t n,
                               int64_t shift, int64_t bad, int64_t total_bias, double divisor) {
    fixed_unpack_to_float_kernel(out, words, n, shift, bad, total_bias, divisor);
}
