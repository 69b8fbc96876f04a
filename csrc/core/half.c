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

/* Branch-free (vectorizable) IEEE conversions after Marat Dukhan's FP16 library: the float
 * unit does the rounding (to nearest even), subnormals, overflow to inf, NaN. */
static uint16_t f32_to_f16(float f) {
    const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
    uint32_t w = bits_of(f);
    float base = (float_of(w & 0x7fffffffu) * scale_to_inf) * scale_to_zero;
    uint32_t shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xff000000u;
    uint32_t small = 0u - (uint32_t)(bias < 0x71000000u); /* masks, not branches: the values */
    bias = (bias & ~small) | (0x71000000u & small);       /* of one bucket straddle them */
    base = float_of((bias >> 1) + 0x07800000u) + base;
    uint32_t r = bits_of(base);
    uint32_t nonsign = ((r >> 13) & 0x00007c00u) + (r & 0x00000fffu);
    uint32_t nan = 0u - (uint32_t)(shl1_w > 0xff000000u);
    return (uint16_t)((sign >> 16) | (0x7e00u & nan) | (nonsign & ~nan));
}

static float f16_to_f32(uint16_t h) {
    uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    float normalized = float_of((two_w >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
    float denormalized = float_of((two_w >> 17) | (126u << 23)) - 0.5f;
    uint32_t sub = 0u - (uint32_t)(two_w < (1u << 27));
    return float_of(sign | (bits_of(denormalized) & sub) | (bits_of(normalized) & ~sub));
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

uint16_t ddl_f32_to_f16(float f) { return f32_to_f16(f); }
float ddl_f16_to_f32(uint16_t h) { return f16_to_f32(h); }
uint16_t ddl_f32_to_bf16(float f) { return f32_to_bf16(f); }
float ddl_bf16_to_f32(uint16_t h) { return bf16_to_f32(h); }

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
    /* (parts, n) -> (n,): row by row, so that each pass over out is one vectorizable loop */
    if (kind == DDL_HALF_FP16)
        for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(in[i]);
    else
        for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(in[i]);
    for (int64_t p = 1; p < parts; p++) {
        const uint16_t *row = in + p * n;
        if (kind == DDL_HALF_FP16)
            for (int64_t i = 0; i < n; i++) out[i] += f16_to_f32(row[i]);
        else
            for (int64_t i = 0; i < n; i++) out[i] += bf16_to_f32(row[i]);
    }
    return DDL_OK;
}
