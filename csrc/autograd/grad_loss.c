/* grad_loss.c: the differentiable softmax / log_softmax and losses (cross entropy, nll, bce
 * with logits, mse, l1) on top of the float32 kernels of nn_loss.c; each forward records a node
 * whose backward sits right below it. */
#include "autograd/grad_layer.h"
#include "ddl/autograd.h"
#include "ddl/nn_loss.h"

#include <math.h>

/* ---- softmax / log_softmax over the last dim ------------------------------------------------- */

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
    return ddl_node_finish(out, st, o,
                           &(ddl_node_spec){.name = log ? "LogSoftmaxBackward" : "SoftmaxBackward",
                                            .backward = softmax_backward,
                                            .n_inputs = 1,
                                            .in = {x},
                                            .iargs = {log, B, C},
                                            .save = {o},
                                            .drop = {xc}});
}

/* ---- losses ---------------------------------------------------------------------------------- */

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
    return ddl_node_finish(out, st, loss ? loss : losses,
                           &(ddl_node_spec){.name = ce ? "CrossEntropyBackward" : "NllLossBackward",
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
    return ddl_node_finish(out, st, loss ? loss : losses,
                           &(ddl_node_spec){.name = node_names[kind],
                                            .backward = pair_loss_backward,
                                            .n_inputs = 2,
                                            .in = {x, y},
                                            .iargs = {kind, N, C, reduction},
                                            .save = {t[0], t[1], t[2]},
                                            .drop = {t[0], t[1], t[2]}});
}
