/* optim.c (binding): the fused optimizer updates and gradient-norm helpers of optim.h, each
 * one C call over a whole parameter group with the GIL released. */
#include "ddl/optim.h"
#include "pyddl.h"

#include <stdlib.h>

/* The list flags of the arguments below: entries None allowed (a parameter without a
 * gradient), optional lists may be None, state updated in place must be Tensors. */
#define IN PYDDL_LIST_HOLES
#define STATE (PYDDL_LIST_HOLES | PYDDL_LIST_INPLACE)
#define OPT_STATE (PYDDL_LIST_HOLES | PYDDL_LIST_INPLACE | PYDDL_LIST_OPTIONAL)
#define LIST(l, o, n, flags, name) pyddl_tensor_list_get(&l, o, n, flags, who, name)

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

/* _C.sgd_step(params, grads, momentum_bufs or None, first_step or None, lr, momentum,
 *             dampening, weight_decay, nesterov, maximize) */
static PyObject *py_sgd_step(PyObject *self, PyObject *args) {
    (void)self;
    const char *who = "sgd_step";
    PyObject *po, *go, *bo, *fo;
    double lr, momentum, dampening, wd;
    int nesterov, maximize, *first = NULL;
    if (!PyArg_ParseTuple(args, "OOOOddddpp", &po, &go, &bo, &fo, &lr, &momentum, &dampening,
                          &wd, &nesterov, &maximize))
        return NULL;
    enum { P, G, B, N };
    pyddl_tensor_list l[N] = {{0}};
    ddl_status st = DDL_OK;
    int ok = !(LIST(l[P], po, -1, STATE, "params") || LIST(l[G], go, l[P].n, IN, "grads") ||
               LIST(l[B], bo, l[P].n, OPT_STATE, "momentum_bufs") ||
               flags_get(&first, fo, l[P].n, who));
    if (ok)
        PYDDL_NOGIL(st, ddl_sgd_step(l[P].n, l[P].t, CONST_TS(l[G]), l[B].t, first, lr, momentum,
                                     dampening, wd, nesterov, maximize));
    pyddl_tensor_list_release(l, N);
    free(first);
    return ok ? pyddl_return_none(st) : NULL;
}

/* _C.adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs or None, steps, lr, beta1,
 *              beta2, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize) */
static PyObject *py_adam_step(PyObject *self, PyObject *args) {
    (void)self;
    const char *who = "adam_step";
    PyObject *po, *go, *mo, *vo, *xo, *so;
    double lr, beta1, beta2, eps, wd;
    int amsgrad, decoupled, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOOdddddppp", &po, &go, &mo, &vo, &xo, &so, &lr, &beta1,
                          &beta2, &eps, &wd, &amsgrad, &decoupled, &maximize))
        return NULL;
    enum { P, G, M, V, X, S, N };
    pyddl_tensor_list l[N] = {{0}};
    ddl_status st = DDL_OK;
    int ok = !(LIST(l[P], po, -1, STATE, "params") || LIST(l[G], go, l[P].n, IN, "grads") ||
               LIST(l[M], mo, l[P].n, STATE, "exp_avgs") ||
               LIST(l[V], vo, l[P].n, STATE, "exp_avg_sqs") ||
               LIST(l[X], xo, l[P].n, OPT_STATE, "max_exp_avg_sqs") ||
               LIST(l[S], so, l[P].n, STATE, "steps"));
    if (ok)
        PYDDL_NOGIL(st, ddl_adam_step(l[P].n, l[P].t, CONST_TS(l[G]), l[M].t, l[V].t, l[X].t,
                                      l[S].t, lr, beta1, beta2, eps, wd, amsgrad, decoupled,
                                      maximize));
    pyddl_tensor_list_release(l, N);
    return ok ? pyddl_return_none(st) : NULL;
}

/* _C.rmsprop_step(params, grads, square_avgs, momentum_bufs or None, grad_avgs or None, steps,
 *                 lr, alpha, eps, weight_decay, momentum, centered, maximize) */
static PyObject *py_rmsprop_step(PyObject *self, PyObject *args) {
    (void)self;
    const char *who = "rmsprop_step";
    PyObject *po, *go, *qo, *bo, *ao, *so;
    double lr, alpha, eps, wd, momentum;
    int centered, maximize;
    if (!PyArg_ParseTuple(args, "OOOOOOdddddpp", &po, &go, &qo, &bo, &ao, &so, &lr, &alpha, &eps,
                          &wd, &momentum, &centered, &maximize))
        return NULL;
    enum { P, G, Q, B, A, S, N };
    pyddl_tensor_list l[N] = {{0}};
    ddl_status st = DDL_OK;
    int ok = !(LIST(l[P], po, -1, STATE, "params") || LIST(l[G], go, l[P].n, IN, "grads") ||
               LIST(l[Q], qo, l[P].n, STATE, "square_avgs") ||
               LIST(l[B], bo, l[P].n, OPT_STATE, "momentum_bufs") ||
               LIST(l[A], ao, l[P].n, OPT_STATE, "grad_avgs") ||
               LIST(l[S], so, l[P].n, STATE, "steps"));
    if (ok)
        PYDDL_NOGIL(st, ddl_rmsprop_step(l[P].n, l[P].t, CONST_TS(l[G]), l[Q].t, l[B].t, l[A].t,
                                         l[S].t, lr, alpha, eps, wd, momentum, centered,
                                         maximize));
    pyddl_tensor_list_release(l, N);
    return ok ? pyddl_return_none(st) : NULL;
}

/* _C.grad_norm(grads, norm_type) -> float */
static PyObject *py_grad_norm(PyObject *self, PyObject *args) {
    (void)self;
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
static PyObject *py_scale_(PyObject *self, PyObject *args) {
    (void)self;
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

PyMethodDef pyddl_optim_functions[] = {
    PYDDL_FN("sgd_step", py_sgd_step, METH_VARARGS,
             "(params, grads, momentum_bufs, first_step, lr, momentum, dampening, weight_decay, "
             "nesterov, maximize, /)",
             "One SGD step over a parameter group, in place (momentum_bufs, first_step: None "
             "without momentum)."),
    PYDDL_FN("adam_step", py_adam_step, METH_VARARGS,
             "(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, "
             "eps, weight_decay, amsgrad, decoupled_weight_decay, maximize, /)",
             "One Adam/AdamW step over a parameter group, in place."),
    PYDDL_FN("rmsprop_step", py_rmsprop_step, METH_VARARGS,
             "(params, grads, square_avgs, momentum_bufs, grad_avgs, steps, lr, alpha, eps, "
             "weight_decay, momentum, centered, maximize, /)",
             "One RMSprop step over a parameter group, in place."),
    PYDDL_FN("grad_norm", py_grad_norm, METH_VARARGS, "(grads, norm_type, /)",
             "The norm of all grads together (None entries skipped)."),
    PYDDL_FN("scale_", py_scale_, METH_VARARGS, "(tensors, factor, /)",
             "Multiply each tensor by factor in place."),
    PYDDL_FN_END,
};
