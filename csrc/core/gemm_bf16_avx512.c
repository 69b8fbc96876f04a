/* gemm_bf16_avx512.c: the bf16 product (float32 accumulation) on AVX512-BF16 (VDPBF16PS), for
 * CPUs that have it but no AMX (AMD Zen 4 and later; Intel Cooper Lake).
 *
 * Both operands are rounded to bf16 (round to nearest even, VCVTNE2PS2BF16) into packed,
 * zero-padded copies, both cut along K into blocks of KC = 256 (so that what the product reads
 * together is contiguous): A as bf16 rows, B as panels of NR = 64 columns in the
 * pair-interleaved layout VDPBF16PS reads (a_off, b_off). Transposed operands are turned in
 * registers, 16 x 16 pairs at a time. The micro-kernel keeps an MR x NR = 6 x 64 block of C
 * in 24 zmm float32 accumulators: for each pair of k it loads 4 zmm of B and broadcasts each
 * row's pair of A (a 32-bit embedded broadcast), 24 VDPBF16PS of 32 multiply-adds each. Cache blocking: a KC x NC block of packed B (256 x 1024 bf16,
 * 512 KiB) stays in L2 while all rows of A pass over it; each 6 x KC sliver of A (3 KiB)
 * stays in L1 while the kernel walks the block's 16 panels. Partial sums over K blocks go
 * through C in float32. Packing and the product are split over ddl's threads (by panels of B
 * when there are enough, else by rows of A). */
#include "core/gemm_bf16.h"
#include "core/internal.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

enum { MR = 6, NR = 64, KC2 = 128 /* KC = 256 */, NC = 1024 };

static int avx512_ok = 0;
static pthread_once_t avx512_once = PTHREAD_ONCE_INIT;

/* CPUID.7.1:EAX bit 5 (AVX512-BF16) with AVX512F and BW (CPUID.7.0:EBX bits 16, 30), and the
 * OS saving the zmm state (XCR0 bits 1, 2, 5, 6, 7). */
static void avx512_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return; /* OSXSAVE */
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6) return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!((b >> 16) & 1) || !((b >> 30) & 1)) return;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !((a >> 5) & 1)) return;
    avx512_ok = 1;
}

int ddl_bf16_avx512_available(void) {
    pthread_once(&avx512_once, avx512_probe);
    return avx512_ok;
}

/* ---- packing ------------------------------------------------------------------------------ */

static inline __mmask16 mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}
static inline __mmask32 mask32(int64_t n) {
    return n >= 32 ? (__mmask32)0xffffffffu : n <= 0 ? 0 : (__mmask32)((1u << n) - 1);
}

/* Words [e0..e15, o0..o15] (VCVTNE2PS2BF16 of two rows of 16) -> dwords (e_j, o_j). */
TARGET static inline __m512i interleave_rows(__m512 even, __m512 odd) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                         8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

/* 32 floats of a row from k0 (K - k0 of them valid, the rest read as 0) as 32 bf16 words. */
TARGET static inline __m512i row_bf16(const float *row, int64_t left) {
    __m512 lo = _mm512_maskz_loadu_ps(mask16(left), row);
    __m512 hi = _mm512_maskz_loadu_ps(mask16(left - 16), row + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* In-register 16 x 16 transpose of 32-bit lanes: four stages, stage s (d = 8 >> s) swapping
 * bit d of the row index with bit d of the lane index: rows i and i + d (bit d of i clear)
 * exchange their lanes with bit d set and clear, by two two-source permutes. */
static const int32_t T_LO[4][16]
    __attribute__((aligned(64))) = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                                    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                                    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                                    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
static const int32_t T_HI[4][16]
    __attribute__((aligned(64))) = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                                    {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
                                    {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
                                    {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};

TARGET static inline __attribute__((always_inline)) void transpose16(__m512i r[16]) {
#pragma GCC unroll 4
    for (int s = 0; s < 4; s++) {
        const int d = 8 >> s;
        const __m512i ilo = _mm512_load_si512(T_LO[s]), ihi = _mm512_load_si512(T_HI[s]);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i & d) continue;
            const __m512i x = r[i], y = r[i + d];
            r[i] = _mm512_permutex2var_epi32(x, ilo, y);
            r[i + d] = _mm512_permutex2var_epi32(x, ihi, y);
        }
    }
}

/* Packed A and B are cut into blocks of KC2 pairs of k (the last one shorter), so that the
 * slices the product reads together are contiguous: no 2^n-strided rows fighting over cache
 * sets. Dword offsets (a dword is a pair of bf16 along k) of pair q of op(A)'s row i, and of
 * pair q of the 64 columns of B panel p. */
static inline int64_t kc_len(int64_t q, int64_t Kp2) {
    int64_t q0 = q / KC2 * KC2;
    return Kp2 - q0 < KC2 ? Kp2 - q0 : KC2;
}
static inline int64_t a_off(int64_t i, int64_t q, int64_t Mp, int64_t Kp2) {
    return q / KC2 * KC2 * Mp + i * kc_len(q, Kp2) + q % KC2;
}
static inline int64_t b_off(int64_t p, int64_t q, int64_t np, int64_t Kp2) {
    return (q / KC2 * KC2 * np + p * kc_len(q, Kp2) + q % KC2) * NR;
}

/* Rows [r0, r1) of packed A: row i holds op(A)[i, 0..K) and zeros up to 2 Kp2 (and rows past
 * M are zeros). ta: A is stored (K, M), element (i, k) at A[k*lda + i]. */
TARGET static void pack_a(uint32_t *ap, int ta, const float *A, int64_t lda, int64_t M, int64_t K,
                          int64_t Mp, int64_t Kp2, int64_t r0, int64_t r1) {
    if (!ta) {
        for (int64_t i = r0; i < r1; i++)
            for (int64_t k0 = 0; k0 < 2 * Kp2; k0 += 32) {
                const __mmask16 mq = mask16(Kp2 - k0 / 2);
                __m512i v = i < M ? row_bf16(A + i * lda + k0, K - k0) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(ap + a_off(i, k0 / 2, Mp, Kp2), mq, v);
            }
        return;
    }
    /* 16 rows of op(A) x 32 k at a time: interleave pairs of stored rows (k, k+1) into dwords
     * over i, then transpose to dwords over k-pairs, one op(A) row per register */
    for (int64_t k0 = 0; k0 < 2 * Kp2; k0 += 32) /* 32 stored rows at a time, along them */
        for (int64_t i0 = r0; i0 < r1; i0 += 16) {
            const __mmask16 mi = mask16(M - i0);
            int64_t rows = r1 - i0 < 16 ? r1 - i0 : 16;
            __m512i v[16];
            for (int q = 0; q < 16; q++) {
                int64_t k = k0 + 2 * q;
                __m512 e = _mm512_setzero_ps(), o = _mm512_setzero_ps();
                if (k < K) e = _mm512_maskz_loadu_ps(mi, A + k * lda + i0);
                if (k + 1 < K) o = _mm512_maskz_loadu_ps(mi, A + (k + 1) * lda + i0);
                v[q] = interleave_rows(e, o);
            }
            transpose16(v);
            const __mmask16 mq = mask16(Kp2 - k0 / 2);
            for (int64_t r = 0; r < rows; r++)
                _mm512_mask_storeu_epi32(ap + a_off(i0 + r, k0 / 2, Mp, Kp2), mq, v[r]);
        }
}

/* One 64-byte line of packed B (64-byte aligned). */
TARGET static inline void store_line(uint32_t *dst, __m512i v, int stream) {
    if (stream)
        _mm512_stream_si512((void *)dst, v);
    else
        _mm512_store_si512(dst, v);
}

/* Panels [p0, p1) of packed B: panel p, pair q holds dwords (op(B)[2q, n], op(B)[2q+1, n]) for
 * the 64 columns n = 64p.., zeros past N and K. tb: B is stored (N, K), (k, n) at B[n*ldb + k]. */
TARGET static void pack_b(uint32_t *bp, int tb, const float *B, int64_t ldb, int64_t N, int64_t K,
                          int64_t np, int64_t Kp2, int64_t p0, int64_t p1) {
    /* a packed B larger than L2 is written around the cache (no reads of the lines first) */
    const int stream = np * Kp2 * NR * 4 > ((int64_t)2 << 20);
    if (!tb) { /* pairs of stored rows (k, k+1) along their length, into each panel */
        for (int64_t q = 0; q < Kp2; q++) {
            const float *e = B + 2 * q * ldb, *o = e + ldb;
            for (int64_t p = p0; p < p1; p++) {
                uint32_t *dst = bp + b_off(p, q, np, Kp2);
                for (int64_t c = 0; c < NR; c += 16) {
                    const int64_t n0 = p * NR + c;
                    const __mmask16 mn = mask16(N - n0);
                    __m512 ve = _mm512_maskz_loadu_ps(mn, e + n0), vo = _mm512_setzero_ps();
                    if (2 * q + 1 < K) vo = _mm512_maskz_loadu_ps(mn, o + n0);
                    store_line(dst + c, interleave_rows(ve, vo), stream);
                }
            }
        }
        if (stream) _mm_sfence();
        return;
    }
    for (int64_t p = p0; p < p1; p++) {
        /* 16 stored rows (columns n of op(B)) x 32 k: each row's 16 pairs as one register,
         * transposed to one register per pair over the 16 columns; 16 rows read along K */
        for (int64_t c = 0; c < NR; c += 16) {
            const int64_t n0 = p * NR + c;
            for (int64_t k0 = 0; k0 < 2 * Kp2; k0 += 32) {
                const int64_t qs = Kp2 - k0 / 2 < 16 ? Kp2 - k0 / 2 : 16;
                uint32_t *dst = bp + b_off(p, k0 / 2, np, Kp2) + c;
                __m512i v[16];
                for (int j = 0; j < 16; j++)
                    v[j] = n0 + j < N ? row_bf16(B + (n0 + j) * ldb + k0, K - k0)
                                      : _mm512_setzero_si512();
                transpose16(v);
                for (int64_t q = 0; q < qs; q++) store_line(dst + q * NR, v[q], stream);
            }
        }
    }
    if (stream) _mm_sfence(); /* before the product's threads read the panels */
}

/* ---- the micro-kernel --------------------------------------------------------------------- */

/* C[0..6, 0..64) (row stride ldc) = (accumulate ? C : 0) + the product over kc2 pairs of k of
 * six rows of packed A (a, row stride lda2 dwords) and one packed B panel (b, 64 dwords per
 * pair). Writes only the first mr rows and nr columns. */
TARGET static void kernel_6x64(int64_t kc2, const uint32_t *a, int64_t lda2, const uint32_t *b,
                               float *c, int64_t ldc, int accumulate, int mr, int nr) {
#define ROW_DECL(i)                                                                                \
    __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = c##i##0, c##i##2 = c##i##0, c##i##3 = c##i##0
    ROW_DECL(0);
    ROW_DECL(1);
    ROW_DECL(2);
    ROW_DECL(3);
    ROW_DECL(4);
    ROW_DECL(5);
    for (int i = 0; i < MR; i++) /* C's lines arrive while the products run */
        for (int n = 0; n < NR; n += 16) _mm_prefetch((const char *)(c + i * ldc + n), _MM_HINT_T0);
    const uint32_t *a0 = a, *a1 = a + lda2, *a2 = a + 2 * lda2, *a3 = a + 3 * lda2,
                   *a4 = a + 4 * lda2, *a5 = a + 5 * lda2;
    for (int64_t q = 0; q < kc2; q++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b),
                       b1 = (__m512bh)_mm512_loadu_si512(b + 16),
                       b2 = (__m512bh)_mm512_loadu_si512(b + 32),
                       b3 = (__m512bh)_mm512_loadu_si512(b + 48);
        b += NR;
#define ROW_STEP(i)                                                                                \
    do {                                                                                           \
        const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a##i[q]);                              \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, x, b0);                                                \
        c##i##1 = _mm512_dpbf16_ps(c##i##1, x, b1);                                                \
        c##i##2 = _mm512_dpbf16_ps(c##i##2, x, b2);                                                \
        c##i##3 = _mm512_dpbf16_ps(c##i##3, x, b3);                                                \
    } while (0)
        ROW_STEP(0);
        ROW_STEP(1);
        ROW_STEP(2);
        ROW_STEP(3);
        ROW_STEP(4);
        ROW_STEP(5);
    }
    if (mr == MR && nr == NR) {
#define ROW_STORE(i)                                                                               \
    do {                                                                                           \
        float *cr = c + (i)*ldc;                                                                   \
        if (accumulate) {                                                                          \
            c##i##0 = _mm512_add_ps(c##i##0, _mm512_loadu_ps(cr));                                 \
            c##i##1 = _mm512_add_ps(c##i##1, _mm512_loadu_ps(cr + 16));                            \
            c##i##2 = _mm512_add_ps(c##i##2, _mm512_loadu_ps(cr + 32));                            \
            c##i##3 = _mm512_add_ps(c##i##3, _mm512_loadu_ps(cr + 48));                            \
        }                                                                                          \
        _mm512_storeu_ps(cr, c##i##0);                                                             \
        _mm512_storeu_ps(cr + 16, c##i##1);                                                        \
        _mm512_storeu_ps(cr + 32, c##i##2);                                                        \
        _mm512_storeu_ps(cr + 48, c##i##3);                                                        \
    } while (0)
        ROW_STORE(0);
        ROW_STORE(1);
        ROW_STORE(2);
        ROW_STORE(3);
        ROW_STORE(4);
        ROW_STORE(5);
        return;
    }
    /* an edge block: through a buffer, writing only the valid rows and columns */
    float buf[MR * NR];
#define ROW_SPILL(i)                                                                               \
    do {                                                                                           \
        _mm512_storeu_ps(buf + (i)*NR, c##i##0);                                                   \
        _mm512_storeu_ps(buf + (i)*NR + 16, c##i##1);                                              \
        _mm512_storeu_ps(buf + (i)*NR + 32, c##i##2);                                              \
        _mm512_storeu_ps(buf + (i)*NR + 48, c##i##3);                                              \
    } while (0)
    ROW_SPILL(0);
    ROW_SPILL(1);
    ROW_SPILL(2);
    ROW_SPILL(3);
    ROW_SPILL(4);
    ROW_SPILL(5);
    for (int i = 0; i < mr; i++) {
        float *cr = c + i * ldc;
        const float *br = buf + i * NR;
        for (int n0 = 0; n0 < nr; n0 += 16) {
            const __mmask16 m = mask16(nr - n0);
            __m512 v = _mm512_loadu_ps(br + n0);
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, cr + n0));
            _mm512_mask_storeu_ps(cr + n0, m, v);
        }
    }
#undef ROW_DECL
#undef ROW_STEP
#undef ROW_STORE
#undef ROW_SPILL
}

/* ---- blocking and threads ----------------------------------------------------------------- */

typedef struct {
    int ta, tb;
    const float *A, *B;
    int64_t lda, ldb;
    uint32_t *ap; // (Kp2/KC2, Mp, KC2) pairs of bf16 (see a_off)
    uint32_t *bp; // (Kp2/KC2, Np/64, KC2, 64) pairs of bf16 (see b_off)
    float *c;
    int64_t M, N, K, Mp, Kp2, npanels, ldc;
    float beta;
    int split_n; /* the product's threads take panels of B (else rows of A) */
} job;

static void share(int64_t n, int tid, int nt, int64_t *lo, int64_t *hi) {
    *lo = n * tid / nt;
    *hi = n * (tid + 1) / nt;
}

static void pack_worker(void *p, int tid, int nt) {
    const job *j = p;
    int64_t lo, hi;
    share(j->Mp / MR, tid, nt, &lo, &hi);
    pack_a(j->ap, j->ta, j->A, j->lda, j->M, j->K, j->Mp, j->Kp2, lo * MR, hi * MR);
    share(j->npanels, tid, nt, &lo, &hi);
    pack_b(j->bp, j->tb, j->B, j->ldb, j->N, j->K, j->npanels, j->Kp2, lo, hi);
}

/* Rows [i0, i1) (multiples of MR) and panels [p0, p1) of C. */
static void product(const job *j, int64_t i0, int64_t i1, int64_t p0, int64_t p1) {
    const int64_t Kp2 = j->Kp2, Mp = j->Mp, np = j->npanels;
    for (int64_t pc0 = p0; pc0 < p1; pc0 += NC / NR) {
        const int64_t pc1 = pc0 + NC / NR < p1 ? pc0 + NC / NR : p1;
        for (int64_t q0 = 0; q0 < Kp2; q0 += KC2) {
            const int64_t kc2 = Kp2 - q0 < KC2 ? Kp2 - q0 : KC2;
            const int accumulate = q0 > 0 || j->beta != 0.0f;
            for (int64_t i = i0; i < i1; i += MR) {
                const int mr = j->M - i < MR ? (int)(j->M - i) : MR;
                if (mr <= 0) break;
                for (int64_t pn = pc0; pn < pc1; pn++) {
                    const int64_t n = pn * NR;
                    const int nr = j->N - n < NR ? (int)(j->N - n) : NR;
                    kernel_6x64(kc2, j->ap + a_off(i, q0, Mp, Kp2), kc2,
                                j->bp + b_off(pn, q0, np, Kp2), j->c + i * j->ldc + n, j->ldc,
                                accumulate, mr, nr);
                }
            }
        }
    }
}

static void product_worker(void *p, int tid, int nt) {
    const job *j = p;
    int64_t lo, hi;
    if (j->split_n) {
        share(j->npanels, tid, nt, &lo, &hi);
        product(j, 0, j->Mp, lo, hi);
    } else {
        share(j->Mp / MR, tid, nt, &lo, &hi);
        product(j, lo * MR, hi * MR, 0, j->npanels);
    }
}

/* The packing buffer: one kept between calls (up to SCRATCH_KEEP bytes), so that a large
 * product does not fault in fresh pages for its copies every time. A caller that finds it in
 * use (another thread's product) allocates its own. */
#define SCRATCH_KEEP ((size_t)128 << 20)
static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;
static void *scratch = NULL;
static size_t scratch_bytes = 0;

/* A buffer of at least *bytes bytes (64-byte aligned; NULL if out of memory); *bytes becomes
 * its size. */
static void *scratch_take(size_t *bytes) {
    void *p = NULL;
    pthread_mutex_lock(&scratch_lock);
    if (scratch && scratch_bytes >= *bytes) {
        p = scratch;
        *bytes = scratch_bytes;
        scratch = NULL;
    }
    pthread_mutex_unlock(&scratch_lock);
    if (p) return p;
    *bytes = (*bytes + 63) / 64 * 64;
    return aligned_alloc(64, *bytes);
}

static void scratch_give(void *p, size_t bytes) {
    pthread_mutex_lock(&scratch_lock);
    if (bytes <= SCRATCH_KEEP && (!scratch || scratch_bytes < bytes)) {
        void *old = scratch;
        scratch = p;
        scratch_bytes = bytes;
        p = old;
    }
    pthread_mutex_unlock(&scratch_lock);
    free(p);
}

ddl_status ddl_gemm_bf16_avx512(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                int64_t ldc) {
    if (!ddl_bf16_avx512_available())
        DDL_FAIL(DDL_E_INTERNAL, "gemm_bf16: this CPU or OS has no AVX512-BF16");
    if (M <= 0 || N <= 0) return DDL_OK;
    job j = {.ta = ta,
             .tb = tb,
             .A = A,
             .B = B,
             .lda = lda,
             .ldb = ldb,
             .c = C,
             .M = M,
             .N = N,
             .K = K,
             .ldc = ldc,
             .beta = beta};
    j.Mp = (M + MR - 1) / MR * MR;
    j.Kp2 = (K + 1) / 2;
    j.npanels = (N + NR - 1) / NR;
    if (K == 0) { /* an empty sum: C = beta * C */
        for (int64_t i = 0; i < M && beta == 0.0f; i++) memset(C + i * ldc, 0, (size_t)N * 4);
        return DDL_OK;
    }
    /* packed A, then packed B, 64-byte aligned */
    size_t abytes = ((size_t)(j.Mp * j.Kp2) * 4 + 63) / 64 * 64;
    size_t bytes = abytes + (size_t)(j.npanels * j.Kp2 * NR) * 4;
    void *mem = scratch_take(&bytes);
    if (!mem)
        DDL_FAIL(DDL_E_NOMEM, "gemm_bf16: no memory to pack (%lld, %lld, %lld)", (long long)M,
                 (long long)N, (long long)K);
    j.ap = mem;
    j.bp = (uint32_t *)((char *)mem + abytes);
    /* threads start per call (twice): worth it from ~150 us of work on one core */
    int want = (double)M * N * K >= (double)((int64_t)1 << 25) ? 64 : 1;
    ddl_parallel_run(want, pack_worker, &j);
    int nt = ddl_num_threads < 1 ? 1 : ddl_num_threads;
    j.split_n = j.npanels >= 2 * nt || j.npanels >= j.Mp / MR;
    ddl_parallel_run(want, product_worker, &j);
    scratch_give(mem, bytes);
    return DDL_OK;
}

/* Measured against scipy-openblas32's sgemm on one Zen 4 core (benchmarks/gemm_bf16_grid.c:
 * thread CPU time; M 8..512, N 32..1024, K 32..1024): bf16 is 1.1-1.3x faster from M >= 32,
 * N >= 64 (below that the 6 x 64 block is mostly empty) and 1.5-2.4x from M, N >= 128; with A
 * transposed (weight gradients) the packing's transposes cost more, and it gains only from
 * M*N >= 8192. */
int ddl_bf16_avx512_pays(int ta, int tb, int64_t M, int64_t N, int64_t K) {
    (void)tb;
    if (K < 32 || M < 32 || N < 64) return 0;
    return !ta || M * N >= 8192;
}
