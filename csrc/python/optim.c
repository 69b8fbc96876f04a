/* optim.c (binding): the fused optimizer updates and gradient-norm helpers of optim.h, each
 * one C call over a whole parameter group with the GIL released. */
#include "ddl/optim.h"
#include "pyddl.h"

#include <stdlib.h>

/* The per-parameter lists of one optimizer step, each with one entry per parameter: the
 * params (updated in place), their grads (None for a parameter without one), and the
 * optimizer state (updated in place; a whole list may be None where the step allows). */
#define IN PYDDL_LIST_HOLES
#define STATE (PYDDL_LIST_HOLES | PYDDL_LIST_INPLACE)
#define OPT_STATE (PYDDL_LIST_HOLES | PYDDL_LIST_INPLACE | PYDDL_LIST_OPTIONAL)

typedef struct {
    const char *name; /* in errors: "adam_step: exp_avgs has 2 entries, expected 3" */
    int flags;        /* pyddl_list_flags */
} list_spec;

/* Fill l[0..n) from seqs by spec; l[0] sets the parameter count the others must match.
 * Returns 0, or -1 with an exception and every list empty. */
static int group_get(pyddl_tensor_list *l, PyObject *const *seqs, const list_spec *spec, int n,
                     const char *who) {
    for (int i = 0; i < n; i++)
        if (pyddl_tensor_list_get(&l[i], seqs[i], i ? l[0].n : -1, spec[i].flags, who,
                                  spec[i].name) < 0) {
            pyddl_tensor_list_release(l, i);
            return -1;
        }
    return 0;
}

/* first_step flags: a sequence of n truth values, or None (-> NULL). */
static int flags_get(int **out, PyObject *seq, int n, const char *who) {
    *out = NULL;
    if (seq == Py_None) return 0;
    PyObject *fast = PySequence_Fast(seq, "expected a list of bools");
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s: first_step has %zd entries, expected %d", who,
                     PySequence_Fast_GET_SIZE(fast), n);
        Py_DECREF(fast);
        return -1;
    }
    int *f = malloc((n ? (size_t)n : 1) * sizeof(int));
    if (!f) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int v = PyObject_IsTrue(PySequence_Fast_GET_ITEM(fast, i));
        if (v < 0) {
            free(f);
            Py_DECREF(fast);
            return -1;
        }
        f[i] = v;
    }
    Py_DECREF(fast);
    *out = f;
    return 0;
}

#define CONST_TS(l) ((const ddl_tensor *const *)(l).t)

PYDDL_DOC(sgd_step,
          "(params, grads, momentum_bufs, first_step, lr, momentum, dampening, weight_decay, "
          "nesterov, maximize, /)",
          "One SGD step over a parameter group, in place (momentum_bufs, first_step: None without "
          "momentum).");
static PyObject *py_sgd_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[3], *fo;
    double lr, momentum, dampening, wd;
    int nesterov, maximize, *first = NULL;
    if (!PyArg_ParseTuple(args, "OOOOddddpp", &o[0], &o[1], &o[2], &fo, &lr, &momentum, &dampening,
                          &wd, &nesterov, &maximize))
        return NULL;
    enum { P, G, B, N };
    static const list_spec spec[N] = {
        {"params", STATE}, {"grads", IN}, {"momentum_bufs", OPT_STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "sgd_step") < 0) return NULL;
    ddl_status st = DDL_OK;
    int ok = flags_get(&first, fo, l[P].n, "sgd_step") == 0;
    if (ok)
        PYDDL_NOGIL(st, ddl_sgd_step(l[P].n, l[P].t, CONST_TS(l[G]), l[B].t, first, lr, momentum,
                                     dampening, wd, nesterov, maximize));
    pyddl_tensor_list_release(l, N);
    free(first);
    return ok ? pyddl_return_none(st) : NULL;
}

PYDDL_DOC(adam_step,
          "(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps, "
          "weight_decay, amsgrad, decoupled_weight_decay, maximize, /)",
          "One Adam/AdamW step over a parameter group, in place (max_exp_avg_sqs: None without "
          "amsgrad).");
static PyObject *py_adam_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[6];
    double lr, beta1, beta2, eps, wd;
    int amsgrad, decoupled, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOOdddddppp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &lr,
                          &beta1, &beta2, &eps, &wd, &amsgrad, &decoupled, &maximize))
        return NULL;
    enum { P, G, M, V, X, S, N };
    static const list_spec spec[N] = {{"params", STATE},
                                      {"grads", IN},
                                      {"exp_avgs", STATE},
                                      {"exp_avg_sqs", STATE},
                                      {"max_exp_avg_sqs", OPT_STATE},
                                      {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "adam_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_adam_step(l[P].n, l[P].t, CONST_TS(l[G]), l[M].t, l[V].t, l[X].t, l[S].t,
                                  lr, beta1, beta2, eps, wd, amsgrad, decoupled, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PYDDL_DOC(rmsprop_step,
          "(params, grads, square_avgs, momentum_bufs, grad_avgs, steps, lr, alpha, eps, "
          "weight_decay, momentum, centered, maximize, /)",
          "One RMSprop step over a parameter group, in place (momentum_bufs: None without "
          "momentum; grad_avgs: None unless centered).");
static PyObject *py_rmsprop_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[6];
    double lr, alpha, eps, wd, momentum;
    int centered, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOOdddddpp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &lr,
                          &alpha, &eps, &wd, &momentum, &centered, &maximize))
        return NULL;
    enum { P, G, Q, B, A, S, N };
    static const list_spec spec[N] = {{"params", STATE},        {"grads", IN},
                                      {"square_avgs", STATE},   {"momentum_bufs", OPT_STATE},
                                      {"grad_avgs", OPT_STATE}, {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "rmsprop_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_rmsprop_step(l[P].n, l[P].t, CONST_TS(l[G]), l[Q].t, l[B].t, l[A].t, l[S].t,
                                     lr, alpha, eps, wd, momentum, centered, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

/* _C.grad_norm(grads, norm_type) -> float */
PYDDL_DOC(grad_norm, "(grads, norm_type, /)",
          "The norm of all grads together (None entries skipped).");
static PyObject *py_grad_norm(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *go;
    double norm_type, out = 0;
    if (!PyArg_ParseTuple(args, "Od", &go, &norm_type)) return NULL;
    pyddl_tensor_list g;
    if (pyddl_tensor_list_get(&g, go, -1, IN, "grad_norm", "grads")) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_grad_norm(&out, g.n, CONST_TS(g), norm_type));
    pyddl_tensor_list_release(&g, 1);
    return st ? pyddl_raise(st) : PyFloat_FromDouble(out);
}

/* _C.scale_(tensors, factor): each tensor *= factor in place */
PYDDL_DOC(scale_, "(tensors, factor, /)", "Multiply each tensor by factor in place.");
static PyObject *py_scale_(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *to;
    double factor;
    if (!PyArg_ParseTuple(args, "Od", &to, &factor)) return NULL;
    pyddl_tensor_list t;
    if (pyddl_tensor_list_get(&t, to, -1, STATE, "scale_", "tensors")) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_scale_(t.n, t.t, factor));
    pyddl_tensor_list_release(&t, 1);
    return pyddl_return_none(st);
}

/* ---- the adaptive optimizers (optim_adaptive.c) ------------------------------------------- */

PYDDL_DOC(adadelta_step,
          "(params, grads, square_avgs, acc_deltas, steps, lr, rho, eps, weight_decay, "
          "maximize, /)",
          "One Adadelta step over a parameter group, in place.");
static PyObject *py_adadelta_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[5];
    double lr, rho, eps, wd;
    int maximize;
    if (!PyArg_ParseTuple(args, "OOOOOddddp", &o[0], &o[1], &o[2], &o[3], &o[4], &lr, &rho, &eps,
                          &wd, &maximize))
        return NULL;
    enum { P, G, Q, A, S, N };
    static const list_spec spec[N] = {{"params", STATE},
                                      {"grads", IN},
                                      {"square_avgs", STATE},
                                      {"acc_deltas", STATE},
                                      {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "adadelta_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_adadelta_step(l[P].n, l[P].t, CONST_TS(l[G]), l[Q].t, l[A].t, l[S].t, lr,
                                      rho, eps, wd, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PYDDL_DOC(adagrad_step,
          "(params, grads, state_sums, steps, lr, lr_decay, weight_decay, eps, maximize, /)",
          "One Adagrad step over a parameter group, in place.");
static PyObject *py_adagrad_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[4];
    double lr, lr_decay, wd, eps;
    int maximize;
    if (!PyArg_ParseTuple(args, "OOOOddddp", &o[0], &o[1], &o[2], &o[3], &lr, &lr_decay, &wd, &eps,
                          &maximize))
        return NULL;
    enum { P, G, Q, S, N };
    static const list_spec spec[N] = {
        {"params", STATE}, {"grads", IN}, {"state_sums", STATE}, {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "adagrad_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_adagrad_step(l[P].n, l[P].t, CONST_TS(l[G]), l[Q].t, l[S].t, lr, lr_decay,
                                     wd, eps, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PYDDL_DOC(adamax_step,
          "(params, grads, exp_avgs, exp_infs, steps, lr, beta1, beta2, eps, weight_decay, "
          "maximize, /)",
          "One Adamax step over a parameter group, in place.");
static PyObject *py_adamax_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[5];
    double lr, beta1, beta2, eps, wd;
    int maximize;
    if (!PyArg_ParseTuple(args, "OOOOOdddddp", &o[0], &o[1], &o[2], &o[3], &o[4], &lr, &beta1,
                          &beta2, &eps, &wd, &maximize))
        return NULL;
    enum { P, G, M, U, S, N };
    static const list_spec spec[N] = {{"params", STATE},
                                      {"grads", IN},
                                      {"exp_avgs", STATE},
                                      {"exp_infs", STATE},
                                      {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "adamax_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_adamax_step(l[P].n, l[P].t, CONST_TS(l[G]), l[M].t, l[U].t, l[S].t, lr,
                                    beta1, beta2, eps, wd, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PYDDL_DOC(nadam_step,
          "(params, grads, exp_avgs, exp_avg_sqs, mu_products, steps, lr, beta1, beta2, eps, "
          "weight_decay, momentum_decay, decoupled_weight_decay, maximize, /)",
          "One NAdam step over a parameter group, in place.");
static PyObject *py_nadam_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[6];
    double lr, beta1, beta2, eps, wd, md;
    int decoupled, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOOddddddpp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &lr,
                          &beta1, &beta2, &eps, &wd, &md, &decoupled, &maximize))
        return NULL;
    enum { P, G, M, V, U, S, N };
    static const list_spec spec[N] = {{"params", STATE},      {"grads", IN},
                                      {"exp_avgs", STATE},    {"exp_avg_sqs", STATE},
                                      {"mu_products", STATE}, {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "nadam_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_nadam_step(l[P].n, l[P].t, CONST_TS(l[G]), l[M].t, l[V].t, l[U].t, l[S].t,
                                   lr, beta1, beta2, eps, wd, md, decoupled, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PYDDL_DOC(radam_step,
          "(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, "
          "decoupled_weight_decay, maximize, /)",
          "One RAdam step over a parameter group, in place.");
static PyObject *py_radam_step(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[5];
    double lr, beta1, beta2, eps, wd;
    int decoupled, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOdddddpp", &o[0], &o[1], &o[2], &o[3], &o[4], &lr, &beta1,
                          &beta2, &eps, &wd, &decoupled, &maximize))
        return NULL;
    enum { P, G, M, V, S, N };
    static const list_spec spec[N] = {{"params", STATE},
                                      {"grads", IN},
                                      {"exp_avgs", STATE},
                                      {"exp_avg_sqs", STATE},
                                      {"steps", STATE}};
    pyddl_tensor_list l[N];
    if (group_get(l, o, spec, N, "radam_step") < 0) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_radam_step(l[P].n, l[P].t, CONST_TS(l[G]), l[M].t, l[V].t, l[S].t, lr,
                                   beta1, beta2, eps, wd, decoupled, maximize));
    pyddl_tensor_list_release(l, N);
    return pyddl_return_none(st);
}

PyMethodDef pyddl_optim_functions[] = {
    PYDDL_FN(sgd_step, METH_VARARGS),
    PYDDL_FN(adam_step, METH_VARARGS),
    PYDDL_FN(rmsprop_step, METH_VARARGS),
    PYDDL_FN(grad_norm, METH_VARARGS),
    PYDDL_FN(scale_, METH_VARARGS),
    PYDDL_FN(adadelta_step, METH_VARARGS),
    PYDDL_FN(adagrad_step, METH_VARARGS),
    PYDDL_FN(adamax_step, METH_VARARGS),
    PYDDL_FN(nadam_step, METH_VARARGS),
    PYDDL_FN(radam_step, METH_VARARGS),
    PYDDL_FN_END,
};
