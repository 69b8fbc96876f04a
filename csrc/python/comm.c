/* comm.c (binding): process groups, collectives and work handles (capsules wrapped by
 * ddl/distributed/). Every blocking call runs with the GIL released. */
#include "ddl/comm.h"
#include "pyddl.h"

#define PG_CAPSULE "ddl.ProcessGroup"
#define WORK_CAPSULE "ddl.Work"
#define STORE_CAPSULE "ddl._C.store"

static void pg_destructor(PyObject *cap) {
    ddl_pg *pg = PyCapsule_GetPointer(cap, PG_CAPSULE);
    if (!pg) return;
    Py_BEGIN_ALLOW_THREADS
    ddl_pg_shutdown(pg);
    ddl_pg_release(pg);
    Py_END_ALLOW_THREADS
}

static void work_destructor(PyObject *cap) {
    ddl_work *w = PyCapsule_GetPointer(cap, WORK_CAPSULE);
    if (!w) return;
    Py_BEGIN_ALLOW_THREADS ddl_work_free(w);
    Py_END_ALLOW_THREADS
}

static ddl_pg *get_pg(PyObject *o) { return PyCapsule_GetPointer(o, PG_CAPSULE); }

/* pg_new(store, prefix, rank, size, hostname or None, iface or None, timeout_ms) */
static PyObject *py_pg_new(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *store_o;
    const char *prefix, *host = NULL, *iface = NULL;
    int rank, size;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "OsiizzL", &store_o, &prefix, &rank, &size, &host, &iface,
                          &timeout_ms))
        return NULL;
    ddl_store *store = PyCapsule_GetPointer(store_o, STORE_CAPSULE);
    if (!store) return NULL;
    ddl_pg *pg = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_pg_new(&pg, store, prefix, rank, size, host, iface, timeout_ms);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    PyObject *cap = PyCapsule_New(pg, PG_CAPSULE, pg_destructor);
    if (!cap) {
        ddl_pg_shutdown(pg);
        ddl_pg_release(pg);
    }
    return cap;
}

/* pg_free(pg): stop the group now (the capsule becomes inert). */
static PyObject *py_pg_free(PyObject *self, PyObject *cap) {
    (void)self;
    ddl_pg *pg = get_pg(cap);
    if (!pg) return NULL;
    if (PyCapsule_SetDestructor(cap, NULL) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ddl_pg_shutdown(pg);
    ddl_pg_release(pg);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_pg_check(PyObject *self, PyObject *cap) {
    (void)self;
    ddl_pg *pg = get_pg(cap);
    if (!pg) return NULL;
    ddl_status st = ddl_pg_check(pg);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

/* Finish a collective call: sync -> None, async -> a work capsule. */
static PyObject *done(ddl_status st, ddl_work *w, int async) {
    if (st) return pyddl_raise(st);
    if (!async) Py_RETURN_NONE;
    PyObject *cap = PyCapsule_New(w, WORK_CAPSULE, work_destructor);
    if (!cap) ddl_work_free(w);
    return cap;
}

static int tensor_or_none(PyObject *o, ddl_tensor **t, const char *who) {
    *t = NULL;
    if (o == Py_None) return 0;
    return pyddl_as_tensor(o, t, who);
}

/* collective(kind, pg, a, b, root, op, timeout_ms, async)
 *   kind: "allreduce" (a), "broadcast" (a, root), "allgather" (out a, in b),
 *         "reduce_scatter" (out a, in b, op), "reduce" (a, root, op), "gather" (out a, in b,
 *         root), "scatter" (out a, in b, root), "alltoall" (out a, in b), "barrier" */
static PyObject *py_collective(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *pgo, *ao, *bo;
    int root, op, async;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "sOOOiiLp", &kind, &pgo, &ao, &bo, &root, &op, &timeout_ms, &async))
        return NULL;
    ddl_pg *pg = get_pg(pgo);
    if (!pg) return NULL;
    ddl_tensor *a = NULL, *b = NULL;
    if (tensor_or_none(ao, &a, kind) < 0) return NULL;
    if (tensor_or_none(bo, &b, kind) < 0) {
        ddl_tensor_release(a);
        return NULL;
    }
    ddl_work *w = NULL, **wp = async ? &w : NULL;
    ddl_status st = DDL_OK;
    Py_BEGIN_ALLOW_THREADS
    if (!strcmp(kind, "allreduce")) st = ddl_pg_allreduce(pg, a, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "broadcast")) st = ddl_pg_broadcast(pg, a, root, timeout_ms, wp);
    else if (!strcmp(kind, "allgather")) st = ddl_pg_allgather(pg, a, b, timeout_ms, wp);
    else if (!strcmp(kind, "reduce_scatter"))
        st = ddl_pg_reduce_scatter(pg, a, b, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "reduce")) st = ddl_pg_reduce(pg, a, root, (ddl_comm_op)op, timeout_ms, wp);
    else if (!strcmp(kind, "gather")) st = ddl_pg_gather(pg, a, b, root, timeout_ms, wp);
    else if (!strcmp(kind, "scatter")) st = ddl_pg_scatter(pg, a, b, root, timeout_ms, wp);
    else if (!strcmp(kind, "alltoall")) st = ddl_pg_alltoall(pg, a, b, timeout_ms, wp);
    else if (!strcmp(kind, "barrier")) st = ddl_pg_barrier(pg, timeout_ms, wp);
    else st = ddl_fail(DDL_E_VALUE, "unknown collective %s", kind);
    Py_END_ALLOW_THREADS
    ddl_tensor_release(a);
    ddl_tensor_release(b);
    return done(st, w, async);
}

static ddl_work *get_work(PyObject *o) { return PyCapsule_GetPointer(o, WORK_CAPSULE); }

static PyObject *py_work_wait(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *wo;
    long long timeout_ms = -1;
    if (!PyArg_ParseTuple(args, "O|L", &wo, &timeout_ms)) return NULL;
    ddl_work *w = get_work(wo);
    if (!w) return NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_work_wait(w, timeout_ms);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    Py_RETURN_TRUE;
}

static PyObject *py_work_done(PyObject *self, PyObject *wo) {
    (void)self;
    ddl_work *w = get_work(wo);
    if (!w) return NULL;
    return PyBool_FromLong(ddl_work_is_completed(w));
}

static PyObject *py_work_times(PyObject *self, PyObject *wo) {
    (void)self;
    ddl_work *w = get_work(wo);
    if (!w) return NULL;
    int64_t s, e;
    ddl_work_times(w, &s, &e);
    return Py_BuildValue("(LL)", (long long)s, (long long)e);
}

static PyObject *py_now_us(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyLong_FromLongLong(ddl_now_us());
}

PyMethodDef pyddl_comm_functions[] = {
    {"pg_new", py_pg_new, METH_VARARGS,
     "pg_new(store, prefix, rank, size, hostname, iface, timeout_ms) -> process group"},
    {"pg_free", py_pg_free, METH_O, "Stop a process group now."},
    {"pg_check", py_pg_check, METH_O, "Raise the error that broke the group, if any."},
    {"collective", py_collective, METH_VARARGS,
     "collective(kind, pg, a, b, root, op, timeout_ms, async)"},
    {"work_wait", py_work_wait, METH_VARARGS, "work_wait(work[, timeout_ms])"},
    {"work_done", py_work_done, METH_O, "Whether the work finished."},
    {"work_times", py_work_times, METH_O, "(start_us, end_us) on the comm thread."},
    {"now_us", py_now_us, METH_NOARGS, "The clock work_times uses."},
    {NULL, NULL, 0, NULL},
};
