/* internal.h: helpers shared by the core's .c files; not part of the public API. */
#ifndef DDL_INTERNAL_H
#define DDL_INTERNAL_H

#include "ddl/core.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* Set the thread's message and return the status from the current function. */
#define DDL_FAIL(st, ...)                                                                          \
    do {                                                                                           \
        ddl_fail((st), __VA_ARGS__);                                                               \
        return (st); /* a constant, so the compiler sees the error path */                         \
    } while (0)
/* Propagate a failing status. */
#define DDL_TRY(expr)                                                                              \
    do {                                                                                           \
        ddl_status st_ = (expr);                                                                   \
        if (st_ != DDL_OK) return st_;                                                             \
    } while (0)

/* Largest tensor a single allocation may describe (guards size arithmetic overflow). */
#define DDL_MAX_NBYTES ((size_t)1 << 46)

/* Work per call above which the binding releases the GIL and kernels may split work. */
#define DDL_PARALLEL_MIN_ELEMS 32768

/* Format a shape as "(2, 3)" into buf; returns buf. */
const char *ddl_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);
#define DDL_SHAPE_BUF 160

/* Checked product of a shape; DDL_E_VALUE on a negative dim, DDL_E_NOMEM on overflow. */
ddl_status ddl_shape_numel(int64_t *out, int ndim, const int64_t *shape);
/* Normalize a possibly-negative dim for a tensor of `ndim` dims (-ndim..ndim-1). */
ddl_status ddl_norm_dim(int *out, int dim, int ndim, const char *who);

/* Broadcast two shapes (NumPy rules) into out; *out_ndim set. */
ddl_status ddl_broadcast_shapes(int *out_ndim, int64_t *out, int na, const int64_t *a, int nb,
                                const int64_t *b, const char *who);

/* Strides of `t` broadcast to an output of (ndim, shape): 0 along broadcast dims. `t` must be
 * broadcast-compatible (checked by the caller). */
void ddl_broadcast_strides(int64_t *strides, const ddl_tensor *t, int ndim, const int64_t *shape);

/* Contiguous row-major strides for a shape. */
void ddl_contiguous_strides(int64_t *strides, int ndim, const int64_t *shape);

/* One float32 <-> fp16 / bfloat16 (half.c; round to nearest even, NaN kept). */
uint16_t ddl_f32_to_f16(float f);
float ddl_f16_to_f32(uint16_t h);
uint16_t ddl_f32_to_bf16(float f);
float ddl_bf16_to_f32(uint16_t h);

/* Load element i (by byte pointer) of dtype dt as double, and store. Integers store with
 * C's wrap-around of the int64 value (as PyTorch's casts do). */
static inline double ddl_load_elem(const void *p, ddl_dtype dt) {
    switch (dt) {
    case DDL_FLOAT32: return *(const float *)p;
    case DDL_FLOAT64: return *(const double *)p;
    case DDL_INT64: return (double)*(const int64_t *)p;
    case DDL_INT32: return *(const int32_t *)p;
    case DDL_INT16: return *(const int16_t *)p;
    case DDL_INT8: return *(const int8_t *)p;
    case DDL_UINT8: return *(const uint8_t *)p;
    case DDL_FLOAT16: return ddl_f16_to_f32(*(const uint16_t *)p);
    case DDL_BFLOAT16: return ddl_bf16_to_f32(*(const uint16_t *)p);
    default: return *(const uint8_t *)p ? 1.0 : 0.0;
    }
}
static inline int64_t ddl_double_to_i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}
static inline void ddl_store_elem(void *p, ddl_dtype dt, double v) {
    switch (dt) {
    case DDL_FLOAT32: *(float *)p = (float)v; break;
    case DDL_FLOAT64: *(double *)p = v; break;
    case DDL_INT64: *(int64_t *)p = (int64_t)v; break;
    case DDL_INT32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)ddl_double_to_i64(v); break;
    case DDL_INT16: *(int16_t *)p = (int16_t)(uint16_t)(uint64_t)ddl_double_to_i64(v); break;
    case DDL_INT8: *(int8_t *)p = (int8_t)(uint8_t)(uint64_t)ddl_double_to_i64(v); break;
    case DDL_UINT8: *(uint8_t *)p = (uint8_t)(uint64_t)ddl_double_to_i64(v); break;
    case DDL_FLOAT16: *(uint16_t *)p = ddl_f32_to_f16((float)v); break;
    case DDL_BFLOAT16: *(uint16_t *)p = ddl_f32_to_bf16((float)v); break;
    default: *(uint8_t *)p = v != 0.0; break;
    }
}

/* An N-d index walker over a shape: advance() bumps the index in row-major order and updates
 * up to 3 byte offsets with per-operand byte strides. Kernels call it once per inner row. */
typedef struct {
    int ndim; /* outer dims walked (the innermost dim is the kernel's row) */
    int64_t shape[DDL_MAX_DIMS];
    int64_t idx[DDL_MAX_DIMS];
    int64_t stride[3][DDL_MAX_DIMS]; /* bytes */
    int64_t off[3];                  /* bytes */
    int nops;
} ddl_iter;

void ddl_iter_init(ddl_iter *it, int ndim, const int64_t *shape, int nops,
                   const int64_t (*byte_strides)[DDL_MAX_DIMS]);
static inline void ddl_iter_next(ddl_iter *it) {
    for (int d = it->ndim - 1; d >= 0; d--) {
        if (++it->idx[d] < it->shape[d]) {
            for (int k = 0; k < it->nops; k++) it->off[k] += it->stride[k][d];
            return;
        }
        it->idx[d] = 0;
        for (int k = 0; k < it->nops; k++) it->off[k] -= it->stride[k][d] * (it->shape[d] - 1);
    }
}

/* Merge dims contiguous for all operands (byte strides); returns the new ndim. */
int ddl_coalesce(int ndim, int64_t *shape, int nops, int64_t (*strides)[DDL_MAX_DIMS]);

/* Whether a and b may share memory: the same storage and overlapping element spans
 * (conservative: interleaved views count as overlapping). */
int ddl_tensor_may_overlap(const ddl_tensor *a, const ddl_tensor *b);
/* Whether a and b view the same elements in the same order (an in-place op may alias them). */
int ddl_tensor_same_view(const ddl_tensor *a, const ddl_tensor *b);
/* Whether two of t's elements share memory (a stride-0 dim of size > 1, as from expand). */
int ddl_tensor_has_internal_overlap(const ddl_tensor *t);

/* A new header over t's storage with (ndim, shape, strides, offset): the one constructor of
 * views (views.c); not checked against the storage (the callers derive valid strides). */
ddl_status ddl_view_of(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *shape,
                       const int64_t *strides, int64_t offset);

/* Allocate a tensor shaped like (ndim, shape) (contiguous). */
static inline ddl_status ddl_new_like_shape(ddl_tensor **out, ddl_dtype dt, int ndim,
                                            const int64_t *shape) {
    return ddl_tensor_empty(out, dt, ndim, shape);
}

/* The header of a refcounted object a tensor points to but core does not define (an autograd
 * node, a leaf hook): core drops its reference without knowing what it is, so core never
 * includes the autograd layer above it. The object's own layer sets `destroy`. */
typedef struct ddl_object {
    int64_t refcount; /* atomic */
    void (*destroy)(struct ddl_object *self);
} ddl_object;

static inline void ddl_object_release(ddl_object *o) {
    if (o &&
        atomic_fetch_sub_explicit((_Atomic int64_t *)&o->refcount, 1, memory_order_acq_rel) == 1)
        o->destroy(o);
}

/* stack as its two steps, for the plain op and its differentiable twin alike: check the
 * shapes, `unsqueeze` each input at the (normalized) new dim, then `cat` them along it. The
 * plain ddl_stack passes ddl_tensor_unsqueeze and ddl_cat; autograd passes its recorded ones. */
typedef ddl_status (*ddl_unsqueeze_fn)(ddl_tensor **out, const ddl_tensor *t, int dim);
typedef ddl_status (*ddl_cat_fn)(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim);
ddl_status ddl_stack_with(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim,
                          ddl_unsqueeze_fn unsqueeze, ddl_cat_fn cat);

/* Threads for ddl's own kernels (OpenBLAS keeps its own count, set together). */
extern int ddl_num_threads;

/* Run fn(ctx, tid, nthreads) on tid = 0 .. nthreads-1 concurrently (tid 0 on the calling
 * thread, the others on the persistent pool's workers, or, while another thread uses the
 * pool, on threads started for this call) and wait for all of them; nthreads is
 * min(want, ddl_num_threads), and at most 1 runs inline. While several run, OpenBLAS is set to
 * one thread, so each worker's sgemm is single-threaded (no pool fork/join per product) and
 * restored afterwards. If a thread cannot start, its share runs on the calling thread. Returns
 * the number of shares (nthreads). */
typedef void (*ddl_parallel_fn)(void *ctx, int tid, int nthreads);
int ddl_parallel_run(int want, ddl_parallel_fn fn, void *ctx);

/* The precision the layer GEMMs of this thread use: a thread-local override (-1: none, 0:
 * float32, 1: bf16), else the process-wide autocast setting. Backward sets the override to
 * the mode its forward recorded; ddl_parallel_run hands the caller's precision to its
 * workers. */
extern _Thread_local int ddl_gemm_precision_override;
int ddl_gemm_precision(void);

/* C (M, N) = op(A) @ op(B) + beta * C (row-major, beta 0 or 1, like cblas_sgemm with alpha 1)
 * for the layer kernels: bf16 (AMX, else AVX512-BF16) when ddl_gemm_precision() asks for it,
 * a path is available and the product is large enough to gain (else, or without memory to
 * pack, OpenBLAS sgemm). */
void ddl_gemm_f32(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Whether ddl_gemm_f32 would take the bf16 path for this shape now (a caller that splits a
 * product over threads keeps such a product whole: the bf16 kernels thread themselves). */
int ddl_gemm_takes_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K);
/* gemm_bf16.c: which bf16 path runs (0: none; gemm_bf16.h names them) and the bf16 product
 * on it (DDL_E_INTERNAL without one, DDL_E_NOMEM). */
int ddl_bf16_gemm_available(void);
ddl_status ddl_gemm_bf16(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                         int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                         int64_t ldc);

#endif
