/* module.c: the ddl._C module: exception table, type registration, runtime queries. */
#include "pyddl.h"

PyTypeObject *pyddl_tensor_class = &PyTensor_Type;

/* One table from status to exception; the distributed ones are set by ddl.distributed. */
static PyObject *exc_comm, *exc_timeout;

/* Put the failure's fields (ddl_last_error_info) on a distributed exception: rank, ranks,
 * op, seq, peer, errno (None / () where nothing is known). 0 or -1 with an exception set. */
static int set_error_fields(PyObject *exc, const ddl_error_info *info) {
    PyObject *ranks = PyTuple_New(info->n_ranks);
    if (!ranks) return -1;
    for (int i = 0; i < info->n_ranks; i++) {
        PyObject *r = PyLong_FromLong(info->ranks[i]);
        if (!r) {
            Py_DECREF(ranks);
            return -1;
        }
        PyTuple_SET_ITEM(ranks, i, r);
    }
    struct {
        const char *name;
        PyObject *value;
    } fields[] = {
        {"ranks", ranks},
        {"rank", info->rank >= 0 ? PyLong_FromLong(info->rank) : Py_NewRef(Py_None)},
        {"op", info->op[0] ? PyUnicode_FromString(info->op) : Py_NewRef(Py_None)},
        {"seq", info->seq >= 0 ? PyLong_FromLongLong(info->seq) : Py_NewRef(Py_None)},
        {"peer", info->peer[0] ? PyUnicode_FromString(info->peer) : Py_NewRef(Py_None)},
        {"errno", info->sys_errno ? PyLong_FromLong(info->sys_errno) : Py_NewRef(Py_None)},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (rc == 0 && (!fields[i].value ||
                        PyObject_SetAttrString(exc, fields[i].name, fields[i].value) < 0))
            rc = -1;
        Py_XDECREF(fields[i].value);
    }
    return rc;
}

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
    ddl_error_info info = *ddl_last_error_info(); /* copied: building the exception runs Python */
    const char *text = ddl_last_error();
    if (!text[0]) text = ddl_status_name(st);
    PyObject *msg = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    if (!msg) return NULL;
    PyObject *exc = PyObject_CallOneArg(type, msg);
    Py_DECREF(msg);
    if (!exc) return NULL;
    if ((st == DDL_E_COMM || st == DDL_E_TIMEOUT) &&
        set_error_fields(exc, &info) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *py_set_tensor_class(PyObject *self, PyObject *cls) {
    (void)self;
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTensor_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a subclass of _C.TensorBase");
        return NULL;
    }
    Py_INCREF(cls);
    pyddl_tensor_class = (PyTypeObject *)cls;
    Py_RETURN_NONE;
}

static PyObject *py_set_error_types(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *comm, *timeout;
    if (!PyArg_ParseTuple(args, "OO", &comm, &timeout)) return NULL;
    Py_XSETREF(exc_comm, Py_NewRef(comm));
    Py_XSETREF(exc_timeout, Py_NewRef(timeout));
    Py_RETURN_NONE;
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected n >= 1, got %ld", n);
        return NULL;
    }
    ddl_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyLong_FromLong(ddl_get_num_threads());
}

static PyObject *py_blas_info(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return Py_BuildValue("{ss,ss}", "corename", ddl_blas_corename(), "config",
                         ddl_blas_version());
}

static PyObject *py_gloo_version(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyUnicode_FromString(ddl_gloo_version());
}

static PyObject *py_gloo_selftest(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    double r = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_gloo_selftest(&r);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    return PyFloat_FromDouble(r);
}

static PyMethodDef module_functions[] = {
    {"_set_tensor_class", py_set_tensor_class, METH_O, "Register the class results are made of."},
    {"_set_error_types", py_set_error_types, METH_VARARGS,
     "Register (DistributedError, DistributedTimeoutError)."},
    {"set_num_threads", py_set_num_threads, METH_O, "Threads for ddl kernels and OpenBLAS."},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "Current thread count."},
    {"blas_info", py_blas_info, METH_NOARGS, "The OpenBLAS kernel and build config in use."},
    {"gloo_version", py_gloo_version, METH_NOARGS, "Version of the Gloo headers ddl built with."},
    {"gloo_selftest", py_gloo_selftest, METH_NOARGS,
     "Allreduce between two in-process ranks over loopback TCP; returns 3.0."},
    {NULL, NULL, 0, NULL},
};

static int add_functions(PyObject *m, PyMethodDef *defs) {
    return PyModule_AddFunctions(m, defs);
}

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
    if (add_functions(m, module_functions) < 0 || add_functions(m, pyddl_tensor_functions) < 0 ||
        add_functions(m, pyddl_op_functions) < 0 || add_functions(m, pyddl_autograd_functions) < 0 ||
        add_functions(m, pyddl_nn_functions) < 0 || add_functions(m, pyddl_data_functions) < 0 ||
        add_functions(m, pyddl_comm_functions) < 0 ||
        add_functions(m, pyddl_reducer_functions) < 0 ||
        add_functions(m, pyddl_store_functions) < 0 ||
        add_functions(m, pyddl_ml_functions) < 0 ||
        add_functions(m, pyddl_optim_functions) < 0)
        goto error;
    if (PyModule_AddIntConstant(m, "MAX_DIMS", DDL_MAX_DIMS) < 0) goto error;
    return m;
error:
    Py_DECREF(m);
    return NULL;
}
