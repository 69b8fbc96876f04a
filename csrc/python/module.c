/* module.c: the ddl._C module: exception table, type registration, runtime queries, and the
 * method tables of every binding file put together. */
#include "pyddl.h"

#include <unistd.h>

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
        if (rc == 0 &&
            (!fields[i].value || PyObject_SetAttrString(exc, fields[i].name, fields[i].value) < 0))
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
    if ((st == DDL_E_COMM || st == DDL_E_TIMEOUT) && set_error_fields(exc, &info) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
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

PYDDL_DOC(set_num_threads, "(n, /)",
          "Threads for ddl kernels and OpenBLAS (at most 4x the online CPUs: more is clamped, "
          "with a RuntimeWarning).");
static PyObject *py_set_num_threads(PyObject *Py_UNUSED(self), PyObject *arg) {
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (overflow < 0 || (!overflow && n < 1)) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: expected n >= 1, got %R", arg);
        return NULL;
    }
    /* issue 13: bounded by the machine (a thread pool of 10**9 would fail or thrash) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long long cap = (cpus > 0 ? cpus : 1) * 4LL;
    if (cap > 1024) cap = 1024;
    if (overflow || n > cap) {
        if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                             "set_num_threads: %R threads on a machine with %ld CPUs; using %lld "
                             "(4x the CPUs at most)",
                             arg, cpus, cap) < 0)
            return NULL;
        n = cap;
    }
    ddl_set_num_threads((int)n);
    Py_RETURN_NONE;
}

PYDDL_DOC(get_num_threads, "()", "Current thread count.");
static PyObject *py_get_num_threads(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyLong_FromLong(ddl_get_num_threads());
}

PYDDL_DOC(set_autocast_bf16, "(on, /)",
          "bf16 autocast of the layer GEMMs (process-wide; float32 without AMX-BF16).");
static PyObject *py_set_autocast_bf16(PyObject *Py_UNUSED(self), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    ddl_set_autocast_bf16(on);
    Py_RETURN_NONE;
}

PYDDL_DOC(get_autocast_bf16, "()", "Whether bf16 autocast is on.");
static PyObject *py_get_autocast_bf16(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyBool_FromLong(ddl_get_autocast_bf16());
}

PYDDL_DOC(autocast_bf16_supported, "()",
          "Whether this CPU and kernel offer AMX-BF16 or AVX512-BF16.");
static PyObject *py_autocast_bf16_supported(PyObject *Py_UNUSED(self),
                                            PyObject *Py_UNUSED(unused)) {
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ddl_autocast_bf16_supported();
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(r);
}

PYDDL_DOC(blas_info, "()", "The OpenBLAS kernel and build config in use.");
static PyObject *py_blas_info(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return Py_BuildValue("{ss,ss}", "corename", ddl_blas_corename(), "config", ddl_blas_version());
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
    PYDDL_FN(set_autocast_bf16, METH_O),
    PYDDL_FN(get_autocast_bf16, METH_NOARGS),
    PYDDL_FN(autocast_bf16_supported, METH_NOARGS),
    PYDDL_FN(gloo_selftest, METH_NOARGS),
    PYDDL_FN_END,
};

/* fixed_point.c: the deterministic mode's exact-sum kernels (issue 18) */
extern PyMethodDef pyddl_fixed_point_functions[];
extern PyMethodDef pyddl_half_functions[]; /* half.c: DDP's compress hooks */

/* Every file's table, in the order of the layers. */
static PyMethodDef *const tables[] = {
    module_functions,         pyddl_tensor_functions,  pyddl_op_functions,
    pyddl_autograd_functions, pyddl_nn_functions,      pyddl_optim_functions,
    pyddl_data_functions,     pyddl_ml_functions,      pyddl_store_functions,
    pyddl_comm_functions,     pyddl_reducer_functions, pyddl_fixed_point_functions,
    pyddl_half_functions,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "ddl._C",
    "ddl's C core (tensors, ops, collectives).",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
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
