/* data.c (binding): IDX loading, row gathering for datasets and the DataLoader, and the libsvm
 * parser over bytes in memory (a URL's share). */
#include "pyddl.h"

PYDDL_DOC(idx_load, "(path, /)", "Load an IDX file (gzip or raw) as a tensor.");
static PyObject *py_idx_load(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bytes;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &bytes)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_idx_load(&t, PyBytes_AS_STRING(bytes)));
    Py_DECREF(bytes);
    return pyddl_return_tensor(st, t);
}

/* gather_rows(src, indices): indices an int64 tensor or array */
PYDDL_DOC(gather_rows, "(src, indices, /)",
          "src[indices] along dim 0 (indices a 1-D int64 tensor or array).");
static PyObject *py_gather_rows(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* src, indices */
    if (!PyArg_ParseTuple(args, "O&O&", pyddl_conv_tensor, &t[0], pyddl_conv_index_vector, &t[1]))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_gather_rows(&r, t[0], ddl_tensor_data(t[1]), t[1]->shape[0]));
    return pyddl_finish(st, r, t, 2);
}

/* libsvm_parse(data, name, offset, first_line, n_features, dtype)
 *   -> (indptr, indices, values, labels, max_col) */
PYDDL_DOC(libsvm_parse, "(data, name, offset, first_line, n_features, dtype, /)",
          "-> (indptr, indices, values, labels, max_col): the libsvm lines in a bytes-like "
          "object, the first at byte offset of the file called name (first_line: its line "
          "number, 0 unknown).");
static PyObject *py_libsvm_parse(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer buf;
    const char *name;
    long long offset, first_line, n_features;
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "y*sLLLO&", &buf, &name, &offset, &first_line, &n_features,
                          pyddl_conv_dtype, &dt))
        return NULL;
    ddl_tensor *ts[4] = {NULL, NULL, NULL, NULL};
    int64_t max_col = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_libsvm_parse(&ts[0], &ts[1], &ts[2], &ts[3], &max_col, buf.buf, buf.len,
                                     name, offset, first_line, n_features, dt));
    PyBuffer_Release(&buf);
    if (st) return pyddl_raise(st);
    PyObject *tup = PyTuple_New(5);
    for (int i = 0; tup && i < 4; i++) {
        PyObject *o = pyddl_wrap(ts[i]); /* steals ts[i] even when it fails */
        ts[i] = NULL;
        if (!o)
            Py_CLEAR(tup);
        else
            PyTuple_SET_ITEM(tup, i, o);
    }
    pyddl_release_tensors(ts, 4); /* those not reached after a failure */
    PyObject *max = tup ? PyLong_FromLongLong(max_col) : NULL;
    if (!max) {
        Py_XDECREF(tup);
        return NULL;
    }
    PyTuple_SET_ITEM(tup, 4, max);
    return tup;
}

PyMethodDef pyddl_data_functions[] = {
    PYDDL_FN(idx_load, METH_VARARGS),
    PYDDL_FN(gather_rows, METH_VARARGS),
    PYDDL_FN(libsvm_parse, METH_VARARGS),
    PYDDL_FN_END,
};
