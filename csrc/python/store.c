/* store.c (binding): the rendezvous stores of store.h as capsules (the TCP server; TCP, file and
 * prefix store handles) and their operations, each one C call with the GIL released. The
 * Python classes live in ddl/distributed/store.py. */
#include "pyddl.h"

#include <stdlib.h>
#include <string.h>

/* ---- capsules ------------------------------------------------------------------------------- */

static void release_store(void *s) { ddl_store_release(s); }

static void store_capsule_free(PyObject *cap) {
    ddl_store_release(pyddl_capsule_pointer(cap, PYDDL_STORE_CAPSULE));
}

/* st ? the exception : a capsule owning s. Calls take the capsule as their argument (through
 * pyddl_conv_store), which keeps the store alive for the call. */
static PyObject *return_store(ddl_status st, ddl_store *s) {
    if (st) return pyddl_raise(st);
    return pyddl_capsule_new(s, PYDDL_STORE_CAPSULE, store_capsule_free, release_store);
}

/* The server capsule holds a box so that stop() can run once and the destructor after it. */
typedef struct {
    ddl_tcp_server *srv; /* NULL once stopped */
} server_box;

static void server_stop_box(server_box *b) {
    ddl_tcp_server *srv = b->srv;
    b->srv = NULL; /* under the GIL: a second stop sees NULL */
    if (!srv) return;
    Py_BEGIN_ALLOW_THREADS
    ddl_tcp_server_free(srv);
    Py_END_ALLOW_THREADS
}

static void free_box(void *b) {
    if (b) server_stop_box(b);
    free(b);
}

static void server_capsule_free(PyObject *cap) {
    free_box(pyddl_capsule_pointer(cap, PYDDL_SERVER_CAPSULE));
}

/* ---- server ---------------------------------------------------------------------------------- */

PYDDL_DOC(tcpstore_server_start, "(host, port, /)",
          "Start a TCP store server -> (server handle, bound port).");
static PyObject *py_tcpstore_server_start(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si:tcpstore_server_start", &host, &port)) return NULL;
    server_box *b = malloc(sizeof *b);
    if (!b) return PyErr_NoMemory();
    b->srv = NULL;
    int bound = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_tcp_server_new(&b->srv, host, port, &bound));
    if (st) {
        free(b);
        return pyddl_raise(st);
    }
    PyObject *cap = pyddl_capsule_new(b, PYDDL_SERVER_CAPSULE, server_capsule_free, free_box);
    return cap ? Py_BuildValue("(Ni)", cap, bound) : NULL;
}

PYDDL_DOC(tcpstore_server_stop, "(server, /)",
          "Stop a TCP store server (joins its thread; closes its connections). Idempotent.");
static PyObject *py_tcpstore_server_stop(PyObject *Py_UNUSED(self), PyObject *cap) {
    server_box *b = PyCapsule_GetPointer(cap, PYDDL_SERVER_CAPSULE);
    if (!b) return NULL;
    server_stop_box(b);
    Py_RETURN_NONE;
}

/* ---- constructors ---------------------------------------------------------------------------- */

PYDDL_DOC(store_connect_tcp, "(host, port, timeout_ms, /)",
          "-> a store handle (retries until the timeout).");
static PyObject *py_store_connect_tcp(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *host;
    int port;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "siL:store_connect_tcp", &host, &port, &timeout_ms)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_new_tcp(&s, host, port, timeout_ms));
    return return_store(st, s);
}

PYDDL_DOC(store_open_file, "(path, /)", "A store in a directory of files -> a store handle.");
static PyObject *py_store_open_file(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bytes;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &bytes)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_new_file(&s, PyBytes_AS_STRING(bytes)));
    Py_DECREF(bytes);
    return return_store(st, s);
}

/* store_open_redis(host, port) -> store handle (Gloo's RedisStore) */
PYDDL_DOC(store_open_redis, "(host, port, /)", "A store on a Redis server -> a store handle.");
static PyObject *py_store_open_redis(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
    ddl_store *s = NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_new_redis(&s, host, port));
    return return_store(st, s);
}

PYDDL_DOC(store_file_remove, "(path, /)",
          "Remove a file store's files (and its directory when left empty).");
static PyObject *py_store_file_remove(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bytes;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &bytes)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_file_remove(PyBytes_AS_STRING(bytes)));
    Py_DECREF(bytes);
    return pyddl_return_none(st);
}

PYDDL_DOC(store_prefix, "(prefix, base, /)",
          "A view of base with every key prefixed -> a store handle.");
static PyObject *py_store_prefix(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *prefix;
    ddl_store *base, *s = NULL;
    if (!PyArg_ParseTuple(args, "sO&:store_prefix", &prefix, pyddl_conv_store, &base)) return NULL;
    ddl_status st = ddl_store_new_prefix(&s, prefix, base);
    return return_store(st, s); /* no I/O */
}

/* ---- operations ------------------------------------------------------------------------------ */

PYDDL_DOC(store_set, "(handle, key, value, /)", "Set key to value (bytes).");
static PyObject *py_store_set(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    const char *key;
    Py_buffer v;
    if (!PyArg_ParseTuple(args, "O&sy*:store_set", pyddl_conv_store, &s, &key, &v)) return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_set(s, key, v.buf, (size_t)v.len));
    PyBuffer_Release(&v);
    return pyddl_return_none(st);
}

/* bytes from a malloc'd buffer, which is freed */
static PyObject *take_bytes(void *p, size_t n) {
    PyObject *r = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    free(p);
    return r;
}

PYDDL_DOC(store_get, "(handle, key, timeout_ms, /)",
          "The value of key (bytes), waiting for it until the timeout.");
static PyObject *py_store_get(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    const char *key;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "O&sL:store_get", pyddl_conv_store, &s, &key, &timeout_ms))
        return NULL;
    void *val = NULL;
    size_t len = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_get(s, key, &val, &len, timeout_ms));
    return st ? pyddl_raise(st) : take_bytes(val, len);
}

PYDDL_DOC(store_add, "(handle, key, delta, /)",
          "Add delta to the counter at key -> the new value.");
static PyObject *py_store_add(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    const char *key;
    long long delta;
    if (!PyArg_ParseTuple(args, "O&sL:store_add", pyddl_conv_store, &s, &key, &delta)) return NULL;
    int64_t r = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_add(s, key, delta, &r));
    return st ? pyddl_raise(st) : PyLong_FromLongLong(r);
}

PYDDL_DOC(store_compare_set, "(handle, key, expected, desired, /)",
          "Set key to desired when it holds expected -> the value now there.");
static PyObject *py_store_compare_set(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    const char *key;
    Py_buffer e, d;
    if (!PyArg_ParseTuple(args, "O&sy*y*:store_compare_set", pyddl_conv_store, &s, &key, &e, &d))
        return NULL;
    void *cur = NULL;
    size_t cl = 0;
    ddl_status st;
    PYDDL_NOGIL(
        st, ddl_store_compare_set(s, key, e.buf, (size_t)e.len, d.buf, (size_t)d.len, &cur, &cl));
    PyBuffer_Release(&e);
    PyBuffer_Release(&d);
    return st ? pyddl_raise(st) : take_bytes(cur, cl);
}

/* A list of str keys as C strings borrowed from `fast`: an O& converter with cleanup (the
 * caller frees with keys_free after a successful parse). */
typedef struct {
    PyObject *fast;
    const char **k;
    int n;
} key_list;

static void keys_free(key_list *l) {
    free(l->k);
    Py_CLEAR(l->fast);
    l->k = NULL;
}

static int conv_keys(PyObject *seq, void *out) {
    key_list *l = out;
    if (!seq) { /* cleanup: a later argument failed */
        keys_free(l);
        return 0;
    }
    l->k = NULL;
    if (!(l->fast = PySequence_Fast(seq, "expected a list of str keys"))) return 0;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(l->fast);
    if (len < 1 || len > 1000000)
        PyErr_Format(PyExc_ValueError, "store keys: expected 1 to 1000000 keys, got %zd", len);
    else if (!(l->k = malloc((size_t)len * sizeof *l->k)))
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; l->k && i < len && !PyErr_Occurred(); i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(l->fast, i);
        Py_ssize_t kl;
        const char *k = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &kl) : NULL;
        if (!PyUnicode_Check(o))
            PyErr_Format(PyExc_TypeError, "store keys must be str, got %s", Py_TYPE(o)->tp_name);
        else if (k && (size_t)kl != strlen(k))
            PyErr_Format(PyExc_ValueError, "store key %zd contains a NUL character", i);
        l->k[i] = k;
    }
    if (PyErr_Occurred()) {
        keys_free(l);
        return 0;
    }
    l->n = (int)len;
    return Py_CLEANUP_SUPPORTED;
}

PYDDL_DOC(store_wait, "(handle, keys, timeout_ms, /)", "Wait until every key is set.");
static PyObject *py_store_wait(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    key_list keys;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "O&O&L:store_wait", pyddl_conv_store, &s, conv_keys, &keys,
                          &timeout_ms))
        return NULL;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_wait(s, keys.k, keys.n, timeout_ms));
    keys_free(&keys);
    return pyddl_return_none(st);
}

PYDDL_DOC(store_check, "(handle, keys, /)", "Whether every key is set.");
static PyObject *py_store_check(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    key_list keys;
    if (!PyArg_ParseTuple(args, "O&O&:store_check", pyddl_conv_store, &s, conv_keys, &keys))
        return NULL;
    int all = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_check(s, keys.k, keys.n, &all));
    keys_free(&keys);
    return st ? pyddl_raise(st) : PyBool_FromLong(all);
}

PYDDL_DOC(store_delete, "(handle, key, /)", "Delete key -> whether it was there.");
static PyObject *py_store_delete(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    const char *key;
    if (!PyArg_ParseTuple(args, "O&s:store_delete", pyddl_conv_store, &s, &key)) return NULL;
    int deleted = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_delete(s, key, &deleted));
    return st ? pyddl_raise(st) : PyBool_FromLong(deleted);
}

PYDDL_DOC(store_num_keys, "(handle, /)", "The number of keys.");
static PyObject *py_store_num_keys(PyObject *Py_UNUSED(self), PyObject *cap) {
    ddl_store *s;
    if (!pyddl_conv_store(cap, &s)) return NULL;
    int64_t n = 0;
    ddl_status st;
    PYDDL_NOGIL(st, ddl_store_num_keys(s, &n));
    return st ? pyddl_raise(st) : PyLong_FromLongLong(n);
}

PYDDL_DOC(store_set_timeout, "(handle, timeout_ms, /)",
          "The deadline for calls without their own.");
static PyObject *py_store_set_timeout(PyObject *Py_UNUSED(self), PyObject *args) {
    ddl_store *s;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "O&L:store_set_timeout", pyddl_conv_store, &s, &timeout_ms))
        return NULL;
    return pyddl_return_none(ddl_store_set_timeout(s, timeout_ms)); /* no I/O */
}

PyMethodDef pyddl_store_functions[] = {
    PYDDL_FN(tcpstore_server_start, METH_VARARGS),
    PYDDL_FN(tcpstore_server_stop, METH_O),
    PYDDL_FN(store_connect_tcp, METH_VARARGS),
    PYDDL_FN(store_open_file, METH_VARARGS),
    PYDDL_FN(store_open_redis, METH_VARARGS),
    PYDDL_FN(store_file_remove, METH_VARARGS),
    PYDDL_FN(store_prefix, METH_VARARGS),
    PYDDL_FN(store_set, METH_VARARGS),
    PYDDL_FN(store_get, METH_VARARGS),
    PYDDL_FN(store_add, METH_VARARGS),
    PYDDL_FN(store_compare_set, METH_VARARGS),
    PYDDL_FN(store_wait, METH_VARARGS),
    PYDDL_FN(store_check, METH_VARARGS),
    PYDDL_FN(store_delete, METH_VARARGS),
    PYDDL_FN(store_num_keys, METH_O),
    PYDDL_FN(store_set_timeout, METH_VARARGS),
    PYDDL_FN_END,
};
