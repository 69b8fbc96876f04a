/* fixed_point.c: int64 fixed-point accumulation of float32 values (see ddl/fixed_point.h). */
#include "ddl/fixed_point.h"

#include <math.h>
#include <string.h>

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

/* int64 -> double rounded once (to nearest even), from two exact halves: hi * 2^32 and lo
 * are both exact in double, so their sum is the correctly rounded value, and the 32-bit
 * conversions vectorize where a 64-bit one does not. */
static inline double to_double(int64_t v) {
    double hi = (double)(int32_t)(v >> 32) * 4294967296.0;
    double lo = (double)(int32_t)((uint32_t)v ^ 0x80000000u) + 2147483648.0;
    return hi + lo;
}

void ddl_fixed_to_float(const int64_t *acc, int64_t n, int64_t nseg, const int64_t *lengths,
                        const int64_t *shift, const int64_t *bad, double divisor, float *out) {
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
            for (int64_t i = 0; i < len; i++) o[i] = (float)(to_double(a[i]) * f);
        }
        start += len;
    }
}

void ddl_fixed_pack(const int64_t *acc, int64_t n, int64_t bias_value, int64_t *words) {
    uint64_t bias = (uint64_t)bias_value;
    for (int64_t j = 0; j < n / 2; j++)
        words[j] =
            (int64_t)(((uint64_t)acc[2 * j] + bias) | (((uint64_t)acc[2 * j + 1] + bias) << 32));
    if (n % 2) words[n / 2] = (int64_t)(((uint64_t)acc[n - 1] + bias) | (bias << 32));
}

void ddl_fixed_unpack(const int64_t *words, int64_t n, int64_t total_bias, int64_t *acc) {
    int64_t bias = total_bias;
    for (int64_t j = 0; j < n / 2; j++) {
        uint64_t w = (uint64_t)words[j];
        acc[2 * j] = (int64_t)(w & 0xffffffffu) - bias;
        acc[2 * j + 1] = (int64_t)(w >> 32) - bias;
    }
    if (n % 2) acc[n - 1] = (int64_t)((uint64_t)words[n / 2] & 0xffffffffu) - bias;
}
