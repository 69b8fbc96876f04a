/* tensor_type.c: the TensorBase type: lifetime, metadata getters, and the buffer protocol
 * (NumPy arrays and memoryviews over a tensor's memory). */
#include "pyddl.h"

PyObject *pyddl_wrap(ddl_tensor *t) {
    PyTensor *self = (PyTensor *)pyddl_tensor_class->tp_alloc(pyddl_tensor_class, 0);
    if (!self) {
        ddl_tensor_release(t);
        return NULL;
    }
    self->t = t;
    return (PyObject *)self;
}

int pyddl_check_initialized(PyTensor *self) {
    if (self->t) return 0;
    PyErr_SetString(PyExc_RuntimeError, "tensor is not initialized");
    return -1;
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

/* ---- metadata: one getter, the field chosen by the getset closure ---------------------------- */

enum { F_SHAPE, F_STRIDES, F_DTYPE_CODE, F_NDIM, F_OFFSET, F_DATA_PTR, F_STORAGE_ID };

static PyObject *int_tuple(const int64_t *v, int n) {
    PyObject *tup = PyTuple_New(n);
    for (int i = 0; tup && i < n; i++) {
        PyObject *x = PyLong_FromLongLong(v[i]);
        if (!x)
            Py_CLEAR(tup);
        else
            PyTuple_SET_ITEM(tup, i, x);
    }
    return tup;
}

static PyObject *get_field(PyTensor *self, void *field) {
    if (pyddl_check_initialized(self)) return NULL;
    const ddl_tensor *t = self->t;
    switch ((int)(intptr_t)field) {
    case F_SHAPE: return int_tuple(t->shape, t->ndim);
    case F_STRIDES: return int_tuple(t->strides, t->ndim);
    case F_DTYPE_CODE: return PyLong_FromLong(t->dtype);
    case F_NDIM: return PyLong_FromLong(t->ndim);
    case F_OFFSET: return PyLong_FromLongLong(t->offset);
    case F_DATA_PTR: return PyLong_FromVoidPtr(ddl_tensor_data(t));
    default: return PyLong_FromVoidPtr(t->storage);
    }
}

static PyObject *tensor_numel(PyTensor *self, PyObject *unused) {
    (void)unused;
    if (pyddl_check_initialized(self)) return NULL;
    return PyLong_FromLongLong(ddl_tensor_numel(self->t));
}

static PyObject *tensor_is_contiguous(PyTensor *self, PyObject *unused) {
    (void)unused;
    if (pyddl_check_initialized(self)) return NULL;
    return PyBool_FromLong(ddl_tensor_is_contiguous(self->t));
}

static Py_ssize_t tensor_len(PyTensor *self) {
    if (pyddl_check_initialized(self)) return -1;
    if (self->t->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
        return -1;
    }
    return (Py_ssize_t)self->t->shape[0];
}

/* ---- export: a NumPy array or memoryview over the tensor's memory (keeps the tensor alive) -- */

static const char *format_of(ddl_dtype dt) {
    switch (dt) {
    case DDL_FLOAT32: return "f";
    case DDL_FLOAT64: return "d";
    case DDL_INT64: return "q";
    case DDL_INT32: return "i";
    case DDL_INT16: return "h";
    case DDL_INT8: return "b";
    case DDL_UINT8: return "B";
    case DDL_FLOAT16: return "e";
    default: return "?";
    }
}

static int tensor_getbuffer(PyTensor *self, Py_buffer *view, int flags) {
    if (pyddl_check_initialized(self)) return -1;
    ddl_tensor *t = self->t;
    if (t->dtype == DDL_BFLOAT16) { /* no buffer format: NumPy then takes __array__'s copy */
        PyErr_SetString(PyExc_BufferError,
                        "a bfloat16 tensor has no buffer format (NumPy has no bfloat16): use "
                        "t.numpy(), a float32 copy");
        return -1;
    }
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

#define FIELD(name, field, doc)                                                                    \
    { name, (getter)get_field, NULL, doc, (void *)(intptr_t)(field) }

static PyGetSetDef tensor_getset[] = {
    FIELD("shape", F_SHAPE, "The size of each dim, as a tuple."),
    FIELD("_strides", F_STRIDES, "Strides in elements."),
    FIELD("_dtype_code", F_DTYPE_CODE, "The dtype's code."),
    FIELD("ndim", F_NDIM, "Number of dims."),
    FIELD("_offset", F_OFFSET, "Offset into the storage, in elements."),
    FIELD("_data_ptr", F_DATA_PTR, "Address of the first element."),
    FIELD("_storage_id", F_STORAGE_ID, "Identity of the storage (for tests)."),
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

PyTypeObject *pyddl_tensor_class = &PyTensor_Type;
