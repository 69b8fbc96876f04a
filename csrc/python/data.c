/* data.c (binding): IDX loading and row gathering for datasets and the DataLoader. */
#include "pyddl.h"

static PyObject *py_idx_load(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *bytes;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &bytes)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_idx_load(&t, PyBytes_AS_STRING(bytes)));
    Py_DECREF(bytes);
    return pyddl_return_tensor(st, t);
}

/* gather_rows(src, indices): indices an int64 tensor or array */
static PyObject *py_gather_rows(PyObject *self, PyObject *args) {
    (void)self;
    ddl_tensor *t[2] = {NULL, NULL}, *r = NULL; /* src, indices */
    if (!PyArg_ParseTuple(args, "O&O&", pyddl_conv_tensor, &t[0], pyddl_conv_index_vector, &t[1]))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_gather_rows(&r, t[0], ddl_tensor_data(t[1]), t[1]->shape[0]));
    return pyddl_finish(st, r, t, 2);
}

PyMethodDef pyddl_data_functions[] = {
    PYDDL_FN("idx_load", py_idx_load, METH_VARARGS, "(path, /)",
             "Load an IDX file (gzip or raw) as a tensor."),
    PYDDL_FN("gather_rows", py_gather_rows, METH_VARARGS, "(src, indices, /)",
             "src[indices] along dim 0 (indices a 1-D int64 tensor or array)."),
    PYDDL_FN_END,
};
