/* runtime.c: thread counts, the fork/join helper ddl's own kernels share, BLAS identification. */
#include "core/blas.h"
#include "core/internal.h"

#include <pthread.h>
#include <stdio.h>

int ddl_num_threads = 1;

void ddl_set_num_threads(int n) {
    if (n < 1) n = 1;
    ddl_num_threads = n;
    ddl_openblas_set_num_threads(n);
}

int ddl_get_num_threads(void) { return ddl_num_threads; }

#define MAX_WORKERS 64

typedef struct {
    ddl_parallel_fn fn;
    void *ctx;
    int tid, n, precision;
} share;

static _Thread_local int in_parallel = 0; /* a worker: nested calls run inline */

static void *run_share(void *p) {
    share *s = p;
    in_parallel = 1;
    ddl_gemm_precision_override = s->precision;
    s->fn(s->ctx, s->tid, s->n);
    return NULL;
}

int ddl_parallel_run(int want, ddl_parallel_fn fn, void *ctx) {
    int n = want < ddl_num_threads ? want : ddl_num_threads;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    if (n <= 1 || in_parallel) {
        fn(ctx, 0, 1);
        return 1;
    }
    share s[MAX_WORKERS];
    pthread_t th[MAX_WORKERS];
    int started[MAX_WORKERS] = {0};
    int blas = ddl_openblas_get_num_threads();
    if (blas > 1) ddl_openblas_set_num_threads(1);
    in_parallel = 1;
    for (int i = 1; i < n; i++) {
        s[i] = (share){fn, ctx, i, n, ddl_gemm_precision()};
        started[i] = pthread_create(&th[i], NULL, run_share, &s[i]) == 0;
    }
    fn(ctx, 0, n);
    for (int i = 1; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn(ctx, i, n); /* no thread: run its share here */
    }
    in_parallel = 0;
    if (blas > 1) ddl_openblas_set_num_threads(blas);
    return n;
}

/* ---- bf16 autocast ---------------------------------------------------------------------- */

static int autocast_bf16 = 0;
_Thread_local int ddl_gemm_precision_override = -1;

void ddl_set_autocast_bf16(int on) { __atomic_store_n(&autocast_bf16, on != 0, __ATOMIC_RELAXED); }

int ddl_get_autocast_bf16(void) { return __atomic_load_n(&autocast_bf16, __ATOMIC_RELAXED); }

int ddl_autocast_bf16_supported(void) { return ddl_bf16_gemm_available(); }

int ddl_gemm_precision(void) {
    int o = ddl_gemm_precision_override;
    return o >= 0 ? o : ddl_get_autocast_bf16();
}

const char *ddl_blas_corename(void) { return ddl_openblas_get_corename(); }

const char *ddl_blas_version(void) { return ddl_openblas_get_config(); }

#include <malloc.h>
#include <stdlib.h>

void ddl_tune_allocator(void) {
    /* Training frees and reallocates the same few megabytes of gradients and activations
     * every step. glibc's defaults hand the top of the heap back to the kernel on each free
     * and fault fresh pages in on the next step (thousands of brk calls, measured ~30% of an
     * MLP step). Keep up to 256 MiB of freed heap, and serve blocks under 32 MiB from it.
     * DDL_MALLOC_DEFAULTS=1 leaves glibc's settings alone. */
    const char *keep = getenv("DDL_MALLOC_DEFAULTS");
    if (keep && keep[0] == '1') return;
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
}
