/* reducer.c (binding): the DDP reducer as a capsule that keeps its process group alive. */
#include "ddl/reducer.h"
#include "pyddl.h"

#define REDUCER_CAPSULE "ddl.Reducer"
#define PG_CAPSULE "ddl.ProcessGroup"

static void reducer_destructor(PyObject *cap) {
    ddl_reducer *r = PyCapsule_GetPointer(cap, REDUCER_CAPSULE);
    PyObject *pg = PyCapsule_GetContext(cap);
    if (r) {
        Py_BEGIN_ALLOW_THREADS ddl_reducer_free(r);
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(pg); /* the group goes after the reducer that uses it */
}

static ddl_reducer *get(PyObject *o) { return PyCapsule_GetPointer(o, REDUCER_CAPSULE); }

/* reducer_new(pg, params, bucket_cap_bytes, first_bucket_bytes) */
static PyObject *py_reducer_new(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *pgo, *list;
    long long cap, first;
    if (!PyArg_ParseTuple(args, "OOLL", &pgo, &list, &cap, &first)) return NULL;
    ddl_pg *pg = PyCapsule_GetPointer(pgo, PG_CAPSULE);
    if (!pg) return NULL;
    PyObject *fast = PySequence_Fast(list, "params must be a sequence of tensors");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    ddl_tensor **ps = PyMem_Calloc((size_t)(n ? n : 1), sizeof *ps);
    if (!ps) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTensor_Check(o)) {
            PyErr_Format(PyExc_TypeError, "params[%zd] is not a Tensor", i);
            PyMem_Free(ps);
            Py_DECREF(fast);
            return NULL;
        }
        ps[i] = ((PyTensor *)o)->t;
    }
    ddl_reducer *r = NULL;
    ddl_status st = ddl_reducer_new(&r, pg, (int)n, ps, cap, first);
    PyMem_Free(ps);
    Py_DECREF(fast);
    if (st) return pyddl_raise(st);
    PyObject *capo = PyCapsule_New(r, REDUCER_CAPSULE, reducer_destructor);
    if (!capo) {
        ddl_reducer_free(r);
        return NULL;
    }
    Py_INCREF(pgo);
    PyCapsule_SetContext(capo, pgo);
    return capo;
}

/* reducer_prepare(r, unused: bytes of n flags, or None) */
static PyObject *py_prepare(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ro, *uo;
    if (!PyArg_ParseTuple(args, "OO", &ro, &uo)) return NULL;
    ddl_reducer *r = get(ro);
    if (!r) return NULL;
    const uint8_t *unused = NULL;
    if (uo != Py_None) {
        if (!PyBytes_Check(uo)) {
            PyErr_SetString(PyExc_TypeError, "unused must be bytes");
            return NULL;
        }
        unused = (const uint8_t *)PyBytes_AS_STRING(uo);
    }
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_reducer_prepare(r, unused);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_set_sync(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ro;
    int sync;
    if (!PyArg_ParseTuple(args, "Op", &ro, &sync)) return NULL;
    ddl_reducer *r = get(ro);
    if (!r) return NULL;
    ddl_reducer_set_sync(r, sync);
    Py_RETURN_NONE;
}

static PyObject *index_list(const int *idx, int n) {
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) PyList_SET_ITEM(l, i, PyLong_FromLong(idx[i]));
    return l;
}

static PyObject *py_pending(PyObject *self, PyObject *ro) {
    (void)self;
    ddl_reducer *r = get(ro);
    if (!r) return NULL;
    int n = ddl_reducer_pending(r, NULL, 0);
    int *idx = PyMem_Calloc((size_t)(n ? n : 1), sizeof *idx);
    if (!idx) return PyErr_NoMemory();
    ddl_reducer_pending(r, idx, n);
    PyObject *l = index_list(idx, n);
    PyMem_Free(idx);
    return l;
}

static PyObject *py_call(PyObject *ro, ddl_status (*fn)(ddl_reducer *)) {
    ddl_reducer *r = get(ro);
    if (!r) return NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = fn(r);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_rebuild(PyObject *self, PyObject *ro) {
    (void)self;
    return py_call(ro, ddl_reducer_rebuild);
}

static PyObject *py_shadow(PyObject *self, PyObject *ro) {
    (void)self;
    return py_call(ro, ddl_reducer_shadow);
}

/* reducer_buckets(r) -> [(param indices, start_us, end_us), ...] */
static PyObject *py_buckets(PyObject *self, PyObject *ro) {
    (void)self;
    ddl_reducer *r = get(ro);
    if (!r) return NULL;
    int nb = ddl_reducer_num_buckets(r);
    PyObject *out = PyList_New(nb);
    for (int b = 0; out && b < nb; b++) {
        int n = ddl_reducer_bucket_params(r, b, NULL, 0);
        int *idx = PyMem_Calloc((size_t)(n ? n : 1), sizeof *idx);
        if (!idx) {
            Py_DECREF(out);
            return PyErr_NoMemory();
        }
        ddl_reducer_bucket_params(r, b, idx, n);
        int64_t s, e;
        ddl_reducer_bucket_times(r, b, &s, &e);
        PyObject *l = index_list(idx, n);
        PyMem_Free(idx);
        PyList_SET_ITEM(out, b, Py_BuildValue("(NLL)", l, (long long)s, (long long)e));
    }
    return out;
}

/* allreduce_sum_ag(pg, t): a differentiable SUM all-reduce */
static PyObject *py_allreduce_sum_ag(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *pgo, *to;
    if (!PyArg_ParseTuple(args, "OO", &pgo, &to)) return NULL;
    ddl_pg *pg = PyCapsule_GetPointer(pgo, PG_CAPSULE);
    if (!pg) return NULL;
    ddl_tensor *t, *r = NULL;
    if (pyddl_as_tensor(to, &t, "all_reduce") < 0) return NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_ag_allreduce_sum(&r, pg, t);
    Py_END_ALLOW_THREADS
    ddl_tensor_release(t);
    return st ? pyddl_raise(st) : pyddl_wrap(r);
}

PyMethodDef pyddl_reducer_functions[] = {
    {"reducer_new", py_reducer_new, METH_VARARGS,
     "reducer_new(pg, params, bucket_cap_bytes, first_bucket_bytes)"},
    {"reducer_prepare", py_prepare, METH_VARARGS, "reducer_prepare(r, unused bytes or None)"},
    {"reducer_set_sync", py_set_sync, METH_VARARGS, "reducer_set_sync(r, flag)"},
    {"reducer_pending", py_pending, METH_O, "Parameter indices still waiting for a gradient."},
    {"reducer_rebuild", py_rebuild, METH_O, "Re-bucket by the observed gradient order."},
    {"reducer_shadow", py_shadow, METH_O, "All-reduce zeros in every bucket (Join)."},
    {"reducer_buckets", py_buckets, METH_O, "[(param indices, start_us, end_us)] per bucket"},
    {"allreduce_sum_ag", py_allreduce_sum_ag, METH_VARARGS, "Differentiable SUM all-reduce."},
    {NULL, NULL, 0, NULL},
};
