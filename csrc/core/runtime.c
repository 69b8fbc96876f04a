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
    int tid, n;
} share;

static void *run_share(void *p) {
    share *s = p;
    s->fn(s->ctx, s->tid, s->n);
    return NULL;
}

int ddl_parallel_run(int want, ddl_parallel_fn fn, void *ctx) {
    int n = want < ddl_num_threads ? want : ddl_num_threads;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    if (n <= 1) {
        fn(ctx, 0, 1);
        return 1;
    }
    share s[MAX_WORKERS];
    pthread_t th[MAX_WORKERS];
    int started[MAX_WORKERS] = {0};
    int blas = ddl_openblas_get_num_threads();
    if (blas > 1) ddl_openblas_set_num_threads(1);
    for (int i = 1; i < n; i++) {
        s[i] = (share){fn, ctx, i, n};
        started[i] = pthread_create(&th[i], NULL, run_share, &s[i]) == 0;
    }
    fn(ctx, 0, n);
    for (int i = 1; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn(ctx, i, n); /* no thread: run its share here */
    }
    if (blas > 1) ddl_openblas_set_num_threads(blas);
    return n;
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
