/* tensor.c (binding): tensor creation, the RNG, views, copies and element reads of core.h. */
#include "pyddl.h"

#include <string.h>

static int big(const ddl_tensor *t) {
    return (size_t)ddl_tensor_numel(t) * ddl_dtype_size(t->dtype) > PYDDL_NOGIL_BYTES;
}

PYDDL_DOC(_set_array_converter, "(fn, /)",
          "Register fn(array) -> Tensor for arrays of other element types (copies).");
static PyObject *py__set_array_converter(PyObject *Py_UNUSED(self), PyObject *fn) {
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "expected a callable");
        return NULL;
    }
    Py_XSETREF(pyddl_array_converter, Py_NewRef(fn));
    Py_RETURN_NONE;
}

PYDDL_DOC(from_buffer, "(array, /)", "Zero-copy tensor over a buffer (NumPy array).");
static PyObject *py_from_buffer(PyObject *Py_UNUSED(self), PyObject *o) {
    ddl_tensor *t;
    if (pyddl_from_buffer(o, &t, 0) < 0) return NULL;
    return pyddl_wrap(t);
}

/* _C.full(shape, value, dtype) ; value None means uninitialized (empty) */
PYDDL_DOC(full, "(shape, value, dtype, /)",
          "A new tensor filled with value (None: uninitialized).");
static PyObject *py_full(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *shp, *val;
    int64_t shape[DDL_MAX_DIMS];
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "OOO&", &shp, &val, pyddl_conv_dtype, &dt)) return NULL;
    int nd = pyddl_parse_shape(shp, shape, "full");
    if (nd < 0) return NULL;
    ddl_tensor *t = NULL, *s = NULL;
    ddl_status st;
    if (val == Py_None) {
        st = ddl_tensor_empty(&t, dt, nd, shape);
        return pyddl_return_tensor(st, t);
    }
    if (PyLong_Check(val) && dt == DDL_INT64) { /* keep large integers exact */
        if (pyddl_int64_scalar(val, &s) < 0) return NULL;
        st = ddl_tensor_empty(&t, dt, nd, shape);
        if (!st) PYDDL_CALL(st, big(t), ddl_copy_(t, s));
        ddl_tensor_release(s);
        if (st) ddl_tensor_release(t);
        return pyddl_return_tensor(st, t);
    }
    double v = PyFloat_AsDouble(val);
    if (v == -1.0 && PyErr_Occurred()) return NULL;
    PYDDL_NOGIL(st, ddl_tensor_full(&t, dt, nd, shape, v));
    return pyddl_return_tensor(st, t);
}

PYDDL_DOC(arange, "(start, end, step, dtype, /)", "Values from start to end (exclusive) by step.");
static PyObject *py_arange(PyObject *Py_UNUSED(self), PyObject *args) {
    double a, b, s;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "dddO&", &a, &b, &s, pyddl_conv_dtype, &dt)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_arange(&t, dt, a, b, s);
    return pyddl_return_tensor(st, t);
}

PYDDL_DOC(linspace, "(start, end, steps, dtype, /)",
          "steps values evenly spaced from start to end (inclusive).");
static PyObject *py_linspace(PyObject *Py_UNUSED(self), PyObject *args) {
    double a, b;
    long long n;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "ddLO&", &a, &b, &n, pyddl_conv_dtype, &dt)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_linspace(&t, dt, a, b, n);
    return pyddl_return_tensor(st, t);
}

PYDDL_DOC(eye, "(n, m, dtype, /)", "The (n, m) identity.");
static PyObject *py_eye(PyObject *Py_UNUSED(self), PyObject *args) {
    long long n, m;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "LLO&", &n, &m, pyddl_conv_dtype, &dt)) return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "eye: n must be >= 0, got %lld", n);
        return NULL;
    }
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_eye(&t, dt, n, m);
    return pyddl_return_tensor(st, t);
}

/* _C.random(kind, shape, dtype[, low, high]): kind "u" uniform [0, 1), "n" normal, "i" ints
 * in [low, high) (int64) */
PYDDL_DOC(random, "(kind, shape, dtype, low=0, high=0, /)",
          "kind 'u' uniform [0, 1), 'n' standard normal, 'i' int64 in [low, high).");
static PyObject *py_random(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *kind;
    PyObject *shp;
    ddl_dtype dt;
    long long lo = 0, hi = 0;
    int64_t shape[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "sOO&|LL", &kind, &shp, pyddl_conv_dtype, &dt, &lo, &hi))
        return NULL;
    int nd = pyddl_parse_shape(shp, shape, kind);
    if (nd < 0) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    if (kind[0] == 'n')
        PYDDL_NOGIL(st, ddl_randn(&t, dt, nd, shape));
    else if (kind[0] == 'i')
        PYDDL_NOGIL(st, ddl_randint(&t, lo, hi, nd, shape));
    else
        PYDDL_NOGIL(st, ddl_rand(&t, dt, nd, shape));
    return pyddl_return_tensor(st, t);
}

PYDDL_DOC(manual_seed, "(seed, /)", "Seed the global generator.");
static PyObject *py_manual_seed(PyObject *Py_UNUSED(self), PyObject *arg) {
    unsigned long long s = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    ddl_manual_seed(s);
    Py_RETURN_NONE;
}

PYDDL_DOC(rng_state, "(*state)", "rng_state() -> (seed, offset); rng_state(seed, offset) sets it.");
static PyObject *py_rng_state(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long seed, off;
    if (PyTuple_GET_SIZE(args) == 0) {
        uint64_t s, o;
        ddl_rng_get_state(&s, &o);
        return Py_BuildValue("(KK)", (unsigned long long)s, (unsigned long long)o);
    }
    if (!PyArg_ParseTuple(args, "KK", &seed, &off)) return NULL;
    ddl_rng_set_state(seed, off);
    Py_RETURN_NONE;
}

PYDDL_DOC(initial_seed, "()", "The seed last set.");
static PyObject *py_initial_seed(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyLong_FromUnsignedLongLong(ddl_initial_seed());
}

/* ---- views ----------------------------------------------------------------------------------- */

/* _C.reshape(op, t, shape): op a ddl_shape_op (_C.SHAPE_VIEW, _C.SHAPE_RESHAPE, _C.SHAPE_EXPAND) */
PYDDL_DOC(reshape, "(op, t, shape, /)",
          "t to shape by op: SHAPE_VIEW, SHAPE_RESHAPE or SHAPE_EXPAND (a ddl_shape_op).");
static PyObject *py_reshape(PyObject *Py_UNUSED(self), PyObject *args) {
    int op;
    ddl_tensor *t, *r = NULL;
    PyObject *shp;
    int64_t shape[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "iO&O", &op, pyddl_conv_tensor_base, &t, &shp)) return NULL;
    int nd = pyddl_parse_shape(shp, shape, "reshape");
    if (nd < 0) return NULL;
    ddl_status st = ddl_ag_reshape(&r, (ddl_shape_op)op, t, nd, shape);
    return pyddl_return_tensor(st, r);
}

PYDDL_DOC(permute, "(t, dims, /)", "t with its dims reordered.");
static PyObject *py_permute(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t, *r = NULL;
    PyObject *dims_o;
    int dims[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "O&O", pyddl_conv_tensor_base, &t, &dims_o)) return NULL;
    int nd = pyddl_parse_dims(dims_o, dims, "permute");
    if (nd < 0) return NULL;
    if (nd != t->ndim) {
        PyErr_Format(PyExc_ValueError, "permute: got %d dims for a tensor of %d dims", nd, t->ndim);
        return NULL;
    }
    ddl_status st = ddl_ag_permute(&r, t, dims);
    return pyddl_return_tensor(st, r);
}

/* The shape-only view r of t, recorded for autograd: transpose as the permutation it is, the
 * others as a reshape to r's shape. Replaces *r. */
static ddl_status record_view(ddl_tensor **r, const ddl_tensor *t, int transpose, int a, int b) {
    ddl_tensor *v = NULL;
    ddl_status st;
    if (transpose && t->ndim > 0) {
        int dims[DDL_MAX_DIMS], i0 = a < 0 ? a + t->ndim : a, i1 = b < 0 ? b + t->ndim : b;
        for (int i = 0; i < t->ndim; i++) dims[i] = i;
        dims[i0] = i1;
        dims[i1] = i0;
        st = ddl_ag_permute(&v, t, dims);
    } else {
        st = ddl_ag_reshape(&v, DDL_SHAPE_RESHAPE, t, (*r)->ndim, (*r)->shape);
    }
    ddl_tensor_release(*r);
    *r = v;
    return st;
}

/* _C.dimop(kind, t, a, b): transpose(a, b), squeeze(a; DDL_ALL for all), unsqueeze(a),
 * flatten(a, b), select(a=dim, b=index) */
PYDDL_DOC(dimop, "(kind, t, a=0, b=0, /)",
          "transpose(a, b), squeeze(a), unsqueeze(a), flatten(a, b) or select(dim a, index b).");
static PyObject *py_dimop(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *kind;
    ddl_tensor *t, *r = NULL;
    long long a = 0, b = 0;
    if (!PyArg_ParseTuple(args, "sO&|LL", &kind, pyddl_conv_tensor_base, &t, &a, &b)) return NULL;
    int transpose = !strcmp(kind, "transpose");
    ddl_status st;
    if (transpose)
        st = ddl_tensor_transpose(&r, t, (int)a, (int)b);
    else if (!strcmp(kind, "squeeze"))
        st = ddl_tensor_squeeze(&r, t, (int)a);
    else if (!strcmp(kind, "unsqueeze"))
        st = ddl_tensor_unsqueeze(&r, t, (int)a);
    else if (!strcmp(kind, "flatten"))
        st = ddl_tensor_flatten(&r, t, (int)a, (int)b);
    else if (!strcmp(kind, "select"))
        st = ddl_ag_select(&r, t, (int)a, b);
    else
        st = ddl_fail(DDL_E_VALUE, "unknown dim op %s", kind);
    if (!st && t->requires_grad && !r->requires_grad && ddl_is_grad_enabled())
        st = record_view(&r, t, transpose, (int)a, (int)b);
    return pyddl_return_tensor(st, r);
}

PYDDL_DOC(slice, "(t, dim, start, stop, step, /)", "t[start:stop:step] along dim, a view.");
static PyObject *py_slice(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t, *r = NULL;
    int dim;
    long long start, stop, step;
    if (!PyArg_ParseTuple(args, "O&iLLL", pyddl_conv_tensor_base, &t, &dim, &start, &stop, &step))
        return NULL;
    ddl_status st = ddl_ag_slice(&r, t, dim, start, stop, step);
    return pyddl_return_tensor(st, r);
}

/* ---- copies ---------------------------------------------------------------------------------- */

/* _C.copy(kind, t[, dtype]): "contiguous" | "clone" | "to" */
PYDDL_DOC(copy, "(kind, t, dtype=None, /)", "kind 'contiguous', 'clone' or 'to' (dtype).");
static PyObject *py_copy(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *kind;
    ddl_tensor *t, *r = NULL;
    ddl_dtype dt = DDL_FLOAT32;
    PyObject *dto = NULL;
    if (!PyArg_ParseTuple(args, "sO&|O", &kind, pyddl_conv_tensor_base, &t, &dto)) return NULL;
    ddl_status st;
    if (!strcmp(kind, "contiguous"))
        PYDDL_CALL(st, big(t), ddl_ag_contiguous(&r, t, 0));
    else if (!strcmp(kind, "clone"))
        PYDDL_CALL(st, big(t), ddl_ag_contiguous(&r, t, 1));
    else if (!dto || pyddl_parse_dtype(dto, &dt) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "copy: 'to' needs a dtype code");
        return NULL;
    } else
        PYDDL_CALL(st, big(t), ddl_ag_to(&r, t, dt));
    return pyddl_return_tensor(st, r);
}

PYDDL_DOC(copy_, "(dst, src, /)", "dst[...] = src (a tensor, array or scalar); returns dst.");
static PyObject *py_copy_(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *dsto, *srco;
    if (!PyArg_ParseTuple(args, "O!O", &PyTensor_Type, &dsto, &srco)) return NULL;
    ddl_tensor *dst = ((PyTensor *)dsto)->t, *src;
    if (pyddl_check_inplace(dst, "copy_") < 0) return NULL;
    ddl_status st;
    if (PyLong_Check(srco) && dst->dtype == DDL_INT64) {
        if (pyddl_int64_scalar(srco, &src) < 0) return NULL;
        st = ddl_copy_(dst, src);
        ddl_tensor_release(src);
    } else if (PyFloat_Check(srco) || PyLong_Check(srco)) {
        double v = PyFloat_AsDouble(srco);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        PYDDL_CALL(st, big(dst), ddl_fill_(dst, v));
    } else {
        if (pyddl_as_tensor(srco, &src, "copy_") < 0) return NULL;
        PYDDL_CALL(st, big(dst), ddl_copy_(dst, src));
        ddl_tensor_release(src);
    }
    if (st) return pyddl_raise(st);
    return Py_NewRef(dsto);
}

PYDDL_DOC(zero_, "(t, /)", "t[...] = 0; returns t.");
static PyObject *py_zero_(PyObject *Py_UNUSED(self), PyObject *to) {
    ddl_tensor *t;
    if (!pyddl_conv_tensor_base(to, &t) || pyddl_check_inplace(t, "zero_") < 0) return NULL;
    ddl_status st;
    PYDDL_CALL(st, big(t), ddl_zero_(t));
    if (st) return pyddl_raise(st);
    return Py_NewRef(to);
}

PYDDL_DOC(item, "(t, flat_index, /)", "One element as a Python number.");
static PyObject *py_item(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t;
    long long i;
    if (!PyArg_ParseTuple(args, "O&L", pyddl_conv_tensor_base, &t, &i)) return NULL;
    double v;
    ddl_status st = ddl_tensor_item(&v, t, i);
    if (st) return pyddl_raise(st);
    if (t->dtype == DDL_INT64) {
        /* read exactly: doubles lose integers above 2^53 */
        int64_t off = 0, flat = i;
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += (flat % t->shape[d]) * t->strides[d];
            flat /= t->shape[d];
        }
        return PyLong_FromLongLong(((int64_t *)ddl_tensor_data(t))[off]);
    }
    if (t->dtype == DDL_BOOL) return PyBool_FromLong(v != 0);
    if (!ddl_dtype_is_float(t->dtype)) return PyLong_FromLongLong((long long)v); /* int8..int32 */
    return PyFloat_FromDouble(v);
}

PyMethodDef pyddl_tensor_functions[] = {
    PYDDL_FN(from_buffer, METH_O),
    PYDDL_FN(_set_array_converter, METH_O),
    PYDDL_FN(full, METH_VARARGS),
    PYDDL_FN(arange, METH_VARARGS),
    PYDDL_FN(linspace, METH_VARARGS),
    PYDDL_FN(eye, METH_VARARGS),
    PYDDL_FN(random, METH_VARARGS),
    PYDDL_FN(manual_seed, METH_O),
    PYDDL_FN(initial_seed, METH_NOARGS),
    PYDDL_FN(rng_state, METH_VARARGS),
    PYDDL_FN(reshape, METH_VARARGS),
    PYDDL_FN(permute, METH_VARARGS),
    PYDDL_FN(dimop, METH_VARARGS),
    PYDDL_FN(slice, METH_VARARGS),
    PYDDL_FN(copy, METH_VARARGS),
    PYDDL_FN(copy_, METH_VARARGS),
    PYDDL_FN(zero_, METH_O),
    PYDDL_FN(item, METH_VARARGS),
    PYDDL_FN_END,
};
