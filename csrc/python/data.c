/* data.c (binding): IDX loading and row gathering for datasets and the DataLoader. */
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

PyMethodDef pyddl_data_functions[] = {
    PYDDL_FN(idx_load, METH_VARARGS),
    PYDDL_FN(gather_rows, METH_VARARGS),
    PYDDL_FN_END,
};
