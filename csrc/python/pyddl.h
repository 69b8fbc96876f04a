/* pyddl.h: what the files of the CPython binding share (the only code that sees Python.h).
 *
 * The files depend on each other in one direction, lowest first:
 *   tensor_type.c  the TensorBase type and pyddl_wrap
 *   convert.c      Python arguments -> ddl values: the O& converters, tensor lists, capsules,
 *                  shapes, dtypes, and the result helpers
 *   tensor.c ops.c autograd.c nn.c optim.c data.c ml.c store.c comm.c reducer.c
 *                  one file per layer of the C core: parse, borrow, drop the GIL, call one C
 *                  function, map the status
 *   constants.c    the enum values exported to Python
 *   module.c       the module: status -> exception (pyddl_raise), the method tables put together
 * Every binding function follows one rule: no math and no loops over data here; friendly
 * argument handling (defaults, keywords) lives in the ddl package. */
#ifndef DDL_PYDDL_H
#define DDL_PYDDL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ddl/ddl.h"

/* ---- the tensor type (tensor_type.c) ------------------------------------------------------ */

/* The C base of ddl.Tensor: owns one reference to a ddl_tensor. */
typedef struct {
    PyObject_HEAD ddl_tensor *t;
    PyObject *weakrefs;
} PyTensor;

extern PyTypeObject PyTensor_Type;
/* The class C hands results out as (ddl.Tensor, registered at import). */
extern PyTypeObject *pyddl_tensor_class;

#define PyTensor_Check(o) PyObject_TypeCheck((o), &PyTensor_Type)

/* Wrap a new reference to t (stolen) in a ddl.Tensor; NULL with an exception on failure. */
PyObject *pyddl_wrap(ddl_tensor *t);
/* -1 with a RuntimeError when o is a TensorBase without a tensor (never initialized). */
int pyddl_check_initialized(PyTensor *o);

/* ---- status -> exception (module.c) -------------------------------------------------------- */

/* Raise the Python exception for status st with ddl's thread-local message; returns NULL. */
PyObject *pyddl_raise(ddl_status st);

/* ---- arguments (convert.c) ------------------------------------------------------------------- */

/* O& converters for PyArg_ParseTuple. The tensor ones support cleanup: when a later argument
 * fails to parse, the reference they took is dropped. After a successful parse the caller
 * releases what they gave (pyddl_release_tensors, or the pyddl_return_* helpers below).
 *   pyddl_conv_tensor          ddl_tensor **: a new reference from a Tensor or any buffer
 *                              (a NumPy array: zero-copy when its dtype is supported)
 *   pyddl_conv_tensor_or_none  the same, None -> NULL
 *   pyddl_conv_tensor_base     ddl_tensor **: borrowed from a Tensor (arrays refused), valid
 *                              while the argument tuple lives; nothing to release
 *   pyddl_conv_index_vector    ddl_tensor **: a new reference to a contiguous 1-D int64 tensor
 *                              (a copy when the argument is not one already; TypeError for
 *                              other dtypes or shapes)
 *   pyddl_conv_dtype           ddl_dtype *: a dtype code (ddl.dtype.code)
 *   pyddl_conv_pg, _store, _work, _reducer
 *                              ddl_pg ** (etc.): borrowed from the capsule this binding made */
int pyddl_conv_tensor(PyObject *o, void *out);
int pyddl_conv_tensor_or_none(PyObject *o, void *out);
int pyddl_conv_tensor_base(PyObject *o, void *out);
int pyddl_conv_index_vector(PyObject *o, void *out);
int pyddl_conv_dtype(PyObject *o, void *out);
int pyddl_conv_pg(PyObject *o, void *out);
int pyddl_conv_store(PyObject *o, void *out);
int pyddl_conv_work(PyObject *o, void *out);
int pyddl_conv_reducer(PyObject *o, void *out);

/* Release ts[0..n) (NULL entries allowed) and set them to NULL. */
void pyddl_release_tensors(ddl_tensor **ts, int n);

/* A new reference to the ddl_tensor behind o: a Tensor, or any buffer (NumPy array, zero-copy
 * when its dtype is supported; other element types are copied). `who` names the caller in
 * errors (NULL: no name). Returns 0, or -1 with an exception. */
int pyddl_as_tensor(PyObject *o, ddl_tensor **out, const char *who);
/* Copies arrays of element types ddl does not hold (int32, float16, ...) into a new tensor: a
 * Python callable registered by ddl._tensor (_C._set_array_converter), so that the conversion
 * rules live in one place. NULL until registered. */
extern PyObject *pyddl_array_converter;
/* A zero-copy tensor over o's buffer. */
int pyddl_from_buffer(PyObject *o, ddl_tensor **out, int writable_required);
/* A 0-d int64 tensor holding the Python int o exactly (a double loses integers above 2^53). */
int pyddl_int64_scalar(PyObject *o, ddl_tensor **out);
/* Parse a sequence of ints into shape; returns ndim or -1 with an exception. */
int pyddl_parse_shape(PyObject *seq, int64_t *shape, const char *who);
/* The same for a list of dims (ints within int range). */
int pyddl_parse_dims(PyObject *seq, int *dims, const char *who);
/* Parse a dtype code (an int from ddl.dtype). */
int pyddl_parse_dtype(PyObject *o, ddl_dtype *dt);
/* -1 with a RuntimeError when t requires grad and grad mode is on (in-place would corrupt the
 * autograd graph). */
int pyddl_check_inplace(const ddl_tensor *t, const char *who);

/* A Python sequence of tensors as a C array of new references (n entries, t NULL only for an
 * absent list). Flags: */
typedef enum {
    PYDDL_LIST_OPTIONAL = 1, /* the sequence itself may be None: n = 0, t = NULL */
    PYDDL_LIST_HOLES = 2,    /* entries may be None: NULL in t */
    PYDDL_LIST_TENSORS = 4,  /* entries must be Tensors (arrays would be copied) */
    PYDDL_LIST_INPLACE = 8,  /* entries are updated in place: Tensors passing the in-place check */
} pyddl_list_flags;

typedef struct {
    ddl_tensor **t; /* (n,) or NULL */
    int n;
} pyddl_tensor_list;

/* Fill *l from seq; expect_n >= 0 demands that many entries. `who` and `name` go into errors
 * ("sgd_step: grads has 2 entries, expected 3"). Returns 0, or -1 with an exception and *l
 * empty. */
int pyddl_tensor_list_get(pyddl_tensor_list *l, PyObject *seq, int expect_n, int flags,
                          const char *who, const char *name);
/* Release the lists l[0..n) (each may be empty) and leave them empty. */
void pyddl_tensor_list_release(pyddl_tensor_list *l, int n);

/* ---- results (convert.c) ------------------------------------------------------------------- */

/* st ? the exception : pyddl_wrap(t) */
PyObject *pyddl_return_tensor(ddl_status st, ddl_tensor *t);
/* st ? the exception : None */
PyObject *pyddl_return_none(ddl_status st);
/* Release the n borrowed arguments, then pyddl_return_tensor(st, t): the end of a call that
 * borrowed its tensors with pyddl_conv_tensor. */
PyObject *pyddl_finish(ddl_status st, ddl_tensor *t, ddl_tensor **args, int n);
/* A capsule owning p (destructor runs when it goes); on failure destroy(p) runs now. */
PyObject *pyddl_capsule_new(void *p, const char *name, PyCapsule_Destructor destructor,
                            void (*destroy)(void *));
/* For capsule destructors: the pointer under `name`, or NULL (with no exception left set). */
void *pyddl_capsule_pointer(PyObject *cap, const char *name);

/* The capsule names, one place: each capsule holds the C handle named. */
#define PYDDL_PG_CAPSULE "ddl.ProcessGroup"           /* ddl_pg * */
#define PYDDL_WORK_CAPSULE "ddl.Work"                 /* ddl_work * */
#define PYDDL_STORE_CAPSULE "ddl._C.store"            /* ddl_store * */
#define PYDDL_SERVER_CAPSULE "ddl._C.tcpstore_server" /* a box holding a ddl_tcp_server * */
#define PYDDL_REDUCER_CAPSULE "ddl.Reducer"           /* ddl_reducer * (context: its pg capsule) */

/* ---- the GIL --------------------------------------------------------------------------------- */

/* Work above this many bytes runs with the GIL released. */
#define PYDDL_NOGIL_BYTES (16 * 1024)

/* st = EXPR (a ddl_status expression) with the GIL released: no Python API inside EXPR. */
#define PYDDL_NOGIL(st, EXPR)                                                                      \
    do {                                                                                           \
        Py_BEGIN_ALLOW_THREADS                                                                     \
        st = (EXPR);                                                                               \
        Py_END_ALLOW_THREADS                                                                       \
    } while (0)

/* The same when `big` is true; small work keeps the GIL (releasing costs more than it saves). */
#define PYDDL_CALL(st, big, EXPR)                                                                  \
    do {                                                                                           \
        if (big)                                                                                   \
            PYDDL_NOGIL(st, EXPR);                                                                 \
        else                                                                                       \
            st = (EXPR);                                                                           \
    } while (0)

/* ---- the module (one method table per file, put together by module.c) ------------------------ */

/* The docstring of binding function `name`, starting with its text signature so that
 * inspect.signature and the _C.pyi check (tests/test_c_stub.py) see the parameters. It stands
 * right above the function py_<name>:
 *   PYDDL_DOC(linear, "(x, w, b, /)", "x @ w.T + b");
 *   static PyObject *py_linear(PyObject *Py_UNUSED(self), PyObject *args) { ... }
 * and the file's method table lists PYDDL_FN(linear, METH_VARARGS). */
#define PYDDL_DOC(name, params, doc) PyDoc_STRVAR(name##_doc, #name params "\n--\n\n" doc)
#define PYDDL_FN(name, flags)                                                                      \
    { #name, (PyCFunction)(void (*)(void))py_##name, flags, name##_doc }
#define PYDDL_FN_END                                                                               \
    { NULL, NULL, 0, NULL }

extern PyMethodDef pyddl_tensor_functions[];
extern PyMethodDef pyddl_op_functions[];
extern PyMethodDef pyddl_autograd_functions[];
extern PyMethodDef pyddl_nn_functions[];
extern PyMethodDef pyddl_optim_functions[];
extern PyMethodDef pyddl_data_functions[];
extern PyMethodDef pyddl_ml_functions[];
extern PyMethodDef pyddl_store_functions[];
extern PyMethodDef pyddl_comm_functions[];
extern PyMethodDef pyddl_reducer_functions[];

/* Add every exported enum value (constants.c) to m; -1 with an exception on failure. */
int pyddl_add_constants(PyObject *m);

#endif
