/* nn.c (binding): the differentiable layer ops of autograd.h, each one C call with the GIL
 * released. The tensors come in through the O& converters of convert.c and go back through
 * pyddl_finish; the kinds are the enums of autograd.h (exported as _C.POOL_MAX, ...). */
#include "pyddl.h"

#define T pyddl_conv_tensor
#define T_OPT pyddl_conv_tensor_or_none

PYDDL_DOC(linear, "(x, w, b, /)", "x @ w.T + b (b may be None).");
static PyObject *py_linear(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *r = NULL; /* x, w, b */
    if (!PyArg_ParseTuple(args, "O&O&O&", T, &t[0], T, &t[1], T_OPT, &t[2])) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_linear(&r, t[0], t[1], t[2]));
    return pyddl_finish(st, r, t, 3);
}

PYDDL_DOC(conv2d, "(x, w, b, sh, sw, ph, pw, dh, dw, /)",
          "2-D convolution of x (N, C, H, W) with w (O, C, KH, KW); b may be None.");
static PyObject *py_conv2d(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *r = NULL; /* x, w, b */
    int64_t s[2], p[2], d[2];
    if (!PyArg_ParseTuple(args, "O&O&O&LLLLLL", T, &t[0], T, &t[1], T_OPT, &t[2], &s[0], &s[1],
                          &p[0], &p[1], &d[0], &d[1]))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_conv2d(&r, t[0], t[1], t[2], s, p, d));
    return pyddl_finish(st, r, t, 3);
}

PYDDL_DOC(pool2d, "(kind, x, kh, kw, sh, sw, ph, pw, /)",
          "kind POOL_MAX, POOL_AVG or POOL_ADAPTIVE_AVG (k = the output size).");
static PyObject *py_pool2d(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind;
    ddl_tensor *x = NULL, *r = NULL;
    int64_t k[2], s[2], p[2];
    if (!PyArg_ParseTuple(args, "iO&LLLLLL", &kind, T, &x, &k[0], &k[1], &s[0], &s[1], &p[0],
                          &p[1]))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_pool2d(&r, (ddl_pool_kind)kind, x, k, s, p));
    return pyddl_finish(st, r, &x, 1);
}

PYDDL_DOC(batch_norm, "(x, running_mean, running_var, weight, bias, training, momentum, eps, /)",
          "Batch norm over dim 1; the running stats are updated in place when training.");
static PyObject *py_batch_norm(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[5] = {NULL, NULL, NULL, NULL, NULL}, *r = NULL; /* x, rm, rv, w, b */
    int training;
    double momentum, eps;
    if (!PyArg_ParseTuple(args, "O&O&O&O&O&pdd", T, &t[0], T_OPT, &t[1], T_OPT, &t[2], T_OPT, &t[3],
                          T_OPT, &t[4], &training, &momentum, &eps))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_batch_norm(&r, t[0], t[1], t[2], t[3], t[4], training, momentum, eps));
    return pyddl_finish(st, r, t, 5);
}

PYDDL_DOC(softmax, "(x, log, /)", "softmax (log_softmax when log) over the last dim.");
static PyObject *py_softmax(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *x = NULL, *r = NULL;
    int log;
    if (!PyArg_ParseTuple(args, "O&p", T, &x, &log)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_softmax(&r, x, log));
    return pyddl_finish(st, r, &x, 1);
}

PYDDL_DOC(class_loss, "(kind, x, target, reduction, ignore_index, label_smoothing, /)",
          "kind CLASS_LOSS_CROSS_ENTROPY or CLASS_LOSS_NLL; reduction REDUCTION_*.");
static PyObject *py_class_loss(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind, reduction;
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* x, target */
    long long ignore;
    double smoothing;
    if (!PyArg_ParseTuple(args, "iO&O&iLd", &kind, T, &t[0], T, &t[1], &reduction, &ignore,
                          &smoothing))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_class_loss(&r, (ddl_class_loss_kind)kind, t[0], t[1],
                                      (ddl_reduction)reduction, ignore, smoothing));
    return pyddl_finish(st, r, t, 2);
}

PYDDL_DOC(pair_loss, "(kind, x, y, pos_weight, reduction, /)",
          "kind PAIR_LOSS_BCE_WITH_LOGITS, PAIR_LOSS_MSE or PAIR_LOSS_L1.");
static PyObject *py_pair_loss(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind, reduction;
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *r = NULL; /* x, y, pos_weight */
    if (!PyArg_ParseTuple(args, "iO&O&O&i", &kind, T, &t[0], T, &t[1], T_OPT, &t[2], &reduction))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_pair_loss(&r, (ddl_pair_loss_kind)kind, t[0], t[1], t[2],
                                     (ddl_reduction)reduction));
    return pyddl_finish(st, r, t, 3);
}

PYDDL_DOC(activation, "(kind, x, slope, approximate, /)",
          "kind ACT_LEAKY_RELU (slope) or ACT_GELU (approximate GELU_NONE or GELU_TANH).");
static PyObject *py_activation(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind, approximate;
    ddl_tensor *x = NULL, *r = NULL;
    double slope;
    if (!PyArg_ParseTuple(args, "iO&di", &kind, T, &x, &slope, &approximate)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(
        st, ddl_ag_activation(&r, (ddl_act_kind)kind, x, slope, (ddl_gelu_approximate)approximate));
    return pyddl_finish(st, r, &x, 1);
}

PYDDL_DOC(embedding, "(indices, weight, padding_idx, /)",
          "weight[indices]; padding_idx < 0 for none.");
static PyObject *py_embedding(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* indices, weight */
    long long padding_idx;
    if (!PyArg_ParseTuple(args, "O&O&L", T, &t[0], T, &t[1], &padding_idx)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_embedding(&r, t[0], t[1], padding_idx));
    return pyddl_finish(st, r, t, 2);
}

PYDDL_DOC(dropout, "(x, p, /)", "Training-mode dropout.");
static PyObject *py_dropout(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *x = NULL, *r = NULL;
    double p;
    if (!PyArg_ParseTuple(args, "O&d", T, &x, &p)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_dropout(&r, x, p));
    return pyddl_finish(st, r, &x, 1);
}

PYDDL_DOC(rnn_cell, "(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, nonlinearity, /)",
          "One step of CELL_RNN (nonlinearity RNN_TANH or RNN_RELU), CELL_LSTM (c needed; returns "
          "[h', c']) or CELL_GRU.");
static PyObject *py_rnn_cell(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind, nonlinearity;
    ddl_tensor *t[7] = {NULL}, *r = NULL; /* x, h, c, w_ih, w_hh, b_ih, b_hh */
    if (!PyArg_ParseTuple(args, "iO&O&O&O&O&O&O&i", &kind, T, &t[0], T, &t[1], T_OPT, &t[2], T,
                          &t[3], T, &t[4], T_OPT, &t[5], T_OPT, &t[6], &nonlinearity))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_rnn_cell(&r, (ddl_cell_kind)kind, t[0], t[1], t[2], t[3], t[4], t[5],
                                    t[6], (ddl_rnn_nonlinearity)nonlinearity));
    return pyddl_finish(st, r, t, 7);
}

PYDDL_DOC(rnn_seq, "(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, /)",
          "A whole sequence of one recurrent layer, one direction, fused: x (T, B, I) -> "
          "(T + S, B, H) = [y_0 .. y_{T-1}, h_n (, c_n for CELL_LSTM)].");
static PyObject *py_rnn_seq(PyObject *Py_UNUSED(self), PyObject *args) {
    int kind, nonlinearity, reverse;
    ddl_tensor *t[7] = {NULL}, *r = NULL; /* x, h, c, w_ih, w_hh, b_ih, b_hh */
    if (!PyArg_ParseTuple(args, "iO&O&O&O&O&O&O&ip", &kind, T, &t[0], T_OPT, &t[1], T_OPT, &t[2], T,
                          &t[3], T, &t[4], T_OPT, &t[5], T_OPT, &t[6], &nonlinearity, &reverse))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_rnn_seq(&r, (ddl_cell_kind)kind, t[0], t[1], t[2], t[3], t[4], t[5],
                                   t[6], (ddl_rnn_nonlinearity)nonlinearity, reverse));
    return pyddl_finish(st, r, t, 7);
}

/* ---- issue 16: float32/float64 layer ops ----------------------------------------------------- */

PYDDL_DOC(layer_norm, "(x, weight, bias, n, eps, kind, /)",
          "Normalize each row of the last n elements of x (kind ROW_NORM_LAYER or ROW_NORM_RMS), "
          "then x * weight + bias (either may be None).");
static PyObject *py_layer_norm(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *r = NULL; /* x, weight, bias */
    long long n;
    double eps;
    int kind;
    if (!PyArg_ParseTuple(args, "O&O&O&Ldi", T, &t[0], T_OPT, &t[1], T_OPT, &t[2], &n, &eps, &kind))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_layer_norm(&r, t[0], t[1], t[2], n, eps, (ddl_row_norm_kind)kind));
    return pyddl_finish(st, r, t, 3);
}

PYDDL_DOC(sdpa, "(q, k, v, mask, scale, causal, naive, /)",
          "Scaled dot-product attention of q (B, H, L, D), k (B, H, S, D), v (B, H, S, E); mask "
          "an additive float mask broadcasting to (B, H, L, S) or None; naive: the materializing "
          "float32 kernel.");
static PyObject *py_sdpa(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[4] = {NULL, NULL, NULL, NULL}, *r = NULL; /* q, k, v, mask */
    double scale;
    int causal, naive;
    if (!PyArg_ParseTuple(args, "O&O&O&O&dpp", T, &t[0], T, &t[1], T, &t[2], T_OPT, &t[3], &scale,
                          &causal, &naive))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_sdpa(&r, t[0], t[1], t[2], t[3], scale, causal, naive));
    return pyddl_finish(st, r, t, 4);
}

PYDDL_DOC(gelu64, "(x, approximate, /)", "GELU of a float64 x (GELU_NONE or GELU_TANH).");
static PyObject *py_gelu64(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *x = NULL, *r = NULL;
    int approximate;
    if (!PyArg_ParseTuple(args, "O&i", T, &x, &approximate)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_gelu64(&r, x, (ddl_gelu_approximate)approximate));
    return pyddl_finish(st, r, &x, 1);
}

PYDDL_DOC(embedding64, "(indices, weight, padding_idx, /)",
          "Rows of a float64 weight (V, D) picked by int64 indices.");
static PyObject *py_embedding64(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* indices, weight */
    long long padding_idx;
    if (!PyArg_ParseTuple(args, "O&O&L", T, &t[0], T, &t[1], &padding_idx)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_embedding64(&r, t[0], t[1], padding_idx));
    return pyddl_finish(st, r, t, 2);
}

PyMethodDef pyddl_nn_functions[] = {
    PYDDL_FN(linear, METH_VARARGS),
    PYDDL_FN(conv2d, METH_VARARGS),
    PYDDL_FN(pool2d, METH_VARARGS),
    PYDDL_FN(batch_norm, METH_VARARGS),
    PYDDL_FN(softmax, METH_VARARGS),
    PYDDL_FN(class_loss, METH_VARARGS),
    PYDDL_FN(pair_loss, METH_VARARGS),
    PYDDL_FN(activation, METH_VARARGS),
    PYDDL_FN(embedding, METH_VARARGS),
    PYDDL_FN(dropout, METH_VARARGS),
    PYDDL_FN(rnn_cell, METH_VARARGS),
    PYDDL_FN(rnn_seq, METH_VARARGS),
    PYDDL_FN(layer_norm, METH_VARARGS),
    PYDDL_FN(sdpa, METH_VARARGS),
    PYDDL_FN(gelu64, METH_VARARGS),
    PYDDL_FN(embedding64, METH_VARARGS),
    PYDDL_FN_END,
};
