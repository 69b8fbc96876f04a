/* store.c (binding): the rendezvous stores of store.h as capsules (the TCP server; TCP, file and
 * prefix store handles) and their operations, each one C call with the GIL released. The
 * Python classes live in ddl/distributed/store.py. */
#include "ddl/comm.h"
#include "ddl/store.h"
#include "pyddl.h"

#include <stdlib.h>

#define STORE_CAPSULE "ddl._C.store"
#define SERVER_CAPSULE "ddl._C.tcpstore_server"

/* ---- capsules ------------------------------------------------------------------------------- */

static void store_capsule_free(PyObject *cap) {
    ddl_store *s = PyCapsule_GetPointer(cap, STORE_CAPSULE);
    if (s) ddl_store_release(s);
    else PyErr_Clear();
}

static PyObject *wrap_store(ddl_store *s) {
    PyObject *cap = PyCapsule_New(s, STORE_CAPSULE, store_capsule_free);
    if (!cap) ddl_store_release(s);
    return cap;
}

/* The store behind a capsule made by this module; NULL with TypeError otherwise. Calls keep a
 * reference to the capsule (their argument), so the store outlives the call. */
static ddl_store *get_store(PyObject *cap) {
    if (!PyCapsule_IsValid(cap, STORE_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "expected a ddl store handle, got %s", Py_TYPE(cap)->tp_name);
        return NULL;
    }
    return PyCapsule_GetPointer(cap, STORE_CAPSULE);
}

/* The server capsule holds a box so that stop() can run once and the destructor after it. */
typedef struct {
    ddl_tcp_server *srv; /* NULL once stopped */
} server_box;

static void server_stop_box(server_box *b) {
    ddl_tcp_server *srv = b->srv;
    b->srv = NULL; /* under the GIL: a second stop sees NULL */
    if (!srv) return;
    Py_BEGIN_ALLOW_THREADS ddl_tcp_server_free(srv);
    Py_END_ALLOW_THREADS
}

static void server_capsule_free(PyObject *cap) {
    server_box *b = PyCapsule_GetPointer(cap, SERVER_CAPSULE);
    if (!b) {
        PyErr_Clear();
        return;
    }
    server_stop_box(b);
    free(b);
}

/* ---- server ----------------------------------------------------------------------------------- */

static PyObject *py_server_start(PyObject *self, PyObject *args) {
    (void)self;
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si:tcpstore_server_start", &host, &port)) return NULL;
    server_box *b = malloc(sizeof *b);
    if (!b) return PyErr_NoMemory();
    b->srv = NULL;
    int bound = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_tcp_server_new(&b->srv, host, port, &bound);
    Py_END_ALLOW_THREADS
    if (st) {
        free(b);
        return pyddl_raise(st);
    }
    PyObject *cap = PyCapsule_New(b, SERVER_CAPSULE, server_capsule_free);
    if (!cap) {
        server_stop_box(b);
        free(b);
        return NULL;
    }
    return Py_BuildValue("(Ni)", cap, bound);
}

static PyObject *py_server_stop(PyObject *self, PyObject *cap) {
    (void)self;
    server_box *b = PyCapsule_GetPointer(cap, SERVER_CAPSULE);
    if (!b) return NULL;
    server_stop_box(b);
    Py_RETURN_NONE;
}

/* ---- constructors ---------------------------------------------------------------------------- */

static PyObject *py_connect_tcp(PyObject *self, PyObject *args) {
    (void)self;
    const char *host;
    int port;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "siL:store_connect_tcp", &host, &port, &timeout_ms)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_new_tcp(&s, host, port, timeout_ms);
    Py_END_ALLOW_THREADS
    return st ? pyddl_raise(st) : wrap_store(s);
}

static PyObject *py_open_file(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *bytes;
    if (!PyUnicode_FSConverter(arg, &bytes)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    const char *path = PyBytes_AS_STRING(bytes);
    Py_BEGIN_ALLOW_THREADS st = ddl_store_new_file(&s, path);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    return st ? pyddl_raise(st) : wrap_store(s);
}

/* store_open_redis(host, port) -> store handle (comm_gloo.cc: Gloo's RedisStore) */
static PyObject *py_open_redis(PyObject *self, PyObject *args) {
    (void)self;
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_new_redis(&s, host, port);
    Py_END_ALLOW_THREADS
    return st ? pyddl_raise(st) : wrap_store(s);
}

static PyObject *py_file_remove(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *bytes;
    if (!PyUnicode_FSConverter(arg, &bytes)) return NULL;
    ddl_status st;
    const char *path = PyBytes_AS_STRING(bytes);
    Py_BEGIN_ALLOW_THREADS st = ddl_store_file_remove(path);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_prefix(PyObject *self, PyObject *args) {
    (void)self;
    const char *prefix;
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "sO:store_prefix", &prefix, &cap)) return NULL;
    ddl_store *base = get_store(cap), *s = NULL;
    if (!base) return NULL;
    ddl_status st = ddl_store_new_prefix(&s, prefix, base); /* no I/O */
    return st ? pyddl_raise(st) : wrap_store(s);
}

/* ---- operations -------------------------------------------------------------------------------- */

static PyObject *py_set(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    const char *key;
    Py_buffer v;
    if (!PyArg_ParseTuple(args, "Osy*:store_set", &cap, &key, &v)) return NULL;
    ddl_store *s = get_store(cap);
    ddl_status st = DDL_OK;
    if (s) {
        Py_BEGIN_ALLOW_THREADS st = ddl_store_set(s, key, v.buf, (size_t)v.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&v);
    if (!s) return NULL;
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

/* bytes from a malloc'd buffer, which is freed */
static PyObject *take_bytes(void *p, size_t n) {
    PyObject *r = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    free(p);
    return r;
}

static PyObject *py_get(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    const char *key;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "OsL:store_get", &cap, &key, &timeout_ms)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    void *val = NULL;
    size_t len = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_get(s, key, &val, &len, timeout_ms);
    Py_END_ALLOW_THREADS
    return st ? pyddl_raise(st) : take_bytes(val, len);
}

static PyObject *py_add(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    const char *key;
    long long delta;
    if (!PyArg_ParseTuple(args, "OsL:store_add", &cap, &key, &delta)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    int64_t r = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_add(s, key, delta, &r);
    Py_END_ALLOW_THREADS
    return st ? pyddl_raise(st) : PyLong_FromLongLong(r);
}

static PyObject *py_compare_set(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    const char *key;
    Py_buffer e, d;
    if (!PyArg_ParseTuple(args, "Osy*y*:store_compare_set", &cap, &key, &e, &d)) return NULL;
    ddl_store *s = get_store(cap);
    void *cur = NULL;
    size_t cl = 0;
    ddl_status st = DDL_OK;
    if (s) {
        Py_BEGIN_ALLOW_THREADS st = ddl_store_compare_set(s, key, e.buf, (size_t)e.len, d.buf,
                                                          (size_t)d.len, &cur, &cl);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&e);
    PyBuffer_Release(&d);
    if (!s) return NULL;
    return st ? pyddl_raise(st) : take_bytes(cur, cl);
}

/* A list of str keys as C strings borrowed from *fast (which the caller releases). */
static const char **parse_keys(PyObject *seq, PyObject **fast, int *n, const char *who) {
    *fast = PySequence_Fast(seq, "expected a list of str keys");
    if (!*fast) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(*fast);
    if (len < 1 || len > 1000000) {
        PyErr_Format(PyExc_ValueError, "%s: expected 1 to 1000000 keys, got %zd", who, len);
        return NULL;
    }
    const char **keys = malloc((size_t)len * sizeof *keys);
    if (!keys) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(*fast, i);
        Py_ssize_t kl;
        const char *k = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &kl) : NULL;
        if (!PyUnicode_Check(o))
            PyErr_Format(PyExc_TypeError, "%s: keys must be str, got %s", who, Py_TYPE(o)->tp_name);
        else if (k && (size_t)kl != strlen(k))
            PyErr_Format(PyExc_ValueError, "%s: key %zd contains a NUL character", who, i);
        if (PyErr_Occurred()) {
            free(keys);
            return NULL;
        }
        keys[i] = k;
    }
    *n = (int)len;
    return keys;
}

static PyObject *py_wait(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap, *seq, *fast = NULL;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "OOL:store_wait", &cap, &seq, &timeout_ms)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    int n = 0;
    const char **keys = parse_keys(seq, &fast, &n, "wait");
    if (!keys) {
        Py_XDECREF(fast);
        return NULL;
    }
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_wait(s, keys, n, timeout_ms);
    Py_END_ALLOW_THREADS
    free(keys);
    Py_DECREF(fast);
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

static PyObject *py_check(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap, *seq, *fast = NULL;
    if (!PyArg_ParseTuple(args, "OO:store_check", &cap, &seq)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    int n = 0, all = 0;
    const char **keys = parse_keys(seq, &fast, &n, "check");
    if (!keys) {
        Py_XDECREF(fast);
        return NULL;
    }
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_check(s, keys, n, &all);
    Py_END_ALLOW_THREADS
    free(keys);
    Py_DECREF(fast);
    if (st) return pyddl_raise(st);
    return PyBool_FromLong(all);
}

static PyObject *py_delete(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    const char *key;
    if (!PyArg_ParseTuple(args, "Os:store_delete", &cap, &key)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    int deleted = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_delete(s, key, &deleted);
    Py_END_ALLOW_THREADS
    if (st) return pyddl_raise(st);
    return PyBool_FromLong(deleted);
}

static PyObject *py_num_keys(PyObject *self, PyObject *cap) {
    (void)self;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    int64_t n = 0;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS st = ddl_store_num_keys(s, &n);
    Py_END_ALLOW_THREADS
    return st ? pyddl_raise(st) : PyLong_FromLongLong(n);
}

static PyObject *py_set_timeout(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *cap;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "OL:store_set_timeout", &cap, &timeout_ms)) return NULL;
    ddl_store *s = get_store(cap);
    if (!s) return NULL;
    ddl_status st = ddl_store_set_timeout(s, timeout_ms); /* no I/O */
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef pyddl_store_functions[] = {
    {"tcpstore_server_start", py_server_start, METH_VARARGS,
     "tcpstore_server_start(host, port) -> (server handle, bound port)"},
    {"tcpstore_server_stop", py_server_stop, METH_O,
     "Stop a TCP store server (joins its thread; closes its connections). Idempotent."},
    {"store_connect_tcp", py_connect_tcp, METH_VARARGS,
     "store_connect_tcp(host, port, timeout_ms) -> store handle (retries until timeout)"},
    {"store_open_file", py_open_file, METH_O, "store_open_file(dir) -> store handle"},
    {"store_open_redis", py_open_redis, METH_VARARGS, "store_open_redis(host, port) -> handle"},
    {"store_file_remove", py_file_remove, METH_O,
     "Remove a file store's files (and its directory when left empty)."},
    {"store_prefix", py_prefix, METH_VARARGS, "store_prefix(prefix, base) -> store handle"},
    {"store_set", py_set, METH_VARARGS, "store_set(handle, key, value: bytes)"},
    {"store_get", py_get, METH_VARARGS, "store_get(handle, key, timeout_ms) -> bytes"},
    {"store_add", py_add, METH_VARARGS, "store_add(handle, key, delta) -> int"},
    {"store_compare_set", py_compare_set, METH_VARARGS,
     "store_compare_set(handle, key, expected, desired) -> bytes"},
    {"store_wait", py_wait, METH_VARARGS, "store_wait(handle, keys, timeout_ms)"},
    {"store_check", py_check, METH_VARARGS, "store_check(handle, keys) -> bool"},
    {"store_delete", py_delete, METH_VARARGS, "store_delete(handle, key) -> bool"},
    {"store_num_keys", py_num_keys, METH_O, "store_num_keys(handle) -> int"},
    {"store_set_timeout", py_set_timeout, METH_VARARGS,
     "store_set_timeout(handle, timeout_ms): deadline for calls without their own"},
    {NULL, NULL, 0, NULL},
};
