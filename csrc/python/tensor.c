/* tensor_object.c: the TensorBase type, the buffer protocol both ways, creation and views. */
#include "pyddl.h"

#include <stdlib.h>
#include <string.h>

/* ---- the type ---------------------------------------------------------------------------- */

PyObject *pyddl_wrap(ddl_tensor *t) {
    PyTensor *self = (PyTensor *)pyddl_tensor_class->tp_alloc(pyddl_tensor_class, 0);
    if (!self) {
        ddl_tensor_release(t);
        return NULL;
    }
    self->t = t;
    return (PyObject *)self;
}

static void tensor_dealloc(PyTensor *self) {
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    ddl_tensor *t = self->t;
    self->t = NULL;
    ddl_tensor_release(t);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)args, (void)kw;
    PyErr_Format(PyExc_TypeError,
                 "%s cannot be built directly; use ddl.tensor(data), ddl.from_numpy(array) or "
                 "ddl.zeros(shape)",
                 type->tp_name);
    return NULL;
}

static int check(PyTensor *self) {
    if (!self->t) {
        PyErr_SetString(PyExc_RuntimeError, "tensor is not initialized");
        return -1;
    }
    return 0;
}

static PyObject *get_shape(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    PyObject *tup = PyTuple_New(self->t->ndim);
    for (int i = 0; tup && i < self->t->ndim; i++)
        PyTuple_SET_ITEM(tup, i, PyLong_FromLongLong(self->t->shape[i]));
    return tup;
}

static PyObject *get_strides(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    PyObject *tup = PyTuple_New(self->t->ndim);
    for (int i = 0; tup && i < self->t->ndim; i++)
        PyTuple_SET_ITEM(tup, i, PyLong_FromLongLong(self->t->strides[i]));
    return tup;
}

static PyObject *get_dtype_code(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    return PyLong_FromLong(self->t->dtype);
}

static PyObject *get_ndim(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    return PyLong_FromLong(self->t->ndim);
}

static PyObject *get_offset(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    return PyLong_FromLongLong(self->t->offset);
}

static PyObject *get_data_ptr(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    return PyLong_FromVoidPtr(ddl_tensor_data(self->t));
}

static PyObject *get_storage_id(PyTensor *self, void *c) {
    (void)c;
    if (check(self)) return NULL;
    return PyLong_FromVoidPtr(self->t->storage);
}

static PyObject *tensor_numel(PyTensor *self, PyObject *unused) {
    (void)unused;
    if (check(self)) return NULL;
    return PyLong_FromLongLong(ddl_tensor_numel(self->t));
}

static PyObject *tensor_is_contiguous(PyTensor *self, PyObject *unused) {
    (void)unused;
    if (check(self)) return NULL;
    return PyBool_FromLong(ddl_tensor_is_contiguous(self->t));
}

static Py_ssize_t tensor_len(PyTensor *self) {
    if (check(self)) return -1;
    if (self->t->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
        return -1;
    }
    return (Py_ssize_t)self->t->shape[0];
}

/* Export: a NumPy array or memoryview over the tensor's memory (keeps the tensor alive). */
static const char *format_of(ddl_dtype dt) {
    switch (dt) {
    case DDL_FLOAT32: return "f";
    case DDL_FLOAT64: return "d";
    case DDL_INT64: return "q";
    default: return "?";
    }
}

static int tensor_getbuffer(PyTensor *self, Py_buffer *view, int flags) {
    if (check(self)) return -1;
    ddl_tensor *t = self->t;
    Py_ssize_t *dims = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)(t->ndim ? t->ndim : 1));
    if (!dims) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t es = (Py_ssize_t)ddl_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        dims[i] = (Py_ssize_t)t->shape[i];
        dims[t->ndim + i] = (Py_ssize_t)t->strides[i] * es;
    }
    if (!(flags & PyBUF_STRIDES) && !ddl_tensor_is_contiguous(t)) {
        PyMem_Free(dims);
        PyErr_SetString(PyExc_BufferError, "tensor is not contiguous: ask for a strided buffer");
        return -1;
    }
    view->buf = ddl_tensor_data(t);
    view->obj = Py_NewRef(self);
    view->len = (Py_ssize_t)ddl_tensor_numel(t) * es;
    view->readonly = 0;
    view->itemsize = es;
    view->format = (flags & PyBUF_FORMAT) ? (char *)format_of(t->dtype) : NULL;
    view->ndim = t->ndim;
    view->shape = dims;
    view->strides = (flags & PyBUF_STRIDES) ? dims + t->ndim : NULL;
    view->suboffsets = NULL;
    view->internal = dims;
    return 0;
}

static void tensor_releasebuffer(PyTensor *self, Py_buffer *view) {
    (void)self;
    PyMem_Free(view->internal);
}

static PyBufferProcs tensor_as_buffer = {(getbufferproc)tensor_getbuffer,
                                         (releasebufferproc)tensor_releasebuffer};

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)get_shape, NULL, "The size of each dim, as a tuple.", NULL},
    {"_strides", (getter)get_strides, NULL, "Strides in elements.", NULL},
    {"_dtype_code", (getter)get_dtype_code, NULL, "The dtype's code.", NULL},
    {"ndim", (getter)get_ndim, NULL, "Number of dims.", NULL},
    {"_offset", (getter)get_offset, NULL, "Offset into the storage, in elements.", NULL},
    {"_data_ptr", (getter)get_data_ptr, NULL, "Address of the first element.", NULL},
    {"_storage_id", (getter)get_storage_id, NULL, "Identity of the storage (for tests).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef tensor_methods[] = {
    {"numel", (PyCFunction)tensor_numel, METH_NOARGS, "Number of elements."},
    {"is_contiguous", (PyCFunction)tensor_is_contiguous, METH_NOARGS,
     "Whether the elements are laid out densely in row-major order."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods tensor_as_sequence = {.sq_length = (lenfunc)tensor_len};

PyTypeObject PyTensor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ddl._C.TensorBase",
    .tp_basicsize = sizeof(PyTensor),
    .tp_dealloc = (destructor)tensor_dealloc,
    .tp_as_buffer = &tensor_as_buffer,
    .tp_as_sequence = &tensor_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The C base of ddl.Tensor.",
    .tp_weaklistoffset = offsetof(PyTensor, weakrefs),
    .tp_methods = tensor_methods,
    .tp_getset = tensor_getset,
    .tp_new = tensor_new,
};

/* ---- import: tensors over foreign buffers ------------------------------------------------- */

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
    case 'q': case 'l': *dt = DDL_INT64; return itemsize == 8 ? 0 : -1;
    case '?': *dt = DDL_BOOL; return itemsize == 1 ? 0 : -1;
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
                     "float64, int64 or bool",
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
        if (ext < 0) lo += ext;
        else hi += ext;
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

/* Copies arrays of element types ddl does not hold (int32, float16, ...) into a new tensor; a
 * Python callable registered by ddl._tensor, so the conversion rules live in one place. */
static PyObject *array_converter;

int pyddl_as_tensor(PyObject *o, ddl_tensor **out, const char *who) {
    if (PyTensor_Check(o)) {
        if (check((PyTensor *)o)) return -1;
        ddl_tensor_retain(((PyTensor *)o)->t);
        *out = ((PyTensor *)o)->t;
        return 0;
    }
    if (PyObject_CheckBuffer(o)) {
        if (pyddl_from_buffer(o, out, 0) == 0) return 0;
        if (!array_converter || !PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
        PyErr_Clear();
        PyObject *t = PyObject_CallOneArg(array_converter, o);
        if (!t) return -1;
        if (!PyTensor_Check(t) || check((PyTensor *)t)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s: the array converter returned %s", who,
                             Py_TYPE(t)->tp_name);
            Py_DECREF(t);
            return -1;
        }
        ddl_tensor_retain(((PyTensor *)t)->t);
        *out = ((PyTensor *)t)->t;
        Py_DECREF(t);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s: expected a Tensor or an array, got %s", who,
                 Py_TYPE(o)->tp_name);
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

/* ---- module functions: creation, views, copies ------------------------------------------ */

static PyObject *py_set_array_converter(PyObject *self, PyObject *fn) {
    (void)self;
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "expected a callable");
        return NULL;
    }
    Py_XSETREF(array_converter, Py_NewRef(fn));
    Py_RETURN_NONE;
}

#define RETURN_TENSOR(st, t) return (st) ? pyddl_raise(st) : pyddl_wrap(t)

static PyObject *py_from_buffer(PyObject *self, PyObject *o) {
    (void)self;
    ddl_tensor *t;
    if (pyddl_from_buffer(o, &t, 0) < 0) return NULL;
    return pyddl_wrap(t);
}

/* _C.full(shape, value, dtype) ; value None means uninitialized (empty) */
static PyObject *py_full(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *shp, *val, *dto;
    int64_t shape[DDL_MAX_DIMS];
    ddl_dtype dt;
    if (!PyArg_ParseTuple(args, "OOO", &shp, &val, &dto)) return NULL;
    int nd = pyddl_parse_shape(shp, shape, "full");
    if (nd < 0 || pyddl_parse_dtype(dto, &dt) < 0) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    if (val == Py_None) {
        st = ddl_tensor_empty(&t, dt, nd, shape);
    } else {
        double v = PyFloat_AsDouble(val);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        if (PyLong_Check(val) && dt == DDL_INT64) {
            /* keep large integers exact */
            long long iv = PyLong_AsLongLong(val);
            if (iv == -1 && PyErr_Occurred()) return NULL;
            st = ddl_tensor_empty(&t, dt, nd, shape);
            if (!st) {
                int64_t n = ddl_tensor_numel(t), *p = ddl_tensor_data(t);
                for (int64_t i = 0; i < n; i++) p[i] = iv;
            }
        } else {
            Py_BEGIN_ALLOW_THREADS st = ddl_tensor_full(&t, dt, nd, shape, v);
            Py_END_ALLOW_THREADS
        }
    }
    RETURN_TENSOR(st, t);
}

static PyObject *py_arange(PyObject *self, PyObject *args) {
    (void)self;
    double a, b, s;
    int dt;
    if (!PyArg_ParseTuple(args, "dddi", &a, &b, &s, &dt)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_arange(&t, (ddl_dtype)dt, a, b, s);
    RETURN_TENSOR(st, t);
}

static PyObject *py_linspace(PyObject *self, PyObject *args) {
    (void)self;
    double a, b;
    long long n;
    int dt;
    if (!PyArg_ParseTuple(args, "ddLi", &a, &b, &n, &dt)) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_linspace(&t, (ddl_dtype)dt, a, b, n);
    RETURN_TENSOR(st, t);
}

static PyObject *py_eye(PyObject *self, PyObject *args) {
    (void)self;
    long long n, m;
    int dt;
    if (!PyArg_ParseTuple(args, "LLi", &n, &m, &dt)) return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "eye: n must be >= 0, got %lld", n);
        return NULL;
    }
    ddl_tensor *t = NULL;
    ddl_status st = ddl_tensor_eye(&t, (ddl_dtype)dt, n, m);
    RETURN_TENSOR(st, t);
}

static PyObject *py_random(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *shp;
    int dt;
    long long lo = 0, hi = 0;
    int64_t shape[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "sOi|LL", &kind, &shp, &dt, &lo, &hi)) return NULL;
    int nd = pyddl_parse_shape(shp, shape, kind);
    if (nd < 0) return NULL;
    ddl_tensor *t = NULL;
    ddl_status st;
    Py_BEGIN_ALLOW_THREADS
    if (kind[0] == 'n') st = ddl_randn(&t, (ddl_dtype)dt, nd, shape);
    else if (kind[0] == 'i') st = ddl_randint(&t, lo, hi, nd, shape);
    else st = ddl_rand(&t, (ddl_dtype)dt, nd, shape);
    Py_END_ALLOW_THREADS
    RETURN_TENSOR(st, t);
}

static PyObject *py_manual_seed(PyObject *self, PyObject *arg) {
    (void)self;
    unsigned long long s = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    ddl_manual_seed(s);
    Py_RETURN_NONE;
}

static PyObject *py_rng_state(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long seed, off;
    if (PyTuple_GET_SIZE(args) == 0) {
        uint64_t s, o;
        ddl_rng_get_state(&s, &o);
        return Py_BuildValue("(KK)", (unsigned long long)s, (unsigned long long)o);
    }
    if (!PyArg_ParseTuple(args, "KK", &seed, &off)) return NULL;
    ddl_rng_set_state(seed, off);
    Py_RETURN_NONE;
}

static PyObject *py_initial_seed(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyLong_FromUnsignedLongLong(ddl_initial_seed());
}

/* _C.view(kind, t, shape): kind "view" | "reshape" | "expand" */
static PyObject *py_reshape(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *to, *shp;
    int64_t shape[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "sO!O", &kind, &PyTensor_Type, &to, &shp)) return NULL;
    int nd = pyddl_parse_shape(shp, shape, kind);
    if (nd < 0) return NULL;
    ddl_tensor *t = ((PyTensor *)to)->t, *r = NULL;
    ddl_status st;
    st = ddl_ag_reshape(&r, kind[0] == 'v' ? 'v' : kind[0] == 'e' ? 'e' : 'r', t, nd, shape);
    RETURN_TENSOR(st, r);
}

static PyObject *py_permute(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *to, *dims_o;
    int64_t d64[DDL_MAX_DIMS];
    int dims[DDL_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "O!O", &PyTensor_Type, &to, &dims_o)) return NULL;
    ddl_tensor *t = ((PyTensor *)to)->t, *r = NULL;
    int nd = pyddl_parse_shape(dims_o, d64, "permute");
    if (nd < 0) return NULL;
    if (nd != t->ndim) {
        PyErr_Format(PyExc_ValueError, "permute: got %d dims for a tensor of %d dims", nd,
                     t->ndim);
        return NULL;
    }
    for (int i = 0; i < nd; i++) dims[i] = (int)d64[i];
    ddl_status st = ddl_ag_permute(&r, t, dims);
    RETURN_TENSOR(st, r);
}

/* _C.dimop(kind, t, a, b): transpose(a, b), squeeze(a), unsqueeze(a), flatten(a, b),
 * select(a=dim, b=index) */
static PyObject *py_dimop(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *to;
    long long a = 0, b = 0;
    if (!PyArg_ParseTuple(args, "sO!|LL", &kind, &PyTensor_Type, &to, &a, &b)) return NULL;
    ddl_tensor *t = ((PyTensor *)to)->t, *r = NULL;
    ddl_status st;
    if (!strcmp(kind, "transpose")) st = ddl_tensor_transpose(&r, t, (int)a, (int)b);
    else if (!strcmp(kind, "squeeze")) st = ddl_tensor_squeeze(&r, t, (int)a);
    else if (!strcmp(kind, "unsqueeze")) st = ddl_tensor_unsqueeze(&r, t, (int)a);
    else if (!strcmp(kind, "flatten")) st = ddl_tensor_flatten(&r, t, (int)a, (int)b);
    else if (!strcmp(kind, "select")) st = ddl_ag_select(&r, t, (int)a, b);
    else {
        PyErr_Format(PyExc_ValueError, "unknown dim op %s", kind);
        return NULL;
    }
    if (!st && t->requires_grad && !r->requires_grad && ddl_is_grad_enabled()) {
        /* a shape-only view: record it as one (transpose as the permutation it is) */
        ddl_tensor *v = NULL;
        if (!strcmp(kind, "transpose") && t->ndim > 0) {
            int dims[DDL_MAX_DIMS], i0 = (int)(a < 0 ? a + t->ndim : a),
                                    i1 = (int)(b < 0 ? b + t->ndim : b);
            for (int i = 0; i < t->ndim; i++) dims[i] = i;
            dims[i0] = i1;
            dims[i1] = i0;
            st = ddl_ag_permute(&v, t, dims);
        } else {
            st = ddl_ag_reshape(&v, 'r', t, r->ndim, r->shape);
        }
        ddl_tensor_release(r);
        r = v;
    }
    RETURN_TENSOR(st, r);
}

static PyObject *py_slice(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *to;
    int dim;
    long long start, stop, step;
    if (!PyArg_ParseTuple(args, "O!iLLL", &PyTensor_Type, &to, &dim, &start, &stop, &step))
        return NULL;
    ddl_tensor *r = NULL;
    ddl_status st = ddl_ag_slice(&r, ((PyTensor *)to)->t, dim, start, stop, step);
    RETURN_TENSOR(st, r);
}

static int big(const ddl_tensor *t) {
    return (size_t)ddl_tensor_numel(t) * ddl_dtype_size(t->dtype) > PYDDL_NOGIL_BYTES;
}

/* _C.copy(kind, t[, dtype]): "contiguous" | "clone" | "to" */
static PyObject *py_copy(PyObject *self, PyObject *args) {
    (void)self;
    const char *kind;
    PyObject *to;
    int dt = -1;
    if (!PyArg_ParseTuple(args, "sO!|i", &kind, &PyTensor_Type, &to, &dt)) return NULL;
    ddl_tensor *t = ((PyTensor *)to)->t, *r = NULL;
    ddl_status st;
    if (kind[0] == 'c' && kind[1] == 'o') PYDDL_CALL(st, big(t), ddl_ag_contiguous(&r, t, 0));
    else if (kind[0] == 'c') PYDDL_CALL(st, big(t), ddl_ag_contiguous(&r, t, 1));
    else {
        if (dt < 0 || dt >= DDL_NUM_DTYPES) {
            PyErr_Format(PyExc_TypeError, "invalid dtype code %d", dt);
            return NULL;
        }
        PYDDL_CALL(st, big(t), ddl_ag_to(&r, t, (ddl_dtype)dt));
    }
    RETURN_TENSOR(st, r);
}

static PyObject *py_copy_(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *dsto, *srco;
    if (!PyArg_ParseTuple(args, "O!O", &PyTensor_Type, &dsto, &srco)) return NULL;
    ddl_tensor *dst = ((PyTensor *)dsto)->t, *src;
    if (pyddl_check_inplace(dst, "copy_") < 0) return NULL;
    ddl_status st;
    if (PyLong_Check(srco) && dst->dtype == DDL_INT64) {
        if (pyddl_int64_scalar(srco, &src) < 0) return NULL;
        st = ddl_copy_(dst, src);
        ddl_tensor_release(src);
    } else if (PyFloat_Check(srco) || PyLong_Check(srco)) {
        double v = PyFloat_AsDouble(srco);
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        PYDDL_CALL(st, big(dst), ddl_fill_(dst, v));
    } else {
        if (pyddl_as_tensor(srco, &src, "copy_") < 0) return NULL;
        PYDDL_CALL(st, big(dst), ddl_copy_(dst, src));
        ddl_tensor_release(src);
    }
    if (st) return pyddl_raise(st);
    return Py_NewRef(dsto);
}

static PyObject *py_zero_(PyObject *self, PyObject *to) {
    (void)self;
    if (!PyTensor_Check(to)) {
        PyErr_SetString(PyExc_TypeError, "zero_: expected a Tensor");
        return NULL;
    }
    ddl_tensor *t = ((PyTensor *)to)->t;
    ddl_status st;
    if (pyddl_check_inplace(t, "zero_") < 0) return NULL;
    PYDDL_CALL(st, big(t), ddl_zero_(t));
    if (st) return pyddl_raise(st);
    return Py_NewRef(to);
}

static PyObject *py_item(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *to;
    long long i;
    if (!PyArg_ParseTuple(args, "O!L", &PyTensor_Type, &to, &i)) return NULL;
    ddl_tensor *t = ((PyTensor *)to)->t;
    double v;
    ddl_status st = ddl_tensor_item(&v, t, i);
    if (st) return pyddl_raise(st);
    if (t->dtype == DDL_INT64) {
        /* read exactly: doubles lose integers above 2^53 */
        int64_t off = 0, flat = i;
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += (flat % t->shape[d]) * t->strides[d];
            flat /= t->shape[d];
        }
        return PyLong_FromLongLong(((int64_t *)ddl_tensor_data(t))[off]);
    }
    if (t->dtype == DDL_BOOL) return PyBool_FromLong(v != 0);
    return PyFloat_FromDouble(v);
}

PyMethodDef pyddl_tensor_functions[] = {
    {"from_buffer", py_from_buffer, METH_O, "Zero-copy tensor over a buffer (NumPy array)."},
    {"_set_array_converter", py_set_array_converter, METH_O,
     "Register f(array) -> Tensor for arrays of other element types (copies)."},
    {"full", py_full, METH_VARARGS, "full(shape, value or None, dtype)"},
    {"arange", py_arange, METH_VARARGS, "arange(start, end, step, dtype)"},
    {"linspace", py_linspace, METH_VARARGS, "linspace(start, end, steps, dtype)"},
    {"eye", py_eye, METH_VARARGS, "eye(n, m, dtype)"},
    {"random", py_random, METH_VARARGS, "random(kind, shape, dtype[, low, high])"},
    {"manual_seed", py_manual_seed, METH_O, "Seed the global generator."},
    {"initial_seed", py_initial_seed, METH_NOARGS, "The seed last set."},
    {"rng_state", py_rng_state, METH_VARARGS, "rng_state() -> (seed, offset); rng_state(s, o)"},
    {"reshape", py_reshape, METH_VARARGS, "reshape(kind, t, shape)"},
    {"permute", py_permute, METH_VARARGS, "permute(t, dims)"},
    {"dimop", py_dimop, METH_VARARGS, "dimop(kind, t, a, b)"},
    {"slice", py_slice, METH_VARARGS, "slice(t, dim, start, stop, step)"},
    {"copy", py_copy, METH_VARARGS, "copy(kind, t[, dtype])"},
    {"copy_", py_copy_, METH_VARARGS, "copy_(dst, src or scalar)"},
    {"zero_", py_zero_, METH_O, "zero_(t)"},
    {"item", py_item, METH_VARARGS, "item(t, flat_index)"},
    {NULL, NULL, 0, NULL},
};
