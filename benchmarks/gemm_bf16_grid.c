/* gemm_bf16_grid.c: the AVX512-BF16 product (csrc/core/gemm_bf16_avx512.c, compiled in) against
 * OpenBLAS's sgemm on one core, over a grid of shapes: the measurements behind
 * ddl_bf16_avx512_pays, the rule that decides which products autocast sends to bf16.
 *
 *   OB=$(python3 -c "import scipy_openblas32 as s, os; print(os.path.dirname(s.__file__))")
 *   gcc -O3 -std=c11 -D_GNU_SOURCE -Icsrc -Icsrc/include -I$OB/include \
 *       benchmarks/gemm_bf16_grid.c -o /tmp/gemm_bf16_grid -L$OB/lib -lscipy_openblas \
 *       -Wl,-rpath,$OB/lib -lm -lpthread
 *   /tmp/gemm_bf16_grid grid TA TB    # ratio sgemm time / bf16 time, M x N rows, K columns
 *   /tmp/gemm_bf16_grid check         # the product against a double reference, odd shapes
 *   /tmp/gemm_bf16_grid time M N K TA TB   # pack A, pack B, product, sgemm: ms and GFLOP/s
 *
 * Times are the calling thread's CPU time (best of repeats lasting >= 20 ms): on a shared
 * machine, the time other jobs hold the core is left out. One thread on both sides. */
#include "core/internal.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* what the kernel file needs from the rest of the core: one thread, messages to stderr */
int ddl_num_threads = 1;
ddl_status ddl_fail(ddl_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return st;
}
int ddl_parallel_run(int want, ddl_parallel_fn fn, void *ctx) {
    (void)want;
    fn(ctx, 0, 1);
    return 1;
}

#include "core/gemm_bf16_avx512.c"

void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *,
                       int, float, float *, int);
void scipy_openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double bf(float x) { /* round to nearest even, as the kernels do */
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static double best_of(int bf16, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    double best = 1e9, total = 0;
    for (int r = 0; (total < 0.02 || r < 5) && r < 400; r++) {
        double t = now();
        if (bf16)
            ddl_gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, 0.0f, C, ldc);
        else
            scipy_cblas_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, (int)M, (int)N, (int)K, 1.0f,
                              A, (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
        t = now() - t;
        total += t;
        if (t < best) best = t;
    }
    return best;
}

static float *randoms(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)rand() / RAND_MAX - 0.5f;
    return p;
}

static int check(int64_t M, int64_t N, int64_t K, int ta, int tb, float beta) {
    int64_t lda = ta ? M + 3 : K + 5, ldb = tb ? K + 1 : N + 7, ldc = N + 2;
    float *A = randoms((ta ? K : M) * lda), *B = randoms((tb ? N : K) * ldb);
    float *C = randoms(M * ldc), *C0 = malloc(sizeof(float) * (size_t)(M * ldc));
    memcpy(C0, C, sizeof(float) * (size_t)(M * ldc));
    ddl_gemm_bf16_avx512(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    double maxerr = 0, maxref = 0;
    int clobbered = 0;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t n = 0; n < N; n++) {
            double s = beta != 0.0f ? C0[i * ldc + n] : 0;
            for (int64_t k = 0; k < K; k++)
                s += bf(ta ? A[k * lda + i] : A[i * lda + k]) *
                     bf(tb ? B[n * ldb + k] : B[k * ldb + n]);
            maxerr = fmax(maxerr, fabs(s - C[i * ldc + n]));
            maxref = fmax(maxref, fabs(s));
        }
        for (int64_t n = N; n < ldc; n++) clobbered |= C[i * ldc + n] != C0[i * ldc + n];
    }
    int bad = maxerr > 1e-6 * (maxref + 1) * sqrt((double)K) || clobbered;
    printf("M %lld N %lld K %lld ta %d tb %d beta %g: max error %.3g (|ref| <= %.3g)%s%s\n",
           (long long)M, (long long)N, (long long)K, ta, tb, beta, maxerr, maxref,
           clobbered ? " CLOBBERED PADDING" : "", bad ? " FAIL" : "");
    free(A), free(B), free(C), free(C0);
    return bad;
}

int main(int argc, char **argv) {
    if (!ddl_bf16_avx512_available()) {
        fprintf(stderr, "this CPU or OS has no AVX512-BF16\n");
        return 2;
    }
    scipy_openblas_set_num_threads(1);
    const char *mode = argc > 1 ? argv[1] : "grid";
    if (!strcmp(mode, "check")) {
        static const int64_t shapes[][3] = {{7, 5, 3},    {13, 70, 33},   {100, 130, 300},
                                            {65, 200, 513}, {31, 129, 257}, {300, 1100, 700},
                                            {1000, 40, 600}};
        int bad = 0;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                bad |= check(shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t >> 1,
                             (float)(s & 1));
        return bad;
    }
    if (!strcmp(mode, "time") && argc >= 7) {
        int64_t M = atoll(argv[2]), N = atoll(argv[3]), K = atoll(argv[4]);
        int ta = atoi(argv[5]), tb = atoi(argv[6]);
        int64_t lda = ta ? M : K, ldb = tb ? K : N;
        float *A = randoms(M * K), *B = randoms(K * N), *C = randoms(M * N);
        job j = {.ta = ta, .tb = tb, .A = A, .B = B, .lda = lda, .ldb = ldb, .c = C, .M = M,
                 .N = N, .K = K, .ldc = N};
        j.Mp = (M + MR - 1) / MR * MR, j.Kp2 = (K + 1) / 2, j.npanels = (N + NR - 1) / NR;
        j.ap = aligned_alloc(64, (size_t)(j.Mp * j.Kp2 * 4 + 64));
        j.bp = aligned_alloc(64, (size_t)(j.npanels * j.Kp2 * NR * 4 + 64));
        double tpa = 1e9, tpb = 1e9, tc = 1e9;
        for (int r = 0; r < 10; r++) {
            double t = now();
            pack_a(j.ap, ta, A, lda, M, K, j.Mp, j.Kp2, 0, j.Mp);
            tpa = fmin(tpa, now() - t);
            t = now();
            pack_b(j.bp, tb, B, ldb, N, K, j.npanels, j.Kp2, 0, j.npanels);
            tpb = fmin(tpb, now() - t);
            t = now();
            product(&j, 0, j.Mp, 0, j.npanels);
            tc = fmin(tc, now() - t);
        }
        double ts = best_of(0, ta, tb, M, N, K, A, lda, B, ldb, C, N), fl = 2.0 * M * N * K;
        printf("M %lld N %lld K %lld ta %d tb %d: pack A %.3f ms, pack B %.3f ms, product %.3f "
               "ms (%.0f GFLOP/s); sgemm %.3f ms (%.0f GFLOP/s); sgemm / bf16 %.2fx\n",
               (long long)M, (long long)N, (long long)K, ta, tb, tpa * 1e3, tpb * 1e3, tc * 1e3,
               fl / tc / 1e9, ts * 1e3, fl / ts / 1e9, ts / (tpa + tpb + tc));
        return 0;
    }
    int ta = argc > 2 ? atoi(argv[2]) : 0, tb = argc > 3 ? atoi(argv[3]) : 1;
    static const int64_t Ms[] = {8, 16, 32, 64, 128, 256, 512};
    static const int64_t Ns[] = {32, 64, 128, 256, 512, 1024};
    static const int64_t Ks[] = {32, 64, 128, 256, 512, 1024};
    float *A = randoms(1 << 20), *B = randoms(1 << 20), *C = randoms(1 << 20);
    printf("ta %d tb %d: sgemm time / bf16 time (> 1: bf16 faster); K =", ta, tb);
    for (int k = 0; k < 6; k++) printf(" %5lld", (long long)Ks[k]);
    printf("\n");
    for (int m = 0; m < 7; m++)
        for (int n = 0; n < 6; n++) {
            printf("M %4lld N %5lld: %*s", (long long)Ms[m], (long long)Ns[n], 27, "");
            for (int k = 0; k < 6; k++) {
                int64_t M = Ms[m], N = Ns[n], K = Ks[k], lda = ta ? M : K, ldb = tb ? K : N;
                double b16 = best_of(1, ta, tb, M, N, K, A, lda, B, ldb, C, N);
                double f32 = best_of(0, ta, tb, M, N, K, A, lda, B, ldb, C, N);
                printf(" %5.2f%s", f32 / b16, ddl_bf16_avx512_pays(ta, tb, M, N, K) ? "*" : " ");
            }
            printf("\n");
        }
    printf("(* = dispatched to bf16 by ddl_bf16_avx512_pays)\n");
    return 0;
}
