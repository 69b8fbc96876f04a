/* gemm_bf16.c: the layer kernels' GEMM dispatch (float32 sgemm, or under autocast bf16 with
 * float32 accumulation: on AMX tiles, else on AVX512-BF16, gemm_bf16_avx512.c) and the AMX
 * product itself.
 *
 * The linked OpenBLAS (scipy-openblas32) is built without its bf16 kernels (no sbgemm), so
 * this file carries its own: both operands are rounded to bf16 (round to nearest even) into
 * packed, zero-padded copies, tile by tile (each 16x32 tile of A and 16-pair x 16 tile of B,
 * AMX's pair-interleaved layout, is 1 KiB contiguous: no 4 KiB-strided tile rows fighting over
 * cache sets), and each 32x32 block of C is four 16x16 float32 tiles accumulated by TDPBF16PS
 * over K in steps of 32. Blocks of C are split over ddl's threads. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() */
#endif
#include "core/gemm_bf16.h"
#include "core/blas.h"
#include "core/internal.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_ok = 0;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

/* The CPU has AMX-TILE, AMX-BF16 (CPUID.7.0:EDX bits 24, 22) and AVX512-BF16, and Linux lets
 * this process use the tile data state (arch_prctl; Linux >= 5.16). */
static void amx_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!((d >> 24) & 1) || !((d >> 22) & 1)) return;
    /* the packing converts with AVX512-BF16 (CPUID.7.1:EAX bit 5), which AMX CPUs have */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    unsigned long mask = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &mask) != 0) return;
    amx_ok = (mask >> XFEATURE_XTILEDATA) & 1;
}

/* DDL_NO_AMX hides AMX (the AVX512-BF16 path runs where the CPU has it); DDL_NO_BF16 hides
 * both (autocast computes in float32): for tests of each path. Read once. */
static int hide_amx = 0, hide_bf16 = 0;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static void env_read(void) {
    hide_amx = getenv("DDL_NO_AMX") != NULL;
    hide_bf16 = getenv("DDL_NO_BF16") != NULL;
}

static int amx_available(void) {
    pthread_once(&env_once, env_read);
    if (hide_amx || hide_bf16) return 0;
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

static int avx512_available(void) {
    pthread_once(&env_once, env_read);
    return !hide_bf16 && ddl_bf16_avx512_available();
}

int ddl_bf16_gemm_available(void) {
    if (amx_available()) return DDL_BF16_AMX;
    return avx512_available() ? DDL_BF16_AVX512 : 0;
}

/* float32 -> bf16, round to nearest even; NaN stays a (quiet) NaN. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

typedef struct {
    const uint16_t *ap; // (Mp/16, Kp/32, 16, 32) bf16: A's 16x32 tiles, each contiguous
    const uint16_t *bp; // (Np/16, Kp/32, 16, 16, 2) bf16: B's tiles, pairs of k interleaved
    float *c;
    int64_t M, N, KB, ldc, nbm, nbn;
    float beta;
} job;

__attribute__((target("amx-tile,amx-bf16"))) static void block_worker(void *p, int tid, int nt) {
    const job *j = p;
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    float buf[32 * 32];
    const int64_t nblocks = j->nbm * j->nbn, KB = j->KB;
    for (int64_t blk = nblocks * tid / nt; blk < nblocks * (tid + 1) / nt; blk++) {
        int64_t bi = blk / j->nbn, bn = blk % j->nbn; /* 32x32 block: tiles 2bi.., 2bn.. */
        const uint16_t *a0 = j->ap + (2 * bi) * KB * 512, *a1 = a0 + KB * 512;
        const uint16_t *b0 = j->bp + (2 * bn) * KB * 512, *b1 = b0 + KB * 512;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < KB; kb++) {
            _tile_loadd(4, a0 + kb * 512, 64);
            _tile_loadd(5, a1 + kb * 512, 64);
            _tile_loadd(6, b0 + kb * 512, 64);
            _tile_loadd(7, b1 + kb * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, buf, 128);
        _tile_stored(1, buf + 16, 128);
        _tile_stored(2, buf + 16 * 32, 128);
        _tile_stored(3, buf + 16 * 32 + 16, 128);
        int64_t i0 = bi * 32, n0 = bn * 32;
        int64_t mi = j->M - i0 < 32 ? j->M - i0 : 32, ni = j->N - n0 < 32 ? j->N - n0 : 32;
        for (int64_t r = 0; r < mi; r++) {
            float *cr = j->c + (i0 + r) * j->ldc + n0;
            const float *br = buf + r * 32;
            if (j->beta != 0.0f)
                for (int64_t q = 0; q < ni; q++) cr[q] += br[q];
            else
                for (int64_t q = 0; q < ni; q++) cr[q] = br[q];
        }
    }
    _tile_release();
}

/* Where element (i, k) of A and (k, n) of B go in the packed tiles. */
static inline int64_t a_at(int64_t i, int64_t k, int64_t KB) {
    return (((i >> 4) * KB + (k >> 5)) * 16 + (i & 15)) * 32 + (k & 31);
}
static inline int64_t b_at(int64_t k, int64_t n, int64_t KB) {
    return (((n >> 4) * KB + (k >> 5)) * 16 + ((k & 31) >> 1)) * 32 + (n & 15) * 2 + (k & 1);
}

/* Rows [0, R) of a row-major float matrix (row stride ld, K columns), 32 columns at a time
 * (AVX512-BF16 VCVTNE2PS2BF16, round to nearest even): as A's tiles (pairs = 0: a row of 32
 * bf16 is a tile row), or as B's pair-interleaved tiles when the matrix is B^T (pairs = 1:
 * the 16 k-pairs of one column n scatter to the 16 tile rows). */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
pack_rows(uint16_t *dst, const float *src, int64_t ld, int64_t R, int64_t K, int64_t KB,
          int pairs) {
    const __m512i rows =
        _mm512_set_epi32(240, 224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64, 48, 32, 16, 0);
    for (int64_t r = 0; r < R; r++) {
        const float *row = src + r * ld;
        for (int64_t k0 = 0; k0 < K; k0 += 32) {
            int64_t left = K - k0;
            __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            __mmask16 m1 = left >= 32   ? 0xffff
                           : left <= 16 ? 0
                                        : (__mmask16)((1u << (left - 16)) - 1);
            __m512 lo = _mm512_maskz_loadu_ps(m0, row + k0);
            __m512 hi = _mm512_maskz_loadu_ps(m1, row + k0 + 16);
            __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* word w = column k0 + w */
            if (!pairs) {
                _mm512_storeu_si512(dst + a_at(r, k0, KB), v);
            } else {
                uint16_t *tile = dst + b_at(k0, r & ~(int64_t)15, KB); /* row 0, column 0 */
                _mm512_i32scatter_epi32((int *)tile + (r & 15), rows, v, 4);
            }
        }
    }
}

static ddl_status gemm_amx(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                           int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc) {
    if (M <= 0 || N <= 0) return DDL_OK;
    const int64_t Mp = (M + 31) / 32 * 32, Np = (N + 31) / 32 * 32, Kp = (K + 31) / 32 * 32;
    const int64_t KB = Kp / 32;
    uint16_t *ap = calloc((size_t)(Mp * Kp + Kp * Np), sizeof(uint16_t));
    if (!ap)
        DDL_FAIL(DDL_E_NOMEM, "gemm_bf16: no memory to pack (%lld, %lld, %lld)", (long long)M,
                 (long long)N, (long long)K);
    uint16_t *bp = ap + Mp * Kp;
    if (ta) /* read along the rows of the stored matrix either way */
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < M; i++) ap[a_at(i, k, KB)] = to_bf16(A[k * lda + i]);
    else
        pack_rows(ap, A, lda, M, K, KB, 0);
    if (tb)
        pack_rows(bp, B, ldb, N, K, KB, 1);
    else
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) bp[b_at(k, n, KB)] = to_bf16(B[k * ldb + n]);
    job j = {ap, bp, C, M, N, KB, ldc, Mp / 32, Np / 32, beta};
    int64_t blocks = j.nbm * j.nbn;
    ddl_parallel_run(blocks < 64 ? (int)blocks : 64, block_worker, &j);
    free(ap);
    return DDL_OK;
}

ddl_status ddl_gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                         int64_t ldc) {
    if (amx_available()) return gemm_amx(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    if (avx512_available())
        return ddl_gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    DDL_FAIL(DDL_E_INTERNAL, "gemm_bf16: this CPU or kernel has neither AMX-BF16 nor "
                             "AVX512-BF16");
}

/* AMX: below this many multiply-adds the packing into bf16 costs more than the tiles gain. */
#define BF16_MIN_MACS ((int64_t)1 << 21)
#define BF16_MIN_REUSE 48.0

/* Whether a product of this shape gains from bf16 on the path this CPU has. AMX: packing
 * touches M*K + K*N values for M*N*K products, so it pays where MN/(M+N) is large;
 * AVX512-BF16: the rule measured for its 6 x 64 kernel (gemm_bf16_avx512.c). */
static int bf16_pays(int path, int ta, int tb, int64_t M, int64_t N, int64_t K) {
    if (path == DDL_BF16_AMX)
        return K >= 32 && (double)M * N * K >= (double)BF16_MIN_MACS &&
               (double)M * N >= BF16_MIN_REUSE * (double)(M + N);
    return ddl_bf16_avx512_pays(ta, tb, M, N, K);
}

int ddl_gemm_takes_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K) {
    int path;
    return ddl_gemm_precision() == 1 && (path = ddl_bf16_gemm_available()) != 0 &&
           bf16_pays(path, ta, tb, M, N, K);
}

void ddl_gemm_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (ddl_gemm_takes_bf16(ta, tb, M, N, K) &&
        ddl_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc) == DDL_OK)
        return;
    ddl_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (blasint)M, (blasint)N, (blasint)K, 1.0f, A, (blasint)lda, B, (blasint)ldb,
                    beta, C, (blasint)ldc);
}
