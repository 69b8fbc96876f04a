/* ops.c: bindings of the math ops: parse, borrow, drop the GIL for big work, one C call. */
#include "pyddl.h"

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
PYDDL_DOC(binary, "(op, a, b, /)",
          "a op b (op a ddl_binary_op, OP_ADD...); tensors, arrays or a scalar on either side.");
static PyObject *py_binary(PyObject *Py_UNUSED(self), PyObject *args) {
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
    ddl_tensor *args_[2] = {a, b};
    return pyddl_finish(st, r, args_, 2);
error:
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return NULL;
}

/* _C.binary_(op, a, b): a op= b in place; returns a. */
PYDDL_DOC(binary_, "(op, a, b, /)", "a op= b in place; returns a.");
static PyObject *py_binary_(PyObject *Py_UNUSED(self), PyObject *args) {
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

PYDDL_DOC(unary, "(op, a, inplace=False, /)",
          "op(a) (op a ddl_unary_op, OP_NEG...), in place when inplace.");
static PyObject *py_unary(PyObject *Py_UNUSED(self), PyObject *args) {
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
    if (inplace)
        PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_unary_(a, (ddl_unary_op)op));
    else
        PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_ag_unary(&r, (ddl_unary_op)op, a));
    ddl_tensor_release(a);
    if (st) return pyddl_raise(st);
    return inplace ? Py_NewRef(ao) : pyddl_wrap(r);
}

/* A bound of clamp: None (no bound) or a number. Returns 0 or -1 with an exception. */
static int bound(PyObject *o, int *has, double *v) {
    *has = o != Py_None;
    *v = *has ? PyFloat_AsDouble(o) : 0.0;
    return *v == -1.0 && PyErr_Occurred() ? -1 : 0;
}

PYDDL_DOC(clamp, "(a, min, max, /)", "a clamped to [min, max]; None for no bound.");
static PyObject *py_clamp(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *lo_o, *hi_o;
    ddl_tensor *a, *r = NULL;
    int has_lo, has_hi;
    double lo, hi;
    if (!PyArg_ParseTuple(args, "O&OO", pyddl_conv_tensor, &a, &lo_o, &hi_o)) return NULL;
    ddl_status st = DDL_OK;
    if (bound(lo_o, &has_lo, &lo) < 0 || bound(hi_o, &has_hi, &hi) < 0) {
        ddl_tensor_release(a);
        return NULL;
    }
    PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES, ddl_ag_clamp(&r, a, has_lo, lo, has_hi, hi));
    return pyddl_finish(st, r, &a, 1);
}

PYDDL_DOC(where, "(cond, a, b, /)", "cond ? a : b, broadcast.");
static PyObject *py_where(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[3] = {NULL, NULL, NULL}, *r = NULL; /* cond, a, b */
    if (!PyArg_ParseTuple(args, "O&O&O&", pyddl_conv_tensor, &t[0], pyddl_conv_tensor, &t[1],
                          pyddl_conv_tensor, &t[2]))
        return NULL;
    ddl_status st;
    PYDDL_CALL(st, nbytes_of(t[1]) + nbytes_of(t[2]) > PYDDL_NOGIL_BYTES,
               ddl_ag_where(&r, t[0], t[1], t[2]));
    return pyddl_finish(st, r, t, 3);
}

/* _C.reduce(op, a, dims or None, keepdim, correction) */
PYDDL_DOC(reduce, "(op, a, dims, keepdim, correction, /)",
          "Reduce a over dims (None: all) by op, a ddl_reduce_op (REDUCE_SUM...).");
static PyObject *py_reduce(PyObject *Py_UNUSED(self), PyObject *args) {
    int op, keepdim;
    long long correction;
    PyObject *dims_o;
    ddl_tensor *a, *r = NULL;
    if (!PyArg_ParseTuple(args, "iO&OpL", &op, pyddl_conv_tensor, &a, &dims_o, &keepdim,
                          &correction))
        return NULL;
    int dims[DDL_MAX_DIMS], nd = 0;
    if (dims_o != Py_None && (nd = pyddl_parse_dims(dims_o, dims, "reduce")) < 0) {
        ddl_tensor_release(a);
        return NULL;
    }
    ddl_status st;
    PYDDL_CALL(st, nbytes_of(a) > PYDDL_NOGIL_BYTES,
               ddl_ag_reduce(&r, (ddl_reduce_op)op, a, nd, dims, keepdim, correction));
    return pyddl_finish(st, r, &a, 1);
}

PYDDL_DOC(matmul, "(a, b, /)", "a @ b with NumPy's rules.");
static PyObject *py_matmul(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL;
    if (!PyArg_ParseTuple(args, "O&O&", pyddl_conv_tensor, &t[0], pyddl_conv_tensor, &t[1]))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_matmul(&r, t[0], t[1]));
    return pyddl_finish(st, r, t, 2);
}

/* _C.join(kind, tensors, dim): "cat" | "stack" */
PYDDL_DOC(join, "(kind, tensors, dim, /)", "kind 'cat' or 'stack' of the tensors along dim.");
static PyObject *py_join(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *kind;
    PyObject *seq;
    int dim;
    if (!PyArg_ParseTuple(args, "sOi", &kind, &seq, &dim)) return NULL;
    pyddl_tensor_list l;
    if (pyddl_tensor_list_get(&l, seq, -1, 0, kind, "tensors") < 0) return NULL;
    const ddl_tensor *const *ts = (const ddl_tensor *const *)l.t;
    int64_t total = 0;
    for (int i = 0; i < l.n; i++) total += nbytes_of(ts[i]);
    ddl_tensor *r = NULL;
    ddl_status st;
    PYDDL_CALL(st, total > PYDDL_NOGIL_BYTES,
               kind[0] == 's' ? ddl_ag_stack(&r, l.n, ts, dim) : ddl_ag_cat(&r, l.n, ts, dim));
    pyddl_tensor_list_release(&l, 1);
    return pyddl_return_tensor(st, r);
}

PYDDL_DOC(take, "(src, index, /)",
          "src at flat row-major positions index (int64), shaped like index; differentiable.");
static PyObject *py_take(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* src, index */
    if (!PyArg_ParseTuple(args, "O&O&", pyddl_conv_tensor, &t[0], pyddl_conv_tensor, &t[1]))
        return NULL;
    ddl_status st;
    PYDDL_CALL(st, nbytes_of(t[1]) > PYDDL_NOGIL_BYTES, ddl_ag_take(&r, t[0], t[1]));
    return pyddl_finish(st, r, t, 2);
}

PyMethodDef pyddl_op_functions[] = {
    PYDDL_FN(binary, METH_VARARGS), PYDDL_FN(binary_, METH_VARARGS),
    PYDDL_FN(unary, METH_VARARGS),  PYDDL_FN(clamp, METH_VARARGS),
    PYDDL_FN(where, METH_VARARGS),  PYDDL_FN(reduce, METH_VARARGS),
    PYDDL_FN(matmul, METH_VARARGS), PYDDL_FN(join, METH_VARARGS),
    PYDDL_FN(take, METH_VARARGS),   PYDDL_FN_END,
};
