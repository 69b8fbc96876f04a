"""The everyday tensor surface PyTorch users reach for, built on ddl's differentiable core ops.

Each op here is a composition of ops that already carry autograd (slices, where, matmul, the
C take op -- a gather by flat position whose backward scatter-adds --, reshapes), so
gradients flow wherever PyTorch has them: gather,
index_select, advanced indexing, sort/topk values, masked_fill, cumsum, einsum, split/chunk/
unbind/narrow, lerp/addcmul/addcdiv. Index computations (argsort, scatter positions) run in
NumPy on the integer side, where there is no gradient. install(Tensor) attaches the methods.
"""
import builtins
import numbers
import string

import numpy as np

from . import _C
from ._dtype import to_dtype
from ._return_types import ValuesIndices


def _T():
    from ._tensor import Tensor

    return Tensor


def _norm_dim(dim, nd):
    n = builtins.max(nd, 1)
    if not -n <= dim < n:
        raise IndexError(f"dim {dim} is out of range for a tensor of {nd} dims")
    return dim + nd if dim < 0 else dim


def _np_index(index, name):
    T = _T()
    a = index.numpy() if isinstance(index, T) else np.asarray(index)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: index must be an integer tensor, got {a.dtype}")
    return a.astype(np.int64, copy=False)


def take_flat(x, flat, shape):
    """x.flatten()[flat].reshape(shape) through the C take op (csrc/core/ops_index.c), whose
    backward scatter-adds into x, so repeated positions accumulate."""
    flat = np.ascontiguousarray(flat, dtype=np.int64).reshape(tuple(shape))
    return _C.take(x, _C.from_buffer(flat))


def _flat_ids(shape):
    return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)


# ---- indexing: gather, index_select, advanced keys, scatter, masked_fill ------------------


def gather(self, dim, index):
    dim = _norm_dim(dim, self.ndim)
    idx = _np_index(index, "gather")
    if idx.ndim != self.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dims, input has {self.ndim}")
    n = self.shape[dim] if self.ndim else 1
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"gather: index out of range for dim {dim} of size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    ids = _flat_ids(self.shape)
    grids = list(np.indices(idx.shape, sparse=True))
    for d in range(self.ndim):
        if d != dim and idx.shape[d] > self.shape[d]:
            raise ValueError(f"gather: index size {idx.shape[d]} exceeds input size "
                             f"{self.shape[d]} in dim {d}")
    grids[dim] = idx
    return take_flat(self, ids[tuple(grids)], idx.shape)


def index_select(self, dim, index):
    dim = _norm_dim(dim, self.ndim)
    idx = _np_index(index, "index_select").reshape(-1)
    ids = np.take(_flat_ids(self.shape), idx, axis=dim) if self.ndim else _flat_ids(())
    return take_flat(self, ids, ids.shape)


def getitem_advanced(self, key):
    """Advanced (integer-array, boolean-mask) indexing: NumPy's rules, differentiable."""
    T = _T()
    if isinstance(key, tuple):
        key = tuple(k.numpy() if isinstance(k, T) else k for k in key)
    elif isinstance(key, T):
        key = key.numpy()
    elif isinstance(key, list):
        key = np.asarray(key)
    ids = _flat_ids(self.shape)[key]
    return take_flat(self, ids, ids.shape)


def _scatter_np(self, dim, index, src, reduce, name):
    dim = _norm_dim(dim, self.ndim)
    idx = _np_index(index, name)
    out = np.array(self.detach().numpy(), copy=True)
    T = _T()
    if isinstance(src, T):
        s = src.detach().numpy()
        s = s[tuple(slice(0, k) for k in idx.shape)]
    else:
        s = np.full(idx.shape, src, dtype=out.dtype)
    grids = list(np.indices(idx.shape, sparse=True))
    grids[dim] = idx
    key = tuple(np.broadcast_arrays(*grids))
    if reduce is None:
        out[key] = s
    elif reduce in ("add", "sum"):
        np.add.at(out, key, s.astype(out.dtype, copy=False))
    elif reduce in ("multiply", "prod"):
        np.multiply.at(out, key, s.astype(out.dtype, copy=False))
    else:
        raise ValueError(f"{name}: reduce must be 'add' or 'multiply', got {reduce!r}")
    return out


def scatter(self, dim, index, src=None, value=None, reduce=None):
    """A copy of self with src (a tensor or a number) written at index along dim. No gradient
    flows through scatter (ddl records none; PyTorch's does)."""
    from ._tensor import _from_array_copy

    src = value if src is None else src
    return _from_array_copy(_scatter_np(self, dim, index, src, reduce, "scatter"))


def scatter_(self, dim, index, src=None, value=None, reduce=None):
    src = value if src is None else src
    self.copy_(_C.from_buffer(_scatter_np(self, dim, index, src, reduce, "scatter_")))
    return self


def scatter_add(self, dim, index, src):
    return scatter(self, dim, index, src, reduce="add")


def scatter_add_(self, dim, index, src):
    return scatter_(self, dim, index, src, reduce="add")


def index_fill_(self, dim, index, value):
    dim = _norm_dim(dim, self.ndim)
    idx = _np_index(index, "index_fill_").reshape(-1)
    a = self.numpy()
    key = [slice(None)] * self.ndim
    key[dim] = idx
    a[tuple(key)] = value
    return self


def masked_fill(self, mask, value):
    T = _T()
    m = mask if isinstance(mask, T) else _C.from_buffer(np.asarray(mask, dtype=np.bool_))
    if m.dtype.name != "bool":
        raise TypeError(f"masked_fill: mask must be a bool tensor, got {m.dtype!r}")
    if isinstance(value, T):
        if value.numel() != 1:
            raise ValueError("masked_fill: value must be a number or a 0-d tensor")
        value = value.item()
    v = _C.full((), value, self.dtype.code)
    return _C.where(m, v, self)


def masked_fill_(self, mask, value):
    _C.copy_(self, masked_fill(self.detach(), mask, value))
    return self


def where_method(self, condition, other):
    from ._functions import where

    return where(condition, self, other)


# ---- sort, topk, cumsum ---------------------------------------------------------------------


def _sorted_by(self, order, dim):
    from ._tensor import _from_array_copy

    ids = np.take_along_axis(_flat_ids(self.shape), order, axis=dim)
    return ValuesIndices(take_flat(self, ids, ids.shape), _from_array_copy(order))


def sort(self, dim=-1, descending=False, stable=False):
    if self.ndim == 0:
        return ValuesIndices(self.clone(), _C.full((), 0, _C.INT64))
    dim = _norm_dim(dim, self.ndim)
    a = self.detach().numpy()
    # NumPy sorts NaN last ascending, as PyTorch does; descending puts NaN first (as PyTorch)
    order = np.argsort(-a if descending and a.dtype.kind != "b" else a, axis=dim, kind="stable")
    if descending and a.dtype.kind == "b":
        order = np.argsort(~a, axis=dim, kind="stable")
    if descending and a.dtype.kind == "f":
        nan = np.isnan(np.take_along_axis(a, order, axis=dim))
        order = np.take_along_axis(order, np.argsort(~nan, axis=dim, kind="stable"), axis=dim)
    return _sorted_by(self, order, dim)


def argsort(self, dim=-1, descending=False, stable=False):
    return sort(self, dim, descending, stable)[1]


def topk(self, k, dim=-1, largest=True, sorted=True):
    if self.ndim == 0:
        return sort(self)
    dim = _norm_dim(dim, self.ndim)
    n = self.shape[dim]
    if not 0 <= k <= n:
        raise ValueError(f"topk: k={k} is out of range for dim {dim} of size {n}")
    order = sort(self.detach(), dim, descending=largest, stable=True)[1].numpy()
    order = np.take(order, np.arange(k), axis=dim)
    return _sorted_by(self, order, dim)


def cumsum(self, dim, dtype=None):
    x = self if dtype is None else self.to(dtype)
    dim = _norm_dim(dim, x.ndim)
    if not x.dtype.is_floating_point:
        if x.dtype.name == "bool":
            x = x.long()
        return _C.from_buffer(np.cumsum(x.numpy(), axis=dim) if x.ndim else x.numpy().copy())
    if x.ndim == 0:
        return x.clone()
    if not x.requires_grad and _C.grad_fn_name(x) is None:
        return _C.from_buffer(np.cumsum(x.numpy(), axis=dim, dtype=x.dtype.numpy))
    n = x.shape[dim]
    tri = _C.from_buffer(np.triu(np.ones((n, n), dtype=x.dtype.numpy)))  # tri[i, j] = i <= j
    y = x.transpose(dim, -1) @ tri
    return y.transpose(dim, -1)


def cumsum_(self, dim, dtype=None):
    return self.copy_(cumsum(self.detach(), dim, dtype))


# ---- splitting and views ----------------------------------------------------------------------


def narrow(self, dim, start, length):
    dim = _norm_dim(dim, self.ndim)
    start = int(start)
    if start < 0:
        start += self.shape[dim]
    if not (0 <= start and length >= 0 and start + length <= self.shape[dim]):
        raise IndexError(f"narrow: [{start}, {start + length}) is out of range for dim {dim} "
                         f"of size {self.shape[dim]}")
    return _C.slice(self, dim, start, start + int(length), 1)


def split(self, split_size_or_sections, dim=0):
    dim = _norm_dim(dim, self.ndim)
    n = self.shape[dim]
    if isinstance(split_size_or_sections, numbers.Integral):
        s = int(split_size_or_sections)
        if s <= 0:
            raise ValueError(f"split: split_size must be positive, got {s}")
        sizes = [builtins.min(s, n - i) for i in range(0, n, s)] or [0]
    else:
        sizes = [int(v) for v in split_size_or_sections]
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not sum to dim {dim}'s size {n}")
    out, start = [], 0
    for s in sizes:
        out.append(_C.slice(self, dim, start, start + s, 1))
        start += s
    return tuple(out)


def chunk(self, chunks, dim=0):
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = self.shape[_norm_dim(dim, self.ndim)]
    return split(self, builtins.max(1, -(-n // chunks)), dim)


def tensor_split(self, sections, dim=0):
    n = self.shape[_norm_dim(dim, self.ndim)]
    q, r = divmod(n, sections)
    return split(self, [q + 1] * r + [q] * (sections - r), dim)


def unbind(self, dim=0):
    dim = _norm_dim(dim, self.ndim)
    return tuple(_C.dimop("select", self, dim, i) for i in range(self.shape[dim]))


def repeat(self, *sizes):
    from ._tensor import _shape_args

    sizes = tuple(_shape_args(sizes))
    if len(sizes) < self.ndim:
        raise ValueError("repeat: give at least as many sizes as the tensor has dims")
    x = self.reshape((1,) * (len(sizes) - self.ndim) + tuple(self.shape))
    for d, r in enumerate(sizes):
        if r != 1:
            from ._functions import cat

            x = cat([x] * r, d)
    return x


def flip(self, dims):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    key = [slice(None)] * self.ndim
    for d in dims:
        key[_norm_dim(d, self.ndim)] = slice(None, None, -1)
    ids = _flat_ids(self.shape)[tuple(key)]
    return take_flat(self, ids, ids.shape)


def mm(self, other):
    if self.ndim != 2 or other.ndim != 2:
        raise ValueError(f"mm: expected 2-d tensors, got {self.ndim}-d and {other.ndim}-d")
    return _C.matmul(self, other)


def bmm(self, other):
    if self.ndim != 3 or other.ndim != 3:
        raise ValueError(f"bmm: expected 3-d tensors, got {self.ndim}-d and {other.ndim}-d")
    return _C.matmul(self, other)


# ---- arithmetic the optimizers and scripts call -----------------------------------------------


def addcmul(self, tensor1, tensor2, value=1):
    return self + (tensor1 * tensor2) * value if value != 1 else self + tensor1 * tensor2


def addcmul_(self, tensor1, tensor2, value=1):
    return self.add_(tensor1 * tensor2 * value if value != 1 else tensor1 * tensor2)


def addcdiv(self, tensor1, tensor2, value=1):
    return self + (tensor1 / tensor2) * value if value != 1 else self + tensor1 / tensor2


def addcdiv_(self, tensor1, tensor2, value=1):
    return self.add_(tensor1 / tensor2 * value if value != 1 else tensor1 / tensor2)


def lerp(self, end, weight):
    return self + (end - self) * weight


def lerp_(self, end, weight):
    return self.add_((end - self) * weight)


def type_as(self, other):
    return self.to(other.dtype)


def _softmax64(x, dim, log):
    # float64 (the C softmax kernel is float32): composed of differentiable ops
    z = x - x.detach().amax(dim, keepdim=True)
    lse = z.exp().sum(dim, keepdim=True).log()
    return z - lse if log else (z - lse).exp()


def softmax(self, dim, dtype=None):
    from .nn.functional import softmax as f

    x = self if dtype is None else self.to(dtype)
    return f(x, dim) if x.dtype.name == "float32" else _softmax64(x, dim, False)


def log_softmax(self, dim, dtype=None):
    from .nn.functional import log_softmax as f

    x = self if dtype is None else self.to(dtype)
    return f(x, dim) if x.dtype.name == "float32" else _softmax64(x, dim, True)


def _new(fill):
    def f(self, *size, dtype=None, device=None, requires_grad=False, **kw):
        from . import _functions as F
        from ._tensor import _shape_args

        dt = to_dtype(dtype) or self.dtype
        shape = _shape_args(size)
        if fill is None:
            return F.empty(shape, dtype=dt, device=device, requires_grad=requires_grad, **kw)
        return F.full(shape, fill, dtype=dt, device=device, requires_grad=requires_grad, **kw)

    return f


new_zeros, new_ones, new_empty = _new(0), _new(1), _new(None)


def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    from . import _functions as F

    return F.full(tuple(size), fill_value, dtype=to_dtype(dtype) or self.dtype, device=device,
                  requires_grad=requires_grad)


def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    from . import _functions as F

    return F.tensor(data, dtype=dtype or self.dtype, device=device, requires_grad=requires_grad)


def _unary(op):
    def f(self):
        return _C.unary(op, self)

    def f_(self):
        return _C.unary(op, self, True)

    return f, f_


sin, sin_ = _unary(_C.OP_SIN)
cos, cos_ = _unary(_C.OP_COS)


def square(self):
    return self * self


def rsqrt(self):
    return 1.0 / self.sqrt()


def reciprocal(self):
    return 1.0 / self


def _np_pred(fn):
    def f(self):
        return _C.from_buffer(np.ascontiguousarray(fn(self.detach().numpy())))

    return f


isnan = _np_pred(np.isnan)
isinf = _np_pred(np.isinf)
isfinite = _np_pred(np.isfinite)
logical_not = _np_pred(np.logical_not)


def equal(self, other):
    return tuple(self.shape) == tuple(other.shape) and builtins.bool(
        np.array_equal(self.detach().numpy(), other.detach().numpy()))


def __format__(self, spec):
    if self.numel() == 1:
        return format(self.item(), spec)
    if not spec:
        return repr(self)
    raise TypeError(f"unsupported format string {spec!r} for a tensor of {self.numel()} "
                    "elements (format a single element, or t.tolist())")


def _data_get(self):
    """A detached tensor sharing this one's storage (PyTorch's .data)."""
    return _C.detach(self)


def _data_set(self, value):
    if tuple(value.shape) != tuple(self.shape):
        raise ValueError(f"t.data = x: ddl copies x into t's storage, so shapes must match "
                         f"({tuple(value.shape)} vs {tuple(self.shape)})")
    _C.copy_(_C.detach(self), value.to(self.dtype))


# ---- einsum (the common patterns: one or two operands, no repeated letters in one operand) ----


def einsum(equation, *operands):
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    eq = equation.replace(" ", "")
    if "..." in eq:
        raise NotImplementedError("einsum: '...' (ellipsis) is not supported; name the dims")
    lhs, arrow, out = eq.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(operands):
        raise ValueError(f"einsum: {len(ins)} operand specs for {len(operands)} operands")
    for s, t in zip(ins, operands):
        if len(s) != t.ndim:
            raise ValueError(f"einsum: {s!r} names {len(s)} dims of a {t.ndim}-d operand")
        if len(set(s)) != len(s):
            raise NotImplementedError(f"einsum: repeated letters in {s!r} (diagonals) are not "
                                      "supported")
    if not arrow:
        counts = {c: lhs.count(c) for c in lhs if c in string.ascii_letters}
        out = "".join(sorted(c for c, k in counts.items() if k == 1))
    if len(operands) == 1:
        return _einsum1(ins[0], operands[0], out)
    if len(operands) > 2:  # left to right, keeping the letters still needed later
        x, spec = operands[0], ins[0]
        for i in range(1, len(operands)):
            later = out + "".join(ins[i + 1:])
            keep = "".join(dict.fromkeys(c for c in spec + ins[i] if c in later))
            x, spec = _einsum2(spec, x, ins[i], operands[i], keep), keep
        return _einsum1(spec, x, out)
    return _einsum2(ins[0], operands[0], ins[1], operands[1], out)


def _einsum1(s, t, out):
    drop = [i for i, c in enumerate(s) if c not in out]
    if drop:
        t = t.sum(tuple(drop))
        s = "".join(c for c in s if c in out)
    if len(out) != len(s):
        raise ValueError(f"einsum: output letters {out!r} not all in the inputs")
    return t.permute(*[s.index(c) for c in out]) if s != out else t


def _einsum2(a_s, a, b_s, b, out):
    # letters only in one operand and not in the output are summed out first
    a_only = [c for c in a_s if c not in b_s and c not in out]
    if a_only:
        a, a_s = _einsum1(a_s, a, "".join(c for c in a_s if c not in a_only)), \
            "".join(c for c in a_s if c not in a_only)
    b_only = [c for c in b_s if c not in a_s and c not in out]
    if b_only:
        b, b_s = _einsum1(b_s, b, "".join(c for c in b_s if c not in b_only)), \
            "".join(c for c in b_s if c not in b_only)
    batch = [c for c in a_s if c in b_s and c in out]
    contr = [c for c in a_s if c in b_s and c not in out]
    m = [c for c in a_s if c not in b_s]
    n = [c for c in b_s if c not in a_s]
    size = dict(zip(a_s, a.shape)) | dict(zip(b_s, b.shape))
    for c in batch + contr:
        if a.shape[a_s.index(c)] != b.shape[b_s.index(c)]:
            raise ValueError(f"einsum: dim {c!r} has sizes {a.shape[a_s.index(c)]} and "
                             f"{b.shape[b_s.index(c)]}")

    def prod(cs):
        return int(np.prod([size[c] for c in cs], dtype=np.int64))

    A = a.permute(*[a_s.index(c) for c in batch + m + contr]).reshape(
        prod(batch), prod(m), prod(contr))
    B = b.permute(*[b_s.index(c) for c in batch + contr + n]).reshape(
        prod(batch), prod(contr), prod(n))
    r = _C.matmul(A, B).reshape(tuple(size[c] for c in batch + m + n))
    got = "".join(batch + m + n)
    if sorted(got) != sorted(out):
        raise ValueError(f"einsum: output {out!r} does not match the inputs' letters")
    return r.permute(*[got.index(c) for c in out]) if got != out else r


_METHODS = [
    "gather", "index_select", "scatter", "scatter_", "scatter_add", "scatter_add_",
    "index_fill_", "masked_fill", "masked_fill_", "sort", "argsort", "topk", "cumsum",
    "cumsum_", "narrow", "split", "chunk", "tensor_split", "unbind", "repeat", "flip", "mm",
    "bmm", "addcmul", "addcmul_", "addcdiv", "addcdiv_", "lerp", "lerp_", "type_as", "softmax",
    "log_softmax", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "sin",
    "sin_", "cos", "cos_", "square", "rsqrt", "reciprocal", "isnan", "isinf", "isfinite",
    "logical_not", "equal", "__format__",
]


def install(cls):
    g = globals()
    for name in _METHODS:
        setattr(cls, name, g[name])
    cls.where = where_method
    cls.data = property(_data_get, _data_set)
