/* ops.c: bindings of the math ops: parse, borrow, drop the GIL for big work, one C call. */
#include "pyddl.h"

#include <stdlib.h>

static int64_t nbytes_of(const ddl_tensor *t) {
    return ddl_tensor_numel(t) * (int64_t)ddl_dtype_size(t->dtype);
}

/* A Python number (int, float, bool, NumPy integer/float scalar) as a double.
 * Returns 1 if o is such a scalar, 0 if not, -1 on error. */
static int as_scalar(PyObject *o, double *v, int *is_float) {
    if (PyFloat_Check(o)) {
        *v = PyFloat_AS_DOUBLE(o);
        *is_float = 1;
        return 1;
    }
    if (PyLong_Check(o)) {
        *v = PyLong_AsDouble(o);
        *is_float = 0;
        return *v == -1.0 && PyErr_Occurred() ? -1 : 1;
    }
    return 0;
}

/* An int scalar next to an int64 tensor as an exact 0-d tensor (a double loses integers above
 * 2^53); *out stays NULL for other scalars. Returns -1 with an exception on error. */
static int exact_scalar(PyObject *o, int is_float, const ddl_tensor *t, ddl_tensor **out) {
    *out = NULL;
    if (is_float || t->dtype != DDL_INT64) return 0;
    return pyddl_int64_scalar(o, out);
}

/* _C.binary(op, a, b): tensors, arrays or a scalar on either side. */
static PyObject *py_binary(PyObject *self, PyObject *args) {
    (void)self;
    int op;
    PyObject *ao, *bo;
    if (!PyArg_ParseTuple(args, "iOO", &op, &ao, &bo)) return NULL;
    double s;
    int is_float, k;
    ddl_tensor *a = NULL, *b = NULL, *r = NULL;
    ddl_status st = DDL_OK;
    if ((k = as_scalar(bo, &s, &is_float)) != 0) {
        if (k < 0 || pyddl_as_tensor(ao, &a, "binary op") < 0) return NULL;
        if (exact_scalar(bo, is_float, a, &b) < 0) goto error;
        if (!b)
            PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES,
                       ddl_ag_binary_scalar(&r, (ddl_binary_op)op, a, s, is_float, 0));
    } else if ((k = as_scalar(ao, &s, &is_float)) != 0) {
        if (k < 0 || pyddl_as_tensor(bo, &b, "binary op") < 0) return NULL;
        if (exact_scalar(ao, is_float, b, &a) < 0) goto error;
        if (!a)
            PYDDL_CALL(st, nbytes_of(b) > PYDDL_NOGIL_BYTES,
                       ddl_ag_binary_scalar(&r, (ddl_binary_op)op, b, s, is_float, 1));
    } else {
        if (pyddl_as_tensor(ao, &a, "binary op") < 0) return NULL;
        if (pyddl_as_tensor(bo, &b, "binary op") < 0) goto error;
    }
    if (a && b)
        PYDDL_CALL(st, nbytes_of(a) + nbytes_of(b) > PYDDL_NOGIL_BYTES,
                   ddl_ag_binary(&r, (ddl_binary_op)op, a, b));
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
error:
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return NULL;
}

/* _C.binary_(op, a, b): a op= b in place; returns a. */
static PyObject *py_binary_(PyObject *self, PyObject *args) {
    (void)self;
    int op;
    PyObject *ao, *bo;
    if (!PyArg_ParseTuple(args, "iO!O", &op, &PyTensor_Type, &ao, &bo)) return NULL;
    ddl_tensor *a = ((PyTensor *)ao)->t, *b = NULL;
    if (pyddl_check_inplace(a, "in-place op") < 0) return NULL;
    double s;
    int is_float, k;
    ddl_status st;
    if ((k = as_scalar(bo, &s, &is_float)) != 0) {
        if (k < 0) return NULL;
        if (is_float && !ddl_dtype_is_float(a->dtype)) {
            PyErr_Format(PyExc_TypeError,
                         "in-place op: result type float32 can't be cast to the %s tensor "
                         "updated in place",
                         ddl_dtype_name(a->dtype));
            return NULL;
        }
        if (exact_scalar(bo, is_float, a, &b) < 0) return NULL;
        if (b) {
            PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_binary_(a, (ddl_binary_op)op, b));
            ddl_tensor_release(b);
        } else {
            PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES,
                       ddl_binary_scalar_(a, (ddl_binary_op)op, s));
        }
    } else {
        if (pyddl_as_tensor(bo, &b, "in-place op") < 0) return NULL;
        PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_binary_(a, (ddl_binary_op)op, b));
        ddl_tensor_release(b);
    }
    if (st) return pyddl_raise(st);
    return Py_NewRef(ao);
}

static PyObject *py_unary(PyObject *self, PyObject *args) {
    (void)self;
    int op, inplace = 0;
    PyObject *ao;
    if (!PyArg_ParseTuple(args, "iO|p", &op, &ao, &inplace)) return NULL;
    ddl_tensor *a, *r = NULL;
    if (pyddl_as_tensor(ao, &a, "unary op") < 0) return NULL;
    if (inplace && pyddl_check_inplace(a, "in-place op") < 0) {
        ddl_tensor_release(a);
        return NULL;
    }
    ddl_status st;
    if (inplace) PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_unary_(a, (ddl_unary_op)op));
    else PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_ag_unary(&r, (ddl_unary_op)op, a));
    ddl_tensor_release(a);
    if (st) return pyddl_raise(st);
    return inplace ? Py_NewRef(ao) : pyddl_wrap(r);
}

static PyObject *py_clamp(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *lo_o, *hi_o;
    if (!PyArg_ParseTuple(args, "OOO", &ao, &lo_o, &hi_o)) return NULL;
    double lo = 0, hi = 0;
    if (lo_o != Py_None && (lo = PyFloat_AsDouble(lo_o)) == -1.0 && PyErr_Occurred()) return NULL;
    if (hi_o != Py_None && (hi = PyFloat_AsDouble(hi_o)) == -1.0 && PyErr_Occurred()) return NULL;
    ddl_tensor *a, *r = NULL;
    if (pyddl_as_tensor(ao, &a, "clamp") < 0) return NULL;
    ddl_status st;
    PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES,
               ddl_ag_clamp(&r, a, lo_o != Py_None, lo, hi_o != Py_None, hi));
    ddl_tensor_release(a);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

static PyObject *py_where(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *co, *ao, *bo;
    if (!PyArg_ParseTuple(args, "OOO", &co, &ao, &bo)) return NULL;
    ddl_tensor *c = NULL, *a = NULL, *b = NULL, *r = NULL;
    ddl_status st = DDL_OK;
    if (pyddl_as_tensor(co, &c, "where") < 0 || pyddl_as_tensor(ao, &a, "where") < 0 ||
        pyddl_as_tensor(bo, &b, "where") < 0) {
        ddl_tensor_release(c);
        ddl_tensor_release(a);
        return NULL;
    }
    PYDDL_CALL(st, nbytes_of(a) + nbytes_of(b) > PYDDL_NOGIL_BYTES, ddl_ag_where(&r, c, a, b));
    ddl_tensor_release(c);
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

/* _C.reduce(op, a, dims or None, keepdim, correction) */
static PyObject *py_reduce(PyObject *self, PyObject *args) {
    (void)self;
    int op, keepdim;
    long long correction;
    PyObject *ao, *dims_o;
    if (!PyArg_ParseTuple(args, "iOOpL", &op, &ao, &dims_o, &keepdim, &correction)) return NULL;
    int64_t d64[DDL_MAX_DIMS];
    int dims[DDL_MAX_DIMS], nd = 0;
    if (dims_o != Py_None) {
        if ((nd = pyddl_parse_shape(dims_o, d64, "reduce")) < 0) return NULL;
        for (int i = 0; i < nd; i++) dims[i] = (int)d64[i];
    }
    ddl_tensor *a, *r = NULL;
    if (pyddl_as_tensor(ao, &a, "reduce") < 0) return NULL;
    ddl_status st;
    PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES,
               ddl_ag_reduce(&r, (ddl_reduce_op)op, a, nd, dims, keepdim, correction));
    ddl_tensor_release(a);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *bo;
    if (!PyArg_ParseTuple(args, "OO", &ao, &bo)) return NULL;
    ddl_tensor *a = NULL, *b = NULL, *r = NULL;
    if (pyddl_as_tensor(ao, &a, "matmul") < 0) return NULL;
    if (pyddl_as_tensor(bo, &b, "matmul") < 0) {
        ddl_tensor_release(a);
        return NULL;
    }
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_matmul(&r, a, b);
    Py_END_ALLOW_THREADS
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

/* _C.join(kind, tensors, dim): "cat" | "stack" */
static PyObject *py_join(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *seq;
    int dim;
    if (!PyArg_ParseTuple(args, "sOi", &kind, &seq, &dim)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of tensors");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > INT32_MAX) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "too many tensors");
        return NULL;
    }
    ddl_tensor **ts = calloc((size_t)(n ? n : 1), sizeof *ts), *r = NULL;
    if (!ts) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    PyObject *ret = NULL;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pyddl_as_tensor(PySequence_Fast_GET_ITEM(fast, i), &ts[i], kind) < 0) goto done;
        total += nbytes_of(ts[i]);
    }
    ddl_status st;
    PYDDL_CALL(st, total > PYDDL_NOGIL_BYTES,
               kind[0] == 's' ? ddl_ag_stack(&r, (int)n, (const ddl_tensor *const *)ts, dim)
                              : ddl_ag_cat(&r, (int)n, (const ddl_tensor *const *)ts, dim));
    ret = st ? pyddl_raise(st) : pyddl_wrap(r);
done:
    for (Py_ssize_t i = 0; i < n; i++) ddl_tensor_release(ts[i]);
    free(ts);
    Py_DECREF(fast);
    return ret;
}

PyMethodDef pyddl_op_functions[] = {
    {"binary", py_binary, METH_VARARGS, "binary(op, a, b)"},
    {"binary_", py_binary_, METH_VARARGS, "binary_(op, a, b): in place on a"},
    {"unary", py_unary, METH_VARARGS, "unary(op, a[, inplace])"},
    {"clamp", py_clamp, METH_VARARGS, "clamp(a, min or None, max or None)"},
    {"where", py_where, METH_VARARGS, "where(cond, a, b)"},
    {"reduce", py_reduce, METH_VARARGS, "reduce(op, a, dims or None, keepdim, correction)"},
    {"matmul", py_matmul, METH_VARARGS, "matmul(a, b)"},
    {"join", py_join, METH_VARARGS, "join('cat' | 'stack', tensors, dim)"},
    {NULL, NULL, 0, NULL},
};
