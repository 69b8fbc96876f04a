/* runtime.c: thread counts, the persistent thread pool ddl's own kernels share
 * (ddl_parallel_run), the autocast setting, BLAS identification. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() under -std=c11 */
#endif
#include "core/blas.h"
#include "core/internal.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

/* ---- the persistent pool -------------------------------------------------------------------
 * Workers are started on first use and kept: starting a thread per call cost 20-40 us, which
 * a 2-thread training step pays dozens of times. Each worker owns a slot; the caller writes
 * the job, bumps `post` (release) and wakes the worker only if it sleeps; the worker runs its
 * share and sets `done` to the posted number. Both sides spin briefly, then sleep on a futex
 * (a `sleeping` flag read after the bump, seq_cst, so no wake-up is lost), so an idle pool
 * burns no core. One caller at a time owns the pool (trylock); a concurrent caller, or one
 * inside a share, falls back to threads started for the call, or runs inline. After fork()
 * the child starts with an empty pool (its parent's workers do not exist there). */
#define SPIN_ROUNDS 4000

typedef struct {
    share job;
    uint32_t post, done;              /* atomics: jobs posted / finished (worker's count) */
    int worker_sleeps, caller_sleeps; /* atomics: who is (about to be) in futex_wait */
    char pad[64];
} slot;

static slot pool[MAX_WORKERS];
static int pool_size = 0; /* workers started (slots 1 .. pool_size), under pool_lock */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void futex_wait(uint32_t *addr, uint32_t expect) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expect, NULL, NULL, 0);
}

static void futex_wake(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until *word != old (acquire), spinning first, then sleeping with *sleeps raised. */
static uint32_t wait_change(uint32_t *word, uint32_t old, int *sleeps) {
    uint32_t v;
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        if ((v = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != old) return v;
        cpu_relax();
    }
    for (;;) {
        __atomic_store_n(sleeps, 1, __ATOMIC_SEQ_CST);
        if ((v = __atomic_load_n(word, __ATOMIC_SEQ_CST)) != old) break;
        futex_wait(word, old);
        if ((v = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != old) break;
    }
    __atomic_store_n(sleeps, 0, __ATOMIC_RELAXED);
    return v;
}

/* Publish *word = v (seq_cst) and wake its waiter if it sleeps or is about to. */
static void publish(uint32_t *word, uint32_t v, int *sleeps) {
    __atomic_store_n(word, v, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(sleeps, __ATOMIC_SEQ_CST)) futex_wake(word);
}

static void *worker_main(void *p) {
    slot *w = p;
    uint32_t seen = 0;
    in_parallel = 1;
    for (;;) {
        seen = wait_change(&w->post, seen, &w->worker_sleeps);
        share *s = &w->job;
        ddl_gemm_precision_override = s->precision;
        s->fn(s->ctx, s->tid, s->n);
        publish(&w->done, seen, &w->caller_sleeps);
    }
    return NULL;
}

static void pool_after_fork_in_child(void) {
    pool_size = 0;
    memset(pool, 0, sizeof pool);
    pthread_mutex_init(&pool_lock, NULL);
}

static void pool_register_atfork(void) { pthread_atfork(NULL, NULL, pool_after_fork_in_child); }

/* Start workers until slots 1 .. n-1 exist (as many as can start); under pool_lock. */
static void pool_grow(int n) {
    pthread_once(&atfork_once, pool_register_atfork);
    while (pool_size < n - 1) {
        slot *w = &pool[pool_size + 1];
        memset(w, 0, sizeof *w);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&th, &attr, worker_main, w) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        pool_size++;
    }
}

/* The fallback: threads started for this call (a second concurrent caller). */
static void *run_share(void *p) {
    share *s = p;
    in_parallel = 1;
    ddl_gemm_precision_override = s->precision;
    s->fn(s->ctx, s->tid, s->n);
    return NULL;
}

static void run_spawned(int n, ddl_parallel_fn fn, void *ctx, int precision) {
    share s[MAX_WORKERS];
    pthread_t th[MAX_WORKERS];
    int started[MAX_WORKERS] = {0};
    for (int i = 1; i < n; i++) {
        s[i] = (share){fn, ctx, i, n, precision};
        started[i] = pthread_create(&th[i], NULL, run_share, &s[i]) == 0;
    }
    fn(ctx, 0, n);
    for (int i = 1; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn(ctx, i, n); /* no thread: run its share here */
    }
}

static void run_pooled(int n, ddl_parallel_fn fn, void *ctx, int precision) {
    pool_grow(n);
    int workers = pool_size < n - 1 ? pool_size : n - 1;
    uint32_t ticket[MAX_WORKERS];
    for (int i = 1; i <= workers; i++) {
        slot *w = &pool[i];
        w->job = (share){fn, ctx, i, n, precision};
        ticket[i] = __atomic_load_n(&w->post, __ATOMIC_RELAXED) + 1;
        publish(&w->post, ticket[i], &w->worker_sleeps);
    }
    fn(ctx, 0, n);
    for (int i = workers + 1; i < n; i++) fn(ctx, i, n); /* shares no worker could take */
    for (int i = 1; i <= workers; i++) {
        slot *w = &pool[i];
        uint32_t d = __atomic_load_n(&w->done, __ATOMIC_ACQUIRE);
        while (d != ticket[i]) d = wait_change(&w->done, d, &w->caller_sleeps);
    }
}

int ddl_parallel_run(int want, ddl_parallel_fn fn, void *ctx) {
    int n = want < ddl_num_threads ? want : ddl_num_threads;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    if (n <= 1 || in_parallel) {
        fn(ctx, 0, 1);
        return 1;
    }
    int blas = ddl_openblas_get_num_threads();
    if (blas > 1) ddl_openblas_set_num_threads(1);
    int precision = ddl_gemm_precision();
    in_parallel = 1;
    if (pthread_mutex_trylock(&pool_lock) == 0) {
        run_pooled(n, fn, ctx, precision);
        pthread_mutex_unlock(&pool_lock);
    } else {
        run_spawned(n, fn, ctx, precision);
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
