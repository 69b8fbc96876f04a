/* reducer.c (binding): the DDP reducer as a capsule that keeps its process group alive. */
#include "pyddl.h"

static void free_reducer(void *r) {
    Py_BEGIN_ALLOW_THREADS
    ddl_reducer_free(r);
    Py_END_ALLOW_THREADS
}

static void reducer_destructor(PyObject *cap) {
    PyObject *pg = PyCapsule_GetContext(cap);
    free_reducer(pyddl_capsule_pointer(cap, PYDDL_REDUCER_CAPSULE));
    Py_XDECREF(pg); /* the group goes after the reducer that uses it */
}

/* reducer_new(pg, params, bucket_cap_bytes, first_bucket_bytes) */
PYDDL_DOC(reducer_new, "(pg, params, bucket_cap_bytes, first_bucket_bytes, /)",
          "A reducer over params (Tensors) that all-reduces their gradients in buckets.");
static PyObject *py_reducer_new(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *pgo, *list;
    long long cap, first;
    if (!PyArg_ParseTuple(args, "OOLL", &pgo, &list, &cap, &first)) return NULL;
    ddl_pg *pg;
    pyddl_tensor_list ps;
    if (!pyddl_conv_pg(pgo, &pg) ||
        pyddl_tensor_list_get(&ps, list, -1, PYDDL_LIST_TENSORS, "reducer_new", "params") < 0)
        return NULL;
    ddl_reducer *r = NULL;
    ddl_status st = ddl_reducer_new(&r, pg, ps.n, ps.t, cap, first);
    pyddl_tensor_list_release(&ps, 1);
    if (st) return pyddl_raise(st);
    PyObject *capo = pyddl_capsule_new(r, PYDDL_REDUCER_CAPSULE, reducer_destructor, free_reducer);
    if (capo) PyCapsule_SetContext(capo, Py_NewRef(pgo));
    return capo;
}

/* reducer_prepare(r, unused: bytes of n flags, or None) */
PYDDL_DOC(reducer_prepare, "(r, unused, /)",
          "Arm the reducer for one backward (unused: bytes of per-parameter flags, or None).");
static PyObject *py_reducer_prepare(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_reducer *r;
    PyObject *uo;
    if (!PyArg_ParseTuple(args, "O&O", pyddl_conv_reducer, &r, &uo)) return NULL;
    const uint8_t *unused = NULL;
    if (uo != Py_None) {
        if (!PyBytes_Check(uo)) {
            PyErr_SetString(PyExc_TypeError, "unused must be bytes");
            return NULL;
        }
        unused = (const uint8_t *)PyBytes_AS_STRING(uo);
    }
    ddl_status st;
    PYDDL_NOGIL(st, ddl_reducer_prepare(r, unused));
    return pyddl_return_none(st);
}

PYDDL_DOC(reducer_set_sync, "(r, flag, /)", "Whether backward all-reduces (False under no_sync).");
static PyObject *py_reducer_set_sync(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_reducer *r;
    int sync;
    if (!PyArg_ParseTuple(args, "O&p", pyddl_conv_reducer, &r, &sync)) return NULL;
    ddl_reducer_set_sync(r, sync);
    Py_RETURN_NONE;
}

PYDDL_DOC(reducer_set_overlap, "(r, flag, /)",
          "Whether buckets before the last are reduced on the comm thread (else in backward's).");
static PyObject *py_reducer_set_overlap(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_reducer *r;
    int overlap;
    if (!PyArg_ParseTuple(args, "O&p", pyddl_conv_reducer, &r, &overlap)) return NULL;
    ddl_reducer_set_overlap(r, overlap);
    Py_RETURN_NONE;
}

/* reducer_sync_buffers(r, buffers: list of Tensors) */
PYDDL_DOC(reducer_sync_buffers, "(r, buffers, /)",
          "Broadcast the buffers from rank 0 of the group as one packed message.");
static PyObject *py_reducer_sync_buffers(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_reducer *r;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O&O", pyddl_conv_reducer, &r, &list)) return NULL;
    pyddl_tensor_list bs;
    if (pyddl_tensor_list_get(&bs, list, -1, PYDDL_LIST_TENSORS, "reducer_sync_buffers",
                              "buffers") < 0)
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_reducer_sync_buffers(r, bs.n, bs.t));
    pyddl_tensor_list_release(&bs, 1);
    return pyddl_return_none(st);
}

/* A list of the ints a C query writes: query(NULL, 0) gives the count, query(buf, n) fills. */
static PyObject *int_list(const ddl_reducer *r, int b,
                          int (*query)(const ddl_reducer *, int, int *, int)) {
    int n = query(r, b, NULL, 0);
    int *idx = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof *idx);
    if (!idx) return PyErr_NoMemory();
    query(r, b, idx, n);
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) {
        PyObject *x = PyLong_FromLong(idx[i]);
        if (!x)
            Py_CLEAR(l);
        else
            PyList_SET_ITEM(l, i, x);
    }
    PyMem_Free(idx);
    return l;
}

static int pending_query(const ddl_reducer *r, int b, int *idx, int n) {
    (void)b;
    return ddl_reducer_pending(r, idx, n);
}

PYDDL_DOC(reducer_pending, "(r, /)", "Parameter indices still waiting for a gradient.");
static PyObject *py_reducer_pending(PyObject *Py_UNUSED(self), PyObject *ro) {
    ddl_reducer *r;
    return pyddl_conv_reducer(ro, &r) ? int_list(r, 0, pending_query) : NULL;
}

/* One blocking reducer call with the GIL released. */
static PyObject *reducer_call(PyObject *ro, ddl_status (*fn)(ddl_reducer *)) {
    ddl_reducer *r;
    if (!pyddl_conv_reducer(ro, &r)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, fn(r));
    return pyddl_return_none(st);
}

PYDDL_DOC(reducer_rebuild, "(r, /)", "Re-bucket by the observed gradient order.");
static PyObject *py_reducer_rebuild(PyObject *Py_UNUSED(self), PyObject *ro) {
    return reducer_call(ro, ddl_reducer_rebuild);
}

PYDDL_DOC(reducer_shadow, "(r, /)", "All-reduce zeros in every bucket (Join).");
static PyObject *py_reducer_shadow(PyObject *Py_UNUSED(self), PyObject *ro) {
    return reducer_call(ro, ddl_reducer_shadow);
}

/* reducer_buckets(r) -> [(param indices, start_us, end_us), ...] */
PYDDL_DOC(reducer_buckets, "(r, /)", "[(param indices, start_us, end_us)] per bucket.");
static PyObject *py_reducer_buckets(PyObject *Py_UNUSED(self), PyObject *ro) {
    ddl_reducer *r;
    if (!pyddl_conv_reducer(ro, &r)) return NULL;
    int nb = ddl_reducer_num_buckets(r);
    PyObject *out = PyList_New(nb);
    for (int b = 0; out && b < nb; b++) {
        int64_t s, e;
        ddl_reducer_bucket_times(r, b, &s, &e);
        PyObject *item = Py_BuildValue("(NLL)", int_list(r, b, ddl_reducer_bucket_params),
                                       (long long)s, (long long)e);
        if (!item)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, b, item);
    }
    return out;
}

/* allreduce_sum_ag(pg, t): a differentiable SUM all-reduce */
PYDDL_DOC(allreduce_sum_ag, "(pg, t, /)", "Differentiable SUM all-reduce.");
static PyObject *py_allreduce_sum_ag(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_pg *pg;
    ddl_tensor *t = NULL, *r = NULL;
    if (!PyArg_ParseTuple(args, "O&O&", pyddl_conv_pg, &pg, pyddl_conv_tensor, &t)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_ag_allreduce_sum(&r, pg, t));
    return pyddl_finish(st, r, &t, 1);
}

PyMethodDef pyddl_reducer_functions[] = {
    PYDDL_FN(reducer_new, METH_VARARGS),
    PYDDL_FN(reducer_prepare, METH_VARARGS),
    PYDDL_FN(reducer_set_sync, METH_VARARGS),
    PYDDL_FN(reducer_set_overlap, METH_VARARGS),
    PYDDL_FN(reducer_sync_buffers, METH_VARARGS),
    PYDDL_FN(reducer_pending, METH_O),
    PYDDL_FN(reducer_rebuild, METH_O),
    PYDDL_FN(reducer_shadow, METH_O),
    PYDDL_FN(reducer_buckets, METH_O),
    PYDDL_FN(allreduce_sum_ag, METH_VARARGS),
    PYDDL_FN_END,
};
