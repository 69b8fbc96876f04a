/* grad_nn.c: the differentiable layer ops (linear, conv2d, pooling, batch norm, activations,
 * embedding, dropout) on top of the kernels of nn_conv.c, nn_pool.c, nn_norm.c and nn_act.c
 * (conv2d and pooling dispatch on float32 / float64). Each
 * forward records a node whose backward sits right below it; backward allocates zeroed
 * gradients and lets the kernel accumulate into them. Softmax and the losses are in
 * grad_loss.c, the recurrent cells in grad_rnn.c. */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_act.h"
#include "ddl/nn_conv.h"
#include "ddl/nn_norm.h"

/* ---- linear: y = x @ W^T + b, x (..., IN), W (OUT, IN), b (OUT,) ----------------------------- */

static ddl_status linear_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    int64_t B = n->iargs[0], IN = n->iargs[1], OUT = n->iargs[2];
    int prec = ddl_gemm_precision_override; /* the GEMM precision its forward ran in */
    ddl_gemm_precision_override = (int)n->iargs[3];
    /* empty sizes: the zeroed gradients are final (the kernel wants positive sizes), except
     * the bias's when there are no input features, which is dout summed over the rows */
    if (!st && B > 0 && OUT > 0 && IN > 0)
        st = ddl_linear_backward(need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                                 need[2] ? F(dinp[2]) : NULL, F(g), F(n->saved[0]), F(n->saved[1]),
                                 B, IN, OUT);
    else if (!st && need[2] && IN == 0) {
        float *db = F(dinp[2]); // (OUT,)
        const float *dy = F(g); // (B, OUT)
        for (int64_t r = 0; r < B; r++)
            for (int64_t j = 0; j < OUT; j++) db[j] += dy[r * OUT + j];
    }
    ddl_gemm_precision_override = prec;
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_linear(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b) {
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (w->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "linear: weight must be 2-D (out, in), got %s", shp(b1, w));
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        DDL_FAIL(DDL_E_VALUE,
                 "linear: input of shape %s does not match weight %s (in_features=%lld)",
                 shp(b1, x), shp(b2, w), (long long)w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        DDL_FAIL(DDL_E_VALUE, "linear: bias of shape %s for %lld out_features", shp(b1, b),
                 (long long)w->shape[0]);
    ddl_tensor *t[3] = {0}, *o = NULL;
    ddl_status st = f32(&t[0], x, "linear", "input");
    if (!st) st = f32(&t[1], w, "linear", "weight");
    if (!st) st = f32(&t[2], b, "linear", "bias");
    int64_t IN = w->shape[1], OUT = w->shape[0], B = 1; /* B: rows, all dims but the last */
    for (int d = 0; d < x->ndim - 1; d++) B *= x->shape[d];
    int64_t oshape[DDL_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = OUT;
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, x->ndim, oshape);
    if (!st && B > 0 && OUT > 0 && IN > 0)
        st = ddl_linear_forward(F(o), F(t[0]), F(t[1]), FOPT(t[2]), B, IN, OUT);
    else if (!st && B > 0 && OUT > 0) { /* no input features: every row is the bias (or 0) */
        float *y = F(o);                // (B, OUT)
        const float *bias = FOPT(t[2]); // (OUT,) or NULL
        for (int64_t r = 0; r < B; r++)
            for (int64_t j = 0; j < OUT; j++) y[r * OUT + j] = bias ? bias[j] : 0.0f;
    }
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "LinearBackward",
                                            .backward = linear_backward,
                                            .n_inputs = 3,
                                            .in = {x, w, b},
                                            .iargs = {B, IN, OUT, ddl_gemm_precision()},
                                            .save = {t[0], t[1]},
                                            .drop = {t[0], t[1], t[2]}});
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

/* iargs: N C H W O KH KW sh sw ph pw dh dw precision */
static ddl_status conv2d_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    const int64_t *a = n->iargs;
    int64_t ns;
    DDL_TRY(ddl_conv2d_scratch_floats(&ns, a[1], a[2], a[3], a[5], a[6], a[7], a[8], a[9], a[10],
                                      a[11], a[12]));
    ddl_tensor *g = NULL, *col = NULL;
    int f64 = n->saved[0]->dtype == DDL_FLOAT64;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && ns && !f64) st = ddl_tensor_empty(&col, DDL_FLOAT32, 1, &ns);
    if (!st) st = zero_grads_dt(n, dinp, need);
    int prec = ddl_gemm_precision_override; /* the GEMM precision its forward ran in */
    ddl_gemm_precision_override = (int)a[13];
    if (!st && a[0] > 0 && f64) /* an empty batch: the zeroed gradients are final */
        st = ddl_conv2d_backward_f64(need[0] ? D(dinp[0]) : NULL, need[1] ? D(dinp[1]) : NULL,
                                     need[2] ? D(dinp[2]) : NULL, D(g), D(n->saved[0]),
                                     D(n->saved[1]), a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                     a[8], a[9], a[10], a[11], a[12]);
    else if (!st && a[0] > 0)
        st = ddl_conv2d_backward(need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                                 need[2] ? F(dinp[2]) : NULL, FOPT(col), F(g), F(n->saved[0]),
                                 F(n->saved[1]), a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                 a[8], a[9], a[10], a[11], a[12]);
    ddl_gemm_precision_override = prec;
    ddl_tensor_release(g);
    ddl_tensor_release(col);
    return st;
}

ddl_status ddl_ag_conv2d(ddl_tensor **out, const ddl_tensor *x, const ddl_tensor *w,
                         const ddl_tensor *b, const int64_t stride[2], const int64_t pad[2],
                         const int64_t dil[2]) {
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (x->ndim != 4)
        DDL_FAIL(DDL_E_VALUE, "conv2d: input must be 4-D (N, C, H, W), got %s", shp(b1, x));
    if (w->ndim != 4)
        DDL_FAIL(DDL_E_VALUE, "conv2d: weight must be 4-D (O, C, KH, KW), got %s", shp(b1, w));
    if (x->shape[1] != w->shape[1])
        DDL_FAIL(DDL_E_VALUE, "conv2d: input %s has %lld channels but weight %s expects %lld",
                 shp(b1, x), (long long)x->shape[1], shp(b2, w), (long long)w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        DDL_FAIL(DDL_E_VALUE, "conv2d: bias of shape %s for %lld output channels", shp(b1, b),
                 (long long)w->shape[0]);
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0];
    int64_t KH = w->shape[2], KW = w->shape[3], OH, OW, ns;
    DDL_TRY(ddl_conv2d_out_size(&OH, &OW, H, W, KH, KW, stride[0], stride[1], pad[0], pad[1],
                                dil[0], dil[1]));
    DDL_TRY(ddl_conv2d_scratch_floats(&ns, C, H, W, KH, KW, stride[0], stride[1], pad[0], pad[1],
                                      dil[0], dil[1]));
    ddl_tensor *t[3] = {0}, *o = NULL, *col = NULL;
    ddl_status st = fdt(&t[0], x, x->dtype, "conv2d", "input");
    if (!st) st = fdt(&t[1], w, x->dtype, "conv2d", "weight");
    if (!st) st = fdt(&t[2], b, x->dtype, "conv2d", "bias");
    int f64 = x->dtype == DDL_FLOAT64;
    int64_t oshape[4] = {N, O, OH, OW};
    if (!st) st = ddl_tensor_empty(&o, x->dtype, 4, oshape);
    if (!st && ns && !f64) st = ddl_tensor_empty(&col, DDL_FLOAT32, 1, &ns);
    if (!st && N > 0 && f64)
        st = ddl_conv2d_forward_f64(D(o), D(t[0]), D(t[1]), DOPT(t[2]), N, C, H, W, O, KH, KW,
                                    stride[0], stride[1], pad[0], pad[1], dil[0], dil[1]);
    else if (!st && N > 0)
        st = ddl_conv2d_forward(F(o), FOPT(col), F(t[0]), F(t[1]), FOPT(t[2]), N, C, H, W, O, KH,
                                KW, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1]);
    ddl_tensor_release(col);
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = "Conv2dBackward",
                         .backward = conv2d_backward,
                         .n_inputs = 3,
                         .in = {x, w, b},
                         .iargs = {N, C, H, W, O, KH, KW, stride[0], stride[1], pad[0], pad[1],
                                   dil[0], dil[1], ddl_gemm_precision()},
                         .save = {t[0], t[1]},
                         .drop = {t[0], t[1], t[2]}});
}

/* ---- pooling --------------------------------------------------------------------------------- */

/* iargs: kind (ddl_pool_kind) N C H W KH KW sh sw ph pw OH OW ; saved: max indices */
static ddl_status pool_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    const int64_t *a = n->iargs;
    ddl_tensor *g = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st) st = zero_grads_dt(n, dinp, need);
    int f64 = n->in[0].dtype == DDL_FLOAT64;
    if (!st && a[1] * a[2] > 0) { /* N * C: nothing to pool when empty, gradients stay 0 */
        const int64_t *ix = a[0] == DDL_POOL_MAX ? ddl_tensor_data(n->saved[0]) : NULL;
        if (a[0] == DDL_POOL_MAX && f64)
            st = ddl_max_pool2d_backward_f64(D(dinp[0]), D(g), ix, a[1], a[2], a[3], a[4], a[5],
                                             a[6], a[7], a[8], a[9], a[10]);
        else if (a[0] == DDL_POOL_MAX)
            st = ddl_max_pool2d_backward(F(dinp[0]), F(g), ix, a[1], a[2], a[3], a[4], a[5], a[6],
                                         a[7], a[8], a[9], a[10]);
        else if (a[0] == DDL_POOL_AVG && f64)
            st = ddl_avg_pool2d_backward_f64(D(dinp[0]), D(g), a[1], a[2], a[3], a[4], a[5], a[6],
                                             a[7], a[8], a[9], a[10]);
        else if (a[0] == DDL_POOL_AVG)
            st = ddl_avg_pool2d_backward(F(dinp[0]), F(g), a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                         a[8], a[9], a[10]);
        else if (f64)
            st = ddl_adaptive_avg_pool2d_backward_f64(D(dinp[0]), D(g), a[1], a[2], a[3], a[4],
                                                      a[11], a[12]);
        else
            st = ddl_adaptive_avg_pool2d_backward(F(dinp[0]), F(g), a[1], a[2], a[3], a[4], a[11],
                                                  a[12]);
    }
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_pool2d(ddl_tensor **out, ddl_pool_kind kind, const ddl_tensor *x,
                         const int64_t k[2], const int64_t stride[2], const int64_t pad[2]) {
    static const char *names[DDL_NUM_POOL_KINDS] = {"max_pool2d", "avg_pool2d",
                                                    "adaptive_avg_pool2d"};
    if ((unsigned)kind >= DDL_NUM_POOL_KINDS)
        DDL_FAIL(DDL_E_VALUE, "pool2d: unknown kind %d (a ddl_pool_kind)", (int)kind);
    const char *who = names[kind];
    char b1[DDL_SHAPE_BUF];
    if (x->ndim != 4)
        DDL_FAIL(DDL_E_VALUE, "%s: input must be 4-D (N, C, H, W), got %s", who, shp(b1, x));
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], OH, OW;
    int adaptive = kind == DDL_POOL_ADAPTIVE_AVG;
    if (adaptive) {
        OH = k[0], OW = k[1]; /* the output size */
        if (OH < 1 || OW < 1)
            DDL_FAIL(DDL_E_VALUE, "%s: output size (%lld, %lld) must be positive", who,
                     (long long)OH, (long long)OW);
    } else {
        DDL_TRY(
            ddl_pool2d_out_size(&OH, &OW, H, W, k[0], k[1], stride[0], stride[1], pad[0], pad[1]));
    }
    ddl_tensor *xc = NULL, *o = NULL, *idx = NULL;
    ddl_status st = fdt(&xc, x, x->dtype, who, "input");
    int f64 = x->dtype == DDL_FLOAT64;
    int64_t oshape[4] = {N, C, OH, OW};
    if (!st) st = ddl_tensor_empty(&o, x->dtype, 4, oshape);
    if (!st && kind == DDL_POOL_MAX) st = ddl_tensor_empty(&idx, DDL_INT64, 4, oshape);
    int64_t *ix = idx ? ddl_tensor_data(idx) : NULL;
    if (!st && N > 0 && C > 0) {
        if (kind == DDL_POOL_MAX && f64)
            st = ddl_max_pool2d_forward_f64(D(o), ix, D(xc), N, C, H, W, k[0], k[1], stride[0],
                                            stride[1], pad[0], pad[1]);
        else if (kind == DDL_POOL_MAX)
            st = ddl_max_pool2d_forward(F(o), ix, F(xc), N, C, H, W, k[0], k[1], stride[0],
                                        stride[1], pad[0], pad[1]);
        else if (kind == DDL_POOL_AVG && f64)
            st = ddl_avg_pool2d_forward_f64(D(o), D(xc), N, C, H, W, k[0], k[1], stride[0],
                                            stride[1], pad[0], pad[1]);
        else if (kind == DDL_POOL_AVG)
            st = ddl_avg_pool2d_forward(F(o), F(xc), N, C, H, W, k[0], k[1], stride[0], stride[1],
                                        pad[0], pad[1]);
        else if (f64)
            st = ddl_adaptive_avg_pool2d_forward_f64(D(o), D(xc), N, C, H, W, OH, OW);
        else
            st = ddl_adaptive_avg_pool2d_forward(F(o), F(xc), N, C, H, W, OH, OW);
    }
    return ddl_node_finish(
        out, st, o,
        &(ddl_node_spec){.name = kind == DDL_POOL_MAX ? "MaxPool2dBackward" : "AvgPool2dBackward",
                         .backward = pool_backward,
                         .n_inputs = 1,
                         .in = {x},
                         .iargs = {kind, N, C, H, W, k[0], k[1], adaptive ? 0 : stride[0],
                                   adaptive ? 0 : stride[1], adaptive ? 0 : pad[0],
                                   adaptive ? 0 : pad[1], OH, OW},
                         .save = {idx},
                         .drop = {xc, idx}});
}

/* ---- batch norm ------------------------------------------------------------------------------ */

/* iargs: N C S training ; saved: x, weight, mean, invstd */
static ddl_status batchnorm_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                     const int *need) {
    const int64_t *a = n->iargs;
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    if (!st && a[0] * a[1] * a[2] > 0) /* N * C * S: empty input, the zeroed grads are final */
        st = ddl_batchnorm_backward(need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                                    need[2] ? F(dinp[2]) : NULL, F(g), F(n->saved[0]),
                                    FOPT(n->saved[1]), F(n->saved[2]), F(n->saved[3]), a[0], a[1],
                                    a[2], (int)a[3]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_batch_norm(ddl_tensor **out, const ddl_tensor *x, ddl_tensor *running_mean,
                             ddl_tensor *running_var, const ddl_tensor *weight,
                             const ddl_tensor *bias, int training, double momentum, double eps) {
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (x->ndim < 2)
        DDL_FAIL(DDL_E_VALUE, "batch_norm: input must be (N, C) or (N, C, ...), got %s",
                 shp(b1, x));
    int64_t N = x->shape[0], C = x->shape[1], S = C && N ? ddl_tensor_numel(x) / (N * C) : 0;
    const ddl_tensor *per_channel[4] = {running_mean, running_var, weight, bias};
    static const char *pc_names[4] = {"running_mean", "running_var", "weight", "bias"};
    for (int i = 0; i < 4; i++) {
        const ddl_tensor *p = per_channel[i];
        if (!p) continue;
        if (p->dtype != DDL_FLOAT32)
            DDL_FAIL(DDL_E_TYPE,
                     "batch_norm: %s must be float32 (ddl's layer kernels are float32), "
                     "got %s",
                     pc_names[i], ddl_dtype_name(p->dtype));
        if (ddl_tensor_numel(p) != C)
            DDL_FAIL(DDL_E_VALUE,
                     "batch_norm: %s of shape %s does not match %lld channels of input %s",
                     pc_names[i], shp(b2, p), (long long)C, shp(b1, x));
        /* the running stats are updated in place, so they cannot be contiguous copies */
        if (i < 2 && !ddl_tensor_is_contiguous(p))
            DDL_FAIL(DDL_E_VALUE, "batch_norm: %s must be contiguous", pc_names[i]);
    }
    if (!training && (!running_mean || !running_var))
        DDL_FAIL(DDL_E_VALUE, "batch_norm: evaluation mode needs running_mean and running_var");
    ddl_tensor *t[4] = {0}, *o = NULL, *bc = NULL;
    ddl_status st = f32(&t[0], x, "batch_norm", "input");
    if (!st) st = f32(&t[1], weight, "batch_norm", "weight");
    if (!st) st = f32(&bc, bias, "batch_norm", "bias");
    if (!st) st = ddl_tensor_empty(&t[2], DDL_FLOAT32, 1, &C);
    if (!st) st = ddl_tensor_empty(&t[3], DDL_FLOAT32, 1, &C);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, x->ndim, x->shape);
    if (!st && N * C * S > 0)
        st = ddl_batchnorm_forward(F(o), F(t[2]), F(t[3]), FOPT(running_mean), FOPT(running_var),
                                   F(t[0]), FOPT(t[1]), FOPT(bc), N, C, S, training, momentum, eps);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "BatchNormBackward",
                                            .backward = batchnorm_backward,
                                            .n_inputs = 3,
                                            .in = {x, weight, bias},
                                            .iargs = {N, C, S, training},
                                            .save = {t[0], t[1], t[2], t[3]},
                                            .drop = {t[0], t[1], t[2], t[3], bc}});
}

/* ---- activations with their own kernels ------------------------------------------------------ */

/* iargs: kind (ddl_act_kind) approximate ; dargs[0] slope ; saved: input */
static ddl_status act_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                               const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    int64_t N = ddl_tensor_numel(g);
    if (!st && N > 0) {
        if (n->iargs[0] == DDL_ACT_LEAKY_RELU)
            st = ddl_leaky_relu_backward(F(dinp[0]), F(g), F(n->saved[0]), N, (float)n->dargs[0]);
        else
            st = ddl_gelu_backward(F(dinp[0]), F(g), F(n->saved[0]), N,
                                   (ddl_gelu_approximate)n->iargs[1]);
    }
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_activation(ddl_tensor **out, ddl_act_kind kind, const ddl_tensor *x, double slope,
                             ddl_gelu_approximate approximate) {
    if ((unsigned)kind >= DDL_NUM_ACTS)
        DDL_FAIL(DDL_E_VALUE, "activation: unknown kind %d (a ddl_act_kind)", (int)kind);
    int leaky = kind == DDL_ACT_LEAKY_RELU;
    if (!leaky && approximate != DDL_GELU_NONE && approximate != DDL_GELU_TANH)
        DDL_FAIL(DDL_E_VALUE, "gelu: unknown approximate %d (0 none, 1 tanh)", (int)approximate);
    const char *who = leaky ? "leaky_relu" : "gelu";
    ddl_tensor *xc = NULL, *o = NULL;
    ddl_status st = f32(&xc, x, who, "input");
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, x->ndim, x->shape);
    int64_t N = ddl_tensor_numel(x);
    if (!st && N > 0) {
        if (leaky)
            st = ddl_leaky_relu_forward(F(o), F(xc), N, (float)slope);
        else
            st = ddl_gelu_forward(F(o), F(xc), N, approximate);
    }
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = leaky ? "LeakyReluBackward" : "GeluBackward",
                                            .backward = act_backward,
                                            .n_inputs = 1,
                                            .in = {x},
                                            .iargs = {kind, approximate},
                                            .dargs = {slope},
                                            .save = {xc},
                                            .drop = {xc}});
}

/* ---- embedding ------------------------------------------------------------------------------- */

/* iargs: N V D padding_idx ; saved: indices */
static ddl_status embedding_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                     const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    if (!st && need[1] && n->iargs[0] > 0)
        st = ddl_embedding_backward(F(dinp[1]), F(g), ddl_tensor_data(n->saved[0]), n->iargs[0],
                                    n->iargs[1], n->iargs[2], n->iargs[3]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_embedding(ddl_tensor **out, const ddl_tensor *idx, const ddl_tensor *w,
                            int64_t padding_idx) {
    char b1[DDL_SHAPE_BUF];
    if (w->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "embedding: weight must be 2-D (num, dim), got %s", shp(b1, w));
    if (idx->ndim >= DDL_MAX_DIMS) DDL_FAIL(DDL_E_VALUE, "embedding: too many index dims");
    int64_t N = ddl_tensor_numel(idx), V = w->shape[0], D = w->shape[1];
    ddl_tensor *ic = NULL, *wc = NULL, *o = NULL;
    ddl_status st = i64(&ic, idx, "embedding", "indices");
    if (!st) st = f32(&wc, w, "embedding", "weight");
    int64_t oshape[DDL_MAX_DIMS];
    memcpy(oshape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
    oshape[idx->ndim] = D;
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, idx->ndim + 1, oshape);
    if (!st && N > 0) st = ddl_embedding_forward(F(o), F(wc), ddl_tensor_data(ic), N, V, D);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "EmbeddingBackward",
                                            .backward = embedding_backward,
                                            .n_inputs = 2,
                                            .in = {NULL, w},
                                            .iargs = {N, V, D, padding_idx},
                                            .save = {ic},
                                            .drop = {ic, wc}});
}

/* ---- dropout --------------------------------------------------------------------------------- */

static ddl_status dropout_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    int64_t N = ddl_tensor_numel(g);
    if (!st && N > 0)
        st = ddl_dropout_backward(F(dinp[0]), F(g), ddl_tensor_data(n->saved[0]), N,
                                  (float)n->dargs[0]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_dropout(ddl_tensor **out, const ddl_tensor *x, double p) {
    if (p < 0 || p > 1) DDL_FAIL(DDL_E_VALUE, "dropout: p must be in [0, 1], got %g", p);
    ddl_tensor *xc = NULL, *r = NULL, *mask = NULL, *o = NULL;
    ddl_status st = f32(&xc, x, "dropout", "input");
    /* keep where uniform >= p: the mask comes from the seeded Philox stream */
    if (!st) st = ddl_rand(&r, DDL_FLOAT32, x->ndim, x->shape);
    if (!st) st = ddl_binary_scalar(&mask, DDL_OP_GE, r, p, 1, 0);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, x->ndim, x->shape);
    int64_t N = ddl_tensor_numel(x);
    if (!st && N > 0) st = ddl_dropout_forward(F(o), F(xc), ddl_tensor_data(mask), N, (float)p);
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = "DropoutBackward",
                                            .backward = dropout_backward,
                                            .n_inputs = 1,
                                            .in = {x},
                                            .dargs = {p},
                                            .save = {mask},
                                            .drop = {xc, r, mask}});
}
