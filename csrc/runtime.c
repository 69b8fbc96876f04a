/* runtime.c: thread counts and BLAS identification. */
#include "blas.h"
#include "internal.h"

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
