/* optim.c (binding): the fused optimizer updates and gradient-norm helpers of optim.h, each
 * one C call over a whole parameter group with the GIL released. */
#include "ddl/optim.h"
#include "pyddl.h"

#include <limits.h>
#include <stdlib.h>

/* n borrowed-then-retained tensors from a Python sequence (None entries -> NULL). The sequence
 * itself may be None when `optional` (-> a NULL array). `inplace`: entries are updated in
 * place, so they must be Tensors (not arrays, which would be copied) and pass the in-place
 * check. */
typedef struct {
    ddl_tensor **t; /* (n,) or NULL */
    int n;
} tlist;

static void tlist_release(tlist *l) {
    if (l->t)
        for (int i = 0; i < l->n; i++) ddl_tensor_release(l->t[i]);
    free(l->t);
    l->t = NULL;
}

static int tlist_get(tlist *l, PyObject *seq, int n, int optional, int inplace, const char *who,
                     const char *name) {
    l->t = NULL;
    l->n = 0;
    if (seq == Py_None && optional) return 0;
    PyObject *fast = PySequence_Fast(seq, "expected a list of tensors");
    if (!fast) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (n >= 0 && len != n) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries, expected %d (one per parameter)",
                     who, name, len, n);
        goto error;
    }
    if (len > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many tensors (%zd)", who, len);
        goto error;
    }
    l->t = calloc(len ? (size_t)len : 1, sizeof(ddl_tensor *));
    if (!l->t) {
        PyErr_NoMemory();
        goto error;
    }
    l->n = (int)len; /* entries not filled in yet are NULL: releasing them is a no-op */
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (o == Py_None) continue;
        if (inplace && !PyTensor_Check(o)) {
            PyErr_Format(PyExc_TypeError, "%s: %s[%zd] must be a Tensor (updated in place), got %s",
                         who, name, i, Py_TYPE(o)->tp_name);
            goto error;
        }
        if (pyddl_as_tensor(o, &l->t[i], who) < 0) goto error;
        if (inplace && pyddl_check_inplace(l->t[i], who) < 0) goto error;
    }
    Py_DECREF(fast);
    return 0;
error:
    tlist_release(l);
    Py_DECREF(fast);
    return -1;
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

/* _C.sgd_step(params, grads, momentum_bufs or None, first_step or None, lr, momentum,
 *             dampening, weight_decay, nesterov, maximize) */
static PyObject *py_sgd_step(PyObject *self, PyObject *args) {
    (void)self;
    const char *who = "sgd_step";
    PyObject *po, *go, *bo, *fo;
    double lr, momentum, dampening, wd;
    int nesterov, maximize;
    if (!PyArg_ParseTuple(args, "OOOOddddpp", &po, &go, &bo, &fo, &lr, &momentum, &dampening,
                          &wd, &nesterov, &maximize))
        return NULL;
    tlist p = {0}, g = {0}, b = {0};
    int *first = NULL;
    PyObject *r = NULL;
    if (tlist_get(&p, po, -1, 0, 1, who, "params") || tlist_get(&g, go, p.n, 0, 0, who, "grads") ||
        tlist_get(&b, bo, p.n, 1, 1, who, "momentum_bufs") || flags_get(&first, fo, p.n, who))
        goto done;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_sgd_step(p.n, p.t, (const ddl_tensor *const *)g.t, b.t, first,
                                             lr, momentum, dampening, wd, nesterov, maximize);
    Py_END_ALLOW_THREADS
    r = st ? pyddl_raise(st) : Py_NewRef(Py_None);
done:
    tlist_release(&p);
    tlist_release(&g);
    tlist_release(&b);
    free(first);
    return r;
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
    tlist p = {0}, g = {0}, m = {0}, v = {0}, x = {0}, s = {0};
    PyObject *r = NULL;
    if (tlist_get(&p, po, -1, 0, 1, who, "params") || tlist_get(&g, go, p.n, 0, 0, who, "grads") ||
        tlist_get(&m, mo, p.n, 0, 1, who, "exp_avgs") ||
        tlist_get(&v, vo, p.n, 0, 1, who, "exp_avg_sqs") ||
        tlist_get(&x, xo, p.n, 1, 1, who, "max_exp_avg_sqs") ||
        tlist_get(&s, so, p.n, 0, 1, who, "steps"))
        goto done;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st =
        ddl_adam_step(p.n, p.t, (const ddl_tensor *const *)g.t, m.t, v.t, x.t, s.t, lr, beta1,
                      beta2, eps, wd, amsgrad, decoupled, maximize);
    Py_END_ALLOW_THREADS
    r = st ? pyddl_raise(st) : Py_NewRef(Py_None);
done:
    tlist_release(&p);
    tlist_release(&g);
    tlist_release(&m);
    tlist_release(&v);
    tlist_release(&x);
    tlist_release(&s);
    return r;
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
    tlist p = {0}, g = {0}, q = {0}, b = {0}, a = {0}, s = {0};
    PyObject *r = NULL;
    if (tlist_get(&p, po, -1, 0, 1, who, "params") || tlist_get(&g, go, p.n, 0, 0, who, "grads") ||
        tlist_get(&q, qo, p.n, 0, 1, who, "square_avgs") ||
        tlist_get(&b, bo, p.n, 1, 1, who, "momentum_bufs") ||
        tlist_get(&a, ao, p.n, 1, 1, who, "grad_avgs") ||
        tlist_get(&s, so, p.n, 0, 1, who, "steps"))
        goto done;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st =
        ddl_rmsprop_step(p.n, p.t, (const ddl_tensor *const *)g.t, q.t, b.t, a.t, s.t, lr, alpha,
                         eps, wd, momentum, centered, maximize);
    Py_END_ALLOW_THREADS
    r = st ? pyddl_raise(st) : Py_NewRef(Py_None);
done:
    tlist_release(&p);
    tlist_release(&g);
    tlist_release(&q);
    tlist_release(&b);
    tlist_release(&a);
    tlist_release(&s);
    return r;
}

/* _C.grad_norm(grads, norm_type) -> float */
static PyObject *py_grad_norm(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *go;
    double norm_type, out = 0;
    if (!PyArg_ParseTuple(args, "Od", &go, &norm_type)) return NULL;
    tlist g = {0};
    if (tlist_get(&g, go, -1, 0, 0, "grad_norm", "grads")) return NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_grad_norm(&out, g.n, (const ddl_tensor *const *)g.t, norm_type);
    Py_END_ALLOW_THREADS
    tlist_release(&g);
    return st ? pyddl_raise(st) : PyFloat_FromDouble(out);
}

/* _C.scale_(tensors, factor): each tensor *= factor in place */
static PyObject *py_scale_(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *to;
    double factor;
    if (!PyArg_ParseTuple(args, "Od", &to, &factor)) return NULL;
    tlist t = {0};
    if (tlist_get(&t, to, -1, 0, 1, "scale_", "tensors")) return NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_scale_(t.n, t.t, factor);
    Py_END_ALLOW_THREADS
    tlist_release(&t);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef pyddl_optim_functions[] = {
    {"sgd_step", py_sgd_step, METH_VARARGS,
     "sgd_step(params, grads, momentum_bufs|None, first_step|None, lr, momentum, dampening, "
     "weight_decay, nesterov, maximize)"},
    {"adam_step", py_adam_step, METH_VARARGS,
     "adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs|None, steps, lr, beta1, "
     "beta2, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize)"},
    {"rmsprop_step", py_rmsprop_step, METH_VARARGS,
     "rmsprop_step(params, grads, square_avgs, momentum_bufs|None, grad_avgs|None, steps, lr, "
     "alpha, eps, weight_decay, momentum, centered, maximize)"},
    {"grad_norm", py_grad_norm, METH_VARARGS,
     "grad_norm(grads, norm_type) -> the norm of all grads together (None entries skipped)"},
    {"scale_", py_scale_, METH_VARARGS, "scale_(tensors, factor): multiply each in place"},
    {NULL, NULL, 0, NULL},
};
