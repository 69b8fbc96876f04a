"""Tensor creation, random numbers and the function forms of the ops (ddl.exp(t), ...)."""
import builtins
import numbers

import numpy as np

from . import _C, _device, _random
from ._dtype import float32, float64, from_numpy_dtype, int64, to_dtype
from ._tensor import (
    ABS,
    ADD,
    DIV,
    EXP,
    LOG,
    MAXIMUM,
    MINIMUM,
    MUL,
    NEG,
    POW,
    RELU,
    SIGMOID,
    SIGN,
    SQRT,
    SUB,
    TANH,
    Tensor,
    _from_array_copy,
    _shape_args,
)

__all__ = [
    "abs", "add", "allclose", "arange", "argmax", "argmin", "as_tensor", "cat", "clamp", "clip",
    "concat", "div", "empty", "empty_like", "exp", "eye", "flatten", "from_numpy", "full",
    "full_like", "get_rng_state", "initial_seed", "is_tensor", "linspace", "log", "manual_seed",
    "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "neg", "numel", "ones",
    "ones_like", "permute", "pow", "prod", "rand", "rand_like", "randint", "randn", "randn_like",
    "relu", "reshape", "seed", "set_rng_state", "sigmoid", "sign", "sqrt", "squeeze", "stack",
    "std", "sub", "sum", "tanh", "tensor", "transpose", "unsqueeze", "var", "where", "zeros",
    "zeros_like",
]


# ---- creation -----------------------------------------------------------------------------


def _default_dtype(a):
    """PyTorch's inference for Python data: floats -> float32, ints -> int64, bools -> bool."""
    return from_numpy_dtype(a.dtype) if a.dtype != np.float64 else float32


def tensor(data, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new tensor holding a copy of `data` (nested lists, scalars, arrays or tensors).

    Python floats become float32, ints int64, as in PyTorch; a NumPy array keeps its dtype.
    """
    _device.check(device, "tensor")
    t = _tensor_copy(data, dtype)
    return t.requires_grad_() if requires_grad else t


def _tensor_copy(data, dtype):
    if isinstance(data, Tensor):
        t = data.clone()
        return t if dtype is None else t.to(dtype)
    if isinstance(data, (np.ndarray, np.generic)):  # NumPy scalars keep their dtype too
        a = np.asarray(data)
        dt = to_dtype(dtype) or from_numpy_dtype(a.dtype)
    else:
        try:
            a = np.asarray(data)
        except ValueError as e:  # ragged nesting: not a sequence of numbers of equal lengths
            raise TypeError(f"tensor(): cannot build a tensor from this data: {e}") from None
        if a.dtype == object:
            raise TypeError("tensor(): data must be numbers or nested sequences of numbers of "
                            f"equal lengths, got {type(data).__name__} holding objects")
        dt = to_dtype(dtype) or _default_dtype(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"tensor(): unsupported data of dtype {a.dtype}")
    if a.dtype.kind == "u" and dt is int64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise OverflowError("tensor(): a value does not fit in int64")  # not a silent wrap
    t = _from_array_copy(a.astype(dt.numpy, copy=False))
    return t.to(dt) if t.dtype is not dt else t  # bfloat16: through float32


def from_numpy(array):
    """A tensor sharing memory with a NumPy array (float32/float64/int64/bool), zero-copy.

    The array stays alive as long as the tensor (or any view of it) does.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): expected a numpy.ndarray, got {type(array).__name__}")
    return _C.from_buffer(array)


def as_tensor(data, dtype=None, device=None):
    """Share memory with `data` when it is a tensor or a supported array, else copy."""
    _device.check(device, "as_tensor")
    dt = to_dtype(dtype)
    if isinstance(data, Tensor):
        return data if dt is None else data.to(dt)
    if isinstance(data, np.ndarray) and data.dtype in (np.float32, np.float64, np.int64,
                                                       np.bool_):
        t = _C.from_buffer(data)
        return t if dt is None else t.to(dt)
    return tensor(data, dtype=dtype)


def is_tensor(obj):
    return isinstance(obj, Tensor)


_FACTORY_KW = ("layout", "pin_memory", "memory_format", "out")


def _made(t, device, requires_grad, kw, name):
    """A factory's common keywords: device= is checked (CPU, or cuda under DDL_CUDA_AS_CPU),
    requires_grad= sets the flag, PyTorch's layout/pin_memory are accepted and change nothing."""
    for k, v in kw.items():
        if k not in _FACTORY_KW:
            raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
        if k == "out" and v is not None:
            raise TypeError(f"{name}(): out= is not supported")
    _device.check(device, name)
    return t.requires_grad_() if requires_grad else t


def _dt(dtype, default=float32):
    return (to_dtype(dtype) or default).code


def empty(*shape, dtype=None, device=None, requires_grad=False, **kw):
    return _made(_C.full(_shape_args(shape), None, _dt(dtype)), device, requires_grad, kw, "empty")


def zeros(*shape, dtype=None, device=None, requires_grad=False, **kw):
    return _made(_C.full(_shape_args(shape), 0.0, _dt(dtype)), device, requires_grad, kw, "zeros")


def ones(*shape, dtype=None, device=None, requires_grad=False, **kw):
    return _made(_C.full(_shape_args(shape), 1.0, _dt(dtype)), device, requires_grad, kw, "ones")


def full(shape, fill_value, dtype=None, device=None, requires_grad=False, **kw):
    if dtype is None:
        dtype = (builtins.bool if isinstance(fill_value, builtins.bool)
                 else int64 if isinstance(fill_value, numbers.Integral) else float32)
    t = _C.full(tuple(shape) if not isinstance(shape, int) else (shape,), fill_value, _dt(dtype))
    return _made(t, device, requires_grad, kw, "full")


def empty_like(t, dtype=None, device=None, requires_grad=False, **kw):
    return empty(t.shape, dtype=dtype or t.dtype, device=device, requires_grad=requires_grad, **kw)


def zeros_like(t, dtype=None, device=None, requires_grad=False, **kw):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device, requires_grad=requires_grad, **kw)


def ones_like(t, dtype=None, device=None, requires_grad=False, **kw):
    return ones(t.shape, dtype=dtype or t.dtype, device=device, requires_grad=requires_grad, **kw)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False, **kw):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device,
                requires_grad=requires_grad, **kw)


def rand_like(t, dtype=None, device=None, requires_grad=False, **kw):
    return rand(t.shape, dtype=dtype or t.dtype, device=device, requires_grad=requires_grad, **kw)


def randn_like(t, dtype=None, device=None, requires_grad=False, **kw):
    return randn(t.shape, dtype=dtype or t.dtype, device=device, requires_grad=requires_grad, **kw)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False, **kw):
    """Values start, start+step, ... < end; int64 when all arguments are ints, else float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        ints = builtins.all(isinstance(v, numbers.Integral) for v in (start, end, step))
        dtype = int64 if ints else float32
    return _made(_C.arange(float(start), float(end), float(step), _dt(dtype)), device,
                 requires_grad, kw, "arange")


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False, **kw):
    return _made(_C.linspace(float(start), float(end), int(steps), _dt(dtype)), device,
                 requires_grad, kw, "linspace")


def eye(n, m=None, dtype=None, device=None, requires_grad=False, **kw):
    return _made(_C.eye(int(n), -1 if m is None else int(m), _dt(dtype)), device,
                 requires_grad, kw, "eye")


# ---- random numbers (counter-based Philox: same seed, same numbers, any machine) ----------


def rand(*shape, dtype=None, device=None, requires_grad=False, generator=None, **kw):
    """Uniform on [0, 1)."""
    t = _random.draw(generator, _C.random, "u", _shape_args(shape), _dt(dtype))
    return _made(t, device, requires_grad, kw, "rand")


def randn(*shape, dtype=None, device=None, requires_grad=False, generator=None, **kw):
    """Standard normal."""
    t = _random.draw(generator, _C.random, "n", _shape_args(shape), _dt(dtype))
    return _made(t, device, requires_grad, kw, "randn")


def randint(low, high=None, size=(), dtype=None, device=None, requires_grad=False,
            generator=None, **kw):
    """int64 uniform on [low, high); randint(high, size) starts at 0, as in PyTorch."""
    if high is None:
        low, high = 0, low
    if isinstance(size, int):
        size = (size,)
    t = _random.draw(generator, _C.random, "i", tuple(size), int64.code, int(low), int(high))
    return _made(t if dtype is None else t.to(dtype), device, requires_grad, kw, "randint")


def manual_seed(seed):
    """Seed the global generator; returns ddl.default_generator, as PyTorch does."""
    _C.manual_seed(int(seed) & (2**64 - 1))
    return _random.default_generator


def seed():
    """Seed from the OS's entropy; returns the seed."""
    import os

    s = int.from_bytes(os.urandom(8), "little")
    _C.manual_seed(s)
    return s


def initial_seed():
    return _C.initial_seed()


def get_rng_state():
    """The generator's state as a (seed, offset) tuple; set_rng_state restores it."""
    return _C.rng_state()


def set_rng_state(state):
    _C.rng_state(int(state[0]), int(state[1]))


# ---- ops as functions ---------------------------------------------------------------------


def cat(tensors, dim=0):
    return _C.join("cat", list(tensors), dim)


concat = cat


def stack(tensors, dim=0):
    return _C.join("stack", list(tensors), dim)


def where(condition, input, other):
    cond = condition if isinstance(condition, Tensor) else as_tensor(condition, "bool")
    a = input if not isinstance(input, numbers.Number) else full((), input)
    b = other if not isinstance(other, numbers.Number) else full((), other)
    if isinstance(input, float) and isinstance(b, Tensor):
        a = full((), input, dtype=b.dtype if b.dtype.is_floating_point else float32)
    if isinstance(other, float) and isinstance(a, Tensor):
        b = full((), other, dtype=a.dtype if a.dtype.is_floating_point else float32)
    return _C.where(cond.to("bool"), a, b)


def matmul(a, b):
    return _C.matmul(a, b)


def _binary_fn(op):
    def f(a, b):
        return _C.binary(op, a, b)

    return f


def _unary_fn(op):
    def f(a):
        return _C.unary(op, a)

    return f


add, sub, mul, div, pow = (_binary_fn(o) for o in (ADD, SUB, MUL, DIV, POW))
maximum, minimum = _binary_fn(MAXIMUM), _binary_fn(MINIMUM)
neg, exp, log, sqrt, abs, tanh, sigmoid, relu, sign = (
    _unary_fn(o) for o in (NEG, EXP, LOG, SQRT, ABS, TANH, SIGMOID, RELU, SIGN))
for _name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "neg", "exp", "log",
              "sqrt", "abs", "tanh", "sigmoid", "relu", "sign"):
    globals()[_name].__name__ = _name
    globals()[_name].__qualname__ = _name


def _t(x):
    return x if isinstance(x, Tensor) else as_tensor(x)


def clamp(input, min=None, max=None):
    return _t(input).clamp(min, max)


clip = clamp


def sum(input, dim=None, keepdim=False):
    return _t(input).sum(dim, keepdim)


def mean(input, dim=None, keepdim=False):
    return _t(input).mean(dim, keepdim)


def prod(input, dim=None, keepdim=False):
    return _t(input).prod(dim, keepdim)


def max(input, dim=None, keepdim=False):
    return _t(input).max(dim, keepdim)


def min(input, dim=None, keepdim=False):
    return _t(input).min(dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    return _t(input).argmax(dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return _t(input).argmin(dim, keepdim)


def var(input, dim=None, keepdim=False, *, unbiased=None, correction=None):
    return _t(input).var(dim, keepdim, unbiased=unbiased, correction=correction)


def std(input, dim=None, keepdim=False, *, unbiased=None, correction=None):
    return _t(input).std(dim, keepdim, unbiased=unbiased, correction=correction)


def reshape(input, shape):
    return _t(input).reshape(shape)


def transpose(input, dim0, dim1):
    return _t(input).transpose(dim0, dim1)


def permute(input, dims):
    return _t(input).permute(dims)


def squeeze(input, dim=None):
    return _t(input).squeeze(dim)


def unsqueeze(input, dim):
    return _t(input).unsqueeze(dim)


def flatten(input, start_dim=0, end_dim=-1):
    return _t(input).flatten(start_dim, end_dim)


def numel(input):
    return _t(input).numel()


def allclose(a, b, rtol=1e-5, atol=1e-8):
    return builtins.bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol))


# ---- the PyTorch surface: function forms of ddl/_surface.py's methods, randperm, ... --------


def _method_fn(name):
    def f(input, *args, **kwargs):
        return getattr(_t(input), name)(*args, **kwargs)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"ddl.{name}(input, ...) is input.{name}(...)."
    return f


_SURFACE_FNS = ("gather", "index_select", "scatter", "scatter_add", "masked_fill", "sort",
                "argsort", "topk", "cumsum", "narrow", "split", "chunk", "tensor_split",
                "unbind", "flip", "mm", "bmm", "addcmul", "addcdiv", "lerp", "softmax",
                "log_softmax", "sin", "cos", "square", "rsqrt", "reciprocal", "isnan", "isinf",
                "isfinite", "logical_not", "equal")
for _name in _SURFACE_FNS:
    globals()[_name] = _method_fn(_name)
__all__.extend(_SURFACE_FNS)
__all__ += ["bernoulli", "count_nonzero", "einsum", "eq", "ge", "gt", "inference_mode",
            "is_inference_mode_enabled", "isclose", "le", "logical_and", "logical_or", "lt",
            "multinomial", "ne", "normal", "randperm"]

from ._surface import einsum
from ._surface_more import FUNCTIONS as _MORE_FNS
from ._surface_more import Size

for _name in _MORE_FNS:
    globals()[_name] = _method_fn(_name)
__all__.extend(_MORE_FNS)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    p = _C.matmul(mat1, mat2)
    return (input if beta == 1 else input * beta) + (p if alpha == 1 else p * alpha)


def any(input, dim=None, keepdim=False):
    return _t(input).any(dim, keepdim)


def all(input, dim=None, keepdim=False):
    return _t(input).all(dim, keepdim)


def t(input):
    return _t(input).t()


def clone(input):
    return _t(input).clone()


def detach(input):
    return _t(input).detach()


def amax(input, dim=None, keepdim=False):
    return _t(input).amax(dim, keepdim)


def amin(input, dim=None, keepdim=False):
    return _t(input).amin(dim, keepdim)


def broadcast_to(input, shape):
    return _t(input).expand(*shape)


def meshgrid(*tensors, indexing="ij"):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', got {indexing!r}")
    ts = list(tensors)
    if indexing == "xy" and len(ts) >= 2:
        ts[0], ts[1] = ts[1], ts[0]
    shape = tuple(x.numel() for x in ts)
    out = []
    for i, x in enumerate(ts):
        view = [1] * len(ts)
        view[i] = x.numel()
        out.append(x.reshape(*view).expand(*shape))
    if indexing == "xy" and len(out) >= 2:
        out = [o.transpose(0, 1) for o in out]
        out[0], out[1] = out[1], out[0]
    return tuple(out)


def std_mean(input, dim=None, keepdim=False, *, correction=1):
    x = _t(input)
    return x.std(dim, keepdim, correction=correction), x.mean(dim, keepdim)


def var_mean(input, dim=None, keepdim=False, *, correction=1):
    x = _t(input)
    return x.var(dim, keepdim, correction=correction), x.mean(dim, keepdim)


def randint_like(input, low=0, high=None, dtype=None, **kw):
    if high is None:
        low, high = 0, low
    return randint(low, high, tuple(_t(input).shape), dtype=dtype or _t(input).dtype, **kw)


def hypot(a, b):
    return (a * a + b * b).sqrt()


__all__ += ["Size", "addmm", "all", "amax", "amin", "any", "broadcast_to", "clone",
            "detach", "hypot", "meshgrid", "randint_like", "std_mean", "t", "var_mean"]


def _cmp_fn(name):
    def f(input, other):
        return getattr(_t(input), name)(other)

    f.__name__ = f.__qualname__ = name
    return f


eq, ne, lt, le, gt, ge = (_cmp_fn(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))


def logical_and(a, b):
    return _C.from_buffer(np.logical_and(np.asarray(_t(a)), np.asarray(_t(b))))


def logical_or(a, b):
    return _C.from_buffer(np.logical_or(np.asarray(_t(a)), np.asarray(_t(b))))


def isclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
    return _C.from_buffer(np.isclose(np.asarray(_t(a)), np.asarray(_t(b)), rtol=rtol, atol=atol,
                                     equal_nan=equal_nan))


def count_nonzero(input, dim=None):
    return _C.from_buffer(np.asarray(np.count_nonzero(np.asarray(_t(input)), axis=dim),
                                     dtype=np.int64))


def randperm(n, dtype=None, device=None, requires_grad=False, generator=None, **kw):
    """A random permutation of 0..n-1 (int64) from ddl's generator (or `generator`)."""
    keys = _random.draw(generator, _C.random, "u", (int(n),), float64_code())
    t = _C.from_buffer(np.argsort(keys.numpy(), kind="stable").astype(np.int64))
    return _made(t if dtype is None else t.to(dtype), device, requires_grad, kw, "randperm")


def float64_code():
    return _C.FLOAT64


def multinomial(input, num_samples, replacement=False, generator=None):
    """Indices drawn from each row of `input` (non-negative weights), as PyTorch's."""
    p = np.asarray(_t(input).detach(), dtype=np.float64)
    rows = p.reshape(1, -1) if p.ndim == 1 else p
    if p.ndim not in (1, 2):
        raise ValueError(f"multinomial: input must be 1-d or 2-d, got {p.ndim}-d")
    if (rows < 0).any() or not np.isfinite(rows).all() or (rows.sum(1) <= 0).any():
        raise ValueError("multinomial: each row must hold finite non-negative weights with a "
                         "positive sum")
    if not replacement and num_samples > (rows > 0).sum(1).min():
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement "
                         "from a row with fewer non-zero weights")
    u = _random.draw(generator, _C.random, "u", (rows.shape[0], rows.shape[1] if not
                                                 replacement else num_samples),
                     float64_code()).numpy()
    if replacement:
        cdf = np.cumsum(rows, 1)
        out = np.stack([np.minimum(np.searchsorted(c, uu * c[-1], side="right"), len(c) - 1)
                        for c, uu in zip(cdf, u)])
    else:  # Gumbel top-k: keys log(u) / w, the largest num_samples win
        with np.errstate(divide="ignore"):
            k = np.where(rows > 0, np.log(np.maximum(u, 1e-300)) / np.where(rows > 0, rows, 1),
                         -np.inf)
        out = np.argsort(-k, axis=1, kind="stable")[:, :num_samples]
    out = out.astype(np.int64)
    return _C.from_buffer(np.ascontiguousarray(out[0] if p.ndim == 1 else out))


def bernoulli(input, p=None, generator=None):
    probs = _t(input) if p is None else full(_t(input).shape, float(p), dtype=float64)
    u = _random.draw(generator, _C.random, "u", tuple(probs.shape), float64_code())
    return (u < probs.to(float64)).to(_t(input).dtype if _t(input).dtype.is_floating_point
                                      else float32)


def normal(mean, std=1.0, size=None, generator=None):
    if size is not None:
        return _random.draw(generator, _C.random, "n", tuple(size), float32.code) * std + mean
    m = _t(mean) if not isinstance(mean, numbers.Number) else None
    shape = (m if m is not None else _t(std)).shape
    return _random.draw(generator, _C.random, "n", tuple(shape), float32.code) * std + mean


from .autograd import no_grad as _no_grad


class inference_mode(_no_grad):
    """inference_mode(mode=True): as no_grad (ddl has no separate inference tensors)."""

    def __init__(self, mode=True):
        self._enabled = not mode

    def __call__(self, fn):
        if not callable(fn) or isinstance(fn, bool):
            raise TypeError("inference_mode: use as a context manager or decorator")
        mode = not self._enabled

        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(mode):
                return fn(*args, **kwargs)

        return wrapper


def is_inference_mode_enabled():
    return not _C.is_grad_enabled()
