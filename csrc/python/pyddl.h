/* pyddl.h: shared declarations of the CPython binding (the only code that sees Python.h). */
#ifndef DDL_PYDDL_H
#define DDL_PYDDL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ddl/ddl.h"

/* The C base of ddl.Tensor: owns one reference to a ddl_tensor. */
typedef struct {
    PyObject_HEAD
    ddl_tensor *t;
    PyObject *weakrefs;
} PyTensor;

extern PyTypeObject PyTensor_Type;
/* The class C hands results out as (ddl.Tensor, registered at import). */
extern PyTypeObject *pyddl_tensor_class;

#define PyTensor_Check(o) PyObject_TypeCheck((o), &PyTensor_Type)

/* Wrap a new reference to t (stolen) in a ddl.Tensor; NULL with an exception on failure. */
PyObject *pyddl_wrap(ddl_tensor *t);
/* Raise the Python exception for status st with ddl's thread-local message; returns NULL. */
PyObject *pyddl_raise(ddl_status st);
/* A new reference to the ddl_tensor behind o: a Tensor, or any buffer (NumPy array, zero-copy
 * when its dtype is supported). `who` names the caller in errors. */
int pyddl_as_tensor(PyObject *o, ddl_tensor **out, const char *who);
/* A 0-d int64 tensor holding the Python int o exactly (a double loses integers above 2^53). */
int pyddl_int64_scalar(PyObject *o, ddl_tensor **out);
/* A zero-copy tensor over o's buffer. */
int pyddl_from_buffer(PyObject *o, ddl_tensor **out, int writable_required);
/* Parse a sequence of ints into shape; returns ndim or -1 with an exception. */
int pyddl_parse_shape(PyObject *seq, int64_t *shape, const char *who);
/* Parse a dtype code (an int from ddl.dtype). */
int pyddl_parse_dtype(PyObject *o, ddl_dtype *dt);

/* -1 with a RuntimeError when t requires grad and grad mode is on (in-place would corrupt the
 * autograd graph). */
int pyddl_check_inplace(const ddl_tensor *t, const char *who);

/* Work above this many bytes runs with the GIL released. */
#define PYDDL_NOGIL_BYTES (16 * 1024)

/* Call EXPR (a ddl_status expression) with the GIL released when `big` is true. */
#define PYDDL_CALL(st, big, EXPR)                                                                \
    do {                                                                                         \
        if (big) {                                                                               \
            Py_BEGIN_ALLOW_THREADS st = (EXPR);                                                  \
            Py_END_ALLOW_THREADS                                                                 \
        } else {                                                                                 \
            st = (EXPR);                                                                         \
        }                                                                                        \
    } while (0)

extern PyMethodDef pyddl_tensor_functions[];
extern PyMethodDef pyddl_op_functions[];
extern PyMethodDef pyddl_autograd_functions[];
extern PyMethodDef pyddl_nn_functions[];
extern PyMethodDef pyddl_optim_functions[];
extern PyMethodDef pyddl_data_functions[];
extern PyMethodDef pyddl_comm_functions[];
extern PyMethodDef pyddl_reducer_functions[];
extern PyMethodDef pyddl_store_functions[];
extern PyMethodDef pyddl_ml_functions[];

#endif
