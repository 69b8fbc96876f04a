/* nn.c (binding): the layer ops of grad_nn.h, each one C call with the GIL released. */
#include "ddl/autograd.h"
#include "pyddl.h"

/* Up to 8 tensor arguments, None allowed where `optional`; released by args_release. */
typedef struct {
    ddl_tensor *t[8];
    int n;
} targs;

static int args_get(targs *a, PyObject *o, int optional, const char *who) {
    ddl_tensor *t = NULL;
    if (o == Py_None && optional) {
        a->t[a->n++] = NULL;
        return 0;
    }
    if (pyddl_as_tensor(o, &t, who) < 0) return -1;
    a->t[a->n++] = t;
    return 0;
}

static void args_release(targs *a) {
    for (int i = 0; i < a->n; i++) ddl_tensor_release(a->t[i]);
}

static PyObject *finish(ddl_status st, ddl_tensor *r, targs *a) {
    args_release(a);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

static PyObject *py_linear(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *w, *b;
    if (!PyArg_ParseTuple(args, "OOO", &x, &w, &b)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "linear") || args_get(&a, w, 0, "linear") || args_get(&a, b, 1, "linear")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_linear(&r, a.t[0], a.t[1], a.t[2]);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_conv2d(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *w, *b;
    int64_t s[2], p[2], d[2];
    if (!PyArg_ParseTuple(args, "OOOLLLLLL", &x, &w, &b, &s[0], &s[1], &p[0], &p[1], &d[0], &d[1]))
        return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "conv2d") || args_get(&a, w, 0, "conv2d") || args_get(&a, b, 1, "conv2d")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_conv2d(&r, a.t[0], a.t[1], a.t[2], s, p, d);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_pool2d(PyObject *self, PyObject *args) {
    (void)self;
    int kind;
    PyObject *x;
    int64_t k[2], s[2], p[2];
    if (!PyArg_ParseTuple(args, "COLLLLLL", &kind, &x, &k[0], &k[1], &s[0], &s[1], &p[0], &p[1]))
        return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "pool2d")) return NULL;
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_pool2d(&r, (char)kind, a.t[0], k, s, p);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_batch_norm(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *rm, *rv, *w, *b;
    int training;
    double momentum, eps;
    if (!PyArg_ParseTuple(args, "OOOOOpdd", &x, &rm, &rv, &w, &b, &training, &momentum, &eps))
        return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "batch_norm") || args_get(&a, rm, 1, "batch_norm") ||
        args_get(&a, rv, 1, "batch_norm") || args_get(&a, w, 1, "batch_norm") ||
        args_get(&a, b, 1, "batch_norm")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_batch_norm(&r, a.t[0], a.t[1], a.t[2], a.t[3], a.t[4],
                                                  training, momentum, eps);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x;
    int log;
    if (!PyArg_ParseTuple(args, "Op", &x, &log)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "softmax")) return NULL;
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_softmax(&r, a.t[0], log);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_class_loss(PyObject *self, PyObject *args) {
    (void)self;
    int kind, reduction;
    PyObject *x, *t;
    long long ignore;
    double smoothing;
    if (!PyArg_ParseTuple(args, "COOiLd", &kind, &x, &t, &reduction, &ignore, &smoothing))
        return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "loss") || args_get(&a, t, 0, "loss")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st =
        ddl_ag_class_loss(&r, (char)kind, a.t[0], a.t[1], reduction, ignore, smoothing);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_pair_loss(PyObject *self, PyObject *args) {
    (void)self;
    int kind, reduction;
    PyObject *x, *y, *pw;
    if (!PyArg_ParseTuple(args, "COOOi", &kind, &x, &y, &pw, &reduction)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "loss") || args_get(&a, y, 0, "loss") || args_get(&a, pw, 1, "loss")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_pair_loss(&r, (char)kind, a.t[0], a.t[1], a.t[2], reduction);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_activation(PyObject *self, PyObject *args) {
    (void)self;
    int kind, approximate;
    PyObject *x;
    double slope;
    if (!PyArg_ParseTuple(args, "COdi", &kind, &x, &slope, &approximate)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "activation")) return NULL;
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_activation(&r, (char)kind, a.t[0], slope, approximate);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_embedding(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *idx, *w;
    long long padding_idx;
    if (!PyArg_ParseTuple(args, "OOL", &idx, &w, &padding_idx)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, idx, 0, "embedding") || args_get(&a, w, 0, "embedding")) {
        args_release(&a);
        return NULL;
    }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_embedding(&r, a.t[0], a.t[1], padding_idx);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_dropout(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x;
    double p;
    if (!PyArg_ParseTuple(args, "Od", &x, &p)) return NULL;
    targs a = {.n = 0};
    if (args_get(&a, x, 0, "dropout")) return NULL;
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_dropout(&r, a.t[0], p);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

static PyObject *py_rnn_cell(PyObject *self, PyObject *args) {
    (void)self;
    int kind, nonlinearity;
    PyObject *o[7];
    if (!PyArg_ParseTuple(args, "COOOOOOOi", &kind, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                          &o[6], &nonlinearity))
        return NULL;
    targs a = {.n = 0};
    for (int i = 0; i < 7; i++)
        if (args_get(&a, o[i], i == 2 || i >= 5, "rnn_cell")) {
            args_release(&a);
            return NULL;
        }
    ddl_tensor *r = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_rnn_cell(&r, (char)kind, a.t[0], a.t[1], a.t[2], a.t[3],
                                                a.t[4], a.t[5], a.t[6], nonlinearity);
    Py_END_ALLOW_THREADS
    return finish(st, r, &a);
}

PyMethodDef pyddl_nn_functions[] = {
    {"linear", py_linear, METH_VARARGS, "linear(x, w, b or None)"},
    {"conv2d", py_conv2d, METH_VARARGS, "conv2d(x, w, b, sh, sw, ph, pw, dh, dw)"},
    {"pool2d", py_pool2d, METH_VARARGS, "pool2d(kind 'm'|'a'|'A', x, kh, kw, sh, sw, ph, pw)"},
    {"batch_norm", py_batch_norm, METH_VARARGS,
     "batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, log): over the last dim"},
    {"class_loss", py_class_loss, METH_VARARGS,
     "class_loss(kind 'c'|'n', x, target, reduction, ignore_index, label_smoothing)"},
    {"pair_loss", py_pair_loss, METH_VARARGS,
     "pair_loss(kind 'b'|'s'|'l', x, y, pos_weight, reduction)"},
    {"activation", py_activation, METH_VARARGS, "activation(kind 'l'|'g', x, slope, approximate)"},
    {"embedding", py_embedding, METH_VARARGS, "embedding(indices, weight, padding_idx)"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(x, p): training mode"},
    {"rnn_cell", py_rnn_cell, METH_VARARGS,
     "rnn_cell(kind 'r'|'l'|'g', x, h, c, w_ih, w_hh, b_ih, b_hh, nonlinearity)"},
    {NULL, NULL, 0, NULL},
};
