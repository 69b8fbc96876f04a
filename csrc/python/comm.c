/* comm.c (binding): process groups, collectives and work handles (capsules wrapped by
 * ddl/distributed/). Every blocking call runs with the GIL released. */
#include "pyddl.h"

#include <string.h>

/* Stop the group and drop this handle's reference, with the GIL released (joins threads). */
static void stop_pg(void *pg) {
    if (!pg) return;
    Py_BEGIN_ALLOW_THREADS
    ddl_pg_shutdown(pg);
    ddl_pg_release(pg);
    Py_END_ALLOW_THREADS
}

static void free_work(void *w) {
    Py_BEGIN_ALLOW_THREADS
    ddl_work_free(w);
    Py_END_ALLOW_THREADS
}

static void pg_destructor(PyObject *cap) { stop_pg(pyddl_capsule_pointer(cap, PYDDL_PG_CAPSULE)); }

static void work_destructor(PyObject *cap) {
    free_work(pyddl_capsule_pointer(cap, PYDDL_WORK_CAPSULE));
}

/* pg_new(store, prefix, rank, size, hostname or None, iface or None, timeout_ms,
 *        transport="auto") */
PYDDL_DOC(pg_new, "(store, prefix, rank, size, hostname, iface, timeout_ms, transport='auto', /)",
          "Join a process group of size ranks through store -> a group handle (transport "
          "'auto', 'gloo' or 'shm').");
static PyObject *py_pg_new(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *store;
    const char *prefix, *host = NULL, *iface = NULL, *how = "auto";
    int rank, size;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "O&siizzL|s", pyddl_conv_store, &store, &prefix, &rank, &size,
                          &host, &iface, &timeout_ms, &how))
        return NULL;
    ddl_transport transport = DDL_TRANSPORT_AUTO;
    if (!strcmp(how, "gloo"))
        transport = DDL_TRANSPORT_GLOO;
    else if (!strcmp(how, "shm"))
        transport = DDL_TRANSPORT_SHM;
    else if (strcmp(how, "auto"))
        return pyddl_raise(ddl_fail(DDL_E_VALUE, "unknown transport '%s': auto, gloo or shm", how));
    ddl_pg *pg = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_pg_new_transport(&pg, store, prefix, rank, size, host, iface, timeout_ms,
                                         transport));
    if (st) return pyddl_raise(st);
    return pyddl_capsule_new(pg, PYDDL_PG_CAPSULE, pg_destructor, stop_pg);
}

/* pg_free(pg): stop the group now (the capsule becomes inert). */
PYDDL_DOC(pg_free, "(pg, /)", "Stop a process group now.");
static PyObject *py_pg_free(PyObject *Py_UNUSED(self), PyObject *cap) {
    ddl_pg *pg;
    if (!pyddl_conv_pg(cap, &pg) || PyCapsule_SetDestructor(cap, NULL) < 0) return NULL;
    stop_pg(pg);
    Py_RETURN_NONE;
}

PYDDL_DOC(pg_transport, "(pg, /)", "(transport name, number of hosts) of a group.");
static PyObject *py_pg_transport(PyObject *Py_UNUSED(self), PyObject *cap) {
    ddl_pg *pg;
    if (!pyddl_conv_pg(cap, &pg)) return NULL;
    return Py_BuildValue("(si)", ddl_pg_transport(pg), ddl_pg_num_hosts(pg));
}

PYDDL_DOC(pg_check, "(pg, /)", "Raise the error that broke the group, if any.");
static PyObject *py_pg_check(PyObject *Py_UNUSED(self), PyObject *cap) {
    ddl_pg *pg;
    return pyddl_conv_pg(cap, &pg) ? pyddl_return_none(ddl_pg_check(pg)) : NULL;
}

/* Finish a collective call: sync -> None, async -> a work capsule. */
static PyObject *done(ddl_status st, ddl_work *w, int async) {
    if (st || !async) return pyddl_return_none(st);
    return pyddl_capsule_new(w, PYDDL_WORK_CAPSULE, work_destructor, free_work);
}

/* collective(kind, pg, a, b, root, op, timeout_ms, async)
 *   kind: "allreduce" (a), "broadcast" (a, root), "allgather" (out a, in b),
 *         "reduce_scatter" (out a, in b, op), "reduce" (a, root, op), "gather" (out a, in b,
 *         root), "scatter" (out a, in b, root), "alltoall" (out a, in b), "barrier" */
PYDDL_DOC(collective, "(kind, pg, a, b, root, op, timeout_ms, async_op, /)",
          "Run one collective (kind 'allreduce', 'broadcast', ...; op a ddl_comm_op, COMM_SUM...) "
          "-> None, or a work handle when async_op.");
static PyObject *py_collective(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *kind;
    ddl_pg *pg;
    ddl_tensor *t[2] = {NULL, NULL}, *a, *b;
    int root, op, async;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "sO&O&O&iiLp", &kind, pyddl_conv_pg, &pg, pyddl_conv_tensor_or_none,
                          &t[0], pyddl_conv_tensor_or_none, &t[1], &root, &op, &timeout_ms, &async))
        return NULL;
    a = t[0], b = t[1];
    ddl_work *w = NULL, **wp = async ? &w : NULL;
    ddl_status st = DDL_OK;
    Py_BEGIN_ALLOW_THREADS
    if (!strcmp(kind, "allreduce"))
        st = ddl_pg_allreduce(pg, a, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "broadcast"))
        st = ddl_pg_broadcast(pg, a, root, timeout_ms, wp);
    else if (!strcmp(kind, "allgather"))
        st = ddl_pg_allgather(pg, a, b, timeout_ms, wp);
    else if (!strcmp(kind, "reduce_scatter"))
        st = ddl_pg_reduce_scatter(pg, a, b, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "reduce"))
        st = ddl_pg_reduce(pg, a, root, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "gather"))
        st = ddl_pg_gather(pg, a, b, root, timeout_ms, wp);
    else if (!strcmp(kind, "scatter"))
        st = ddl_pg_scatter(pg, a, b, root, timeout_ms, wp);
    else if (!strcmp(kind, "alltoall"))
        st = ddl_pg_alltoall(pg, a, b, timeout_ms, wp);
    else if (!strcmp(kind, "barrier"))
        st = ddl_pg_barrier(pg, timeout_ms, wp);
    else
        st = ddl_fail(DDL_E_VALUE, "unknown collective %s", kind);
    Py_END_ALLOW_THREADS
    pyddl_release_tensors(t, 2);
    return done(st, w, async);
}

PYDDL_DOC(work_wait, "(work, timeout_ms=-1, /)", "Wait for an async collective; raises its error.");
static PyObject *py_work_wait(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_work *w;
    long long timeout_ms = -1;
    if (!PyArg_ParseTuple(args, "O&|L", pyddl_conv_work, &w, &timeout_ms)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_work_wait(w, timeout_ms));
    if (st) return pyddl_raise(st);
    Py_RETURN_TRUE;
}

PYDDL_DOC(work_done, "(work, /)", "Whether the work finished.");
static PyObject *py_work_done(PyObject *Py_UNUSED(self), PyObject *wo) {
    ddl_work *w;
    return pyddl_conv_work(wo, &w) ? PyBool_FromLong(ddl_work_is_completed(w)) : NULL;
}

PYDDL_DOC(work_times, "(work, /)", "(start_us, end_us) on the comm thread.");
static PyObject *py_work_times(PyObject *Py_UNUSED(self), PyObject *wo) {
    ddl_work *w;
    if (!pyddl_conv_work(wo, &w)) return NULL;
    int64_t s, e;
    ddl_work_times(w, &s, &e);
    return Py_BuildValue("(LL)", (long long)s, (long long)e);
}

PYDDL_DOC(now_us, "()", "The clock work_times uses.");
static PyObject *py_now_us(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyLong_FromLongLong(ddl_now_us());
}

PyMethodDef pyddl_comm_functions[] = {
    PYDDL_FN(pg_new, METH_VARARGS),     PYDDL_FN(pg_free, METH_O),
    PYDDL_FN(pg_check, METH_O),         PYDDL_FN(pg_transport, METH_O),
    PYDDL_FN(collective, METH_VARARGS), PYDDL_FN(work_wait, METH_VARARGS),
    PYDDL_FN(work_done, METH_O),        PYDDL_FN(work_times, METH_O),
    PYDDL_FN(now_us, METH_NOARGS),      PYDDL_FN_END,
};
