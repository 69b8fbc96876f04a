/* ops_matmul.c: matmul (1-D, 2-D, batched) through OpenBLAS gemm; cat and stack. */
#include "core/blas.h"
#include "core/internal.h"

#include <stdlib.h>

/* How a (rows, cols) matrix view with strides (rs, cs) reaches gemm without a copy:
 * row-major (cs == 1) as NoTrans, column-major (rs == 1) as Trans; 0 when neither. */
static int gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *trans,
                       int64_t *ld) {
    if ((cs == 1 || cols == 1) && rs >= (cols > 1 ? cols : 1)) {
        *trans = 0;
        *ld = rs > 0 ? rs : 1;
        if (*ld < cols) *ld = cols;
        return 1;
    }
    if ((rs == 1 || rows == 1) && cs >= (rows > 1 ? rows : 1)) {
        *trans = 1;
        *ld = cs > 0 ? cs : 1;
        if (*ld < rows) *ld = rows;
        return 1;
    }
    return 0;
}

/* C (m, n) = A (m, k) @ B (k, n) for int64, the naive way (NumPy does the same). */
static void gemm_i64(int64_t *c, const int64_t *a, const int64_t *b, int64_t m, int64_t n,
                     int64_t k, int64_t ars, int64_t acs, int64_t brs, int64_t bcs) {
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) c[i * n + j] = 0;
        for (int64_t p = 0; p < k; p++) {
            int64_t x = a[i * ars + p * acs];
            for (int64_t j = 0; j < n; j++) c[i * n + j] += x * b[p * brs + j * bcs];
        }
    }
}

ddl_status ddl_matmul(ddl_tensor **out, const ddl_tensor *a0, const ddl_tensor *b0) {
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (a0->ndim == 0 || b0->ndim == 0)
        DDL_FAIL(DDL_E_VALUE, "matmul: both operands need at least 1 dim, got shapes %s and %s",
                 ddl_shape_str(b1, sizeof b1, a0->ndim, a0->shape),
                 ddl_shape_str(b2, sizeof b2, b0->ndim, b0->shape));
    /* view 1-D operands as matrices: (k) -> (1, k) on the left, (k, 1) on the right */
    int64_t m = a0->ndim == 1 ? 1 : a0->shape[a0->ndim - 2];
    int64_t k = a0->shape[a0->ndim - 1];
    int64_t kb = b0->ndim == 1 ? b0->shape[0] : b0->shape[b0->ndim - 2];
    int64_t n = b0->ndim == 1 ? 1 : b0->shape[b0->ndim - 1];
    if (k != kb)
        DDL_FAIL(DDL_E_VALUE, "matmul: shapes %s and %s do not align (%lld != %lld)",
                 ddl_shape_str(b1, sizeof b1, a0->ndim, a0->shape),
                 ddl_shape_str(b2, sizeof b2, b0->ndim, b0->shape), (long long)k, (long long)kb);
    int bna = a0->ndim > 2 ? a0->ndim - 2 : 0, bnb = b0->ndim > 2 ? b0->ndim - 2 : 0, bn;
    int64_t bshape[DDL_MAX_DIMS];
    DDL_TRY(ddl_broadcast_shapes(&bn, bshape, bna, a0->shape, bnb, b0->shape, "matmul"));
    ddl_dtype dt = ddl_promote(a0->dtype, b0->dtype);
    if (dt == DDL_BOOL) dt = DDL_INT64;
    if (ddl_dtype_compute(dt) != dt) {
        /* a narrow storage dtype: multiply in int64 / float32, cast the product back */
        ddl_tensor *wa, *wb, *r = NULL;
        DDL_TRY(ddl_tensor_to(&wa, a0, ddl_dtype_compute(dt)));
        ddl_status st2 = ddl_tensor_to(&wb, b0, ddl_dtype_compute(dt));
        if (!st2) {
            st2 = ddl_matmul(&r, wa, wb);
            ddl_tensor_release(wb);
        }
        ddl_tensor_release(wa);
        if (!st2) {
            st2 = ddl_tensor_to(out, r, dt);
            ddl_tensor_release(r);
        }
        return st2;
    }

    ddl_tensor *a = NULL, *b = NULL, *o = NULL;
    ddl_status st = a0->dtype == dt
                        ? (ddl_tensor_retain((ddl_tensor *)a0), a = (ddl_tensor *)a0, DDL_OK)
                        : ddl_tensor_to(&a, a0, dt);
    if (!st)
        st = b0->dtype == dt ? (ddl_tensor_retain((ddl_tensor *)b0), b = (ddl_tensor *)b0, DDL_OK)
                             : ddl_tensor_to(&b, b0, dt);
    /* output shape: batch + (m if a is 2-D+) + (n if b is 2-D+) */
    int64_t oshape[DDL_MAX_DIMS];
    int ond = 0;
    for (int i = 0; i < bn; i++) oshape[ond++] = bshape[i];
    if (a0->ndim > 1) oshape[ond++] = m;
    if (b0->ndim > 1) oshape[ond++] = n;
    if (!st) st = ddl_tensor_empty(&o, dt, ond, oshape);
    if (st) goto done;

    /* matrix strides of each operand, and batch strides broadcast to bshape */
    int64_t ars = a->ndim == 1 ? 0 : a->strides[a->ndim - 2], acs = a->strides[a->ndim - 1];
    int64_t brs = b->strides[b->ndim == 1 ? 0 : b->ndim - 2];
    int64_t bcs = b->ndim == 1 ? 1 : b->strides[b->ndim - 1];
    int64_t abst[DDL_MAX_DIMS] = {0}, bbst[DDL_MAX_DIMS] = {0};
    for (int i = 0; i < bn; i++) {
        int ia = i - (bn - bna), ib = i - (bn - bnb);
        abst[i] = ia >= 0 && a->shape[ia] != 1 ? a->strides[ia] : 0;
        bbst[i] = ib >= 0 && b->shape[ib] != 1 ? b->strides[ib] : 0;
    }
    int64_t batches = 1;
    for (int i = 0; i < bn; i++) batches *= bshape[i];
    if (batches == 0 || m == 0 || n == 0) goto done;

    int ta = 0, tb = 0;
    int64_t lda = 1, ldb = 1;
    ddl_tensor *ac = NULL, *bc = NULL;
    if (!gemm_layout(m, k, ars, acs, &ta, &lda) && dt != DDL_INT64) {
        /* neither layout: copy to contiguous (rare: e.g. a stepped slice) */
        if ((st = ddl_tensor_contiguous(&ac, a))) goto done;
        ddl_tensor_release(a);
        a = ac;
        ars = a->ndim == 1 ? 0 : a->strides[a->ndim - 2];
        acs = a->strides[a->ndim - 1];
        for (int i = 0; i < bn; i++) {
            int ia = i - (bn - bna);
            abst[i] = ia >= 0 && a->shape[ia] != 1 ? a->strides[ia] : 0;
        }
        gemm_layout(m, k, ars, acs, &ta, &lda);
    }
    if (!gemm_layout(k, n, brs, bcs, &tb, &ldb) && dt != DDL_INT64) {
        if ((st = ddl_tensor_contiguous(&bc, b))) goto done;
        ddl_tensor_release(b);
        b = bc;
        brs = b->strides[b->ndim == 1 ? 0 : b->ndim - 2];
        bcs = b->ndim == 1 ? 1 : b->strides[b->ndim - 1];
        for (int i = 0; i < bn; i++) {
            int ib = i - (bn - bnb);
            bbst[i] = ib >= 0 && b->shape[ib] != 1 ? b->strides[ib] : 0;
        }
        gemm_layout(k, n, brs, bcs, &tb, &ldb);
    }
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX) {
        st = ddl_fail(DDL_E_VALUE, "matmul: dimensions beyond 2^31 are not supported by BLAS");
        goto done;
    }

    size_t es = ddl_dtype_size(dt);
    char *pa = ddl_tensor_data(a), *pb = ddl_tensor_data(b), *po = ddl_tensor_data(o);
    int64_t idx[DDL_MAX_DIMS] = {0}, aoff = 0, boff = 0;
    for (int64_t bi = 0; bi < batches; bi++) {
        char *A = pa + aoff * (int64_t)es, *B = pb + boff * (int64_t)es;
        char *C = po + bi * m * n * (int64_t)es;
        if (dt == DDL_FLOAT32)
            ddl_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                            tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                            (const float *)A, (int)lda, (const float *)B, (int)ldb, 0.0f,
                            (float *)C, (int)n);
        else if (dt == DDL_FLOAT64)
            ddl_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                            tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0,
                            (const double *)A, (int)lda, (const double *)B, (int)ldb, 0.0,
                            (double *)C, (int)n);
        else
            gemm_i64((int64_t *)C, (const int64_t *)A, (const int64_t *)B, m, n, k, ars, acs, brs,
                     bcs);
        for (int d = bn - 1; d >= 0; d--) {
            aoff += abst[d];
            boff += bbst[d];
            if (++idx[d] < bshape[d]) break;
            aoff -= abst[d] * bshape[d];
            boff -= bbst[d] * bshape[d];
            idx[d] = 0;
        }
    }
done:
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    if (st)
        ddl_tensor_release(o);
    else
        *out = o;
    return st;
}

ddl_status ddl_cat(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    if (n <= 0) DDL_FAIL(DDL_E_VALUE, "cat: expected a non-empty list of tensors");
    const ddl_tensor *t0 = ts[0];
    int d;
    if (t0->ndim == 0) DDL_FAIL(DDL_E_VALUE, "cat: zero-dimensional tensors cannot be joined");
    DDL_TRY(ddl_norm_dim(&d, dim, t0->ndim, "cat"));
    int64_t shape[DDL_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[d] = 0;
    ddl_dtype dt = t0->dtype;
    for (int i = 0; i < n; i++) {
        const ddl_tensor *t = ts[i];
        int same = t->ndim == t0->ndim;
        for (int j = 0; same && j < t->ndim; j++)
            if (j != d && t->shape[j] != t0->shape[j]) same = 0;
        if (!same) {
            char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE,
                     "cat: tensor %d has shape %s, incompatible with tensor 0's %s outside dim %d",
                     i, ddl_shape_str(b1, sizeof b1, t->ndim, t->shape),
                     ddl_shape_str(b2, sizeof b2, t0->ndim, t0->shape), d);
        }
        shape[d] += t->shape[d];
        dt = ddl_promote(dt, t->dtype);
    }
    ddl_tensor *o;
    DDL_TRY(ddl_tensor_empty(&o, dt, t0->ndim, shape));
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        ddl_tensor *slot;
        ddl_status st = ddl_tensor_slice(&slot, o, d, at, at + ts[i]->shape[d], 1);
        if (!st) st = ddl_copy_(slot, ts[i]);
        ddl_tensor_release(slot);
        if (st) {
            ddl_tensor_release(o);
            return st;
        }
        at += ts[i]->shape[d];
    }
    *out = o;
    return DDL_OK;
}

/* stack = cat of views with a new dim of size 1 (see ddl_stack_with in core/internal.h). */
ddl_status ddl_stack(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    return ddl_stack_with(out, n, ts, dim, ddl_tensor_unsqueeze, ddl_cat);
}

ddl_status ddl_stack_with(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim,
                          ddl_unsqueeze_fn unsqueeze, ddl_cat_fn cat) {
    if (n <= 0) DDL_FAIL(DDL_E_VALUE, "stack: expected a non-empty list of tensors");
    if (ts[0]->ndim >= DDL_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "stack: tensors have at most %d dims", DDL_MAX_DIMS - 1);
    int d;
    DDL_TRY(ddl_norm_dim(&d, dim, ts[0]->ndim + 1, "stack"));
    for (int i = 1; i < n; i++)
        if (ts[i]->ndim != ts[0]->ndim ||
            memcmp(ts[i]->shape, ts[0]->shape, sizeof(int64_t) * (size_t)ts[0]->ndim)) {
            char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE, "stack: tensor %d has shape %s but tensor 0 has %s", i,
                     ddl_shape_str(b1, sizeof b1, ts[i]->ndim, ts[i]->shape),
                     ddl_shape_str(b2, sizeof b2, ts[0]->ndim, ts[0]->shape));
        }
    ddl_tensor **u = calloc((size_t)n, sizeof *u);
    if (!u) DDL_FAIL(DDL_E_NOMEM, "stack: out of memory");
    ddl_status st = DDL_OK;
    for (int i = 0; i < n && !st; i++) st = unsqueeze(&u[i], ts[i], d);
    if (!st) st = cat(out, n, (const ddl_tensor *const *)u, d);
    for (int i = 0; i < n; i++) ddl_tensor_release(u[i]);
    free(u);
    return st;
}
