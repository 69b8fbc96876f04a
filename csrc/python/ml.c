/* ml.c (binding): the libsvm parser, MurmurHash3 / hashing TF and the logistic-regression
 * kernels of csrc/ml.h. Argument friendliness lives in ddl/datasets, ddl/features, ddl/ml. */
#include "pyddl.h"

#include "ddl/ml.h"

/* A borrowed tensor for an optional argument (None: NULL). */
static int opt_tensor(PyObject *o, ddl_tensor **out, const char *who) {
    *out = NULL;
    return o == Py_None ? 0 : pyddl_as_tensor(o, out, who);
}

static void release_all(ddl_tensor **ts, int n) {
    for (int i = 0; i < n; i++) ddl_tensor_release(ts[i]);
}

/* (indptr, indices, values, labels) tensors, stolen, and max_col as a tuple */
static PyObject *csr_tuple(ddl_tensor **ts, int n, PyObject *extra) {
    PyObject *tup = PyTuple_New(n + (extra != NULL));
    if (!tup) {
        release_all(ts, n);
        Py_XDECREF(extra);
        return NULL;
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        PyObject *o = failed ? NULL : pyddl_wrap(ts[i]);
        if (!o) {
            if (failed) ddl_tensor_release(ts[i]);
            failed = 1;
            continue;
        }
        PyTuple_SET_ITEM(tup, i, o);
    }
    if (extra) PyTuple_SET_ITEM(tup, n, extra);
    if (failed) {
        Py_DECREF(tup);
        return NULL;
    }
    return tup;
}

/* libsvm_load(path, start, end, n_features, dtype) -> (indptr, indices, values, labels, max_col) */
static PyObject *py_libsvm_load(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *bytes;
    long long start, end, n_features;
    ddl_dtype dt;
    PyObject *dto;
    if (!PyArg_ParseTuple(args, "O&LLLO", PyUnicode_FSConverter, &bytes, &start, &end, &n_features,
                          &dto))
        return NULL;
    if (pyddl_parse_dtype(dto, &dt) < 0) {
        Py_DECREF(bytes);
        return NULL;
    }
    ddl_tensor *ts[4] = {NULL, NULL, NULL, NULL};
    int64_t max_col = 0;
    ddl_status st;
    const char *path = PyBytes_AS_STRING(bytes);
    Py_BEGIN_ALLOW_THREADS
    st =
        ddl_libsvm_load(&ts[0], &ts[1], &ts[2], &ts[3], &max_col, path, start, end, n_features, dt);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    if (st) return pyddl_raise(st);
    PyObject *mc = PyLong_FromLongLong(max_col);
    if (!mc) {
        release_all(ts, 4);
        return NULL;
    }
    return csr_tuple(ts, 4, mc);
}

/* murmur3_32(data: bytes-like, seed) -> unsigned 32-bit int */
static PyObject *py_murmur3_32(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    unsigned long seed;
    if (!PyArg_ParseTuple(args, "y*k", &buf, &seed)) return NULL;
    uint32_t h = ddl_murmur3_32(buf.buf, (size_t)buf.len, (uint32_t)seed);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(h);
}

/* An int64 contiguous 1-D tensor from o (a copy when o is not already one). */
static int int64_vector(PyObject *o, ddl_tensor **out, const char *who) {
    ddl_tensor *t;
    if (pyddl_as_tensor(o, &t, who) < 0) return -1;
    ddl_status st = DDL_OK;
    if (t->dtype != DDL_INT64 || t->ndim != 1)
        st = ddl_fail(DDL_E_TYPE, "%s: expected a 1-D int64 array", who);
    if (!st) st = ddl_tensor_contiguous(out, t);
    ddl_tensor_release(t);
    if (st) {
        pyddl_raise(st);
        return -1;
    }
    return 0;
}

/* hashing_tf(text, token_ends, doc_ends, num_features, binary, dtype) -> (indptr, indices,
 * values) */
static PyObject *py_hashing_tf(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer text;
    PyObject *to, *dio, *dto;
    long long num_features;
    int binary;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "y*OOLpO", &text, &to, &dio, &num_features, &binary, &dto))
        return NULL;
    ddl_tensor *tok = NULL, *docs = NULL, *ts[3] = {NULL, NULL, NULL};
    if (pyddl_parse_dtype(dto, &dt) < 0 || int64_vector(to, &tok, "hashing_tf") < 0 ||
        int64_vector(dio, &docs, "hashing_tf") < 0) {
        ddl_tensor_release(tok);
        PyBuffer_Release(&text);
        return NULL;
    }
    ddl_status st;
    int big = text.len > PYDDL_NOGIL_BYTES;
    PYDDL_CALL(st, big,
               ddl_hashing_tf(&ts[0], &ts[1], &ts[2], text.buf, ddl_tensor_data(tok),
                              ddl_tensor_data(docs), (int64_t)text.len, tok->shape[0],
                              docs->shape[0], num_features, binary, dt));
    ddl_tensor_release(tok);
    ddl_tensor_release(docs);
    PyBuffer_Release(&text);
    if (st) return pyddl_raise(st);
    return csr_tuple(ts, 3, NULL);
}

/* The X of a call: (indptr or None, indices or None, values, n_cols) */
typedef struct {
    ddl_tensor *indptr, *indices, *values;
    ddl_csr x;
} py_rows;

static int parse_rows(py_rows *r, PyObject *ip, PyObject *ix, PyObject *v, long long n_cols,
                      const char *who) {
    r->indptr = r->indices = r->values = NULL;
    if (opt_tensor(ip, &r->indptr, who) < 0 || opt_tensor(ix, &r->indices, who) < 0 ||
        pyddl_as_tensor(v, &r->values, who) < 0) {
        ddl_tensor_release(r->indptr);
        ddl_tensor_release(r->indices);
        return -1;
    }
    r->x.indptr = r->indptr;
    r->x.indices = r->indices;
    r->x.values = r->values;
    r->x.n_cols = n_cols;
    return 0;
}

static void free_rows(py_rows *r) {
    ddl_tensor_release(r->indptr);
    ddl_tensor_release(r->indices);
    ddl_tensor_release(r->values);
}

/* linear_margins(indptr, indices, values, n_cols, coef, intercept) -> (n, k) float64 */
static PyObject *py_linear_margins(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ip, *ix, *v, *co, *io;
    long long n_cols;
    if (!PyArg_ParseTuple(args, "OOOLOO", &ip, &ix, &v, &n_cols, &co, &io)) return NULL;
    py_rows r;
    if (parse_rows(&r, ip, ix, v, n_cols, "linear_margins") < 0) return NULL;
    ddl_tensor *coef = NULL, *icpt = NULL, *out = NULL;
    if (pyddl_as_tensor(co, &coef, "linear_margins") < 0 ||
        opt_tensor(io, &icpt, "linear_margins") < 0) {
        ddl_tensor_release(coef);
        free_rows(&r);
        return NULL;
    }
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ddl_linear_margins(&out, &r.x, coef, icpt);
    Py_END_ALLOW_THREADS
    ddl_tensor_release(coef);
    ddl_tensor_release(icpt);
    free_rows(&r);
    return st ? pyddl_raise(st) : pyddl_wrap(out);
}

/* logistic_loss_grad(indptr, indices, values, n_cols, y, coef, intercept, dcoef, dintercept,
 * multinomial) -> summed loss; dcoef/dintercept (writable float64) accumulate the gradient */
static PyObject *py_logistic_loss_grad(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ip, *ix, *v, *yo, *co, *io, *dco, *dio;
    long long n_cols;
    int multinomial;
    if (!PyArg_ParseTuple(args, "OOOLOOOOOp", &ip, &ix, &v, &n_cols, &yo, &co, &io, &dco, &dio,
                          &multinomial))
        return NULL;
    static const char who[] = "logistic_loss_grad";
    py_rows r;
    if (parse_rows(&r, ip, ix, v, n_cols, who) < 0) return NULL;
    ddl_tensor *y = NULL, *coef = NULL, *icpt = NULL, *dcoef = NULL, *dicpt = NULL;
    if (pyddl_as_tensor(yo, &y, who) < 0 || pyddl_as_tensor(co, &coef, who) < 0 ||
        opt_tensor(io, &icpt, who) < 0 || pyddl_from_buffer(dco, &dcoef, 1) < 0 ||
        (dio != Py_None && pyddl_from_buffer(dio, &dicpt, 1) < 0)) {
        ddl_tensor_release(y);
        ddl_tensor_release(coef);
        ddl_tensor_release(icpt);
        ddl_tensor_release(dcoef);
        free_rows(&r);
        return NULL;
    }
    double loss = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ddl_logistic_loss_grad(&loss, dcoef, dicpt, &r.x, y, coef, icpt, multinomial);
    Py_END_ALLOW_THREADS
    ddl_tensor_release(y);
    ddl_tensor_release(coef);
    ddl_tensor_release(icpt);
    ddl_tensor_release(dcoef);
    ddl_tensor_release(dicpt);
    free_rows(&r);
    return st ? pyddl_raise(st) : PyFloat_FromDouble(loss);
}

PyMethodDef pyddl_ml_functions[] = {
    {"libsvm_load", py_libsvm_load, METH_VARARGS,
     "libsvm_load(path, start, end, n_features, dtype) -> (indptr, indices, values, labels, "
     "max_col): the lines starting in bytes [start, end) (end < 0: to the end)."},
    {"murmur3_32", py_murmur3_32, METH_VARARGS, "murmur3_32(data, seed) -> MurmurHash3_x86_32."},
    {"hashing_tf", py_hashing_tf, METH_VARARGS,
     "hashing_tf(text, token_ends, doc_ends, num_features, binary, dtype) -> CSR arrays."},
    {"linear_margins", py_linear_margins, METH_VARARGS,
     "linear_margins(indptr, indices, values, n_cols, coef, intercept) -> X @ coef.T + b."},
    {"logistic_loss_grad", py_logistic_loss_grad, METH_VARARGS,
     "logistic_loss_grad(indptr, indices, values, n_cols, y, coef, intercept, dcoef, "
     "dintercept, multinomial) -> summed log-loss; accumulates the gradient."},
    {NULL, NULL, 0, NULL},
};
