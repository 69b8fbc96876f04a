/* runtime.c: thread counts and BLAS identification. */
#include "core/blas.h"
#include "core/internal.h"

#include <stdio.h>

int ddl_num_threads = 1;

void ddl_set_num_threads(int n) {
    if (n < 1) n = 1;
    ddl_num_threads = n;
    ddl_openblas_set_num_threads(n);
}

int ddl_get_num_threads(void) { return ddl_num_threads; }

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
