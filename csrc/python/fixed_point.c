/* fixed_point.c (binding): the int64 fixed-point sum kernels over NumPy buffers. */
#include "pyddl.h"

/* A C-contiguous buffer of `itemsize`-byte items (writable when asked); 0 with an exception. */
static int get_buffer(PyObject *o, Py_buffer *view, Py_ssize_t itemsize, int writable,
                      const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, view, flags) < 0) return 0;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte items, got %zd-byte ones", what,
                     itemsize, view->itemsize);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

static void release_all(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(&views[i]);
}

/* The buffers named in `what` from args: float32 ('f'), int64 ('q') or float32 out ('F'),
 * int64 out ('Q'); returns how many were taken (all on success). */
static int get_buffers(PyObject *const *objs, const char *kinds, Py_buffer *views, const char *fn) {
    int i = 0;
    for (; kinds[i]; i++) {
        char c = kinds[i];
        Py_ssize_t size = (c == 'f' || c == 'F') ? 4 : 8;
        if (!get_buffer(objs[i], &views[i], size, c == 'F' || c == 'Q', fn)) {
            release_all(views, i);
            return -1;
        }
    }
    return i;
}

static int64_t total_of(const Py_buffer *lengths, int64_t *nseg) {
    const int64_t *l = lengths->buf;
    *nseg = (int64_t)(lengths->len / 8);
    int64_t t = 0;
    for (int64_t s = 0; s < *nseg; s++) t += l[s];
    return t;
}

PYDDL_DOC(fixed_exponents, "(rows, lengths, exps, bad, /)",
          "Per segment: the max frexp exponent (exps) and a NaN/inf flag (bad) of float32 rows.");
static PyObject *py_fixed_exponents(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[4];
    if (!PyArg_ParseTuple(args, "OOOO", &o[0], &o[1], &o[2], &o[3])) return NULL;
    Py_buffer v[4];
    if (get_buffers(o, "fqQQ", v, "fixed_exponents") < 0) return NULL;
    int64_t nseg, n = total_of(&v[1], &nseg);
    int64_t nel = (int64_t)(v[0].len / 4);
    if ((n && nel % n) || (!n && nel) || v[2].len / 8 != nseg || v[3].len / 8 != nseg) {
        release_all(v, 4);
        PyErr_SetString(PyExc_ValueError, "fixed_exponents: the buffer sizes do not match");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_exponents(v[0].buf, n ? nel / n : 0, n, nseg, v[1].buf, v[2].buf, v[3].buf);
    Py_END_ALLOW_THREADS
    release_all(v, 4);
    Py_RETURN_NONE;
}

PYDDL_DOC(fixed_accumulate, "(rows, lengths, shift, skip, acc, /)",
          "acc += rint(row * 2**shift) over the float32 rows, per segment (int64).");
static PyObject *py_fixed_accumulate(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[5];
    if (!PyArg_ParseTuple(args, "OOOOO", &o[0], &o[1], &o[2], &o[3], &o[4])) return NULL;
    Py_buffer v[5];
    if (get_buffers(o, "fqqqQ", v, "fixed_accumulate") < 0) return NULL;
    int64_t nseg, n = total_of(&v[1], &nseg);
    int64_t nel = (int64_t)(v[0].len / 4);
    if ((n && nel % n) || (!n && nel) || v[2].len / 8 != nseg || v[3].len / 8 != nseg ||
        v[4].len / 8 != n) {
        release_all(v, 5);
        PyErr_SetString(PyExc_ValueError, "fixed_accumulate: the buffer sizes do not match");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_accumulate(v[0].buf, n ? nel / n : 0, n, nseg, v[1].buf, v[2].buf, v[3].buf,
                         v[4].buf);
    Py_END_ALLOW_THREADS
    release_all(v, 5);
    Py_RETURN_NONE;
}

PYDDL_DOC(fixed_to_float, "(acc, lengths, shift, bad, divisor, out, /)",
          "out = float32(acc * 2**-shift / divisor) per segment; NaN where bad.");
static PyObject *py_fixed_to_float(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[5];
    double divisor;
    if (!PyArg_ParseTuple(args, "OOOOdO", &o[0], &o[1], &o[2], &o[3], &divisor, &o[4])) return NULL;
    Py_buffer v[5];
    if (get_buffers(o, "qqqqF", v, "fixed_to_float") < 0) return NULL;
    int64_t nseg, n = total_of(&v[1], &nseg);
    if (v[0].len / 8 != n || v[2].len / 8 != nseg || v[3].len / 8 != nseg || v[4].len / 4 != n) {
        release_all(v, 5);
        PyErr_SetString(PyExc_ValueError, "fixed_to_float: the buffer sizes do not match");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_to_float(v[0].buf, n, nseg, v[1].buf, v[2].buf, v[3].buf, divisor, v[4].buf);
    Py_END_ALLOW_THREADS
    release_all(v, 5);
    Py_RETURN_NONE;
}

PYDDL_DOC(
    fixed_pack, "(acc, bias, words, /)",
    "Two biased 32-bit lanes per int64 word: words[j] = acc[2j] + b | (acc[2j+1] + b) << 32.");
static PyObject *py_fixed_pack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[2];
    long long bias;
    if (!PyArg_ParseTuple(args, "OLO", &o[0], &bias, &o[1])) return NULL;
    Py_buffer v[2];
    if (get_buffers(o, "qQ", v, "fixed_pack") < 0) return NULL;
    int64_t n = (int64_t)(v[0].len / 8);
    if (v[1].len / 8 != (n + 1) / 2 || bias < 0 || bias >= (1LL << 31)) {
        release_all(v, 2);
        PyErr_SetString(PyExc_ValueError, "fixed_pack: bad sizes or bias");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_pack(v[0].buf, n, bias, v[1].buf);
    Py_END_ALLOW_THREADS
    release_all(v, 2);
    Py_RETURN_NONE;
}

PYDDL_DOC(fixed_unpack, "(words, total_bias, acc, /)",
          "The inverse of fixed_pack after the words were summed (their biases total total_bias).");
static PyObject *py_fixed_unpack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[2];
    long long bias;
    if (!PyArg_ParseTuple(args, "OLO", &o[0], &bias, &o[1])) return NULL;
    Py_buffer v[2];
    if (get_buffers(o, "qQ", v, "fixed_unpack") < 0) return NULL;
    int64_t n = (int64_t)(v[1].len / 8);
    if (v[0].len / 8 != (n + 1) / 2 || bias < 0 || bias >= (1LL << 31)) {
        release_all(v, 2);
        PyErr_SetString(PyExc_ValueError, "fixed_unpack: bad sizes or total_bias");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_unpack(v[0].buf, n, bias, v[1].buf);
    Py_END_ALLOW_THREADS
    release_all(v, 2);
    Py_RETURN_NONE;
}

/* The k float32 rows of one segment, each C-contiguous with n items (n = -1: take the first
 * row's); *ptrs and *views are malloc'ed (release with release_rows). -1 with an exception. */
static int get_rows(PyObject *seq, int64_t *n, Py_buffer **views, const float ***ptrs, int64_t *k,
                    const char *fn) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of float32 arrays");
    if (!fast) return -1;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(fast);
    *views = malloc((size_t)(m ? m : 1) * sizeof(Py_buffer));
    *ptrs = malloc((size_t)(m ? m : 1) * sizeof(float *));
    if (!*views || !*ptrs) {
        free(*views);
        free(*ptrs);
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t i = 0;
    for (; i < m; i++) {
        Py_buffer *v = &(*views)[i];
        if (!get_buffer(PySequence_Fast_GET_ITEM(fast, i), v, 4, 0, fn)) break;
        int64_t len = (int64_t)(v->len / 4);
        if (*n < 0) *n = len;
        if (len != *n) {
            PyBuffer_Release(v);
            PyErr_Format(PyExc_ValueError, "%s: row %zd has %lld values, expected %lld", fn, i,
                         (long long)len, (long long)*n);
            break;
        }
        (*ptrs)[i] = v->buf;
    }
    Py_DECREF(fast);
    if (i < m) {
        release_all(*views, (int)i);
        free(*views);
        free(*ptrs);
        return -1;
    }
    *k = (int64_t)m;
    return 0;
}

static void release_rows(Py_buffer *views, const float **ptrs, int64_t k) {
    release_all(views, (int)k);
    free(views);
    free(ptrs);
}

PYDDL_DOC(fixed_segment_exponent, "(rows, /)",
          "(E, bad) of one segment given as a sequence of equal-length float32 rows.");
static PyObject *py_fixed_segment_exponent(PyObject *Py_UNUSED(self), PyObject *rows) {
    Py_buffer *views;
    const float **ptrs;
    int64_t k, n = -1, e, bad;
    if (get_rows(rows, &n, &views, &ptrs, &k, "fixed_segment_exponent") < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_segment_exponent(&e, &bad, ptrs, k, n < 0 ? 0 : n);
    Py_END_ALLOW_THREADS
    release_rows(views, ptrs, k);
    return Py_BuildValue("LO", (long long)e, bad ? Py_True : Py_False);
}

PYDDL_DOC(fixed_quantize_sum, "(rows, shift, acc, /)",
          "acc = the sum over the float32 rows of rint(row * 2**shift) (int64, overwritten).");
static PyObject *py_fixed_quantize_sum(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *rows, *o[1];
    long long shift;
    if (!PyArg_ParseTuple(args, "OLO", &rows, &shift, &o[0])) return NULL;
    Py_buffer acc;
    if (get_buffers(o, "Q", &acc, "fixed_quantize_sum") < 0) return NULL;
    Py_buffer *views;
    const float **ptrs;
    int64_t k, n = (int64_t)(acc.len / 8);
    if (get_rows(rows, &n, &views, &ptrs, &k, "fixed_quantize_sum") < 0) {
        PyBuffer_Release(&acc);
        return NULL;
    }
    if (shift < -1100 || shift > 1100) {
        release_rows(views, ptrs, k);
        PyBuffer_Release(&acc);
        PyErr_SetString(PyExc_ValueError, "fixed_quantize_sum: shift out of range");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_quantize_sum(acc.buf, ptrs, k, n, (int64_t)shift);
    Py_END_ALLOW_THREADS
    release_rows(views, ptrs, k);
    PyBuffer_Release(&acc);
    Py_RETURN_NONE;
}

PYDDL_DOC(fixed_quantize_pack, "(rows, n, shift, bias, words, /)",
          "fixed_quantize_sum then fixed_pack of one segment of n values, in one pass.");
static PyObject *py_fixed_quantize_pack(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *rows, *o[1];
    long long n, shift, bias;
    if (!PyArg_ParseTuple(args, "OLLLO", &rows, &n, &shift, &bias, &o[0])) return NULL;
    Py_buffer words;
    if (get_buffers(o, "Q", &words, "fixed_quantize_pack") < 0) return NULL;
    if (n < 0 || words.len / 8 != (n + 1) / 2 || shift < -1100 || shift > 1100 || bias < 0 ||
        bias >= (1LL << 31)) {
        PyBuffer_Release(&words);
        PyErr_SetString(PyExc_ValueError, "fixed_quantize_pack: bad sizes, shift or bias");
        return NULL;
    }
    Py_buffer *views;
    const float **ptrs;
    int64_t k, len = (int64_t)n;
    if (get_rows(rows, &len, &views, &ptrs, &k, "fixed_quantize_pack") < 0) {
        PyBuffer_Release(&words);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_quantize_pack(words.buf, ptrs, k, len, (int64_t)shift, (int64_t)bias);
    Py_END_ALLOW_THREADS
    release_rows(views, ptrs, k);
    PyBuffer_Release(&words);
    Py_RETURN_NONE;
}

PYDDL_DOC(fixed_unpack_to_float, "(words, shift, bad, total_bias, divisor, out, /)",
          "fixed_unpack then fixed_to_float of one segment, in one pass.");
static PyObject *py_fixed_unpack_to_float(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[2];
    long long shift, bias;
    int bad;
    double divisor;
    if (!PyArg_ParseTuple(args, "OLpLdO", &o[0], &shift, &bad, &bias, &divisor, &o[1])) return NULL;
    Py_buffer v[2];
    if (get_buffers(o, "qF", v, "fixed_unpack_to_float") < 0) return NULL;
    int64_t n = (int64_t)(v[1].len / 4);
    if (v[0].len / 8 != (n + 1) / 2 || shift < -1100 || shift > 1100 || bias < 0 ||
        bias >= (1LL << 31)) {
        release_all(v, 2);
        PyErr_SetString(PyExc_ValueError, "fixed_unpack_to_float: bad sizes, shift or bias");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    ddl_fixed_unpack_to_float(v[1].buf, v[0].buf, n, (int64_t)shift, bad, (int64_t)bias, divisor);
    Py_END_ALLOW_THREADS
    release_all(v, 2);
    Py_RETURN_NONE;
}

PyMethodDef pyddl_fixed_point_functions[] = {
    PYDDL_FN(fixed_quantize_pack, METH_VARARGS), PYDDL_FN(fixed_unpack_to_float, METH_VARARGS),
    PYDDL_FN(fixed_segment_exponent, METH_O),    PYDDL_FN(fixed_quantize_sum, METH_VARARGS),
    PYDDL_FN(fixed_pack, METH_VARARGS),          PYDDL_FN(fixed_unpack, METH_VARARGS),
    PYDDL_FN(fixed_exponents, METH_VARARGS),     PYDDL_FN(fixed_accumulate, METH_VARARGS),
    PYDDL_FN(fixed_to_float, METH_VARARGS),      PYDDL_FN_END,
};
