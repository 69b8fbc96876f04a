/* vmath.h: float32 exp, tanh and sigmoid written so that the compiler vectorizes them.
 *
 * libm's expf and tanhf are calls gcc cannot vectorize (glibc's tanhf costs ~15 ns a value).
 * These are straight-line code: no branches, selects only between a value and a constant, bit
 * tricks through memcpy, and fma()/fmaf() which compile to one instruction wherever FMA exists.
 * fma is exact, and ddl builds with -std=c11 (no FMA contraction), so every ISA a loop is
 * compiled for computes bit-identical results.
 *
 * Accuracy (tests/c/test_vmath.c checks all 2^32 inputs with --all):
 *   vm_exp_f32      float arithmetic, <= 1 ulp from glibc's expf and from the exact value.
 *   vm_tanh_f32     double arithmetic (e^y - 1 to ~2e-15), correctly rounded but for rare
 *   vm_sigmoid_f32  near-ties: glibc's tanhf is itself up to 2 ulp off, so anything less exact
 *                   could land 3 ulp from it. Within 2 ulp of tanhf and of the float formula
 *                   1/(1+expf(-x)) | expf(x)/(1+expf(x)) that ddl used before.
 * Special values are libm's: NaN -> the same NaN, quieted; exp: +inf -> inf, -inf -> +0,
 * x > 88.7228 -> inf, subnormal results rounded once; tanh: +-0 -> +-0, +-inf -> +-1;
 * sigmoid: -inf -> 0, +inf -> 1. All 2^32 inputs were checked on 2026-11-26: exp max 1 ulp
 * from expf and from exact; tanh and sigmoid max 2 ulp from glibc, max 1 from exact.
 *
 * A loop over these vectorizes only if gcc may if-convert the selects, which it refuses under
 * the default -ftrapping-math once it has sunk work into one arm; ops_elementwise.c compiles
 * its loops with optimize("no-trapping-math"), which changes no result (ddl never reads the
 * floating-point exception flags).
 */
#ifndef DDL_VMATH_H
#define DDL_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define VM_INLINE static inline __attribute__((always_inline))

/* Bit casts through memcpy (one move after inlining): vm_bits_f32, vm_f32_bits, vm_bits_f64,
 * vm_f64_bits. */
#define VM_BITCAST(NAME, TO, FROM)                                                                 \
    VM_INLINE TO NAME(FROM v) {                                                                    \
        TO r;                                                                                      \
        memcpy(&r, &v, sizeof r);                                                                  \
        return r;                                                                                  \
    }
VM_BITCAST(vm_bits_f32, uint32_t, float)
VM_BITCAST(vm_f32_bits, float, uint32_t)
VM_BITCAST(vm_bits_f64, uint64_t, double)
VM_BITCAST(vm_f64_bits, double, uint64_t)

/* ---- exp (float) ------------------------------------------------------------------------- */

/* e^c for c in [-104, 89]. c = n ln2 + r with |r| <= ln2/2; e^r = 1 + r + r^2 q(r)
 * with q a degree-4 near-minimax fit (relative error 3e-9); 2^n is applied as two powers of two
 * so that a subnormal result is rounded once and n = 128 overflows to inf. */
VM_INLINE float vm_exp_core_f32(float c) {
    const float shift = 0x1.8p23f; /* k = shift + n: n lands in the low mantissa bits */
    float k = fmaf(c, 0x1.715476p+0f, shift);
    float n = k - shift;
    float r = fmaf(n, -0x1.62e430p-1f, c); /* exact: ln2's float is 24 bits, n has <= 8 */
    r = fmaf(n, 0x1.05c610p-29f, r);       /* the rest of ln2 */
    float q = 0x1.6a1a72p-10f;
    q = fmaf(q, r, 0x1.123fc6p-7f);
    q = fmaf(q, r, 0x1.555916p-5f);
    q = fmaf(q, r, 0x1.55548ap-3f);
    q = fmaf(q, r, 0x1.fffffcp-2f);
    float p = fmaf(fmaf(q, r, 1.0f), r, 1.0f);
    int32_t ni = (int32_t)(vm_bits_f32(k) - vm_bits_f32(shift)); /* n in [-150, 128] */
    int32_t n1 = ni >> 1, n2 = ni - n1;
    float s1 = vm_f32_bits((uint32_t)(n1 + 127) << 23);
    float s2 = vm_f32_bits((uint32_t)(n2 + 127) << 23);
    return p * s1 * s2;
}

VM_INLINE float vm_exp_f32(float x) {
    /* outside [-104, 89] the result is 0 or inf either way */
    float c = x < -104.0f ? -104.0f : x;
    c = c > 89.0f ? 89.0f : c;
    float y = vm_exp_core_f32(c);
    return x != x ? x + x : y; /* NaN: the input quieted, as glibc (the sign is kept) */
}

/* ---- tanh, sigmoid (double inside) ------------------------------------------------------- */

/* e^r - 1 for y = n ln2 + r, |r| <= ln2/2, y in [-104, 0]; *s = 2^n.
 * e^r - 1 = r + r^2 q(r), q of degree 8 (relative error 2e-15). */
VM_INLINE double vm_expm1_reduced(double y, double *s) {
    const double shift = 0x1.8p52;
    double k = fma(y, 0x1.71547652b82fep+0, shift);
    double n = k - shift;
    double r = fma(n, -0x1.62e42fefa39efp-1, y);
    double q = 0x1.27e841b93ee28p-22;
    q = fma(q, r, 0x1.72e471cffabeap-19);
    q = fma(q, r, 0x1.a01a764dbba11p-16);
    q = fma(q, r, 0x1.a019939f946bfp-13);
    q = fma(q, r, 0x1.6c16c132d6bb4p-10);
    q = fma(q, r, 0x1.111111233d1abp-7);
    q = fma(q, r, 0x1.55555555665c6p-5);
    q = fma(q, r, 0x1.55555555519bap-3);
    q = fma(q, r, 0x1.fffffffffffa7p-2);
    *s = vm_f64_bits((vm_bits_f64(k) + 1023) << 52);
    return fma(r * r, q, r);
}

/* 1/d for d in [1, 3]: a float reciprocal and one Newton step (relative error ~1e-14); a
 * double division would be 3x slower here. */
VM_INLINE double vm_recip_f64(double d) {
    double r = (double)(1.0f / (float)d);
    return fma(r, fma(-d, r, 1.0), r);
}

VM_INLINE float vm_tanh_f32(float x) {
    float ax = fabsf(x);
    ax = ax > 10.0f ? 10.0f : ax; /* tanh(10) rounds to 1 */
    double s, em = vm_expm1_reduced(-2.0 * (double)ax, &s);
    double m = fma(s, em, s - 1.0);        /* e^(-2|x|) - 1, in (-1, 0] */
    double t = -m * vm_recip_f64(2.0 + m); /* tanh|x| = -m / (2 + m) */
    /* |t| then x's sign: tanh(-0) = -0 and tanh(+0) = +0 */
    float y = vm_f32_bits((vm_bits_f32((float)t) & 0x7fffffffu) | (vm_bits_f32(x) & 0x80000000u));
    return x != x ? x + x : y;
}

VM_INLINE float vm_sigmoid_f32(float x) {
    float ax = fabsf(x);
    ax = ax > 104.0f ? 104.0f : ax; /* e^-104 rounds to 0 */
    double s, em = vm_expm1_reduced(-(double)ax, &s);
    double e = fma(s, em, s);                          /* e^-|x|, in [0, 1] */
    uint64_t neg = (uint64_t)0 - (uint64_t)(x < 0.0f); /* a bit select keeps this branch-free */
    double num = vm_f64_bits((vm_bits_f64(e) & neg) | (vm_bits_f64(1.0) & ~neg));
    float y = (float)(num * vm_recip_f64(1.0 + e)); /* 1/(1+e) if x >= 0, e/(1+e) if x < 0 */
    return x != x ? x + x : y;
}

#undef VM_INLINE
#endif
