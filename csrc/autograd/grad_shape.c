/* grad_shape.c: the differentiable shape and indexing ops (view/reshape/expand, permute, to,
 * contiguous, slice, select, cat, stack): each forward records a node whose backward sits
 * right below it and routes dout back to the input's layout. */
#include "autograd/node.h"

#include <stdlib.h>

/* ---- view, reshape, expand, permute ----------------------------------------------------------- */

static ddl_status reshape_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    (void)need;
    const ddl_edge *e = &n->in[0];
    if (n->iargs[0] == DDL_SHAPE_EXPAND) {
        ddl_tensor_retain((ddl_tensor *)dout);
        return ddl_edge_grad(&dinp[0], (ddl_tensor *)dout, e);
    }
    return ddl_tensor_reshape(&dinp[0], dout, e->ndim, e->shape);
}

ddl_status ddl_ag_reshape(ddl_tensor **out, ddl_shape_op op, const ddl_tensor *t, int ndim,
                          const int64_t *shape) {
    ddl_tensor *o = NULL;
    ddl_status st;
    switch (op) {
    case DDL_SHAPE_VIEW: st = ddl_tensor_view(&o, t, ndim, shape); break;
    case DDL_SHAPE_RESHAPE: st = ddl_tensor_reshape(&o, t, ndim, shape); break;
    case DDL_SHAPE_EXPAND: st = ddl_tensor_expand(&o, t, ndim, shape); break;
    default:
        DDL_FAIL(DDL_E_VALUE, "reshape: unknown shape op %d (DDL_SHAPE_VIEW, _RESHAPE, _EXPAND)",
                 (int)op);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = op == DDL_SHAPE_EXPAND ? "ExpandBackward" : "ViewBackward",
                         .backward = reshape_backward,
                         .n_inputs = 1,
                         .in = {t},
                         .iargs = {op}});
}

static ddl_status permute_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    (void)need;
    int inv[DDL_MAX_DIMS];
    for (int i = 0; i < n->in[0].ndim; i++) inv[n->iargs[i]] = i;
    return ddl_tensor_permute(&dinp[0], dout, inv);
}

ddl_status ddl_ag_permute(ddl_tensor **out, const ddl_tensor *t, const int *dims) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_tensor_permute(&o, t, dims);
    ddl_node_spec spec = {
        .name = "PermuteBackward", .backward = permute_backward, .n_inputs = 1, .in = {t}};
    for (int i = 0; i < t->ndim && !st; i++) { /* validated by ddl_tensor_permute */
        int d;
        ddl_norm_dim(&d, dims[i], t->ndim, "permute");
        spec.iargs[i] = d;
    }
    return ddl_node_finish(out, st, o, &spec);
}

/* ---- copies ----------------------------------------------------------------------------------- */

static ddl_status to_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                              const int *need) {
    (void)need;
    return ddl_tensor_to(&dinp[0], dout, n->in[0].dtype);
}

ddl_status ddl_ag_to(ddl_tensor **out, const ddl_tensor *t, ddl_dtype dt) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_tensor_to(&o, t, dt);
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){
            .name = "ToCopyBackward", .backward = to_backward, .n_inputs = 1, .in = {t}});
}

ddl_status ddl_ag_contiguous(ddl_tensor **out, const ddl_tensor *t, int force_copy) {
    if (!force_copy && ddl_tensor_is_contiguous(t)) {
        ddl_tensor_retain((ddl_tensor *)t);
        *out = (ddl_tensor *)t;
        return DDL_OK;
    }
    return ddl_ag_to(out, t, t->dtype); /* a copy whose backward passes dout through */
}

/* ---- slice, select ---------------------------------------------------------------------------- */

/* slice (iargs[0] = 's': dim, start, stop, step) and select ('i': dim, index): the gradient
 * is zeros of the input's shape with dout written through the same view. */
static ddl_status index_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                 const int *need) {
    (void)need;
    const ddl_edge *e = &n->in[0];
    ddl_tensor *z, *v = NULL;
    DDL_TRY(ddl_tensor_zeros(&z, e->dtype, e->ndim, e->shape));
    ddl_status st = n->iargs[0] == 's' ? ddl_tensor_slice(&v, z, (int)n->iargs[1], n->iargs[2],
                                                          n->iargs[3], n->iargs[4])
                                       : ddl_tensor_select(&v, z, (int)n->iargs[1], n->iargs[2]);
    if (!st) st = ddl_copy_(v, dout);
    ddl_tensor_release(v);
    if (st)
        ddl_tensor_release(z);
    else
        dinp[0] = z;
    return st;
}

ddl_status ddl_ag_slice(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t start, int64_t stop,
                        int64_t step) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_tensor_slice(&o, t, dim, start, stop, step);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "SliceBackward",
                                            .backward = index_backward,
                                            .n_inputs = 1,
                                            .in = {t},
                                            .iargs = {'s', dim, start, stop, step}});
}

ddl_status ddl_ag_select(ddl_tensor **out, const ddl_tensor *t, int dim, int64_t index) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_tensor_select(&o, t, dim, index);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "SelectBackward",
                                            .backward = index_backward,
                                            .n_inputs = 1,
                                            .in = {t},
                                            .iargs = {'i', dim, index}});
}

/* ---- cat, stack ------------------------------------------------------------------------------- */

/* cat: the gradient of each input is its slice of dout along dim (iargs[0] = dim). */
static ddl_status cat_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                               const int *need) {
    int dim = (int)n->iargs[0];
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        int64_t len = n->in[i].shape[dim];
        if (need[i]) {
            ddl_tensor *v;
            DDL_TRY(ddl_tensor_slice(&v, dout, dim, at, at + len, 1));
            ddl_status st = ddl_tensor_to(&dinp[i], v, n->in[i].dtype);
            ddl_tensor_release(v);
            DDL_TRY(st);
        }
        at += len;
    }
    return DDL_OK;
}

/* cat of at most DDL_NODE_MAX_INPUTS tensors: one node */
static ddl_status cat_small(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    ddl_tensor *o = NULL;
    ddl_status st = ddl_cat(&o, n, ts, dim);
    ddl_node_spec spec = {.name = "CatBackward", .backward = cat_backward, .n_inputs = n};
    for (int i = 0; i < n; i++) spec.in[i] = ts[i];
    int d = 0;
    if (!st) ddl_norm_dim(&d, dim, ts[0]->ndim, "cat"); /* validated by ddl_cat */
    spec.iargs[0] = d;
    return ddl_node_finish(out, st, o, &spec);
}

ddl_status ddl_ag_cat(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    int any = 0;
    for (int i = 0; i < n; i++) any |= ts[i]->requires_grad;
    if (!any || ddl_grad_mode_off) return ddl_cat(out, n, ts, dim);
    if (n <= DDL_NODE_MAX_INPUTS) return cat_small(out, n, ts, dim);
    /* a node takes at most DDL_NODE_MAX_INPUTS inputs: join groups, then join the groups */
    int groups = (n + DDL_NODE_MAX_INPUTS - 1) / DDL_NODE_MAX_INPUTS;
    ddl_tensor **parts = calloc((size_t)groups, sizeof *parts);
    if (!parts) DDL_FAIL(DDL_E_NOMEM, "cat: out of memory");
    ddl_status st = DDL_OK;
    for (int g = 0; g < groups && !st; g++) {
        int k = n - g * DDL_NODE_MAX_INPUTS;
        if (k > DDL_NODE_MAX_INPUTS) k = DDL_NODE_MAX_INPUTS;
        st = cat_small(&parts[g], k, ts + g * DDL_NODE_MAX_INPUTS, dim);
    }
    if (!st) st = ddl_ag_cat(out, groups, (const ddl_tensor *const *)parts, dim);
    for (int g = 0; g < groups; g++) ddl_tensor_release(parts[g]);
    free(parts);
    return st;
}

/* t with a new dim of size 1 at d, recorded (a view) */
static ddl_status ag_unsqueeze(ddl_tensor **out, const ddl_tensor *t, int d) {
    int64_t shape[DDL_MAX_DIMS];
    for (int k = 0, j = 0; k <= t->ndim; k++) shape[k] = k == d ? 1 : t->shape[j++];
    return ddl_ag_reshape(out, DDL_SHAPE_VIEW, t, t->ndim + 1, shape);
}

/* the same two steps as ddl_stack, each recorded */
ddl_status ddl_ag_stack(ddl_tensor **out, int n, const ddl_tensor *const *ts, int dim) {
    return ddl_stack_with(out, n, ts, dim, ag_unsqueeze, ddl_ag_cat);
}
