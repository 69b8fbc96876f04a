/* core.h: the tensor core of ddl's C API (errors, dtypes, storage, tensors, ops, RNG, threads).
 *
 * Overview
 * --------
 * A `ddl_tensor` is a strided view (dtype, shape, strides, offset) of a refcounted
 * `ddl_storage`. A storage either owns 64-byte-aligned memory or borrows a buffer that
 * someone else owns (a NumPy array) and calls a release callback when its last reference
 * goes. Views (reshape, transpose, slicing, ...) share the storage.
 *
 * Every fallible call returns a `ddl_status`: DDL_OK (0) or a negative error code. On error a
 * thread-local message says what went wrong and where; read it with ddl_last_error().
 * Nothing in the core aborts, exits or prints on caller input.
 *
 * Ownership: functions that produce a tensor write a new reference to `*out`; the caller
 * owns it and gives it back with ddl_tensor_release(). Inputs are borrowed.
 *
 * Example
 * -------
 *     ddl_tensor *a = NULL, *b = NULL, *c = NULL;
 *     int64_t shape[2] = {2, 3};
 *     if (ddl_tensor_full(&a, DDL_FLOAT32, 2, shape, 1.0) ||
 *         ddl_tensor_full(&b, DDL_FLOAT32, 2, shape, 2.0) ||
 *         ddl_add(&c, a, b))
 *         fprintf(stderr, "ddl: %s\n", ddl_last_error());
 *     ddl_tensor_release(a); ddl_tensor_release(b); ddl_tensor_release(c);
 */
#ifndef DDL_CORE_H
#define DDL_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors --------------------------------------------------------------------------- */

typedef enum {
    DDL_OK = 0,
    DDL_E_VALUE = -1,    /* bad shape or value (Python: ValueError) */
    DDL_E_TYPE = -2,     /* unsupported dtype (TypeError) */
    DDL_E_INDEX = -3,    /* index out of range (IndexError) */
    DDL_E_NOMEM = -4,    /* allocation failed or too large (MemoryError) */
    DDL_E_COMM = -5,     /* communication failure (ddl.distributed.DistributedError) */
    DDL_E_TIMEOUT = -6,  /* a deadline passed (DistributedTimeoutError) */
    DDL_E_INTERNAL = -7, /* a bug in ddl (RuntimeError) */
} ddl_status;

/* The message of the last error raised on this thread ("" when none). */
const char *ddl_last_error(void);
/* Set the thread's error message (printf-style) and return `st`. For use by extensions. */
ddl_status ddl_fail(ddl_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *ddl_status_name(ddl_status st);

/* What a failure was about beyond its message, as fields: set by the layer that detected it
 * (a dead peer, a timeout, a store that went away), read by whoever reports it (the Python
 * binding puts them on the exception). Nobody parses a message to find them. Every ddl_fail
 * clears the record to "nothing known" (the -1 / 0 / "" values below); the detecting code
 * then fills what it knows with ddl_error_detail(). */
#define DDL_ERROR_MAX_RANKS 16
typedef struct {
    int sys_errno;                  /* errno of the failing system call, or 0 */
    int rank;                       /* the reporting process's rank, or -1 */
    int n_ranks;                    /* how many of ranks[] are set */
    int ranks[DDL_ERROR_MAX_RANKS]; /* the ranks at fault (dead, missing, disagreeing) */
    int64_t seq;                    /* the collective's sequence number, or -1 */
    char op[32];                    /* the collective or store call ("allreduce", "get"), or "" */
    char peer[96];                  /* the peer's address ("host:port"), or "" */
} ddl_error_info;

/* This thread's record of the last error (valid until the next ddl_fail on this thread). */
const ddl_error_info *ddl_last_error_info(void);
/* The record to fill after ddl_fail (this thread's); returns it. */
ddl_error_info *ddl_error_detail(void);

/* ---- dtypes ----------------------------------------------------------------------------- */

typedef enum {
    DDL_FLOAT32 = 0,
    DDL_FLOAT64 = 1,
    DDL_INT64 = 2,
    DDL_BOOL = 3, /* one byte, 0 or 1 */
    /* storage dtypes: ops compute in int64 / float32 and cast the result back */
    DDL_INT32 = 4,
    DDL_INT16 = 5,
    DDL_INT8 = 6,
    DDL_UINT8 = 7,
    DDL_FLOAT16 = 8,  /* IEEE binary16 */
    DDL_BFLOAT16 = 9, /* the top 16 bits of a float32 */
} ddl_dtype;
#define DDL_NUM_DTYPES 10
#define DDL_MAX_DIMS 8

size_t ddl_dtype_size(ddl_dtype dt);
const char *ddl_dtype_name(ddl_dtype dt);
/* The dtype of a binary op's result, PyTorch's rule: bool < integers < floats; within integers
 * the wider (uint8 with int8 -> int16), within floats the wider (float16 with bfloat16 ->
 * float32); an integer with a float gives the float. */
ddl_dtype ddl_promote(ddl_dtype a, ddl_dtype b);
/* float32, float64, float16, bfloat16. */
int ddl_dtype_is_float(ddl_dtype dt);
/* The dtype ops compute a storage dtype in: the integers int64, float16/bfloat16 float32. */
ddl_dtype ddl_dtype_compute(ddl_dtype dt);

/* ---- storage ---------------------------------------------------------------------------- */

typedef void (*ddl_release_fn)(void *ctx);

typedef struct ddl_storage {
    int64_t refcount; /* atomic */
    void *data;       /* 64-byte aligned when owned */
    size_t nbytes;
    ddl_release_fn release; /* NULL: owned, freed with free(); else called with release_ctx */
    void *release_ctx;
} ddl_storage;

/* New owned storage of `nbytes` (zero-filled when `zero`). */
ddl_status ddl_storage_new(ddl_storage **out, size_t nbytes, int zero);
/* A storage over memory owned elsewhere: `release(ctx)` runs when the last reference goes. */
ddl_status ddl_storage_borrow(ddl_storage **out, void *data, size_t nbytes, ddl_release_fn release,
                              void *ctx);
/* Add a reference; returns s. */
ddl_storage *ddl_storage_retain(ddl_storage *s);
void ddl_storage_release(ddl_storage *s);

/* ---- tensors ---------------------------------------------------------------------------- */

struct ddl_node;      /* autograd graph node (private to the autograd layer) */
struct ddl_leaf_hook; /* a leaf's gradient-ready hook (private to the autograd layer) */

typedef struct ddl_tensor {
    int64_t refcount; /* atomic */
    ddl_dtype dtype;
    int ndim;
    int64_t shape[DDL_MAX_DIMS];
    int64_t strides[DDL_MAX_DIMS]; /* in elements */
    int64_t offset;                /* in elements, into storage */
    ddl_storage *storage;
    /* autograd (autograd.h) */
    int requires_grad;
    struct ddl_tensor *grad;    /* accumulated gradient of a leaf, or NULL */
    struct ddl_node *grad_fn;   /* the node that made this tensor (NULL for leaves) */
    struct ddl_leaf_hook *hook; /* set by ddl_tensor_set_hook, else NULL */
} ddl_tensor;

/* Add a reference; returns t. */
ddl_tensor *ddl_tensor_retain(ddl_tensor *t);
void ddl_tensor_release(ddl_tensor *t); /* NULL is a no-op */

int64_t ddl_tensor_numel(const ddl_tensor *t);
int ddl_tensor_is_contiguous(const ddl_tensor *t);
/* Pointer to the first element (storage data + offset). */
void *ddl_tensor_data(const ddl_tensor *t);

/* Creation. `shape` has `ndim` entries (0 <= ndim <= DDL_MAX_DIMS, each >= 0). */
ddl_status ddl_tensor_empty(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape);
ddl_status ddl_tensor_zeros(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape);
ddl_status ddl_tensor_full(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape,
                           double value);
/* A view of `storage` (retained). Strides in elements; checked against the storage size. */
ddl_status ddl_tensor_from_storage(ddl_tensor **out, ddl_storage *storage, ddl_dtype dt, int ndim,
                                   const int64_t *shape, const int64_t *strides, int64_t offset);
/* 1-D: start, start+step, ... < end (> end for negative step). */
ddl_status ddl_tensor_arange(ddl_tensor **out, ddl_dtype dt, double start, double end, double step);
ddl_status ddl_tensor_linspace(ddl_tensor **out, ddl_dtype dt, double start, double end,
                               int64_t steps);
ddl_status ddl_tensor_eye(ddl_tensor **out, ddl_dtype dt, int64_t n, int64_t m);

/* Views (share storage). Negative dims count from the end. */
ddl_status ddl_tensor_view(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *shape);
/* Like view, but copies when the strides do not allow a view; one dim may be -1. */
ddl_status ddl_tensor_reshape(ddl_tensor **out, const ddl_tensor *t, int ndim,
                              const int64_t *shape);
ddl_status ddl_tensor_permute(ddl_tensor **out, const ddl_tensor *t, const int *dims);
ddl_status ddl_tensor_transpose(ddl_tensor **out, const ddl_tensor *t, int d0, int d1);
ddl_status ddl_tensor_squeeze(ddl_tensor **out, const ddl_tensor *t, int dim); /* dim DDL_ALL */
ddl_status ddl_tensor_unsqueeze(ddl_tensor **out, const ddl_tensor *t, int dim);
ddl_status ddl_tensor_flatten(ddl_tensor **out, const ddl_tensor *t, int start, int end);
/* Basic indexing on one dim: start:stop:step (step > 0, bounds already clamped) */
ddl_status ddl_tensor_slice(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t start,
                            int64_t stop, int64_t step);
/* Integer index on one dim: drops the dim. Negative indices count from the end. */
ddl_status ddl_tensor_select(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t index);
/* Broadcast `t` to `shape` as a stride-0 view (NumPy rules). */
ddl_status ddl_tensor_expand(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *shape);
#define DDL_ALL (-1000)

/* Copies */
ddl_status ddl_tensor_contiguous(ddl_tensor **out, const ddl_tensor *t); /* same t if already */
ddl_status ddl_tensor_clone(ddl_tensor **out, const ddl_tensor *t);
ddl_status ddl_tensor_to(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt);
/* dst[...] = src, broadcasting src to dst's shape, converting dtype. */
ddl_status ddl_copy_(ddl_tensor *dst, const ddl_tensor *src);
ddl_status ddl_fill_(ddl_tensor *dst, double value);
ddl_status ddl_zero_(ddl_tensor *dst);
/* Read one element (by flat index in logical row-major order) as a double. */
ddl_status ddl_tensor_item(double *out, const ddl_tensor *t, int64_t flat_index);

/* ---- elementwise ops (NumPy broadcasting; result dtype by ddl_promote) ----------------- */

typedef enum {
    DDL_OP_ADD,
    DDL_OP_SUB,
    DDL_OP_MUL,
    DDL_OP_DIV,
    DDL_OP_POW,
    DDL_OP_MAXIMUM,
    DDL_OP_MINIMUM,
    DDL_OP_EQ,
    DDL_OP_NE,
    DDL_OP_LT,
    DDL_OP_LE,
    DDL_OP_GT,
    DDL_OP_GE, /* -> bool */
    DDL_NUM_BINARY_OPS
} ddl_binary_op;

typedef enum {
    DDL_OP_NEG,
    DDL_OP_EXP,
    DDL_OP_LOG,
    DDL_OP_SQRT,
    DDL_OP_ABS,
    DDL_OP_TANH,
    DDL_OP_SIGMOID,
    DDL_OP_RELU,
    DDL_OP_SIGN,
    DDL_OP_SIN,
    DDL_OP_COS,
    DDL_NUM_UNARY_OPS
} ddl_unary_op;

ddl_status ddl_binary(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, const ddl_tensor *b);
/* In place: a = a op b, b broadcast to a's shape; a keeps its dtype. */
ddl_status ddl_binary_(ddl_tensor *a, ddl_binary_op op, const ddl_tensor *b);
/* op with a scalar on the right (`reverse`: on the left). The scalar takes a's dtype, except
 * that a float scalar with an integer or bool tensor gives float32 (PyTorch's rule). */
ddl_status ddl_binary_scalar(ddl_tensor **out, ddl_binary_op op, const ddl_tensor *a, double s,
                             int scalar_is_float, int reverse);
ddl_status ddl_binary_scalar_(ddl_tensor *a, ddl_binary_op op, double s);
/* Unary float ops on an integer tensor give float32. */
ddl_status ddl_unary(ddl_tensor **out, ddl_unary_op op, const ddl_tensor *a);
ddl_status ddl_unary_(ddl_tensor *a, ddl_unary_op op);
/* clamp to [lo, hi]; has_lo/has_hi say which bound applies. */
ddl_status ddl_clamp(ddl_tensor **out, const ddl_tensor *a, int has_lo, double lo, int has_hi,
                     double hi);
/* out = cond ? a : b (cond bool, all broadcast). */
/* out = src taken at flat (row-major) positions: out has index's shape and src's dtype,
 * out[i] = src.flat[index[i]]. index is int64 with every entry in [0, numel(src)) (else
 * DDL_E_INDEX). gather, index_select and advanced indexing are this with computed positions. */
ddl_status ddl_take(ddl_tensor **out, const ddl_tensor *src, const ddl_tensor *index);
/* The backward of ddl_take: dsrc.flat[index[i]] += dout[i] (repeated positions accumulate).
 * dsrc is contiguous float32 or float64 with numel(src) elements, dout has index's shape and
 * dsrc's dtype; the caller zeroes dsrc. */
ddl_status ddl_take_backward(ddl_tensor *dsrc, const ddl_tensor *dout, const ddl_tensor *index);
ddl_status ddl_where(ddl_tensor **out, const ddl_tensor *cond, const ddl_tensor *a,
                     const ddl_tensor *b);

static inline ddl_status ddl_add(ddl_tensor **out, const ddl_tensor *a, const ddl_tensor *b) {
    return ddl_binary(out, DDL_OP_ADD, a, b);
}

/* ---- reductions ------------------------------------------------------------------------- */

typedef enum {
    DDL_REDUCE_SUM,
    DDL_REDUCE_MEAN,
    DDL_REDUCE_MAX,
    DDL_REDUCE_MIN,
    DDL_REDUCE_ARGMAX,
    DDL_REDUCE_ARGMIN,
    DDL_REDUCE_VAR,
    DDL_REDUCE_STD,
    DDL_REDUCE_PROD,
    DDL_NUM_REDUCE_OPS
} ddl_reduce_op;

/* Reduce over `ndims` dims in `dims` (ndims == 0: all dims). `correction` is var/std's
 * divisor offset (1: unbiased). Sums of integer tensors stay int64; mean/var/std of integers
 * give float32; arg* give int64 and accept at most one dim. max/min/arg* of an empty
 * reduction are a ValueError. */
ddl_status ddl_reduce(ddl_tensor **out, ddl_reduce_op op, const ddl_tensor *a, int ndims,
                      const int *dims, int keepdim, int64_t correction);

/* ---- linear algebra, joining --------------------------------------------------------- */

/* NumPy matmul semantics: 1-D, 2-D and batched (broadcast batch dims). float32/float64. */
ddl_status ddl_matmul(ddl_tensor **out, const ddl_tensor *a, const ddl_tensor *b);
ddl_status ddl_cat(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim);
ddl_status ddl_stack(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim);

/* ---- random numbers (counter-based Philox4x32-10) ------------------------------------- */
/* The same seed gives the same numbers on every machine and for every thread count. */

void ddl_manual_seed(uint64_t seed);
uint64_t ddl_initial_seed(void);
/* Generator state (seed, offset): restore it with ddl_rng_set_state. */
void ddl_rng_get_state(uint64_t *seed, uint64_t *offset);
void ddl_rng_set_state(uint64_t seed, uint64_t offset);
ddl_status ddl_rand(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape);  /* [0,1) */
ddl_status ddl_randn(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape); /* N(0,1) */
ddl_status ddl_randint(ddl_tensor **out, int64_t low, int64_t high, int ndim,
                       const int64_t *shape); /* int64 in [low, high) */

/* ---- threads, BLAS ------------------------------------------------------------------------ */

/* Keep freed heap memory for reuse instead of returning it to the kernel every step (glibc
 * mallopt); called once when the Python module loads. DDL_MALLOC_DEFAULTS=1 opts out. */
void ddl_tune_allocator(void);
void ddl_set_num_threads(int n);
int ddl_get_num_threads(void);
/* bf16 autocast of the layer GEMMs (Linear, conv2d, the recurrent ops): with `on`, their
 * matrix products round both operands to bf16 and accumulate in float32, on AMX tiles or else
 * with AVX512-BF16, where the CPU and kernel offer one (ddl_autocast_bf16_supported); tensors
 * stay float32. Process-wide (PyTorch's autocast is per thread). Backward follows the mode its
 * forward ran in. Without either the products stay float32 whatever the setting. */
void ddl_set_autocast_bf16(int on);
int ddl_get_autocast_bf16(void);
int ddl_autocast_bf16_supported(void);
/* Which OpenBLAS kernel runs ("SkylakeX", "Haswell", ...). */
const char *ddl_blas_corename(void);
const char *ddl_blas_version(void);

#ifdef __cplusplus
}
#endif
#endif /* DDL_CORE_H */
