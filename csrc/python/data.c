/* data.c (binding): IDX loading and row gathering for datasets and the DataLoader. */
#include "pyddl.h"

static PyObject *py_idx_load(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *bytes;
    if (!PyUnicode_FSConverter(arg, &bytes)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    const char *path = PyBytes_AS_STRING(bytes);
    Py_BEGIN_ALLOW_THREADS st = ddl_idx_load(&t, path);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    return st ? pyddl_raise(st) : pyddl_wrap(t);
}

/* gather_rows(src, indices): indices an int64 tensor or array */
static PyObject *py_gather_rows(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *so, *io;
    if (!PyArg_ParseTuple(args, "OO", &so, &io)) return NULL;
    ddl_tensor *src = NULL, *idx = NULL, *idc = NULL, *r = NULL;
    if (pyddl_as_tensor(so, &src, "gather_rows") < 0) return NULL;
    if (pyddl_as_tensor(io, &idx, "gather_rows") < 0) {
        ddl_tensor_release(src);
        return NULL;
    }
    ddl_status st = DDL_OK;
    if (idx->dtype != DDL_INT64 || idx->ndim != 1)
        st = ddl_fail(DDL_E_TYPE, "gather_rows: indices must be a 1-D int64 tensor");
    if (!st) st = ddl_tensor_contiguous(&idc, idx);
    if (!st) {
        Py_BEGIN_ALLOW_THREADS st = ddl_gather_rows(&r, src, ddl_tensor_data(idc), idc->shape[0]);
        Py_END_ALLOW_THREADS
    }
    ddl_tensor_release(src);
    ddl_tensor_release(idx);
    ddl_tensor_release(idc);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

PyMethodDef pyddl_data_functions[] = {
    {"idx_load", py_idx_load, METH_O, "Load an IDX file (gzip or raw) as a tensor."},
    {"gather_rows", py_gather_rows, METH_VARARGS, "gather_rows(src, indices) -> src[indices]"},
    {NULL, NULL, 0, NULL},
};
