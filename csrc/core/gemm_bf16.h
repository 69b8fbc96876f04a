/* gemm_bf16.h: the bf16 GEMM back ends behind ddl_gemm_f32 / ddl_gemm_bf16 (gemm_bf16.c). */
#ifndef DDL_CORE_GEMM_BF16_H
#define DDL_CORE_GEMM_BF16_H

#include "ddl/core.h"

#include <stdint.h>

/* The bf16 path ddl_bf16_gemm_available() reports (0: none). */
enum { DDL_BF16_AMX = 1, DDL_BF16_AVX512 = 2 };

/* gemm_bf16_avx512.c: whether the CPU has AVX512-BF16 (with AVX512F/BW, zmm state enabled by
 * the OS), and the product on it: C (M, N) = op(A) @ op(B) + beta * C, row-major, beta 0 or 1,
 * both operands rounded to bf16, float32 accumulation (DDL_E_INTERNAL without AVX512-BF16,
 * DDL_E_NOMEM if the packed copies cannot be allocated). */
int ddl_bf16_avx512_available(void);
/* Whether the AVX512-BF16 product of this shape beats float32 sgemm on ddl's threads (the
 * dispatch rule ddl_gemm_f32 follows; measured, see the function). */
int ddl_bf16_avx512_pays(int ta, int tb, int64_t M, int64_t N, int64_t K);
ddl_status ddl_gemm_bf16_avx512(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                int64_t ldc);

#endif
