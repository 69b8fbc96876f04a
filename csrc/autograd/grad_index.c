/* grad_index.c: take (gather by flat position) with its gradient: a scatter-add into src. */
#include "autograd/node.h"

/* saved: index (int64, contiguous) */
static ddl_status take_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    if (!need[0]) return DDL_OK;
    const ddl_edge *e = &n->in[0];
    ddl_tensor *d = NULL, *g = NULL;
    ddl_status st = ddl_tensor_zeros(&d, dout->dtype, e->ndim, e->shape);
    if (!st) st = ddl_tensor_contiguous(&g, dout);
    if (!st) st = ddl_take_backward(d, g, n->saved[0]);
    ddl_tensor_release(g);
    if (st) {
        ddl_tensor_release(d);
        return st;
    }
    return ddl_edge_grad(&dinp[0], d, e);
}

ddl_status ddl_ag_take(ddl_tensor **out, const ddl_tensor *src, const ddl_tensor *index) {
    ddl_tensor *o = NULL, *ic = NULL;
    ddl_status st = ddl_take(&o, src, index);
    if (!st) st = ddl_tensor_contiguous(&ic, index);
    int grad = src->dtype == DDL_FLOAT32 || src->dtype == DDL_FLOAT64;
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "TakeBackward",
                                            .backward = take_backward,
                                            .n_inputs = 1,
                                            .in = {grad ? src : NULL},
                                            .save = {ic},
                                            .drop = {ic}});
}
