/* half.c: float32 <-> fp16 / bfloat16 conversion and the float32 sum of 16-bit parts (half.h). */
#include "ddl/half.h"

#include <string.h>

#include "core/internal.h"

static uint32_t bits_of(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float float_of(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static uint16_t f32_to_f16(float f) {
    uint32_t x = bits_of(f);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (and inf): inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal or 0 */
        float t = float_of(ax) * 16777216.0f;                 /* in units of 2^-24, exact */
        uint32_t i = (uint32_t)t;
        float frac = t - (float)i;
        if (frac > 0.5f || (frac == 0.5f && (i & 1u))) i++;
        return (uint16_t)(sign | i); /* i == 0x400 is the smallest normal: right encoding */
    }
    uint32_t h = ((((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13));
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry bumps the exponent */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return float_of(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        float f = (float)m * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return float_of(sign | ((e + 112u) << 23) | (m << 13));
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

static ddl_status check(int64_t n, ddl_half_kind kind, const char *who) {
    if (n < 0) return ddl_fail(DDL_E_VALUE, "%s: n must be >= 0, got %lld", who, (long long)n);
    if (kind != DDL_HALF_FP16 && kind != DDL_HALF_BF16)
        return ddl_fail(DDL_E_VALUE, "%s: unknown 16-bit kind %d", who, (int)kind);
    return DDL_OK;
}

ddl_status ddl_half_compress(uint16_t *out, const float *in, int64_t n, float scale,
                             ddl_half_kind kind) {
    DDL_TRY(check(n, kind, "half_compress"));
    if (kind == DDL_HALF_FP16)
        for (int64_t i = 0; i < n; i++) out[i] = f32_to_f16(in[i] * scale);
    else
        for (int64_t i = 0; i < n; i++) out[i] = f32_to_bf16(in[i] * scale);
    return DDL_OK;
}

ddl_status ddl_half_decompress_sum(float *out, const uint16_t *in, int64_t n, int64_t parts,
                                   ddl_half_kind kind) {
    DDL_TRY(check(n, kind, "half_decompress_sum"));
    if (parts < 1)
        return ddl_fail(DDL_E_VALUE, "half_decompress_sum: parts must be >= 1, got %lld",
                        (long long)parts);
    for (int64_t i = 0; i < n; i++) {
        float s = 0.0f;
        for (int64_t p = 0; p < parts; p++) {
            uint16_t h = in[p * n + i];
            s += kind == DDL_HALF_FP16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        out[i] = s;
    }
    return DDL_OK;
}
