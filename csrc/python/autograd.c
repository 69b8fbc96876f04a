/* autograd.c (binding): requires_grad, .grad, backward, grad mode and gradient hooks. */
#include "pyddl.h"

#include <string.h>

/* The tensor of a TensorBase argument, borrowed; NULL with a TypeError for anything else. */
static ddl_tensor *tensor_arg(PyObject *o) {
    ddl_tensor *t = NULL;
    return pyddl_conv_tensor_base(o, &t) ? t : NULL;
}

PYDDL_DOC(requires_grad, "(t, flag=None, /)", "Whether t requires grad; with flag, set it.");
static PyObject *py_requires_grad(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t;
    int flag = -1;
    if (!PyArg_ParseTuple(args, "O&|p", pyddl_conv_tensor_base, &t, &flag)) return NULL;
    if (flag < 0) return PyBool_FromLong(t->requires_grad);
    return pyddl_return_none(ddl_tensor_set_requires_grad(t, flag));
}

/* grad(t) -> Tensor or None ; grad(t, g or None) sets it */
PYDDL_DOC(grad, "(t, g=None, /)", "t's gradient or None; with g (a tensor or None), set it.");
static PyObject *py_grad(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *g = NULL;
    ddl_tensor *t;
    if (!PyArg_ParseTuple(args, "O&|O", pyddl_conv_tensor_base, &t, &g)) return NULL;
    if (!g) {
        if (!t->grad) Py_RETURN_NONE;
        ddl_tensor_retain(t->grad);
        return pyddl_wrap(t->grad);
    }
    ddl_tensor *ng = NULL;
    if (g != Py_None) {
        if (!(ng = tensor_arg(g))) return NULL;
        if (ng->ndim != t->ndim || memcmp(ng->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim) ||
            ng->dtype != t->dtype) {
            PyErr_SetString(PyExc_ValueError,
                            "assigned grad must have the tensor's shape and dtype");
            return NULL;
        }
        ddl_tensor_retain(ng);
    }
    ddl_tensor_release(t->grad);
    t->grad = ng;
    Py_RETURN_NONE;
}

PYDDL_DOC(grad_fn_name, "(t, /)", "Name of t's graph node, or None for leaves.");
static PyObject *py_grad_fn_name(PyObject *Py_UNUSED(self), PyObject *o) {
    ddl_tensor *t = tensor_arg(o);
    if (!t) return NULL;
    const char *name = ddl_tensor_grad_fn_name(t);
    if (!name) Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

PYDDL_DOC(detach, "(t, /)", "A new tensor sharing t's memory, cut from the graph.");
static PyObject *py_detach(PyObject *Py_UNUSED(self), PyObject *o) {
    ddl_tensor *t = tensor_arg(o), *r = NULL;
    if (!t) return NULL;
    ddl_status st = ddl_tensor_detach(&r, t);
    return pyddl_return_tensor(st, r);
}

PYDDL_DOC(backward, "(t, gradient, retain_graph, /)",
          "Accumulate gradients into the leaves (gradient None: ones).");
static PyObject *py_backward(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t, *g = NULL;
    int retain;
    if (!PyArg_ParseTuple(args, "O&O&p", pyddl_conv_tensor_base, &t, pyddl_conv_tensor_or_none, &g,
                          &retain))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_backward(t, g, retain));
    ddl_tensor_release(g);
    if (st) {
        if (PyErr_Occurred()) return NULL; /* a Python hook raised: keep its exception */
        return pyddl_raise(st);
    }
    Py_RETURN_NONE;
}

PYDDL_DOC(set_grad_enabled, "(mode, /)", "Set grad mode; returns the old one.");
static PyObject *py_set_grad_enabled(PyObject *Py_UNUSED(self), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    int was = ddl_is_grad_enabled();
    ddl_set_grad_enabled(on);
    return PyBool_FromLong(was);
}

PYDDL_DOC(is_grad_enabled, "()", "Whether ops record the graph.");
static PyObject *py_is_grad_enabled(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyBool_FromLong(ddl_is_grad_enabled());
}

/* Python hooks: ctx is a list of callables kept alive for the tensor's life (a leaf, usually a
 * parameter). Each gets the final gradient; a returned tensor replaces it. */
static ddl_status call_python_hooks(ddl_tensor *leaf, void *ctx) {
    PyGILState_STATE gs = PyGILState_Ensure();
    ddl_status st = DDL_OK;
    PyObject *hooks = ctx;
    /* a hook may set leaf.grad = None (nothing left for later hooks) or remove hooks from the
     * list while it runs: re-read both each time, and hold the callable while calling it */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(hooks) && !st && leaf->grad; i++) {
        PyObject *fn = Py_NewRef(PyList_GET_ITEM(hooks, i));
        ddl_tensor_retain(leaf->grad);
        PyObject *g = pyddl_wrap(leaf->grad);
        PyObject *r = g ? PyObject_CallOneArg(fn, g) : NULL;
        Py_XDECREF(g);
        Py_DECREF(fn);
        if (!r) {
            st = ddl_fail(DDL_E_VALUE, "a gradient hook raised an exception");
            break;
        }
        if (r != Py_None) {
            ddl_tensor *nt;
            if (pyddl_as_tensor(r, &nt, "gradient hook") < 0) {
                st = ddl_fail(DDL_E_TYPE, "a gradient hook returned a non-tensor");
            } else if (leaf->grad) {
                st = ddl_copy_(leaf->grad, nt);
                ddl_tensor_release(nt);
            } else if (nt->ndim != leaf->ndim ||
                       memcmp(nt->shape, leaf->shape, sizeof(int64_t) * (size_t)leaf->ndim)) {
                ddl_tensor_release(nt);
                st = ddl_fail(DDL_E_VALUE, "a gradient hook returned a tensor of the wrong shape");
            } else { /* the hook cleared leaf.grad and returned the new one: a private copy */
                st = ddl_tensor_to(&leaf->grad, nt, leaf->dtype);
                ddl_tensor_release(nt);
            }
        }
        Py_DECREF(r);
    }
    PyGILState_Release(gs);
    return st;
}

static void release_python_hooks(void *ctx) {
    if (!Py_IsInitialized()) return;
    PyGILState_STATE gs = PyGILState_Ensure();
    Py_DECREF((PyObject *)ctx);
    PyGILState_Release(gs);
}

PYDDL_DOC(register_hook, "(leaf, fn, /)",
          "fn(grad) runs when the leaf's gradient is final; returns the hook list.");
static PyObject *py_register_hook(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *fn;
    ddl_tensor *t;
    if (!PyArg_ParseTuple(args, "O&O", pyddl_conv_tensor_base, &t, &fn)) return NULL;
    if (!t->requires_grad || t->grad_fn) {
        PyErr_SetString(PyExc_ValueError,
                        "register_hook: hooks are supported on leaf tensors that require grad");
        return NULL;
    }
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "register_hook: expected a callable");
        return NULL;
    }
    void *ctx = NULL;
    PyObject *hooks = ddl_tensor_get_hook(t, &ctx) == call_python_hooks ? ctx : NULL;
    if (!hooks) {
        if (!(hooks = PyList_New(0))) return NULL;
        /* owned by the tensor from now: freed with it */
        ddl_status st = ddl_tensor_set_hook(t, call_python_hooks, hooks, release_python_hooks);
        if (st != DDL_OK) {
            Py_DECREF(hooks);
            return pyddl_raise(st);
        }
    }
    if (PyList_Append(hooks, fn) < 0) return NULL;
    return Py_NewRef(hooks);
}

/* graph_leaves(t) -> set of tensor ids (see tensor_id) of the leaves backward would reach */
PYDDL_DOC(graph_leaves, "(t, /)", "The ids (tensor_id) of the leaves backward from t reaches.");
static PyObject *py_graph_leaves(PyObject *Py_UNUSED(self), PyObject *o) {
    ddl_tensor *t = tensor_arg(o);
    if (!t) return NULL;
    int64_t n = ddl_graph_leaves(t, NULL, 0);
    if (n < 0) return PyErr_NoMemory();
    const ddl_tensor **leaves = PyMem_Calloc((size_t)(n ? n : 1), sizeof *leaves);
    if (!leaves) return PyErr_NoMemory();
    ddl_graph_leaves(t, leaves, n);
    PyObject *set = PySet_New(NULL);
    for (int64_t i = 0; set && i < n; i++) {
        PyObject *id = PyLong_FromVoidPtr((void *)leaves[i]);
        if (!id || PySet_Add(set, id) < 0) Py_CLEAR(set);
        Py_XDECREF(id);
    }
    PyMem_Free(leaves);
    return set;
}

PYDDL_DOC(tensor_id, "(t, /)", "Identity of t's C tensor (see graph_leaves).");
static PyObject *py_tensor_id(PyObject *Py_UNUSED(self), PyObject *o) {
    ddl_tensor *t = tensor_arg(o);
    return t ? PyLong_FromVoidPtr(t) : NULL;
}

PyMethodDef pyddl_autograd_functions[] = {
    PYDDL_FN(graph_leaves, METH_O),
    PYDDL_FN(tensor_id, METH_O),
    PYDDL_FN(requires_grad, METH_VARARGS),
    PYDDL_FN(grad, METH_VARARGS),
    PYDDL_FN(grad_fn_name, METH_O),
    PYDDL_FN(detach, METH_O),
    PYDDL_FN(backward, METH_VARARGS),
    PYDDL_FN(set_grad_enabled, METH_O),
    PYDDL_FN(is_grad_enabled, METH_NOARGS),
    PYDDL_FN(register_hook, METH_VARARGS),
    PYDDL_FN_END,
};
