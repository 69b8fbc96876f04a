/* grad_nn.c: the differentiable layer ops (linear, conv2d, pooling, batch norm, softmax,
 * losses, activations, embedding, dropout, recurrent cells) on top of the float32 kernels of
 * nn_conv.c, nn_norm.c, nn_loss.c, nn_act.c and nn_rnn.c. Each forward records a node whose
 * backward sits right below it; backward allocates zeroed gradients and lets the kernel
 * accumulate into them. */
#include "autograd/node.h"
#include "ddl/autograd.h"
#include "ddl/nn_act.h"
#include "ddl/nn_conv.h"
#include "ddl/nn_loss.h"
#include "ddl/nn_norm.h"
#include "ddl/nn_rnn.h"

#include <math.h>
#include <stdlib.h>

#define F(t) ((float *)ddl_tensor_data(t))
#define FOPT(t) ((t) ? F(t) : NULL)

/* A contiguous float32 tensor for argument `arg` of `who` (new ref); NULL stays NULL. */
static ddl_status f32(ddl_tensor **out, const ddl_tensor *t, const char *who, const char *arg) {
    *out = NULL;
    if (!t) return DDL_OK;
    if (t->dtype != DDL_FLOAT32)
        DDL_FAIL(DDL_E_TYPE, "%s: %s must be float32 (ddl's layer kernels are float32), got %s",
                 who, arg, ddl_dtype_name(t->dtype));
    return ddl_tensor_contiguous(out, t);
}

static ddl_status i64(ddl_tensor **out, const ddl_tensor *t, const char *who, const char *arg) {
    if (t->dtype != DDL_INT64)
        DDL_FAIL(DDL_E_TYPE, "%s: %s must be int64, got %s", who, arg, ddl_dtype_name(t->dtype));
    return ddl_tensor_contiguous(out, t);
}

/* Zeroed gradients for the needed inputs (kernels accumulate into them). */
static ddl_status zero_grads(ddl_node *n, ddl_tensor **dinp, const int *need) {
    for (int i = 0; i < n->n_inputs; i++)
        if (need[i])
            DDL_TRY(ddl_tensor_zeros(&dinp[i], DDL_FLOAT32, n->in[i].ndim, n->in[i].shape));
    return DDL_OK;
}

/* The start of every backward here: dout as a contiguous *g (released by the caller, NULL on
 * failure) and zeroed gradients for the needed inputs. */
static ddl_status begin_backward(ddl_tensor **g, ddl_node *n, const ddl_tensor *dout,
                                 ddl_tensor **dinp, const int *need) {
    *g = NULL;
    DDL_TRY(ddl_tensor_contiguous(g, dout));
    return zero_grads(n, dinp, need);
}

static void release_all(ddl_tensor **ts, int n) {
    for (int i = 0; i < n; i++) {
        ddl_tensor_release(ts[i]);
        ts[i] = NULL;
    }
}

/* What a forward records: the node's name, backward and inputs (NULL for inputs without a
 * gradient), its integer and double arguments, and the tensors backward reads (saved[i],
 * NULL entries skipped); then the forward's temporaries, dropped once the node is made. */
typedef struct {
    const char *name;
    ddl_backward_fn backward;
    int n_inputs;
    const ddl_tensor *in[DDL_NODE_MAX_INPUTS];
    int64_t iargs[2 * DDL_MAX_DIMS];
    double dargs[4];
    const ddl_tensor *save[DDL_NODE_MAX_SAVED];
    ddl_tensor *drop[8];
} node_spec;

/* The end of every forward here: when st is DDL_OK, record spec's node on o (if an input
 * requires grad) and hand o to *out; on any failure release o. Either way release spec's
 * temporaries. Returns the status. */
static ddl_status finish(ddl_tensor **out, ddl_status st, ddl_tensor *o, node_spec *spec) {
    ddl_node *n = NULL;
    if (!st) st = ddl_node_record(&n, o, spec->name, spec->backward, spec->n_inputs, spec->in);
    if (!st && n) {
        memcpy(n->iargs, spec->iargs, sizeof n->iargs);
        memcpy(n->dargs, spec->dargs, sizeof n->dargs);
        for (int i = 0; i < DDL_NODE_MAX_SAVED && !st; i++)
            if (spec->save[i]) st = ddl_node_save(n, i, spec->save[i]);
    }
    release_all(spec->drop, 8);
    if (st)
        ddl_tensor_release(o);
    else
        *out = o;
    return st;
}

static const char *shp(char *buf, const ddl_tensor *t) {
    return ddl_shape_str(buf, DDL_SHAPE_BUF, t->ndim, t->shape);
}

/* ---- linear: y = x @ W^T + b, x (..., IN), W (OUT, IN), b (OUT,) ---------------------------- */

static ddl_status linear_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    int64_t B = n->iargs[0], IN = n->iargs[1], OUT = n->iargs[2];
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
    return finish(out, st, o,
                  &(node_spec){.name = "LinearBackward",
                               .backward = linear_backward,
                               .n_inputs = 3,
                               .in = {x, w, b},
                               .iargs = {B, IN, OUT},
                               .save = {t[0], t[1]},
                               .drop = {t[0], t[1], t[2]}});
}

/* ---- conv2d ----------------------------------------------------------------------------- */

/* iargs: N C H W O KH KW sh sw ph pw dh dw */
static ddl_status conv2d_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                  const int *need) {
    const int64_t *a = n->iargs;
    int64_t ns;
    DDL_TRY(ddl_conv2d_scratch_floats(&ns, a[1], a[2], a[3], a[5], a[6], a[7], a[8], a[9], a[10],
                                      a[11], a[12]));
    ddl_tensor *g = NULL, *col = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && ns) st = ddl_tensor_empty(&col, DDL_FLOAT32, 1, &ns);
    if (!st) st = zero_grads(n, dinp, need);
    if (!st && a[0] > 0) /* an empty batch: the zeroed gradients are final */
        st = ddl_conv2d_backward(need[0] ? F(dinp[0]) : NULL, need[1] ? F(dinp[1]) : NULL,
                                 need[2] ? F(dinp[2]) : NULL, FOPT(col), F(g), F(n->saved[0]),
                                 F(n->saved[1]), a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
                                 a[8], a[9], a[10], a[11], a[12]);
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
    ddl_status st = f32(&t[0], x, "conv2d", "input");
    if (!st) st = f32(&t[1], w, "conv2d", "weight");
    if (!st) st = f32(&t[2], b, "conv2d", "bias");
    int64_t oshape[4] = {N, O, OH, OW};
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, 4, oshape);
    if (!st && ns) st = ddl_tensor_empty(&col, DDL_FLOAT32, 1, &ns);
    if (!st && N > 0)
        st = ddl_conv2d_forward(F(o), FOPT(col), F(t[0]), F(t[1]), FOPT(t[2]), N, C, H, W, O, KH,
                                KW, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1]);
    ddl_tensor_release(col);
    return finish(out, st, o,
                  &(node_spec){.name = "Conv2dBackward",
                               .backward = conv2d_backward,
                               .n_inputs = 3,
                               .in = {x, w, b},
                               .iargs = {N, C, H, W, O, KH, KW, stride[0], stride[1], pad[0],
                                         pad[1], dil[0], dil[1]},
                               .save = {t[0], t[1]},
                               .drop = {t[0], t[1], t[2]}});
}

/* ---- pooling -------------------------------------------------------------------------------- */

/* iargs: kind (ddl_pool_kind) N C H W KH KW sh sw ph pw OH OW ; saved: max indices */
static ddl_status pool_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    const int64_t *a = n->iargs;
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    if (!st && a[1] * a[2] > 0) { /* N * C: nothing to pool when empty, gradients stay 0 */
        float *d = F(dinp[0]);
        if (a[0] == DDL_POOL_MAX)
            st = ddl_max_pool2d_backward(d, F(g), (const int64_t *)ddl_tensor_data(n->saved[0]),
                                         a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9],
                                         a[10]);
        else if (a[0] == DDL_POOL_AVG)
            st = ddl_avg_pool2d_backward(d, F(g), a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8],
                                         a[9], a[10]);
        else
            st = ddl_adaptive_avg_pool2d_backward(d, F(g), a[1], a[2], a[3], a[4], a[11], a[12]);
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
    ddl_status st = f32(&xc, x, who, "input");
    int64_t oshape[4] = {N, C, OH, OW};
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, 4, oshape);
    if (!st && kind == DDL_POOL_MAX) st = ddl_tensor_empty(&idx, DDL_INT64, 4, oshape);
    if (!st && N > 0 && C > 0) {
        if (kind == DDL_POOL_MAX)
            st = ddl_max_pool2d_forward(F(o), (int64_t *)ddl_tensor_data(idx), F(xc), N, C, H, W,
                                        k[0], k[1], stride[0], stride[1], pad[0], pad[1]);
        else if (kind == DDL_POOL_AVG)
            st = ddl_avg_pool2d_forward(F(o), F(xc), N, C, H, W, k[0], k[1], stride[0], stride[1],
                                        pad[0], pad[1]);
        else
            st = ddl_adaptive_avg_pool2d_forward(F(o), F(xc), N, C, H, W, OH, OW);
    }
    return finish(
        out, st, o,
        &(node_spec){.name = kind == DDL_POOL_MAX ? "MaxPool2dBackward" : "AvgPool2dBackward",
                     .backward = pool_backward,
                     .n_inputs = 1,
                     .in = {x},
                     .iargs = {kind, N, C, H, W, k[0], k[1], adaptive ? 0 : stride[0],
                               adaptive ? 0 : stride[1], adaptive ? 0 : pad[0],
                               adaptive ? 0 : pad[1], OH, OW},
                     .save = {idx},
                     .drop = {xc, idx}});
}

/* ---- batch norm ---------------------------------------------------------------------------- */

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
    return finish(out, st, o,
                  &(node_spec){.name = "BatchNormBackward",
                               .backward = batchnorm_backward,
                               .n_inputs = 3,
                               .in = {x, weight, bias},
                               .iargs = {N, C, S, training},
                               .save = {t[0], t[1], t[2], t[3]},
                               .drop = {t[0], t[1], t[2], t[3], bc}});
}

/* ---- softmax / log_softmax over the last dim ---------------------------------------------------
 */

static ddl_status softmax_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                   const int *need) {
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    if (!st)
        st = (n->iargs[0] ? ddl_log_softmax_backward : ddl_softmax_backward)(
            F(dinp[0]), F(g), F(n->saved[0]), n->iargs[1], n->iargs[2]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_softmax(ddl_tensor **out, const ddl_tensor *x, int log) {
    char b1[DDL_SHAPE_BUF];
    if (x->ndim < 1)
        DDL_FAIL(DDL_E_VALUE, "softmax: input must have at least 1 dim, got %s", shp(b1, x));
    int64_t C = x->shape[x->ndim - 1], B = C ? ddl_tensor_numel(x) / C : 0;
    ddl_tensor *xc = NULL, *o = NULL;
    ddl_status st = f32(&xc, x, log ? "log_softmax" : "softmax", "input");
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, x->ndim, x->shape);
    if (!st && B * C > 0)
        st = (log ? ddl_log_softmax_forward : ddl_softmax_forward)(F(o), F(xc), B, C);
    return finish(out, st, o,
                  &(node_spec){.name = log ? "LogSoftmaxBackward" : "SoftmaxBackward",
                               .backward = softmax_backward,
                               .n_inputs = 1,
                               .in = {x},
                               .iargs = {log, B, C},
                               .save = {o},
                               .drop = {xc}});
}

/* ---- losses -----------------------------------------------------------------------------------
 */

static ddl_status loss_output(ddl_tensor **loss, ddl_tensor **losses, ddl_reduction reduction,
                              int ndim, const int64_t *shape) {
    if (reduction == DDL_REDUCTION_NONE) return ddl_tensor_empty(losses, DDL_FLOAT32, ndim, shape);
    return ddl_tensor_empty(loss, DDL_FLOAT32, 0, NULL);
}

/* iargs: kind (ddl_class_loss_kind) B C reduction ignore_index ; dargs[0] smoothing ;
 * saved: logits (or log-probs), targets, lse */
static ddl_status class_loss_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                      const int *need) {
    const int64_t *a = n->iargs;
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    const int64_t *tg = ddl_tensor_data(n->saved[1]);
    if (!st && need[0] && a[0] == DDL_CLASS_LOSS_CROSS_ENTROPY)
        st = ddl_cross_entropy_backward(F(dinp[0]), F(g), F(n->saved[0]), F(n->saved[2]), tg, a[1],
                                        a[2], (ddl_reduction)a[3], a[4], (float)n->dargs[0]);
    else if (!st && need[0])
        st = ddl_nll_loss_backward(F(dinp[0]), F(g), tg, a[1], a[2], (ddl_reduction)a[3], a[4]);
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_class_loss(ddl_tensor **out, ddl_class_loss_kind kind, const ddl_tensor *x,
                             const ddl_tensor *target, ddl_reduction reduction,
                             int64_t ignore_index, double label_smoothing) {
    if ((unsigned)kind >= DDL_NUM_CLASS_LOSSES)
        DDL_FAIL(DDL_E_VALUE, "class_loss: unknown kind %d (a ddl_class_loss_kind)", (int)kind);
    int ce = kind == DDL_CLASS_LOSS_CROSS_ENTROPY;
    const char *who = ce ? "cross_entropy" : "nll_loss";
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (x->ndim != 2 || target->ndim != 1 || target->shape[0] != x->shape[0])
        DDL_FAIL(DDL_E_VALUE, "%s: expected input (N, C) and target (N,), got %s and %s", who,
                 shp(b1, x), shp(b2, target));
    if ((unsigned)reduction > DDL_REDUCTION_SUM)
        DDL_FAIL(DDL_E_VALUE, "%s: invalid reduction %d", who, (int)reduction);
    if (label_smoothing < 0 || label_smoothing > 1)
        DDL_FAIL(DDL_E_VALUE, "%s: label_smoothing must be in [0, 1], got %g", who,
                 label_smoothing);
    int64_t B = x->shape[0], C = x->shape[1];
    ddl_tensor *xc = NULL, *tc = NULL, *lse = NULL, *loss = NULL, *losses = NULL;
    ddl_status st = f32(&xc, x, who, "input");
    if (!st) st = i64(&tc, target, who, "target");
    if (!st && ce) st = ddl_tensor_empty(&lse, DDL_FLOAT32, 1, &B);
    if (!st) st = loss_output(&loss, &losses, reduction, 1, &B);
    if (!st && ce)
        st = ddl_cross_entropy_forward(FOPT(loss), FOPT(losses), F(lse), F(xc), ddl_tensor_data(tc),
                                       B, C, reduction, ignore_index, (float)label_smoothing);
    else if (!st)
        st = ddl_nll_loss_forward(FOPT(loss), FOPT(losses), F(xc), ddl_tensor_data(tc), B, C,
                                  reduction, ignore_index);
    return finish(out, st, loss ? loss : losses,
                  &(node_spec){.name = ce ? "CrossEntropyBackward" : "NllLossBackward",
                               .backward = class_loss_backward,
                               .n_inputs = 1,
                               .in = {x},
                               .iargs = {kind, B, C, reduction, ignore_index},
                               .dargs = {label_smoothing},
                               .save = {xc, tc, lse},
                               .drop = {xc, tc, lse}});
}

/* iargs: kind (ddl_pair_loss_kind) N C reduction ; saved: input, target,
 * pos_weight */
static ddl_status pair_loss_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                     const int *need) {
    const int64_t *a = n->iargs;
    ddl_tensor *g;
    ddl_status st = begin_backward(&g, n, dout, dinp, need);
    float *d0 = need[0] ? F(dinp[0]) : NULL, *d1 = need[1] ? F(dinp[1]) : NULL;
    ddl_reduction r = (ddl_reduction)a[3];
    if (!st) {
        if (a[0] == DDL_PAIR_LOSS_BCE_WITH_LOGITS)
            st = ddl_binary_cross_entropy_with_logits_backward(
                d0, d1, F(g), F(n->saved[0]), F(n->saved[1]), FOPT(n->saved[2]), a[1], a[2], r);
        else if (a[0] == DDL_PAIR_LOSS_MSE)
            st = ddl_mse_loss_backward(d0, d1, F(g), F(n->saved[0]), F(n->saved[1]), a[1], r);
        else
            st = ddl_l1_loss_backward(d0, d1, F(g), F(n->saved[0]), F(n->saved[1]), a[1], r);
    }
    ddl_tensor_release(g);
    return st;
}

ddl_status ddl_ag_pair_loss(ddl_tensor **out, ddl_pair_loss_kind kind, const ddl_tensor *x,
                            const ddl_tensor *y, const ddl_tensor *pos_weight,
                            ddl_reduction reduction) {
    static const char *names[DDL_NUM_PAIR_LOSSES] = {"binary_cross_entropy_with_logits", "mse_loss",
                                                     "l1_loss"};
    static const char *node_names[DDL_NUM_PAIR_LOSSES] = {"BceWithLogitsBackward",
                                                          "MseLossBackward", "L1LossBackward"};
    if ((unsigned)kind >= DDL_NUM_PAIR_LOSSES)
        DDL_FAIL(DDL_E_VALUE, "pair_loss: unknown kind %d (a ddl_pair_loss_kind)", (int)kind);
    const char *who = names[kind];
    int bce = kind == DDL_PAIR_LOSS_BCE_WITH_LOGITS;
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF];
    if (x->ndim != y->ndim || memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim))
        DDL_FAIL(DDL_E_VALUE, "%s: input %s and target %s must have the same shape", who,
                 shp(b1, x), shp(b2, y));
    if ((unsigned)reduction > DDL_REDUCTION_SUM)
        DDL_FAIL(DDL_E_VALUE, "%s: invalid reduction %d", who, (int)reduction);
    int64_t C = x->ndim ? x->shape[x->ndim - 1] : 1, N0 = ddl_tensor_numel(x);
    int64_t N = bce ? (C ? N0 / C : 0) : N0;
    if (pos_weight && (ddl_tensor_numel(pos_weight) != C))
        DDL_FAIL(DDL_E_VALUE, "%s: pos_weight of shape %s for %lld classes", who,
                 shp(b1, pos_weight), (long long)C);
    ddl_tensor *t[3] = {0}, *loss = NULL, *losses = NULL;
    ddl_status st = f32(&t[0], x, who, "input");
    if (!st) st = f32(&t[1], y, who, "target");
    if (!st) st = f32(&t[2], pos_weight, who, "pos_weight");
    if (!st) st = loss_output(&loss, &losses, reduction, x->ndim, x->shape);
    if (!st && N0 > 0) {
        if (bce)
            st = ddl_binary_cross_entropy_with_logits_forward(FOPT(loss), FOPT(losses), F(t[0]),
                                                              F(t[1]), FOPT(t[2]), N, C, reduction);
        else if (kind == DDL_PAIR_LOSS_MSE)
            st = ddl_mse_loss_forward(FOPT(loss), FOPT(losses), F(t[0]), F(t[1]), N, reduction);
        else
            st = ddl_l1_loss_forward(FOPT(loss), FOPT(losses), F(t[0]), F(t[1]), N, reduction);
    } else if (!st && loss) {
        /* an empty input: sum is 0, mean is NaN (as PyTorch) */
        *F(loss) = reduction == DDL_REDUCTION_SUM ? 0.0f : NAN;
    }
    return finish(out, st, loss ? loss : losses,
                  &(node_spec){.name = node_names[kind],
                               .backward = pair_loss_backward,
                               .n_inputs = 2,
                               .in = {x, y},
                               .iargs = {kind, N, C, reduction},
                               .save = {t[0], t[1], t[2]},
                               .drop = {t[0], t[1], t[2]}});
}

/* ---- activations with their own kernels ---------------------------------------------------------
 */

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
    return finish(out, st, o,
                  &(node_spec){.name = leaky ? "LeakyReluBackward" : "GeluBackward",
                               .backward = act_backward,
                               .n_inputs = 1,
                               .in = {x},
                               .iargs = {kind, approximate},
                               .dargs = {slope},
                               .save = {xc},
                               .drop = {xc}});
}

/* ---- embedding ----------------------------------------------------------------------------------
 */

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
    return finish(out, st, o,
                  &(node_spec){.name = "EmbeddingBackward",
                               .backward = embedding_backward,
                               .n_inputs = 2,
                               .in = {NULL, w},
                               .iargs = {N, V, D, padding_idx},
                               .save = {ic},
                               .drop = {ic, wc}});
}

/* ---- dropout ------------------------------------------------------------------------------------
 */

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
    return finish(out, st, o,
                  &(node_spec){.name = "DropoutBackward",
                               .backward = dropout_backward,
                               .n_inputs = 1,
                               .in = {x},
                               .dargs = {p},
                               .save = {mask},
                               .drop = {xc, r, mask}});
}

/* ---- recurrent cells ---------------------------------------------------------------------------
 */

/* inputs: x h c w_ih w_hh b_ih b_hh ; iargs: kind (ddl_cell_kind) B I H nonlinearity ;
 * saved: x h c w_ih w_hh cache */
static ddl_status cell_backward(ddl_node *n, const ddl_tensor *dout, ddl_tensor **dinp,
                                const int *need) {
    int64_t kind = n->iargs[0], B = n->iargs[1], I = n->iargs[2], H = n->iargs[3];
    ddl_tensor *g = NULL, *dh_new = NULL, *dc_new = NULL, *scratch = NULL, *tmp = NULL;
    ddl_status st = ddl_tensor_contiguous(&g, dout);
    if (!st && kind == DDL_CELL_LSTM) { /* the output is [h', c'] side by side: split dout */
        st = ddl_tensor_slice(&tmp, g, 1, 0, H, 1);
        if (!st) st = ddl_tensor_clone(&dh_new, tmp);
        ddl_tensor_release(tmp);
        tmp = NULL;
        if (!st) st = ddl_tensor_slice(&tmp, g, 1, H, 2 * H, 1);
        if (!st) st = ddl_tensor_clone(&dc_new, tmp);
        ddl_tensor_release(tmp);
    } else if (!st) {
        dh_new = g;
        ddl_tensor_retain(g);
    }
    int64_t ns = kind == DDL_CELL_LSTM  ? ddl_lstm_cell_scratch_floats(B, H)
                 : kind == DDL_CELL_GRU ? ddl_gru_cell_scratch_floats(B, H)
                                        : ddl_rnn_cell_scratch_floats(B, H);
    if (ns < 1) ns = 1;
    if (!st) st = ddl_tensor_empty(&scratch, DDL_FLOAT32, 1, &ns);
    if (!st) st = zero_grads(n, dinp, need);
    float *d[7];
    for (int i = 0; i < 7; i++) d[i] = need[i] ? F(dinp[i]) : NULL;
    ddl_tensor *const *s = n->saved;
    if (!st && kind == DDL_CELL_LSTM)
        st = ddl_lstm_cell_backward(d[0], d[1], d[2], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                    F(dc_new), F(s[5]), F(s[0]), F(s[1]), F(s[2]), F(s[3]), F(s[4]),
                                    B, I, H);
    else if (!st && kind == DDL_CELL_GRU)
        st = ddl_gru_cell_backward(d[0], d[1], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                   F(s[5]), F(s[0]), F(s[1]), F(s[3]), F(s[4]), B, I, H);
    else if (!st)
        st = ddl_rnn_cell_backward(d[0], d[1], d[3], d[4], d[5], d[6], F(scratch), F(dh_new),
                                   F(s[5]), F(s[0]), F(s[1]), F(s[3]), F(s[4]), B, I, H,
                                   (ddl_rnn_nonlinearity)n->iargs[4]);
    ddl_tensor_release(g);
    ddl_tensor_release(dh_new);
    ddl_tensor_release(dc_new);
    ddl_tensor_release(scratch);
    return st;
}

ddl_status ddl_ag_rnn_cell(ddl_tensor **out, ddl_cell_kind kind, const ddl_tensor *x,
                           const ddl_tensor *h, const ddl_tensor *c, const ddl_tensor *w_ih,
                           const ddl_tensor *w_hh, const ddl_tensor *b_ih, const ddl_tensor *b_hh,
                           ddl_rnn_nonlinearity nonlinearity) {
    static const char *names[DDL_NUM_CELL_KINDS] = {"rnn_cell", "lstm_cell", "gru_cell"};
    static const char *node_names[DDL_NUM_CELL_KINDS] = {"RnnCellBackward", "LstmCellBackward",
                                                         "GruCellBackward"};
    if ((unsigned)kind >= DDL_NUM_CELL_KINDS)
        DDL_FAIL(DDL_E_VALUE, "rnn_cell: unknown kind %d (a ddl_cell_kind)", (int)kind);
    if (kind == DDL_CELL_RNN && nonlinearity != DDL_RNN_TANH && nonlinearity != DDL_RNN_RELU)
        DDL_FAIL(DDL_E_VALUE, "rnn_cell: unknown nonlinearity %d (0 tanh, 1 relu)",
                 (int)nonlinearity);
    const char *who = names[kind];
    char b1[DDL_SHAPE_BUF], b2[DDL_SHAPE_BUF], b3[DDL_SHAPE_BUF];
    int64_t gates = kind == DDL_CELL_LSTM ? 4 : kind == DDL_CELL_GRU ? 3 : 1;
    if (x->ndim != 2 || h->ndim != 2 || w_ih->ndim != 2 || w_hh->ndim != 2)
        DDL_FAIL(DDL_E_VALUE, "%s: expected 2-D input, hidden state and weights", who);
    int64_t B = x->shape[0], I = x->shape[1], H = h->shape[1];
    if (h->shape[0] != B || w_ih->shape[0] != gates * H || w_ih->shape[1] != I ||
        w_hh->shape[0] != gates * H || w_hh->shape[1] != H)
        DDL_FAIL(DDL_E_VALUE,
                 "%s: input %s, hidden %s do not match weight_ih %s (expected (%lld, %lld))", who,
                 shp(b1, x), shp(b2, h), shp(b3, w_ih), (long long)(gates * H), (long long)I);
    if ((kind == DDL_CELL_LSTM) != (c != NULL))
        DDL_FAIL(DDL_E_VALUE, "%s: a cell state is needed by (and only by) LSTM", who);
    if (c && (c->ndim != 2 || c->shape[0] != B || c->shape[1] != H))
        DDL_FAIL(DDL_E_VALUE, "%s: cell state %s should be (%lld, %lld)", who, shp(b1, c),
                 (long long)B, (long long)H);
    const ddl_tensor *bs[2] = {b_ih, b_hh};
    for (int i = 0; i < 2; i++)
        if (bs[i] && ddl_tensor_numel(bs[i]) != gates * H)
            DDL_FAIL(DDL_E_VALUE, "%s: bias of shape %s for %lld gates", who, shp(b1, bs[i]),
                     (long long)(gates * H));
    ddl_tensor *t[7] = {0}, *cache = NULL, *o = NULL;
    const ddl_tensor *ins[7] = {x, h, c, w_ih, w_hh, b_ih, b_hh};
    static const char *arg[7] = {"input",     "hx",      "cx",     "weight_ih",
                                 "weight_hh", "bias_ih", "bias_hh"};
    ddl_status st = DDL_OK;
    for (int i = 0; i < 7 && !st; i++) st = f32(&t[i], ins[i], who, arg[i]);
    int64_t nc = kind == DDL_CELL_LSTM  ? ddl_lstm_cell_cache_floats(B, H)
                 : kind == DDL_CELL_GRU ? ddl_gru_cell_cache_floats(B, H)
                                        : ddl_rnn_cell_cache_floats(B, H);
    if (nc < 1) nc = 1;
    int64_t oshape[2] = {B, kind == DDL_CELL_LSTM ? 2 * H : H};
    if (!st) st = ddl_tensor_empty(&cache, DDL_FLOAT32, 1, &nc);
    if (!st) st = ddl_tensor_empty(&o, DDL_FLOAT32, 2, oshape);
    if (!st && kind == DDL_CELL_LSTM) {
        ddl_tensor *hn = NULL, *cn = NULL; /* h' and c' are written to scratch, then packed */
        st = ddl_tensor_empty(&hn, DDL_FLOAT32, 2, h->shape);
        if (!st) st = ddl_tensor_empty(&cn, DDL_FLOAT32, 2, h->shape);
        if (!st)
            st = ddl_lstm_cell_forward(F(hn), F(cn), F(cache), F(t[0]), F(t[1]), F(t[2]), F(t[3]),
                                       F(t[4]), FOPT(t[5]), FOPT(t[6]), B, I, H);
        ddl_tensor *half = NULL;
        if (!st) st = ddl_tensor_slice(&half, o, 1, 0, H, 1);
        if (!st) st = ddl_copy_(half, hn);
        ddl_tensor_release(half);
        half = NULL;
        if (!st) st = ddl_tensor_slice(&half, o, 1, H, 2 * H, 1);
        if (!st) st = ddl_copy_(half, cn);
        ddl_tensor_release(half);
        ddl_tensor_release(hn);
        ddl_tensor_release(cn);
    } else if (!st && kind == DDL_CELL_GRU) {
        st = ddl_gru_cell_forward(F(o), F(cache), F(t[0]), F(t[1]), F(t[3]), F(t[4]), FOPT(t[5]),
                                  FOPT(t[6]), B, I, H);
    } else if (!st) {
        st = ddl_rnn_cell_forward(F(o), F(cache), F(t[0]), F(t[1]), F(t[3]), F(t[4]), FOPT(t[5]),
                                  FOPT(t[6]), B, I, H, nonlinearity);
    }
    return finish(out, st, o,
                  &(node_spec){.name = node_names[kind],
                               .backward = cell_backward,
                               .n_inputs = 7,
                               .in = {x, h, c, w_ih, w_hh, b_ih, b_hh},
                               .iargs = {kind, B, I, H, nonlinearity},
                               .save = {t[0], t[1], t[2], t[3], t[4], cache},
                               .drop = {t[0], t[1], t[2], t[3], t[4], t[5], t[6], cache}});
}
