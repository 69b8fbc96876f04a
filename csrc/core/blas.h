/* blas.h: the one BLAS ddl links, OpenBLAS from the scipy-openblas32 wheel (symbols prefixed
 * `scipy_`). Debian 12's OpenBLAS 0.3.21 does not know this CPU and runs its SSE3 kernel at a
 * quarter of the speed: see docs/architecture.md. */
#ifndef DDL_BLAS_H
#define DDL_BLAS_H
#include <cblas.h>

#define ddl_cblas_sgemm scipy_cblas_sgemm
#define ddl_cblas_dgemm scipy_cblas_dgemm
#define ddl_openblas_set_num_threads scipy_openblas_set_num_threads
#define ddl_openblas_get_num_threads scipy_openblas_get_num_threads
#define ddl_openblas_get_corename scipy_openblas_get_corename
#define ddl_openblas_get_config scipy_openblas_get_config
#endif
