/* ml.c (binding): the libsvm parser, MurmurHash3 / hashing TF and the logistic-regression
 * kernels of ml.h. Argument friendliness lives in ddl/datasets, ddl/features, ddl/ml. */
#include "pyddl.h"

#define T pyddl_conv_tensor
#define T_OPT pyddl_conv_tensor_or_none

/* A tuple of the n tensors ts (stolen) and, when not NULL, `extra` (stolen). */
static PyObject *tensor_tuple(ddl_tensor **ts, int n, PyObject *extra) {
    PyObject *tup = PyTuple_New(n + (extra != NULL));
    for (int i = 0; tup && i < n; i++) {
        PyObject *o = pyddl_wrap(ts[i]); /* steals ts[i] even when it fails */
        ts[i] = NULL;
        if (!o)
            Py_CLEAR(tup);
        else
            PyTuple_SET_ITEM(tup, i, o);
    }
    pyddl_release_tensors(ts, n); /* those not reached after a failure */
    if (tup && extra)
        PyTuple_SET_ITEM(tup, n, extra);
    else
        Py_XDECREF(extra);
    return tup;
}

/* libsvm_load(path, start, end, n_features, dtype) -> (indptr, indices, values, labels, max_col) */
PYDDL_DOC(libsvm_load, "(path, start, end, n_features, dtype, /)",
          "-> (indptr, indices, values, labels, max_col): the lines starting in bytes [start, end) "
          "(end < 0: to the end).");
static PyObject *py_libsvm_load(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bytes;
    long long start, end, n_features;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "O&LLLO&", PyUnicode_FSConverter, &bytes, &start, &end, &n_features,
                          pyddl_conv_dtype, &dt))
        return NULL;
    ddl_tensor *ts[4] = {NULL, NULL, NULL, NULL};
    int64_t max_col = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_libsvm_load(&ts[0], &ts[1], &ts[2], &ts[3], &max_col,
                                    PyBytes_AS_STRING(bytes), start, end, n_features, dt));
    Py_DECREF(bytes);
    if (st) return pyddl_raise(st);
    return tensor_tuple(ts, 4, PyLong_FromLongLong(max_col));
}

/* murmur3_32(data: bytes-like, seed) -> unsigned 32-bit int */
PYDDL_DOC(murmur3_32, "(data, seed, /)", "MurmurHash3_x86_32 of data.");
static PyObject *py_murmur3_32(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer buf;
    unsigned long seed;
    if (!PyArg_ParseTuple(args, "y*k", &buf, &seed)) return NULL;
    uint32_t h = ddl_murmur3_32(buf.buf, (size_t)buf.len, (uint32_t)seed);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(h);
}

/* hashing_tf(text, token_ends, doc_ends, num_features, binary, dtype) -> (indptr, indices,
 * values) */
PYDDL_DOC(hashing_tf, "(text, token_ends, doc_ends, num_features, binary, dtype, /)",
          "-> (indptr, indices, values): hashed term frequencies, CSR.");
static PyObject *py_hashing_tf(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer text;
    ddl_tensor *in[2] = {NULL, NULL}, *ts[3] = {NULL, NULL, NULL}; /* token_ends, doc_ends */
    long long num_features;
    int binary;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "y*O&O&LpO&", &text, pyddl_conv_index_vector, &in[0],
                          pyddl_conv_index_vector, &in[1], &num_features, &binary, pyddl_conv_dtype,
                          &dt))
        return NULL;
    ddl_status st;
    PYDDL_CALL(st, text.len > PYDDL_NOGIL_BYTES,
               ddl_hashing_tf(&ts[0], &ts[1], &ts[2], text.buf, ddl_tensor_data(in[0]),
                              ddl_tensor_data(in[1]), (int64_t)text.len, in[0]->shape[0],
                              in[1]->shape[0], num_features, binary, dt));
    pyddl_release_tensors(in, 2);
    PyBuffer_Release(&text);
    if (st) return pyddl_raise(st);
    return tensor_tuple(ts, 3, NULL);
}

/* The rows X of a call, t = (indptr or NULL, indices or NULL, values) and its column count. */
static ddl_csr rows(ddl_tensor *const *t, long long n_cols) {
    return (ddl_csr){.indptr = t[0], .indices = t[1], .values = t[2], .n_cols = n_cols};
}

/* linear_margins(indptr, indices, values, n_cols, coef, intercept) -> (n, k) float64 */
PYDDL_DOC(linear_margins, "(indptr, indices, values, n_cols, coef, intercept, /)",
          "X @ coef.T + intercept.");
static PyObject *py_linear_margins(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[5] = {NULL}, *r = NULL; /* indptr, indices, values, coef, intercept */
    long long n_cols;
    if (!PyArg_ParseTuple(args, "O&O&O&LO&O&", T_OPT, &t[0], T_OPT, &t[1], T, &t[2], &n_cols, T,
                          &t[3], T_OPT, &t[4]))
        return NULL;
    ddl_csr x = rows(t, n_cols);
    ddl_status st;
    PYDDL_NOGIL(st, ddl_linear_margins(&r, &x, t[3], t[4]));
    return pyddl_finish(st, r, t, 5);
}

/* A writable float64 buffer (the gradient accumulated into), None -> NULL when optional. */
static int conv_out_buffer(PyObject *o, void *out) {
    ddl_tensor **t = out;
    if (!o) return pyddl_conv_tensor(NULL, out); /* cleanup */
    if (o == Py_None) {
        *t = NULL;
        return 1;
    }
    return pyddl_from_buffer(o, t, 1) < 0 ? 0 : Py_CLEANUP_SUPPORTED;
}

/* logistic_loss_grad(indptr, indices, values, n_cols, y, coef, intercept, dcoef, dintercept,
 * multinomial) -> summed loss; dcoef/dintercept (writable float64) accumulate the gradient */
PYDDL_DOC(
    logistic_loss_grad,
    "(indptr, indices, values, n_cols, y, coef, intercept, dcoef, dintercept, multinomial, /)",
    "-> the summed log-loss; accumulates the gradient into dcoef and dintercept.");
static PyObject *py_logistic_loss_grad(PyObject *Py_UNUSED(self), PyObject *args) {
    /* indptr, indices, values, y, coef, intercept, dcoef, dintercept */
    ddl_tensor *t[8] = {NULL};
    long long n_cols;
    int multinomial;
    if (!PyArg_ParseTuple(args, "O&O&O&LO&O&O&O&O&p", T_OPT, &t[0], T_OPT, &t[1], T, &t[2], &n_cols,
                          T, &t[3], T, &t[4], T_OPT, &t[5], conv_out_buffer, &t[6], conv_out_buffer,
                          &t[7], &multinomial))
        return NULL;
    ddl_csr x = rows(t, n_cols);
    double loss = 0;
    ddl_status st = DDL_OK;
    if (!t[6])
        st = ddl_fail(DDL_E_TYPE, "logistic_loss_grad: dcoef must be a writable array");
    else
        PYDDL_NOGIL(st,
                    ddl_logistic_loss_grad(&loss, t[6], t[7], &x, t[3], t[4], t[5], multinomial));
    pyddl_release_tensors(t, 8);
    return st ? pyddl_raise(st) : PyFloat_FromDouble(loss);
}

/* column_moments(indptr, indices, values, n_cols, weights, acc): accumulates into acc (2, 2+2d) */
PYDDL_DOC(column_moments, "(indptr, indices, values, n_cols, weights, acc, /)",
          "accumulates [sum w, sum w^2, sum w x (d), sum w x^2 (d)] as (hi, lo) rows into acc.");
static PyObject *py_column_moments(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[5] = {NULL}; /* indptr, indices, values, weights, acc */
    long long n_cols;
    if (!PyArg_ParseTuple(args, "O&O&O&LO&O&", T_OPT, &t[0], T_OPT, &t[1], T, &t[2], &n_cols, T_OPT,
                          &t[3], conv_out_buffer, &t[4]))
        return NULL;
    ddl_csr x = rows(t, n_cols);
    ddl_status st = DDL_OK;
    if (!t[4])
        st = ddl_fail(DDL_E_TYPE, "column_moments: acc must be a writable array");
    else
        PYDDL_NOGIL(st, ddl_column_moments(t[4], &x, t[3]));
    pyddl_release_tensors(t, 5);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

/* logistic_sums(indptr, indices, values, n_cols, y, weights, coef, intercept, acc, multinomial) */
PYDDL_DOC(logistic_sums,
          "(indptr, indices, values, n_cols, y, weights, coef, intercept, acc, multinomial, /)",
          "accumulates [weighted loss, dcoef, dintercept] as (hi, lo) rows into acc.");
static PyObject *py_logistic_sums(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[8] = {NULL}; /* indptr, indices, values, y, weights, coef, intercept, acc */
    long long n_cols;
    int multinomial;
    if (!PyArg_ParseTuple(args, "O&O&O&LO&O&O&O&O&p", T_OPT, &t[0], T_OPT, &t[1], T, &t[2], &n_cols,
                          T, &t[3], T_OPT, &t[4], T, &t[5], T_OPT, &t[6], conv_out_buffer, &t[7],
                          &multinomial))
        return NULL;
    ddl_csr x = rows(t, n_cols);
    ddl_status st = DDL_OK;
    if (!t[7])
        st = ddl_fail(DDL_E_TYPE, "logistic_sums: acc must be a writable array");
    else
        PYDDL_NOGIL(st, ddl_logistic_sums(t[7], &x, t[3], t[4], t[5], t[6], multinomial));
    pyddl_release_tensors(t, 8);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef pyddl_ml_functions[] = {
    PYDDL_FN(libsvm_load, METH_VARARGS),        PYDDL_FN(murmur3_32, METH_VARARGS),
    PYDDL_FN(hashing_tf, METH_VARARGS),         PYDDL_FN(linear_margins, METH_VARARGS),
    PYDDL_FN(logistic_loss_grad, METH_VARARGS), PYDDL_FN(column_moments, METH_VARARGS),
    PYDDL_FN(logistic_sums, METH_VARARGS),      PYDDL_FN_END,
};
