/* tensor.c: dtypes, storage and tensor lifetime, creation, copies and conversion (views are in
 * views.c). */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* ---- dtypes ---------------------------------------------------------------------------- */

size_t ddl_dtype_size(ddl_dtype dt) {
    static const size_t sizes[DDL_NUM_DTYPES] = {4, 8, 8, 1, 4, 2, 1, 1, 2, 2};
    return (unsigned)dt < DDL_NUM_DTYPES ? sizes[dt] : 0;
}

const char *ddl_dtype_name(ddl_dtype dt) {
    static const char *names[DDL_NUM_DTYPES] = {"float32", "float64", "int64", "bool",
                                                "int32",   "int16",   "int8",  "uint8",
                                                "float16", "bfloat16"};
    return (unsigned)dt < DDL_NUM_DTYPES ? names[dt] : "invalid";
}

int ddl_dtype_is_float(ddl_dtype dt) {
    return dt == DDL_FLOAT32 || dt == DDL_FLOAT64 || dt == DDL_FLOAT16 || dt == DDL_BFLOAT16;
}

ddl_dtype ddl_dtype_compute(ddl_dtype dt) {
    switch (dt) {
    case DDL_INT32:
    case DDL_INT16:
    case DDL_INT8:
    case DDL_UINT8: return DDL_INT64;
    case DDL_FLOAT16:
    case DDL_BFLOAT16: return DDL_FLOAT32;
    default: return dt;
    }
}

ddl_dtype ddl_promote(ddl_dtype a, ddl_dtype b) {
    if (a == b) return a;
    /* kind: 0 bool, 1 integer, 2 float; within a kind, rank by width */
    static const int kind[DDL_NUM_DTYPES] = {2, 2, 1, 0, 1, 1, 1, 1, 2, 2};
    static const int rank[DDL_NUM_DTYPES] = {2, 3, 4, 0, 3, 2, 1, 1, 1, 1};
    if (kind[a] != kind[b]) return kind[a] > kind[b] ? a : b;
    if ((a == DDL_UINT8 && b == DDL_INT8) || (a == DDL_INT8 && b == DDL_UINT8)) return DDL_INT16;
    if ((a == DDL_FLOAT16 && b == DDL_BFLOAT16) || (a == DDL_BFLOAT16 && b == DDL_FLOAT16))
        return DDL_FLOAT32;
    return rank[a] >= rank[b] ? a : b;
}

/* ---- storage --------------------------------------------------------------------------- */

/* An owned storage is one malloc block: the header, then the data at the next 64-byte boundary
 * (a malloc + aligned_alloc pair cost a small op a quarter of its time). release_ctx == the
 * header itself marks such a block; a storage borrowed with release NULL still frees its data.
 * Blocks of 4 MiB and more ask for transparent huge pages, as NumPy does: where THP is in
 * "madvise" mode, a fresh 64 MiB result then faults in 32 pages instead of 16384. */
#define HUGE_PAGE_MIN_BYTES ((size_t)4 << 20)

ddl_status ddl_storage_new(ddl_storage **out, size_t nbytes, int zero) {
    if (nbytes > DDL_MAX_NBYTES)
        DDL_FAIL(DDL_E_NOMEM, "cannot allocate %zu bytes: larger than ddl's limit of %zu", nbytes,
                 (size_t)DDL_MAX_NBYTES);
    size_t alloc = nbytes ? (nbytes + 63) & ~(size_t)63 : 64;
    ddl_storage *s = malloc(sizeof *s + 63 + alloc);
    if (!s) DDL_FAIL(DDL_E_NOMEM, "out of memory allocating %zu bytes", nbytes);
    s->data = (void *)(((uintptr_t)(s + 1) + 63) & ~(uintptr_t)63);
#if defined(MADV_HUGEPAGE)
    if (alloc >= HUGE_PAGE_MIN_BYTES) {
        uintptr_t lo = ((uintptr_t)s->data + 4095) & ~(uintptr_t)4095;
        uintptr_t hi = ((uintptr_t)s->data + alloc) & ~(uintptr_t)4095;
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* a hint: failure is harmless */
    }
#endif
    if (zero) memset(s->data, 0, alloc);
    s->refcount = 1;
    s->nbytes = nbytes;
    s->release = NULL;
    s->release_ctx = s;
    *out = s;
    return DDL_OK;
}

ddl_status ddl_storage_borrow(ddl_storage **out, void *data, size_t nbytes, ddl_release_fn release,
                              void *ctx) {
    ddl_storage *s = malloc(sizeof *s);
    if (!s) DDL_FAIL(DDL_E_NOMEM, "out of memory allocating a storage header");
    s->refcount = 1;
    s->data = data;
    s->nbytes = nbytes;
    s->release = release;
    s->release_ctx = ctx;
    *out = s;
    return DDL_OK;
}

ddl_storage *ddl_storage_retain(ddl_storage *s) {
    atomic_fetch_add_explicit((_Atomic int64_t *)&s->refcount, 1, memory_order_relaxed);
    return s;
}

void ddl_storage_release(ddl_storage *s) {
    if (!s) return;
    if (atomic_fetch_sub_explicit((_Atomic int64_t *)&s->refcount, 1, memory_order_acq_rel) != 1)
        return;
    if (s->release)
        s->release(s->release_ctx);
    else if (s->release_ctx != s)
        free(s->data); /* borrowed with release NULL: the data was handed over */
    free(s);
}

/* ---- tensor lifetime ---------------------------------------------------------------------- */

ddl_tensor *ddl_tensor_retain(ddl_tensor *t) {
    atomic_fetch_add_explicit((_Atomic int64_t *)&t->refcount, 1, memory_order_relaxed);
    return t;
}

void ddl_tensor_release(ddl_tensor *t) {
    if (!t) return;
    if (atomic_fetch_sub_explicit((_Atomic int64_t *)&t->refcount, 1, memory_order_acq_rel) != 1)
        return;
    ddl_tensor_release(t->grad);
    ddl_object_release((ddl_object *)t->grad_fn);
    ddl_object_release((ddl_object *)t->hook);
    ddl_storage_release(t->storage);
    free(t);
}

int64_t ddl_tensor_numel(const ddl_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int ddl_tensor_is_contiguous(const ddl_tensor *t) {
    if (ddl_tensor_numel(t) == 0) return 1; /* no elements: any strides will do (PyTorch) */
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

/* The byte range [*lo, *hi) of t's elements in its storage; empty for an empty tensor. */
static void byte_span(const ddl_tensor *t, int64_t *lo, int64_t *hi) {
    int64_t a = t->offset, b = t->offset, es = (int64_t)ddl_dtype_size(t->dtype);
    if (ddl_tensor_numel(t) == 0) {
        *lo = *hi = 0;
        return;
    }
    for (int i = 0; i < t->ndim; i++) {
        int64_t ext = t->strides[i] * (t->shape[i] - 1);
        if (ext < 0)
            a += ext;
        else
            b += ext;
    }
    *lo = a * es;
    *hi = (b + 1) * es;
}

int ddl_tensor_may_overlap(const ddl_tensor *a, const ddl_tensor *b) {
    if (a->storage != b->storage) return 0;
    int64_t alo, ahi, blo, bhi;
    byte_span(a, &alo, &ahi);
    byte_span(b, &blo, &bhi);
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

int ddl_tensor_same_view(const ddl_tensor *a, const ddl_tensor *b) {
    if (a->storage != b->storage || a->dtype != b->dtype || a->offset != b->offset ||
        a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->strides[i] != b->strides[i]))
            return 0;
    return 1;
}

int ddl_tensor_has_internal_overlap(const ddl_tensor *t) {
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] > 1 && t->strides[i] == 0) return 1;
    return 0;
}

void *ddl_tensor_data(const ddl_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)ddl_dtype_size(t->dtype);
}

void ddl_contiguous_strides(int64_t *strides, int ndim, const int64_t *shape) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

ddl_status ddl_shape_numel(int64_t *out, int ndim, const int64_t *shape) {
    char buf[DDL_SHAPE_BUF];
    if (ndim < 0 || ndim > DDL_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "tensors have at most %d dims, got %d", DDL_MAX_DIMS, ndim);
    int64_t n = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            DDL_FAIL(DDL_E_VALUE, "negative dimension in shape %s",
                     ddl_shape_str(buf, sizeof buf, ndim, shape));
        if (shape[i] && n > INT64_MAX / shape[i])
            overflow = 1;
        else
            n *= shape[i];
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) overflow = 0, n = 0;
    if (overflow)
        DDL_FAIL(DDL_E_NOMEM, "shape %s has too many elements",
                 ddl_shape_str(buf, sizeof buf, ndim, shape));
    *out = n;
    return DDL_OK;
}

ddl_status ddl_norm_dim(int *out, int dim, int ndim, const char *who) {
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        DDL_FAIL(DDL_E_INDEX, "%s: dim %d out of range for a tensor of %d dims", who, dim, ndim);
    *out = dim < 0 ? dim + n : dim;
    return DDL_OK;
}

static ddl_status tensor_alloc(ddl_tensor **out) {
    ddl_tensor *t = calloc(1, sizeof *t);
    if (!t) DDL_FAIL(DDL_E_NOMEM, "out of memory allocating a tensor header");
    t->refcount = 1;
    *out = t;
    return DDL_OK;
}

static ddl_status tensor_new(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape,
                             int zero) {
    if ((unsigned)dt >= DDL_NUM_DTYPES) DDL_FAIL(DDL_E_TYPE, "invalid dtype %d", (int)dt);
    int64_t n;
    DDL_TRY(ddl_shape_numel(&n, ndim, shape));
    if ((uint64_t)n > DDL_MAX_NBYTES / ddl_dtype_size(dt)) {
        char buf[DDL_SHAPE_BUF];
        DDL_FAIL(DDL_E_NOMEM, "cannot allocate a %s tensor of shape %s: too large",
                 ddl_dtype_name(dt), ddl_shape_str(buf, sizeof buf, ndim, shape));
    }
    ddl_tensor *t;
    DDL_TRY(tensor_alloc(&t));
    ddl_status st = ddl_storage_new(&t->storage, (size_t)n * ddl_dtype_size(dt), zero);
    if (st) {
        free(t);
        return st;
    }
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    ddl_contiguous_strides(t->strides, ndim, shape);
    *out = t;
    return DDL_OK;
}

ddl_status ddl_tensor_empty(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape) {
    return tensor_new(out, dt, ndim, shape, 0);
}

ddl_status ddl_tensor_zeros(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape) {
    return tensor_new(out, dt, ndim, shape, 1);
}

ddl_status ddl_tensor_full(ddl_tensor **out, ddl_dtype dt, int ndim, const int64_t *shape,
                           double value) {
    DDL_TRY(tensor_new(out, dt, ndim, shape, value == 0.0 && !signbit(value)));
    if (value != 0.0 || signbit(value)) return ddl_fill_(*out, value);
    return DDL_OK;
}

/* A new header viewing t's storage with the given geometry. */
ddl_status ddl_view_of(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *shape,
                       const int64_t *strides, int64_t offset) {
    ddl_tensor *v;
    DDL_TRY(tensor_alloc(&v));
    v->dtype = t->dtype;
    v->ndim = ndim;
    if (ndim) {
        memcpy(v->shape, shape, sizeof(int64_t) * (size_t)ndim);
        memcpy(v->strides, strides, sizeof(int64_t) * (size_t)ndim);
    }
    v->offset = offset;
    v->storage = t->storage;
    ddl_storage_retain(t->storage);
    *out = v;
    return DDL_OK;
}

ddl_status ddl_tensor_from_storage(ddl_tensor **out, ddl_storage *storage, ddl_dtype dt, int ndim,
                                   const int64_t *shape, const int64_t *strides, int64_t offset) {
    if ((unsigned)dt >= DDL_NUM_DTYPES) DDL_FAIL(DDL_E_TYPE, "invalid dtype %d", (int)dt);
    int64_t n;
    DDL_TRY(ddl_shape_numel(&n, ndim, shape));
    /* every reachable element must lie inside the storage */
    int64_t lo = offset, hi = offset;
    if (n > 0)
        for (int i = 0; i < ndim; i++) {
            int64_t ext = strides[i] * (shape[i] - 1);
            if (ext < 0)
                lo += ext;
            else
                hi += ext;
        }
    int64_t cap = (int64_t)(storage->nbytes / ddl_dtype_size(dt));
    if (n > 0 && (lo < 0 || hi >= cap))
        DDL_FAIL(DDL_E_VALUE, "view reaches elements [%lld, %lld] outside a storage of %lld",
                 (long long)lo, (long long)hi, (long long)cap);
    ddl_tensor *t;
    DDL_TRY(tensor_alloc(&t));
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) {
        memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
        memcpy(t->strides, strides, sizeof(int64_t) * (size_t)ndim);
    }
    t->offset = offset;
    t->storage = storage;
    ddl_storage_retain(storage);
    *out = t;
    return DDL_OK;
}

ddl_status ddl_tensor_arange(ddl_tensor **out, ddl_dtype dt, double start, double end,
                             double step) {
    if (step == 0.0 || !isfinite(step) || !isfinite(start) || !isfinite(end))
        DDL_FAIL(DDL_E_VALUE, "arange: step must be finite and nonzero, bounds finite");
    double cnt = ceil((end - start) / step);
    int64_t n = cnt > 0 ? (int64_t)cnt : 0;
    DDL_TRY(ddl_tensor_empty(out, dt, 1, &n));
    char *p = ddl_tensor_data(*out);
    size_t es = ddl_dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        ddl_store_elem(p + i * (int64_t)es, dt, start + (double)i * step);
    return DDL_OK;
}

ddl_status ddl_tensor_linspace(ddl_tensor **out, ddl_dtype dt, double start, double end,
                               int64_t steps) {
    if (steps < 0)
        DDL_FAIL(DDL_E_VALUE, "linspace: steps must be >= 0, got %lld", (long long)steps);
    DDL_TRY(ddl_tensor_empty(out, dt, 1, &steps));
    char *p = ddl_tensor_data(*out);
    size_t es = ddl_dtype_size(dt);
    double d = steps > 1 ? (end - start) / (double)(steps - 1) : 0.0;
    for (int64_t i = 0; i < steps; i++) {
        /* the second half counts back from `end` so the last value is exact (as NumPy) */
        double v = 2 * i < steps ? start + d * (double)i : end - d * (double)(steps - 1 - i);
        ddl_store_elem(p + i * (int64_t)es, dt, v);
    }
    return DDL_OK;
}

ddl_status ddl_tensor_eye(ddl_tensor **out, ddl_dtype dt, int64_t n, int64_t m) {
    int64_t shape[2] = {n, m < 0 ? n : m};
    DDL_TRY(ddl_tensor_zeros(out, dt, 2, shape));
    char *p = ddl_tensor_data(*out);
    size_t es = ddl_dtype_size(dt);
    for (int64_t i = 0; i < n && i < shape[1]; i++)
        ddl_store_elem(p + (i * shape[1] + i) * (int64_t)es, dt, 1.0);
    return DDL_OK;
}

/* ---- copies ----------------------------------------------------------------------------- */

void ddl_iter_init(ddl_iter *it, int ndim, const int64_t *shape, int nops,
                   const int64_t (*byte_strides)[DDL_MAX_DIMS]) {
    it->ndim = ndim;
    it->nops = nops;
    for (int d = 0; d < ndim; d++) {
        it->shape[d] = shape[d];
        it->idx[d] = 0;
        for (int k = 0; k < nops; k++) it->stride[k][d] = byte_strides[k][d];
    }
    for (int k = 0; k < 3; k++) it->off[k] = 0;
}

/* Merge adjacent dims that are contiguous for every operand, to lengthen inner loops.
 * strides are in bytes, per operand. Returns the new ndim. */
int ddl_coalesce(int ndim, int64_t *shape, int nops, int64_t (*strides)[DDL_MAX_DIMS]) {
    if (ndim <= 1) return ndim;
    int n = 0;
    for (int d = 1; d < ndim; d++) {
        int merge = shape[d] != 1 && shape[n] != 1;
        for (int k = 0; k < nops && merge; k++)
            if (strides[k][n] != strides[k][d] * shape[d]) merge = 0;
        if (shape[d] == 1) continue; /* a size-1 dim adds nothing */
        if (shape[n] == 1 || merge) {
            shape[n] = shape[n] == 1 ? shape[d] : shape[n] * shape[d];
            for (int k = 0; k < nops; k++) strides[k][n] = strides[k][d];
        } else {
            n++;
            shape[n] = shape[d];
            for (int k = 0; k < nops; k++) strides[k][n] = strides[k][d];
        }
    }
    return n + 1;
}

static ddl_status copy_nonoverlapping(ddl_tensor *dst, const ddl_tensor *src);

#define CONVERT_LOOP(DT, ST, EXPR)                                                                 \
    do {                                                                                           \
        for (int64_t i = 0; i < n; i++) {                                                          \
            ST x = *(const ST *)(s + i * ss);                                                      \
            *(DT *)(d + i * ds) = (EXPR);                                                          \
        }                                                                                          \
    } while (0)

/* The conversions between a narrow storage dtype and its compute dtype (every narrow op does
 * two or three of them) without the per-element switch of load/store; 0 if not one of them. */
static int copy_convert_fast(char *d, int64_t ds, ddl_dtype dt, const char *s, int64_t ss,
                             ddl_dtype st, int64_t n) {
    if (st == DDL_INT64) {
        switch (dt) {
        case DDL_INT32: CONVERT_LOOP(int32_t, int64_t, (int32_t)(uint32_t)(uint64_t)x); return 1;
        case DDL_INT16: CONVERT_LOOP(int16_t, int64_t, (int16_t)(uint16_t)(uint64_t)x); return 1;
        case DDL_INT8: CONVERT_LOOP(int8_t, int64_t, (int8_t)(uint8_t)(uint64_t)x); return 1;
        case DDL_UINT8: CONVERT_LOOP(uint8_t, int64_t, (uint8_t)(uint64_t)x); return 1;
        default: return 0;
        }
    }
    if (dt == DDL_INT64) {
        switch (st) {
        case DDL_INT32: CONVERT_LOOP(int64_t, int32_t, x); return 1;
        case DDL_INT16: CONVERT_LOOP(int64_t, int16_t, x); return 1;
        case DDL_INT8: CONVERT_LOOP(int64_t, int8_t, x); return 1;
        case DDL_UINT8: CONVERT_LOOP(int64_t, uint8_t, x); return 1;
        default: return 0;
        }
    }
    if (st == DDL_FLOAT32 && dt == DDL_FLOAT16)
        CONVERT_LOOP(uint16_t, float, ddl_f32_to_f16(x));
    else if (st == DDL_FLOAT32 && dt == DDL_BFLOAT16)
        CONVERT_LOOP(uint16_t, float, ddl_f32_to_bf16(x));
    else if (st == DDL_FLOAT16 && dt == DDL_FLOAT32)
        CONVERT_LOOP(float, uint16_t, ddl_f16_to_f32(x));
    else if (st == DDL_BFLOAT16 && dt == DDL_FLOAT32)
        CONVERT_LOOP(float, uint16_t, ddl_bf16_to_f32(x));
    else
        return 0;
    return 1;
}

ddl_status ddl_copy_(ddl_tensor *dst, const ddl_tensor *src) {
    if (!ddl_tensor_may_overlap(dst, src) || ddl_tensor_same_view(dst, src))
        return copy_nonoverlapping(dst, src);
    /* src shares memory with dst (t[1:] = t[:-1]): copy it out first, as NumPy does */
    ddl_tensor *tmp;
    DDL_TRY(ddl_tensor_clone(&tmp, src));
    ddl_status st = copy_nonoverlapping(dst, tmp);
    ddl_tensor_release(tmp);
    return st;
}

static ddl_status copy_nonoverlapping(ddl_tensor *dst, const ddl_tensor *src) {
    ddl_tensor *bsrc;
    DDL_TRY(ddl_tensor_expand(&bsrc, src, dst->ndim, dst->shape));
    int64_t n = ddl_tensor_numel(dst);
    if (n == 0) {
        ddl_tensor_release(bsrc);
        return DDL_OK;
    }
    size_t ds = ddl_dtype_size(dst->dtype), ss = ddl_dtype_size(src->dtype);
    int64_t shape[DDL_MAX_DIMS], st[2][DDL_MAX_DIMS];
    int nd = dst->ndim;
    for (int d = 0; d < nd; d++) {
        shape[d] = dst->shape[d];
        st[0][d] = dst->strides[d] * (int64_t)ds;
        st[1][d] = bsrc->strides[d] * (int64_t)ss;
    }
    nd = ddl_coalesce(nd, shape, 2, st);
    char *pd = ddl_tensor_data(dst);
    const char *ps = ddl_tensor_data(bsrc);
    int64_t inner = nd ? shape[nd - 1] : 1;
    int64_t isd = nd ? st[0][nd - 1] : 0, iss = nd ? st[1][nd - 1] : 0;
    ddl_iter it;
    ddl_iter_init(&it, nd ? nd - 1 : 0, shape, 2, (const int64_t(*)[DDL_MAX_DIMS])st);
    int64_t rows = n / (inner ? inner : 1);
    int same = dst->dtype == src->dtype;
    for (int64_t r = 0; r < rows; r++, ddl_iter_next(&it)) {
        char *d = pd + it.off[0];
        const char *s = ps + it.off[1];
        if (same && isd == (int64_t)ds && iss == (int64_t)ss) {
            memmove(d, s, (size_t)inner * ds);
        } else if (same && ds == 4) {
            for (int64_t i = 0; i < inner; i++)
                *(uint32_t *)(d + i * isd) = *(const uint32_t *)(s + i * iss);
        } else if (same && ds == 8) {
            for (int64_t i = 0; i < inner; i++)
                *(uint64_t *)(d + i * isd) = *(const uint64_t *)(s + i * iss);
        } else if (dst->dtype == DDL_FLOAT32 && src->dtype == DDL_FLOAT64) {
            for (int64_t i = 0; i < inner; i++)
                *(float *)(d + i * isd) = (float)*(const double *)(s + i * iss);
        } else if (dst->dtype == DDL_FLOAT64 && src->dtype == DDL_FLOAT32) {
            for (int64_t i = 0; i < inner; i++)
                *(double *)(d + i * isd) = *(const float *)(s + i * iss);
        } else if (!copy_convert_fast(d, isd, dst->dtype, s, iss, src->dtype, inner)) {
            for (int64_t i = 0; i < inner; i++)
                ddl_store_elem(d + i * isd, dst->dtype, ddl_load_elem(s + i * iss, src->dtype));
        }
    }
    ddl_tensor_release(bsrc);
    return DDL_OK;
}

ddl_status ddl_tensor_clone(ddl_tensor **out, const ddl_tensor *t) {
    return ddl_tensor_to(out, t, t->dtype);
}

ddl_status ddl_tensor_to(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt) {
    ddl_tensor *c;
    DDL_TRY(ddl_tensor_empty(&c, dt, t->ndim, t->shape));
    ddl_status st = ddl_copy_(c, t);
    if (st) {
        ddl_tensor_release(c);
        return st;
    }
    *out = c;
    return DDL_OK;
}

ddl_status ddl_tensor_contiguous(ddl_tensor **out, const ddl_tensor *t) {
    if (ddl_tensor_is_contiguous(t)) {
        ddl_tensor_retain((ddl_tensor *)t);
        *out = (ddl_tensor *)t;
        return DDL_OK;
    }
    return ddl_tensor_clone(out, t);
}

ddl_status ddl_fill_(ddl_tensor *dst, double value) {
    ddl_tensor *s;
    DDL_TRY(ddl_tensor_empty(&s, dst->dtype, 0, NULL));
    ddl_store_elem(ddl_tensor_data(s), s->dtype, value);
    ddl_status st = ddl_copy_(dst, s);
    ddl_tensor_release(s);
    return st;
}

ddl_status ddl_zero_(ddl_tensor *dst) {
    if (ddl_tensor_is_contiguous(dst)) {
        memset(ddl_tensor_data(dst), 0, (size_t)ddl_tensor_numel(dst) * ddl_dtype_size(dst->dtype));
        return DDL_OK;
    }
    return ddl_fill_(dst, 0.0);
}

ddl_status ddl_tensor_item(double *out, const ddl_tensor *t, int64_t flat) {
    int64_t n = ddl_tensor_numel(t);
    if (flat < 0 || flat >= n)
        DDL_FAIL(DDL_E_INDEX, "element %lld out of range for a tensor of %lld elements",
                 (long long)flat, (long long)n);
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (flat % t->shape[d]) * t->strides[d];
        flat /= t->shape[d];
    }
    *out = ddl_load_elem((const char *)ddl_tensor_data(t) + off * (int64_t)ddl_dtype_size(t->dtype),
                         t->dtype);
    return DDL_OK;
}
