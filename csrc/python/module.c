/* module.c: the ddl._C module: exception table, type registration, runtime queries, and the
 * method tables of every binding file put together. */
#include "pyddl.h"

/* One table from status to exception; the distributed ones are set by ddl.distributed. */
static PyObject *exc_comm, *exc_timeout;

PyObject *pyddl_raise(ddl_status st) {
    PyObject *type;
    switch (st) {
    case DDL_E_VALUE: type = PyExc_ValueError; break;
    case DDL_E_TYPE: type = PyExc_TypeError; break;
    case DDL_E_INDEX: type = PyExc_IndexError; break;
    case DDL_E_NOMEM: type = PyExc_MemoryError; break;
    case DDL_E_COMM: type = exc_comm ? exc_comm : PyExc_RuntimeError; break;
    case DDL_E_TIMEOUT: type = exc_timeout ? exc_timeout : PyExc_TimeoutError; break;
    default: type = PyExc_RuntimeError; break;
    }
    const char *msg = ddl_last_error();
    PyErr_SetString(type, msg[0] ? msg : ddl_status_name(st));
    return NULL;
}

PYDDL_DOC(_set_tensor_class, "(cls, /)", "Register the class results are made of.");
static PyObject *py__set_tensor_class(PyObject *Py_UNUSED(self), PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTensor_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a subclass of _C.TensorBase");
        return NULL;
    }
    Py_INCREF(cls);
    pyddl_tensor_class = (PyTypeObject *)cls;
    Py_RETURN_NONE;
}

PYDDL_DOC(_set_error_types, "(comm, timeout, /)",
          "Register (DistributedError, DistributedTimeoutError).");
static PyObject *py__set_error_types(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *comm, *timeout;
    if (!PyArg_ParseTuple(args, "OO", &comm, &timeout)) return NULL;
    Py_XSETREF(exc_comm, Py_NewRef(comm));
    Py_XSETREF(exc_timeout, Py_NewRef(timeout));
    Py_RETURN_NONE;
}

PYDDL_DOC(set_num_threads, "(n, /)", "Threads for ddl kernels and OpenBLAS.");
static PyObject *py_set_num_threads(PyObject *Py_UNUSED(self), PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected n >= 1, got %ld", n);
        return NULL;
    }
    ddl_set_num_threads((int)n);
    Py_RETURN_NONE;
}

PYDDL_DOC(get_num_threads, "()", "Current thread count.");
static PyObject *py_get_num_threads(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyLong_FromLong(ddl_get_num_threads());
}

PYDDL_DOC(blas_info, "()", "The OpenBLAS kernel and build config in use.");
static PyObject *py_blas_info(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return Py_BuildValue("{ss,ss}", "corename", ddl_blas_corename(), "config",
                         ddl_blas_version());
}

PYDDL_DOC(gloo_version, "()", "Version of the Gloo headers ddl built with.");
static PyObject *py_gloo_version(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyUnicode_FromString(ddl_gloo_version());
}

PYDDL_DOC(gloo_selftest, "()",
          "Allreduce between two in-process ranks over loopback TCP; returns 3.0.");
static PyObject *py_gloo_selftest(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    double r = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_gloo_selftest(&r));
    return st ? pyddl_raise(st) : PyFloat_FromDouble(r);
}

static PyMethodDef module_functions[] = {
    PYDDL_FN(_set_tensor_class, METH_O),
    PYDDL_FN(_set_error_types, METH_VARARGS),
    PYDDL_FN(set_num_threads, METH_O),
    PYDDL_FN(get_num_threads, METH_NOARGS),
    PYDDL_FN(blas_info, METH_NOARGS),
    PYDDL_FN(gloo_version, METH_NOARGS),
    PYDDL_FN(gloo_selftest, METH_NOARGS),
    PYDDL_FN_END,
};

/* Every file's table, in the order of the layers. */
static PyMethodDef *const tables[] = {
    module_functions,      pyddl_tensor_functions, pyddl_op_functions,
    pyddl_autograd_functions, pyddl_nn_functions,  pyddl_optim_functions,
    pyddl_data_functions,  pyddl_ml_functions,     pyddl_store_functions,
    pyddl_comm_functions,  pyddl_reducer_functions,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "ddl._C", "ddl's C core (tensors, ops, collectives).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    ddl_tune_allocator();
    if (PyType_Ready(&PyTensor_Type) < 0) goto error;
    if (PyModule_AddObjectRef(m, "TensorBase", (PyObject *)&PyTensor_Type) < 0) goto error;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (PyModule_AddFunctions(m, tables[i]) < 0) goto error;
    if (pyddl_add_constants(m) < 0) goto error;
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
