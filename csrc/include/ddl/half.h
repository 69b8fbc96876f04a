/* half.h: 16-bit floats (IEEE fp16 and bfloat16) for gradient compression: float32 to 16 bits
 * and back, and the sum of several 16-bit parts into float32.
 *
 * DDP's fp16_compress_hook / bf16_compress_hook (ddl/distributed/algorithms/) halve the bytes
 * a gradient bucket puts on the wire: compress (scaled by 1/world_size), exchange the 16-bit
 * payloads, sum them in float32, compress the result, exchange, decompress. Conversions round
 * to nearest, ties to even; fp16 overflows to +-inf (above 65504), underflows through its
 * subnormals to 0; NaN stays NaN. bfloat16 has float32's range and 8 bits of mantissa.
 * Buffers are caller-owned; n counts elements. Errors: DDL_E_VALUE for a bad kind or n < 0. */
#ifndef DDL_HALF_H
#define DDL_HALF_H

#include <stdint.h>

#include "ddl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DDL_HALF_FP16 = 0, /* IEEE 754 binary16 */
    DDL_HALF_BF16 = 1, /* bfloat16: float32's top 16 bits, rounded */
} ddl_half_kind;

/* out[i] = to16(in[i] * scale). out: (n,) 16-bit, in: (n,) float32. */
ddl_status ddl_half_compress(uint16_t *out, const float *in, int64_t n, float scale,
                             ddl_half_kind kind);
/* out[i] = sum over p < parts of from16(in[p * n + i]). out: (n,), in: (parts, n). */
ddl_status ddl_half_decompress_sum(float *out, const uint16_t *in, int64_t n, int64_t parts,
                                   ddl_half_kind kind);

#ifdef __cplusplus
}
#endif

#endif
