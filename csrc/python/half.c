/* half.c: bindings of half.h (16-bit float compression for DDP's compress hooks). */
#include "ddl/half.h"

#include "pyddl.h"

static int kind_of(int kind) { return kind == 0 ? DDL_HALF_FP16 : DDL_HALF_BF16; }

static int check_buffers(const Py_buffer *out, Py_ssize_t out_items, const Py_buffer *in,
                         Py_ssize_t in_items, const char *who) {
    if (out->len != out_items * 2 || in->len != in_items * 4) {
        PyErr_Format(PyExc_ValueError, "%s: buffer sizes do not match (%zd and %zd bytes)", who,
                     out->len, in->len);
        return -1;
    }
    return 0;
}

/* half_compress(out: writable buffer of n 16-bit items, in: n float32, scale, kind) */
PYDDL_DOC(half_compress, "(out, inp, scale, kind, /)",
          "out[i] = 16-bit(inp[i] * scale); kind 0 = fp16, 1 = bf16.");
static PyObject *py_half_compress(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer out, in;
    float scale;
    int kind;
    if (!PyArg_ParseTuple(args, "w*y*fi", &out, &in, &scale, &kind)) return NULL;
    Py_ssize_t n = in.len / 4;
    ddl_status st = DDL_OK;
    if (check_buffers(&out, n, &in, n, "half_compress") == 0) {
        Py_BEGIN_ALLOW_THREADS
        st = ddl_half_compress(out.buf, in.buf, n, scale, kind_of(kind));
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&in);
    if (PyErr_Occurred()) return NULL;
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

/* half_decompress_sum(out: n float32, in: parts * n 16-bit items, parts, kind) */
PYDDL_DOC(half_decompress_sum, "(out, inp, parts, kind, /)",
          "out[i] = sum_p float(inp[p * n + i]); kind 0 = fp16, 1 = bf16.");
static PyObject *py_half_decompress_sum(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer out, in;
    long long parts;
    int kind;
    if (!PyArg_ParseTuple(args, "w*y*Li", &out, &in, &parts, &kind)) return NULL;
    Py_ssize_t n = out.len / 4;
    ddl_status st = DDL_OK;
    if (parts < 1 || out.len != n * 4 || in.len != n * 2 * parts) {
        PyErr_Format(PyExc_ValueError,
                     "half_decompress_sum: %zd input bytes are not %lld parts of %zd items", in.len,
                     parts, n);
    } else {
        Py_BEGIN_ALLOW_THREADS
        st = ddl_half_decompress_sum(out.buf, in.buf, n, parts, kind_of(kind));
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&in);
    if (PyErr_Occurred()) return NULL;
    if (st) return pyddl_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef pyddl_half_functions[] = {
    PYDDL_FN(half_compress, METH_VARARGS),
    PYDDL_FN(half_decompress_sum, METH_VARARGS),
    PYDDL_FN_END,
};
