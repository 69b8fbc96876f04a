/* grad_act64.c: the differentiable float64 GELU and embedding over nn_act.c's float64 kernels
 * (their float32 forms are in grad_nn.c). */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_act.h"

#define D64(t) ((double *)ddl_tensor_data(t))

/* iargs: approximate ; saved: input */
static ddl_status gelu64_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    ddl_tensor *g = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && need[0]) st = ddl_tensor_zeros(&dinp[0], DDL_FLOAT64, n->in[0].ndim, n->in[0].shape);
    int64_t N = g ? ddl_tensor_numel(g) : 0;
    if (!st && need[0] && N > 0)
        st = ddl_gelu_backward_f64(D64(dinp[0]), D64(g), D64(n->saved[0]), N,
                                   (ddl_gelu_approximate)n->iargs[0]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_gelu64(ddl_tensor **out, const ddl_tensor *x, ddl_gelu_approximate approximate) {
    if (x->dtype != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "gelu64: input must be float64, got %s", ddl_dtype_name(x->dtype));
    if (approximate != DDL_GELU_NONE && approximate != DDL_GELU_TANH)
        DDL_FAIL(DDL_E_VALUE, "gelu: unknown approximate %d (0 none, 1 tanh)", (int)approximate);
    ddl_tensor *xc = NULL, *o = NULL;
    ddl_status st = ddl_tensor_contiguous(&xc, x);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT64, x->ndim, x->shape);
    int64_t N = ddl_tensor_numel(x);
    if (!st && N > 0) st = ddl_gelu_forward_f64(D64(o), D64(xc), N, approximate);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "GeluBackward",
                                            .backward = gelu64_backward,
                                            .n_inputs = 1,
                                            .in = {x},
                                            .iargs = {approximate},
                                            .save = {xc},
                                            .drop = {xc}});
}

/* iargs: N V D padding_idx ; saved: indices */
static ddl_status embedding64_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                       const int *need) {
    ddl_tensor *g = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && need[1]) st = ddl_tensor_zeros(&dinp[1], DDL_FLOAT64, n->in[1].ndim, n->in[1].shape);
    if (!st && need[1] && n->iargs[0] > 0)
        st = ddl_embedding_backward_f64(D64(dinp[1]), D64(g), ddl_tensor_data(n->saved[0]),
                                        n->iargs[0], n->iargs[1], n->iargs[2], n->iargs[3]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_embedding64(ddl_tensor **out, const ddl_tensor *idx, const ddl_tensor *w,
                              int64_t padding_idx) {
    char b1[DDL_SHAPE_BUF];
    if (w->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "embedding: weight must be 2-D (num, dim), got %s", shp(b1, w));
    if (w->dtype != DDL_FLOAT64)
        DDL_FAIL(DDL_E_TYPE, "embedding64: weight must be float64, got %s",
                 ddl_dtype_name(w->dtype));
    if (idx->ndim >= DDL_MAX_DIMS) DDL_FAIL(DDL_E_VALUE, "embedding: too many index dims");
    int64_t N = ddl_tensor_numel(idx), V = w->shape[0], D = w->shape[1];
    ddl_tensor *ic = NULL, *wc = NULL, *o = NULL;
    ddl_status st = i64(&ic, idx, "embedding", "indices");
    if (!st) st = ddl_tensor_contiguous(&wc, w);
    int64_t oshape[DDL_MAX_DIMS];
    memcpy(oshape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
    oshape[idx->ndim] = D;
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT64, idx->ndim + 1, oshape);
    if (!st && N > 0) st = ddl_embedding_forward_f64(D64(o), D64(wc), ddl_tensor_data(ic), N, V, D);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "EmbeddingBackward",
                                            .backward = embedding64_backward,
                                            .n_inputs = 2,
                                            .in = {NULL, w},
                                            .iargs = {N, V, D, padding_idx},
                                            .save = {ic},
                                            .drop = {ic, wc}});
}
