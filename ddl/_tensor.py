"""ddl.Tensor: the Python face of the C tensor (operators, indexing, NumPy interop)."""
from typing import ClassVar

import numpy as np

from . import _C, _device, _indexing, _surface, _surface_more
from ._dtype import BY_CODE, to_dtype
from ._return_types import ValuesIndices

# op codes: ddl_binary_op / ddl_unary_op / ddl_reduce_op (csrc/include/ddl/core.h), from C
ADD, SUB, MUL, DIV, POW = _C.OP_ADD, _C.OP_SUB, _C.OP_MUL, _C.OP_DIV, _C.OP_POW
MAXIMUM, MINIMUM = _C.OP_MAXIMUM, _C.OP_MINIMUM
EQ, NE, LT, LE, GT, GE = _C.OP_EQ, _C.OP_NE, _C.OP_LT, _C.OP_LE, _C.OP_GT, _C.OP_GE
NEG, EXP, LOG, SQRT, ABS = _C.OP_NEG, _C.OP_EXP, _C.OP_LOG, _C.OP_SQRT, _C.OP_ABS
TANH, SIGMOID, RELU, SIGN = _C.OP_TANH, _C.OP_SIGMOID, _C.OP_RELU, _C.OP_SIGN
R_SUM, R_MEAN, R_MAX, R_MIN = _C.REDUCE_SUM, _C.REDUCE_MEAN, _C.REDUCE_MAX, _C.REDUCE_MIN
R_ARGMAX, R_ARGMIN = _C.REDUCE_ARGMAX, _C.REDUCE_ARGMIN
R_VAR, R_STD, R_PROD = _C.REDUCE_VAR, _C.REDUCE_STD, _C.REDUCE_PROD

_binary = _C.binary
_binary_ = _C.binary_
_unary = _C.unary


def _shape_args(shape):
    """Accept f(2, 3), f((2, 3)) and f([2, 3])."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        return tuple(shape[0])
    return shape


def _dims(dim, axis):
    if dim is None:
        dim = axis
    if dim is None:
        return None
    if isinstance(dim, (int, np.integer)):
        return (int(dim),)
    return tuple(dim)


def _check_grad_dtype(t, flag):
    if flag and t.dtype.code in (_C.FLOAT16, _C.BFLOAT16):
        raise TypeError(
            f"a {t.dtype.name} tensor can't require gradients: ddl's autograd runs in float32 "
            f"and float64; keep the parameter in float32 (t.float()) and convert copies")


class Tensor(_C.TensorBase):
    """An n-dimensional array (float32/64, float16, bfloat16, int64/32/16/8, uint8 or bool),
    backed by ddl's C core.

    Views (reshape, transpose, slicing) share memory with their base; `numpy()` and
    `ddl.from_numpy()` share memory with NumPy.
    """

    __slots__ = ()
    # NumPy defers to us in mixed expressions (ndarray + Tensor -> Tensor)
    __array_priority__ = 1000

    # ---- autograd -------------------------------------------------------------------------
    @property
    def requires_grad(self):
        return _C.requires_grad(self)

    @requires_grad.setter
    def requires_grad(self, flag):
        _check_grad_dtype(self, flag)
        _C.requires_grad(self, bool(flag))

    def requires_grad_(self, requires_grad=True):
        _check_grad_dtype(self, requires_grad)
        _C.requires_grad(self, bool(requires_grad))
        return self

    @property
    def grad(self):
        """The accumulated gradient of a leaf after backward(), or None."""
        return _C.grad(self)

    @grad.setter
    def grad(self, g):
        _C.grad(self, g)

    @property
    def grad_fn(self):
        """Name of the graph node that made this tensor ('MulBackward', ...), None for leaves."""
        return _C.grad_fn_name(self)

    @property
    def is_leaf(self):
        return _C.grad_fn_name(self) is None

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad, in C with the GIL released."""
        _C.backward(self, gradient, bool(retain_graph))

    def detach(self):
        """A tensor sharing this one's memory, cut from the graph."""
        return _C.detach(self)

    def detach_(self):
        raise RuntimeError("detach_() is not supported; use t = t.detach()")

    def register_hook(self, fn):
        """fn(grad) runs as soon as this leaf's gradient for the pass is final; a tensor it
        returns replaces the gradient. Returns a handle with .remove()."""
        from .autograd import RemovableHandle

        return RemovableHandle(_C.register_hook(self, fn), fn)

    # ---- metadata -------------------------------------------------------------------------
    @property
    def dtype(self):
        return BY_CODE[self._dtype_code]

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def stride(self, dim=None):
        return self._strides if dim is None else self._strides[dim]

    def dim(self):
        return self.ndim

    def element_size(self):
        return self.dtype.itemsize

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def is_floating_point(self):
        return self.dtype.is_floating_point

    # ---- NumPy interop ---------------------------------------------------------------------
    def numpy(self):
        """A NumPy array sharing this tensor's memory (it keeps the tensor alive).

        NumPy has no bfloat16: a bfloat16 tensor gives a float32 copy (exact), which does not
        share memory (and has no buffer: memoryview(t) raises BufferError).
        """
        if self.dtype.code == _C.BFLOAT16:
            return np.asarray(memoryview(self.float()))
        return np.asarray(memoryview(self))

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError("a dtype conversion needs a copy")
            return a.astype(dtype)
        return a.copy() if copy else a

    @property
    def __array_interface__(self):
        if self.dtype.code == _C.BFLOAT16:  # no NumPy twin: NumPy then uses __array__'s copy
            raise AttributeError("a bfloat16 tensor has no __array_interface__")
        return {
            "version": 3,
            "shape": self.shape,
            "typestr": self.dtype.numpy.str,
            "data": (self._data_ptr, False),
            "strides": tuple(s * self.dtype.itemsize for s in self._strides),
        }

    _UFUNCS: ClassVar[dict] = {
        np.add: ADD, np.subtract: SUB, np.multiply: MUL, np.true_divide: DIV, np.power: POW,
        np.maximum: MAXIMUM, np.minimum: MINIMUM, np.equal: EQ, np.not_equal: NE,
        np.less: LT, np.less_equal: LE, np.greater: GT, np.greater_equal: GE,
    }
    _UNARY_UFUNCS: ClassVar[dict] = {
        np.negative: NEG, np.exp: EXP, np.log: LOG, np.sqrt: SQRT, np.absolute: ABS,
        np.tanh: TANH, np.sign: SIGN,
    }

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # Elementwise ufuncs ddl implements return Tensors; anything else runs in NumPy.
        if method == "__call__" and not kwargs:
            if len(inputs) == 2 and ufunc in self._UFUNCS:
                return _binary(self._UFUNCS[ufunc], inputs[0], inputs[1])
            if len(inputs) == 1 and ufunc in self._UNARY_UFUNCS:
                return _unary(self._UNARY_UFUNCS[ufunc], inputs[0])
            if len(inputs) == 2 and ufunc is np.matmul:  # ndarray @ Tensor
                return _C.matmul(inputs[0], inputs[1])
        args = [np.asarray(memoryview(x)) if isinstance(x, Tensor) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(
                np.asarray(memoryview(x)) if isinstance(x, Tensor) else x for x in kwargs["out"]
            )
        return getattr(ufunc, method)(*args, **kwargs)

    # ---- conversion ------------------------------------------------------------------------
    def item(self):
        n = self.numel()
        if n != 1:
            raise ValueError(f"item(): a tensor with {n} elements cannot be converted to a scalar")
        return _C.item(self, 0)

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __bool__(self):
        n = self.numel()
        if n != 1:
            raise ValueError(
                f"the truth value of a tensor with {n} elements is ambiguous; use .any() or .all()"
            )
        return bool(self.item())

    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False,
           memory_format=None):
        """to(dtype), to(device), to(device, dtype), to(other): PyTorch's forms.

        Every tensor is on the CPU: a device argument is checked (a GPU is an error outside
        DDL_CUDA_AS_CPU, see ddl/_device.py) and changes nothing; non_blocking is accepted.
        """
        if len(args) > 2:
            raise TypeError(f"to() takes at most 2 positional arguments, got {len(args)}")
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype if dtype is None else dtype
            elif _device.is_device_like(a):
                device = a
            else:
                dtype = a
        if device is not None:
            _device.check(device, "Tensor.to")
        dt = self.dtype if dtype is None else to_dtype(dtype)
        if dt is self.dtype:
            return self.clone() if copy else self
        return _C.copy("to", self, dt.code)

    @property
    def device(self):
        """Always ddl.device("cpu")."""
        return _device.CPU

    is_cuda = False  # cpu(), cuda(), pin_memory(): ddl/_surface_more.py

    def type(self, dtype=None):
        if dtype is None:
            return {"float32": "ddl.FloatTensor", "float64": "ddl.DoubleTensor",
                    "int64": "ddl.LongTensor", "bool": "ddl.BoolTensor",
                    "int32": "ddl.IntTensor", "int16": "ddl.ShortTensor",
                    "int8": "ddl.CharTensor", "uint8": "ddl.ByteTensor",
                    "float16": "ddl.HalfTensor", "bfloat16": "ddl.BFloat16Tensor"}.get(
                        self.dtype.name, f"ddl.{self.dtype.name}")
        return self.to(dtype)

    def float(self):
        return self.to("float32")

    def double(self):
        return self.to("float64")

    def long(self):
        return self.to("int64")

    def bool(self):
        return self.to("bool")

    def int(self):
        return self.to("int32")

    def short(self):
        return self.to("int16")

    def char(self):
        return self.to("int8")

    def byte(self):
        return self.to("uint8")

    def half(self):
        return self.to("float16")

    def bfloat16(self):
        return self.to("bfloat16")

    def contiguous(self):
        return _C.copy("contiguous", self)

    def clone(self):
        return _C.copy("clone", self)

    def copy_(self, src):
        return _C.copy_(self, src)

    def fill_(self, value):
        return _C.copy_(self, value)

    def zero_(self):
        return _C.zero_(self)

    # ---- display and iteration -------------------------------------------------------------
    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        if self.dtype.name in ("float32", "int64") and self.numel() > 0:
            return f"tensor({body})"
        return f"tensor({body}, dtype={self.dtype!r})"

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.shape[0]):
            yield _C.dimop("select", self, 0, i)

    __hash__ = object.__hash__

    # ---- views -----------------------------------------------------------------------------
    def view(self, *shape):
        return _C.reshape(_C.SHAPE_VIEW, self, _shape_args(shape))

    def reshape(self, *shape):
        return _C.reshape(_C.SHAPE_RESHAPE, self, _shape_args(shape))

    def expand(self, *shape):
        shape = _shape_args(shape)
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 and i >= lead else s
                      for i, s in enumerate(shape))
        return _C.reshape(_C.SHAPE_EXPAND, self, shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    def view_as(self, other):
        return self.view(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def permute(self, *dims):
        return _C.permute(self, _shape_args(dims))

    def transpose(self, dim0, dim1):
        return _C.dimop("transpose", self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dims, got {self.ndim}")
        return self.transpose(0, -1) if self.ndim == 2 else self

    def squeeze(self, dim=None):
        return _C.dimop("squeeze", self, _C.ALL if dim is None else dim)

    def unsqueeze(self, dim):
        return _C.dimop("unsqueeze", self, dim)

    def flatten(self, start_dim=0, end_dim=-1):
        return _C.dimop("flatten", self, start_dim, end_dim)

    # ---- arithmetic ------------------------------------------------------------------------
    def __add__(self, o):
        return _binary(ADD, self, o)

    def __radd__(self, o):
        return _binary(ADD, o, self)

    def __sub__(self, o):
        return _binary(SUB, self, o)

    def __rsub__(self, o):
        return _binary(SUB, o, self)

    def __mul__(self, o):
        return _binary(MUL, self, o)

    def __rmul__(self, o):
        return _binary(MUL, o, self)

    def __truediv__(self, o):
        return _binary(DIV, self, o)

    def __rtruediv__(self, o):
        return _binary(DIV, o, self)

    def __pow__(self, o):
        return _binary(POW, self, o)

    def __rpow__(self, o):
        return _binary(POW, o, self)

    def __matmul__(self, o):
        return _C.matmul(self, o)

    def __rmatmul__(self, o):
        return _C.matmul(o, self)

    def __neg__(self):
        return _unary(NEG, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _unary(ABS, self)

    def __eq__(self, o):
        return _binary(EQ, self, o)

    def __ne__(self, o):
        return _binary(NE, self, o)

    def __lt__(self, o):
        return _binary(LT, self, o)

    def __le__(self, o):
        return _binary(LE, self, o)

    def __gt__(self, o):
        return _binary(GT, self, o)

    def __ge__(self, o):
        return _binary(GE, self, o)

    def __iadd__(self, o):
        return _binary_(ADD, self, o)

    def __isub__(self, o):
        return _binary_(SUB, self, o)

    def __imul__(self, o):
        return _binary_(MUL, self, o)

    def __itruediv__(self, o):
        return _binary_(DIV, self, o)

    def __ipow__(self, o):
        return _binary_(POW, self, o)

    def add(self, o, alpha=1):
        return _binary(ADD, self, o if alpha == 1 else _binary(MUL, o, alpha))

    def sub(self, o, alpha=1):
        return _binary(SUB, self, o if alpha == 1 else _binary(MUL, o, alpha))

    def mul(self, o):
        return _binary(MUL, self, o)

    def div(self, o):
        return _binary(DIV, self, o)

    def pow(self, o):
        return _binary(POW, self, o)

    def matmul(self, o):
        return _C.matmul(self, o)

    def maximum(self, o):
        return _binary(MAXIMUM, self, o)

    def minimum(self, o):
        return _binary(MINIMUM, self, o)

    def add_(self, o, alpha=1):
        return _binary_(ADD, self, o if alpha == 1 else _binary(MUL, o, alpha))

    def sub_(self, o, alpha=1):
        return _binary_(SUB, self, o if alpha == 1 else _binary(MUL, o, alpha))

    def mul_(self, o):
        return _binary_(MUL, self, o)

    def div_(self, o):
        return _binary_(DIV, self, o)

    def pow_(self, o):
        return _binary_(POW, self, o)

    def eq(self, o):
        return _binary(EQ, self, o)

    def ne(self, o):
        return _binary(NE, self, o)

    def lt(self, o):
        return _binary(LT, self, o)

    def le(self, o):
        return _binary(LE, self, o)

    def gt(self, o):
        return _binary(GT, self, o)

    def ge(self, o):
        return _binary(GE, self, o)

    def neg(self):
        return _unary(NEG, self)

    def exp(self):
        return _unary(EXP, self)

    def log(self):
        return _unary(LOG, self)

    def sqrt(self):
        return _unary(SQRT, self)

    def abs(self):
        return _unary(ABS, self)

    def tanh(self):
        return _unary(TANH, self)

    def sigmoid(self):
        return _unary(SIGMOID, self)

    def relu(self):
        return _unary(RELU, self)

    def sign(self):
        return _unary(SIGN, self)

    def neg_(self):
        return _unary(NEG, self, True)

    def exp_(self):
        return _unary(EXP, self, True)

    def log_(self):
        return _unary(LOG, self, True)

    def sqrt_(self):
        return _unary(SQRT, self, True)

    def abs_(self):
        return _unary(ABS, self, True)

    def tanh_(self):
        return _unary(TANH, self, True)

    def sigmoid_(self):
        return _unary(SIGMOID, self, True)

    def relu_(self):
        return _unary(RELU, self, True)

    def _clamp_input(self, min, max):
        # float bounds promote an integer tensor to float32, as a float scalar does in add
        if not self.dtype.is_floating_point and (isinstance(min, float) or
                                                 isinstance(max, float)):
            return self.float()
        return self

    def clamp(self, min=None, max=None):
        return _C.clamp(self._clamp_input(min, max), min, max)

    clip = clamp

    def clamp_(self, min=None, max=None):
        if self._clamp_input(min, max) is not self:
            raise TypeError(f"clamp_: result type float32 can't be cast to the {self.dtype.name} "
                            "tensor updated in place")
        return self.copy_(_C.clamp(self, min, max))

    # ---- reductions (PyTorch names; NumPy's axis/keepdims/out accepted for np.sum(t)) -------
    def _reduce(self, op, dim, keepdim, axis=None, keepdims=None, correction=0, out=None):
        if out is not None:
            raise TypeError("out= is not supported")
        if keepdims is not None:
            keepdim = keepdims
        return _C.reduce(op, self, _dims(dim, axis), bool(keepdim), correction)

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None, out=None):
        r = self._reduce(R_SUM, dim, keepdim, axis, keepdims, out=out)
        return r if dtype is None else r.to(dtype)

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None, out=None):
        r = self._reduce(R_MEAN, dim, keepdim, axis, keepdims, out=out)
        return r if dtype is None else r.to(dtype)

    def prod(self, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):
        return self._reduce(R_PROD, dim, keepdim, axis, keepdims, out=out)

    def _minmax(self, op, argop, dim, keepdim, axis, keepdims, out):
        if dim is None and axis is None:
            return self._reduce(op, None, keepdim, None, keepdims, out=out)
        if axis is not None or isinstance(dim, (tuple, list)):
            # NumPy style (np.max(t, axis=...)): values only
            return self._reduce(op, dim, keepdim, axis, keepdims, out=out)
        values = self._reduce(op, dim, keepdim, keepdims=keepdims, out=out)
        indices = self._reduce(argop, dim, keepdim, keepdims=keepdims)
        return ValuesIndices(values, indices)

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):
        """max() -> 0-d tensor; max(dim) -> (values, indices), as in PyTorch."""
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        return self._minmax(R_MAX, R_ARGMAX, dim, keepdim, axis, keepdims, out)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        return self._minmax(R_MIN, R_ARGMIN, dim, keepdim, axis, keepdims, out)

    def amax(self, dim=None, keepdim=False):
        return self._reduce(R_MAX, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return self._reduce(R_MIN, dim, keepdim)

    def argmax(self, dim=None, keepdim=False, *, axis=None, out=None):
        return self._reduce(R_ARGMAX, dim, keepdim, axis, out=out)

    def argmin(self, dim=None, keepdim=False, *, axis=None, out=None):
        return self._reduce(R_ARGMIN, dim, keepdim, axis, out=out)

    def var(self, dim=None, keepdim=False, *, unbiased=None, correction=None, axis=None,
            ddof=None, keepdims=None, dtype=None, out=None):
        """Variance; PyTorch's default correction=1 (unbiased). NumPy's ddof is accepted."""
        c = _correction(unbiased, correction, ddof)
        r = self._reduce(R_VAR, dim, keepdim, axis, keepdims, c, out)
        return r if dtype is None else r.to(dtype)

    def std(self, dim=None, keepdim=False, *, unbiased=None, correction=None, axis=None,
            ddof=None, keepdims=None, dtype=None, out=None):
        c = _correction(unbiased, correction, ddof)
        r = self._reduce(R_STD, dim, keepdim, axis, keepdims, c, out)
        return r if dtype is None else r.to(dtype)

    def all(self, dim=None, keepdim=False):
        return _binary(EQ, _binary(EQ, self, 0)._reduce(R_SUM, dim, keepdim), 0)

    def any(self, dim=None, keepdim=False):
        return _binary(GT, _binary(NE, self, 0)._reduce(R_SUM, dim, keepdim), 0)


def _correction(unbiased, correction, ddof):
    if correction is not None:
        return int(correction)
    if ddof is not None:
        return int(ddof)
    if unbiased is not None:
        return 1 if unbiased else 0
    return 1


def _from_array_copy(a):
    """A new tensor holding a copy of NumPy array a (converted to a ddl dtype)."""
    from ._dtype import from_numpy_dtype

    a = np.asarray(a)
    dt = from_numpy_dtype(a.dtype)
    a = np.asarray(a, dtype=dt.numpy, order="C")  # ascontiguousarray makes 0-d arrays 1-d
    t = _C.full(a.shape, None, dt.code)
    np.asarray(memoryview(t))[...] = a
    return t


_surface.install(Tensor)  # gather, sort, split, einsum's kin, .data, __format__, ...
_surface_more.install(Tensor)  # tril, norm, roll, uniform_, cpu(), ...
_indexing.install(Tensor)  # t[key] and t[key] = value
_C._set_tensor_class(Tensor)
# arrays of other dtypes (int32, float16, ...) mixed into ops are copied, converted
_C._set_array_converter(_from_array_copy)
