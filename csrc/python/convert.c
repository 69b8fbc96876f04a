/* convert.c: Python arguments -> ddl values (the O& converters, tensors over foreign buffers,
 * tensor lists, shapes, dtypes, capsules) and the result helpers every binding file uses. */
#include "pyddl.h"

#include <limits.h>
#include <stdlib.h>

PyObject *pyddl_array_converter;

/* ---- tensors over foreign buffers ------------------------------------------------------------ */

/* Runs when the last tensor over a borrowed buffer goes, maybe on a thread without the GIL. */
static void release_buffer(void *ctx) {
    Py_buffer *view = ctx;
    if (!Py_IsInitialized()) return; /* interpreter gone: the memory goes with the process */
    PyGILState_STATE g = PyGILState_Ensure();
    PyBuffer_Release(view);
    PyGILState_Release(g);
    free(view);
}

static int dtype_of_format(const char *fmt, Py_ssize_t itemsize, ddl_dtype *dt) {
    if (!fmt) fmt = "B";
    while (*fmt == '@' || *fmt == '=' || *fmt == '<' || *fmt == '!') fmt++;
    if (fmt[1] != '\0') return -1;
    switch (*fmt) {
    case 'f': *dt = DDL_FLOAT32; return itemsize == 4 ? 0 : -1;
    case 'd': *dt = DDL_FLOAT64; return itemsize == 8 ? 0 : -1;
    case 'q':
    case 'l': *dt = DDL_INT64; return itemsize == 8 ? 0 : -1;
    case '?': *dt = DDL_BOOL; return itemsize == 1 ? 0 : -1;
    case 'i': *dt = DDL_INT32; return itemsize == 4 ? 0 : -1;
    case 'h': *dt = DDL_INT16; return itemsize == 2 ? 0 : -1;
    case 'b': *dt = DDL_INT8; return itemsize == 1 ? 0 : -1;
    case 'B': *dt = DDL_UINT8; return itemsize == 1 ? 0 : -1;
    case 'e': *dt = DDL_FLOAT16; return itemsize == 2 ? 0 : -1;
    default: return -1;
    }
}

int pyddl_from_buffer(PyObject *o, ddl_tensor **out, int writable_required) {
    Py_buffer *view = malloc(sizeof *view);
    if (!view) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyObject_GetBuffer(o, view, PyBUF_RECORDS) < 0) {
        if (writable_required) {
            free(view);
            return -1;
        }
        PyErr_Clear();
        if (PyObject_GetBuffer(o, view, PyBUF_RECORDS_RO) < 0) {
            free(view);
            return -1;
        }
    }
    ddl_dtype dt;
    if (dtype_of_format(view->format, view->itemsize, &dt) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "unsupported element type '%s' (%zd bytes): ddl tensors hold float32, "
                     "float64, float16, int64, int32, int16, int8, uint8 or bool",
                     view->format ? view->format : "B", view->itemsize);
        goto fail;
    }
    if (view->ndim > DDL_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "arrays of %d dims are not supported (at most %d)",
                     view->ndim, DDL_MAX_DIMS);
        goto fail;
    }
    int64_t shape[DDL_MAX_DIMS], strides[DDL_MAX_DIMS], lo = 0, hi = 0, numel = 1;
    for (int i = 0; i < view->ndim; i++) {
        shape[i] = view->shape[i];
        numel *= shape[i];
        Py_ssize_t bs = view->strides ? view->strides[i] : 0;
        if (!view->strides) {
            bs = view->itemsize;
            for (int j = i + 1; j < view->ndim; j++) bs *= view->shape[j];
        }
        if (bs % view->itemsize) {
            PyErr_SetString(PyExc_ValueError,
                            "array strides are not a multiple of its item size; copy it first "
                            "(numpy.ascontiguousarray)");
            goto fail;
        }
        strides[i] = bs / view->itemsize;
    }
    for (int i = 0; numel && i < view->ndim; i++) {
        int64_t ext = strides[i] * (shape[i] - 1);
        if (ext < 0)
            lo += ext;
        else
            hi += ext;
    }
    /* the storage spans [lowest element, highest element]; negative strides keep working */
    ddl_storage *s;
    char *base = (char *)view->buf + lo * view->itemsize;
    size_t nbytes = numel ? (size_t)(hi - lo + 1) * (size_t)view->itemsize : 0;
    ddl_status st = ddl_storage_borrow(&s, base, nbytes, release_buffer, view);
    if (st) {
        pyddl_raise(st);
        goto fail;
    }
    st = ddl_tensor_from_storage(out, s, dt, view->ndim, shape, strides, -lo);
    ddl_storage_release(s); /* the tensor holds it now; on failure this releases the buffer */
    if (st) {
        pyddl_raise(st);
        return -1;
    }
    return 0;
fail:
    PyBuffer_Release(view);
    free(view);
    return -1;
}

int pyddl_as_tensor(PyObject *o, ddl_tensor **out, const char *who) {
    if (PyTensor_Check(o)) {
        if (pyddl_check_initialized((PyTensor *)o)) return -1;
        ddl_tensor_retain(((PyTensor *)o)->t);
        *out = ((PyTensor *)o)->t;
        return 0;
    }
    if (PyObject_CheckBuffer(o)) {
        if (pyddl_from_buffer(o, out, 0) == 0) return 0;
        if (!pyddl_array_converter || !PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
        PyErr_Clear();
        PyObject *t = PyObject_CallOneArg(pyddl_array_converter, o);
        if (!t) return -1;
        if (!PyTensor_Check(t) || pyddl_check_initialized((PyTensor *)t)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s%sthe array converter returned %s", who ? who : "",
                             who ? ": " : "", Py_TYPE(t)->tp_name);
            Py_DECREF(t);
            return -1;
        }
        ddl_tensor_retain(((PyTensor *)t)->t);
        *out = ((PyTensor *)t)->t;
        Py_DECREF(t);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s%sexpected a Tensor or an array, got %s", who ? who : "",
                 who ? ": " : "", Py_TYPE(o)->tp_name);
    return -1;
}

int pyddl_parse_shape(PyObject *seq, int64_t *shape, const char *who) {
    PyObject *fast = PySequence_Fast(seq, "shape must be a sequence of ints");
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > DDL_MAX_DIMS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: at most %d dims, got %zd", who, DDL_MAX_DIMS, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyIndex_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: shape entries must be ints, got %s", who,
                         Py_TYPE(item)->tp_name);
            Py_DECREF(fast);
            return -1;
        }
        long long v = PyLong_AsLongLong(item);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        shape[i] = v;
    }
    Py_DECREF(fast);
    return (int)n;
}

int pyddl_parse_dtype(PyObject *o, ddl_dtype *dt) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v >= DDL_NUM_DTYPES) {
        PyErr_Format(PyExc_TypeError, "invalid dtype code %ld", v);
        return -1;
    }
    *dt = (ddl_dtype)v;
    return 0;
}

int pyddl_int64_scalar(PyObject *o, ddl_tensor **out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    ddl_status st = ddl_tensor_empty(out, DDL_INT64, 0, NULL);
    if (st) {
        pyddl_raise(st);
        return -1;
    }
    *(int64_t *)ddl_tensor_data(*out) = v;
    return 0;
}

int pyddl_parse_dims(PyObject *seq, int *dims, const char *who) {
    int64_t d64[DDL_MAX_DIMS];
    int nd = pyddl_parse_shape(seq, d64, who);
    for (int i = 0; i < nd; i++) {
        if (d64[i] < INT_MIN || d64[i] > INT_MAX) {
            PyErr_Format(PyExc_IndexError, "%s: dim %lld is out of range", who, (long long)d64[i]);
            return -1;
        }
        dims[i] = (int)d64[i];
    }
    return nd;
}

int pyddl_check_inplace(const ddl_tensor *t, const char *who) {
    if (!t->requires_grad || !ddl_is_grad_enabled()) return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "%s: in-place ops on a tensor that requires grad would corrupt the graph; "
                 "wrap the update in `with ddl.no_grad():` or use the out-of-place form",
                 who);
    return -1;
}

/* ---- O& converters --------------------------------------------------------------------------- */

int pyddl_conv_tensor(PyObject *o, void *out) {
    ddl_tensor **t = out;
    if (!o) { /* cleanup: a later argument failed */
        pyddl_release_tensors(t, 1);
        return 0;
    }
    return pyddl_as_tensor(o, t, NULL) < 0 ? 0 : Py_CLEANUP_SUPPORTED;
}

int pyddl_conv_tensor_or_none(PyObject *o, void *out) {
    if (o == Py_None) {
        *(ddl_tensor **)out = NULL;
        return 1;
    }
    return pyddl_conv_tensor(o, out);
}

int pyddl_conv_tensor_base(PyObject *o, void *out) {
    if (!PyTensor_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected a Tensor, got %s", Py_TYPE(o)->tp_name);
        return 0;
    }
    if (pyddl_check_initialized((PyTensor *)o)) return 0;
    *(ddl_tensor **)out = ((PyTensor *)o)->t;
    return 1;
}

int pyddl_conv_index_vector(PyObject *o, void *out) {
    ddl_tensor **t = out, *raw = NULL;
    if (!o) return pyddl_conv_tensor(NULL, out);
    if (pyddl_as_tensor(o, &raw, NULL) < 0) return 0;
    ddl_status st = DDL_OK;
    if (raw->dtype != DDL_INT64 || raw->ndim != 1)
        st = ddl_fail(DDL_E_TYPE, "expected a 1-D int64 tensor or array of indices, got %d-D %s",
                      raw->ndim, ddl_dtype_name(raw->dtype));
    if (!st) st = ddl_tensor_contiguous(t, raw);
    ddl_tensor_release(raw);
    if (st) {
        pyddl_raise(st);
        return 0;
    }
    return Py_CLEANUP_SUPPORTED;
}

int pyddl_conv_dtype(PyObject *o, void *out) { return pyddl_parse_dtype(o, out) == 0; }

/* The pointer in a capsule this binding made under `name`; 0 with a TypeError otherwise. */
static int capsule_conv(PyObject *o, void *out, const char *name, const char *what) {
    void *p = PyCapsule_IsValid(o, name) ? PyCapsule_GetPointer(o, name) : NULL;
    if (!p) {
        PyErr_Format(PyExc_TypeError, "expected a ddl %s handle, got %s", what,
                     Py_TYPE(o)->tp_name);
        return 0;
    }
    *(void **)out = p;
    return 1;
}

int pyddl_conv_pg(PyObject *o, void *out) {
    return capsule_conv(o, out, PYDDL_PG_CAPSULE, "process group");
}
int pyddl_conv_store(PyObject *o, void *out) {
    return capsule_conv(o, out, PYDDL_STORE_CAPSULE, "store");
}
int pyddl_conv_work(PyObject *o, void *out) {
    return capsule_conv(o, out, PYDDL_WORK_CAPSULE, "work");
}
int pyddl_conv_reducer(PyObject *o, void *out) {
    return capsule_conv(o, out, PYDDL_REDUCER_CAPSULE, "reducer");
}

/* ---- tensor lists ---------------------------------------------------------------------------- */

void pyddl_release_tensors(ddl_tensor **ts, int n) {
    for (int i = 0; i < n; i++) {
        ddl_tensor_release(ts[i]);
        ts[i] = NULL;
    }
}

void pyddl_tensor_list_release(pyddl_tensor_list *l, int n) {
    for (int i = 0; i < n; i++) {
        if (l[i].t) pyddl_release_tensors(l[i].t, l[i].n);
        free(l[i].t);
        l[i].t = NULL;
        l[i].n = 0;
    }
}

/* Entry i of a list: a new reference in *out (NULL for an allowed None). */
static int list_entry(ddl_tensor **out, PyObject *o, Py_ssize_t i, int flags, const char *who,
                      const char *name) {
    if (o == Py_None && (flags & PYDDL_LIST_HOLES)) return 0;
    if ((flags & (PYDDL_LIST_TENSORS | PYDDL_LIST_INPLACE)) && !PyTensor_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s[%zd] must be a Tensor%s, got %s", who, name, i,
                     flags & PYDDL_LIST_INPLACE ? " (updated in place)" : "", Py_TYPE(o)->tp_name);
        return -1;
    }
    if (pyddl_as_tensor(o, out, who) < 0) return -1;
    return (flags & PYDDL_LIST_INPLACE) ? pyddl_check_inplace(*out, who) : 0;
}

int pyddl_tensor_list_get(pyddl_tensor_list *l, PyObject *seq, int expect_n, int flags,
                          const char *who, const char *name) {
    l->t = NULL;
    l->n = 0;
    if (seq == Py_None && (flags & PYDDL_LIST_OPTIONAL)) return 0;
    PyObject *fast = PySequence_Fast(seq, "expected a list of tensors");
    if (!fast) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (expect_n >= 0 && len != expect_n) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries, expected %d (one per parameter)",
                     who, name, len, expect_n);
        goto error;
    }
    if (len > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too many tensors (%zd)", who, len);
        goto error;
    }
    l->t = calloc(len ? (size_t)len : 1, sizeof(ddl_tensor *));
    if (!l->t) {
        PyErr_NoMemory();
        goto error;
    }
    l->n = (int)len; /* entries not filled in yet are NULL: releasing them is a no-op */
    for (Py_ssize_t i = 0; i < len; i++)
        if (list_entry(&l->t[i], PySequence_Fast_GET_ITEM(fast, i), i, flags, who, name) < 0)
            goto error;
    Py_DECREF(fast);
    return 0;
error:
    pyddl_tensor_list_release(l, 1);
    Py_DECREF(fast);
    return -1;
}

/* ---- results --------------------------------------------------------------------------------- */

PyObject *pyddl_return_tensor(ddl_status st, ddl_tensor *t) {
    return st ? pyddl_raise(st) : pyddl_wrap(t);
}

PyObject *pyddl_return_none(ddl_status st) { return st ? pyddl_raise(st) : Py_NewRef(Py_None); }

PyObject *pyddl_finish(ddl_status st, ddl_tensor *t, ddl_tensor **args, int n) {
    pyddl_release_tensors(args, n);
    return pyddl_return_tensor(st, t);
}

void *pyddl_capsule_pointer(PyObject *cap, const char *name) {
    void *p = PyCapsule_GetPointer(cap, name);
    if (!p) PyErr_Clear();
    return p;
}

PyObject *pyddl_capsule_new(void *p, const char *name, PyCapsule_Destructor destructor,
                            void (*destroy)(void *)) {
    PyObject *cap = PyCapsule_New(p, name, destructor);
    if (!cap) destroy(p);
    return cap;
}
