/* views.c: views over a tensor's storage (view, reshape, permute, transpose, squeeze, unsqueeze,
 * flatten, slice, select, expand) and the broadcasting rules they share with the ops. */
#include "core/internal.h"

#include <stdlib.h>

/* ---- views ------------------------------------------------------------------------------ */

/* Strides for viewing t as (ndim, shape) without copying, or 0 when impossible. Walks t's
 * dims from the innermost, grouping dims that are contiguous with each other; each group must
 * map onto whole dims of the new shape (the rule PyTorch's view and NumPy's reshape use). */
static int view_strides(int64_t *nstrides, const ddl_tensor *t, int ndim, const int64_t *shape) {
    if (ddl_tensor_numel(t) == 0 || t->ndim == 0) {
        ddl_contiguous_strides(nstrides, ndim, shape);
        return 1;
    }
    int vd = ndim - 1;
    int64_t base = t->strides[t->ndim - 1], tnumel = 1, vnumel = 1;
    for (int td = t->ndim - 1; td >= 0; td--) {
        tnumel *= t->shape[td];
        if (td == 0 || (t->shape[td - 1] != 1 && t->strides[td - 1] != tnumel * base)) {
            while (vd >= 0 && (vnumel < tnumel || shape[vd] == 1)) {
                nstrides[vd] = vnumel * base;
                vnumel *= shape[vd];
                vd--;
            }
            if (vnumel != tnumel) return 0;
            if (td > 0) {
                base = t->strides[td - 1];
                tnumel = vnumel = 1;
            }
        }
    }
    return vd == -1;
}

static ddl_status infer_shape(int64_t *shape, int ndim, const int64_t *req, int64_t numel,
                              const ddl_tensor *t, const char *who) {
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (ndim < 0 || ndim > DDL_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "%s: at most %d dims, got %d", who, DDL_MAX_DIMS, ndim);
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = req[i];
        if (req[i] == -1) {
            if (infer >= 0) DDL_FAIL(DDL_E_VALUE, "%s: only one dimension can be -1", who);
            infer = i;
        } else if (req[i] < 0) {
            DDL_FAIL(DDL_E_VALUE, "%s: invalid dimension %lld", who, (long long)req[i]);
        } else {
            known *= req[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || numel % known)
            DDL_FAIL(DDL_E_VALUE, "%s: cannot reshape a tensor of shape %s into %s", who,
                     ddl_shape_str(b1, sizeof b1, t->ndim, t->shape),
                     ddl_shape_str(b2, sizeof b2, ndim, req));
        shape[infer] = numel / known;
        known = numel;
    }
    if (known != numel)
        DDL_FAIL(DDL_E_VALUE, "%s: cannot reshape a tensor of shape %s (%lld elements) into %s",
                 who, ddl_shape_str(b1, sizeof b1, t->ndim, t->shape), (long long)numel,
                 ddl_shape_str(b2, sizeof b2, ndim, req));
    return DDL_OK;
}

ddl_status ddl_tensor_view(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *req) {
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    DDL_TRY(infer_shape(shape, ndim, req, ddl_tensor_numel(t), t, "view"));
    if (!view_strides(strides, t, ndim, shape)) {
        char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
        DDL_FAIL(DDL_E_VALUE,
                 "view: a tensor of shape %s with these strides cannot be viewed as %s; "
                 "use reshape() (copies) or contiguous() first",
                 ddl_shape_str(b1, sizeof b1, t->ndim, t->shape),
                 ddl_shape_str(b2, sizeof b2, ndim, shape));
    }
    return ddl_view_of(out, t, ndim, shape, strides, t->offset);
}

ddl_status ddl_tensor_reshape(ddl_tensor **out, const ddl_tensor *t, int ndim, const int64_t *req) {
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    DDL_TRY(infer_shape(shape, ndim, req, ddl_tensor_numel(t), t, "reshape"));
    if (view_strides(strides, t, ndim, shape))
        return ddl_view_of(out, t, ndim, shape, strides, t->offset);
    ddl_tensor *c;
    DDL_TRY(ddl_tensor_clone(&c, t));
    ddl_status st = ddl_tensor_view(out, c, ndim, shape);
    ddl_tensor_release(c);
    return st;
}

ddl_status ddl_tensor_permute(ddl_tensor **out, const ddl_tensor *t, const int *dims) {
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    int seen[DDL_MAX_DIMS] = {0};
    for (int i = 0; i < t->ndim; i++) {
        int d;
        DDL_TRY(ddl_norm_dim(&d, dims[i], t->ndim, "permute"));
        if (seen[d]) DDL_FAIL(DDL_E_VALUE, "permute: dim %d repeated", d);
        seen[d] = 1;
        shape[i] = t->shape[d];
        strides[i] = t->strides[d];
    }
    return ddl_view_of(out, t, t->ndim, shape, strides, t->offset);
}

ddl_status ddl_tensor_transpose(ddl_tensor **out, const ddl_tensor *t, int d0, int d1) {
    int a, b, dims[DDL_MAX_DIMS];
    if (t->ndim == 0) return ddl_view_of(out, t, 0, NULL, NULL, t->offset);
    DDL_TRY(ddl_norm_dim(&a, d0, t->ndim, "transpose"));
    DDL_TRY(ddl_norm_dim(&b, d1, t->ndim, "transpose"));
    for (int i = 0; i < t->ndim; i++) dims[i] = i;
    dims[a] = b;
    dims[b] = a;
    return ddl_tensor_permute(out, t, dims);
}

ddl_status ddl_tensor_squeeze(ddl_tensor **out, const ddl_tensor *t, int dim) {
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    int n = 0, only = -1;
    if (dim != DDL_ALL) DDL_TRY(ddl_norm_dim(&only, dim, t->ndim, "squeeze"));
    for (int i = 0; i < t->ndim; i++) {
        int drop = t->shape[i] == 1 && (only < 0 || only == i);
        if (!drop) {
            shape[n] = t->shape[i];
            strides[n++] = t->strides[i];
        }
    }
    return ddl_view_of(out, t, n, shape, strides, t->offset);
}

ddl_status ddl_tensor_unsqueeze(ddl_tensor **out, const ddl_tensor *t, int dim) {
    if (t->ndim >= DDL_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "unsqueeze: tensors have at most %d dims", DDL_MAX_DIMS);
    int d;
    DDL_TRY(ddl_norm_dim(&d, dim, t->ndim + 1, "unsqueeze"));
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    for (int i = 0, j = 0; i <= t->ndim; i++) {
        if (i == d) {
            shape[i] = 1;
            strides[i] = j < t->ndim ? t->strides[j] * t->shape[j] : 1;
        } else {
            shape[i] = t->shape[j];
            strides[i] = t->strides[j++];
        }
    }
    return ddl_view_of(out, t, t->ndim + 1, shape, strides, t->offset);
}

ddl_status ddl_tensor_flatten(ddl_tensor **out, const ddl_tensor *t, int start, int end) {
    if (t->ndim == 0) {
        int64_t one = 1;
        return ddl_tensor_reshape(out, t, 1, &one);
    }
    int s, e;
    DDL_TRY(ddl_norm_dim(&s, start, t->ndim, "flatten"));
    DDL_TRY(ddl_norm_dim(&e, end, t->ndim, "flatten"));
    if (s > e) DDL_FAIL(DDL_E_VALUE, "flatten: start_dim %d is after end_dim %d", s, e);
    int64_t shape[DDL_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < s; i++) shape[n++] = t->shape[i];
    int64_t m = 1;
    for (int i = s; i <= e; i++) m *= t->shape[i];
    shape[n++] = m;
    for (int i = e + 1; i < t->ndim; i++) shape[n++] = t->shape[i];
    return ddl_tensor_reshape(out, t, n, shape);
}

ddl_status ddl_tensor_slice(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t start,
                            int64_t stop, int64_t step) {
    int d;
    DDL_TRY(ddl_norm_dim(&d, dim, t->ndim, "slice"));
    if (t->ndim == 0) DDL_FAIL(DDL_E_INDEX, "slice: cannot slice a 0-d tensor");
    if (step <= 0) DDL_FAIL(DDL_E_VALUE, "slice: step must be positive, got %lld", (long long)step);
    int64_t n = t->shape[d];
    if (start < 0) start = 0;
    if (stop > n) stop = n;
    int64_t len = stop > start ? (stop - start + step - 1) / step : 0;
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(strides, t->strides, sizeof strides);
    shape[d] = len;
    strides[d] = t->strides[d] * step;
    return ddl_view_of(out, t, t->ndim, shape, strides,
                       t->offset + (len ? start * t->strides[d] : 0));
}

ddl_status ddl_tensor_select(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t index) {
    if (t->ndim == 0) DDL_FAIL(DDL_E_INDEX, "invalid index of a 0-d tensor");
    int d;
    DDL_TRY(ddl_norm_dim(&d, dim, t->ndim, "select"));
    int64_t n = t->shape[d];
    if (index < -n || index >= n)
        DDL_FAIL(DDL_E_INDEX, "index %lld is out of bounds for dim %d with size %lld",
                 (long long)index, d, (long long)n);
    if (index < 0) index += n;
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    for (int i = 0, j = 0; i < t->ndim; i++)
        if (i != d) {
            shape[j] = t->shape[i];
            strides[j++] = t->strides[i];
        }
    return ddl_view_of(out, t, t->ndim - 1, shape, strides, t->offset + index * t->strides[d]);
}

ddl_status ddl_broadcast_shapes(int *out_ndim, int64_t *out, int na, const int64_t *a, int nb,
                                const int64_t *b, const char *who) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t x = i < n - na ? 1 : a[i - (n - na)];
        int64_t y = i < n - nb ? 1 : b[i - (n - nb)];
        if (x != y && x != 1 && y != 1) {
            char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE, "%s: shapes %s and %s cannot be broadcast together", who,
                     ddl_shape_str(b1, sizeof b1, na, a), ddl_shape_str(b2, sizeof b2, nb, b));
        }
        out[i] = x == 1 ? y : x;
    }
    *out_ndim = n;
    return DDL_OK;
}

void ddl_broadcast_strides(int64_t *strides, const ddl_tensor *t, int ndim, const int64_t *shape) {
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead)
            strides[i] = 0;
        else
            strides[i] = (t->shape[i - lead] == 1 && shape[i] != 1) ? 0 : t->strides[i - lead];
    }
}

ddl_status ddl_tensor_expand(ddl_tensor **out, const ddl_tensor *t, int ndim,
                             const int64_t *shape) {
    int n;
    int64_t bshape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS];
    if (ndim < t->ndim || ndim > DDL_MAX_DIMS)
        DDL_FAIL(DDL_E_VALUE, "expand: target has %d dims, tensor has %d", ndim, t->ndim);
    DDL_TRY(ddl_broadcast_shapes(&n, bshape, t->ndim, t->shape, ndim, shape, "expand"));
    for (int i = 0; i < ndim; i++)
        if (bshape[i] != shape[i]) {
            char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
            DDL_FAIL(DDL_E_VALUE, "expand: cannot expand shape %s to %s",
                     ddl_shape_str(b1, sizeof b1, t->ndim, t->shape),
                     ddl_shape_str(b2, sizeof b2, ndim, shape));
        }
    ddl_broadcast_strides(strides, t, ndim, shape);
    return ddl_view_of(out, t, ndim, shape, strides, t->offset);
}
