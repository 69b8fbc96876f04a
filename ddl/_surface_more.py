"""More of PyTorch's everyday tensor surface: triangular masks, norms, rounding, rolls,
in-place random fills, the device no-ops (cpu(), cuda(), pin_memory()), and ddl.Size.

Differentiable where PyTorch is, by composition of ops that carry autograd (where, take,
matmul, exp/log, slices); the rounding ops, nonzero, cumprod and index_add_ compute in NumPy
(PyTorch's gradient through rounding is zero anyway).
"""
import math

import numpy as np

from . import _C, _device


class Size(tuple):
    """torch.Size: a tuple of dims (ddl's .shape is a plain tuple, equal to a Size)."""

    def numel(self):
        return int(np.prod(self, dtype=np.int64))

    def __repr__(self):
        return f"ddl.Size({list(self)})"


def _np_out(a):
    return _C.from_buffer(np.ascontiguousarray(a))


def _mask_where(self, mask):
    return _C.where(_C.from_buffer(np.ascontiguousarray(mask)), self,
                    _C.full((), 0, self.dtype.code))


def tril(self, diagonal=0):
    if self.ndim < 2:
        raise ValueError(f"tril: expected a tensor of at least 2 dims, got {self.ndim}")
    r, c = self.shape[-2:]
    return _mask_where(self, np.tri(r, c, diagonal, dtype=np.bool_))


def triu(self, diagonal=0):
    if self.ndim < 2:
        raise ValueError(f"triu: expected a tensor of at least 2 dims, got {self.ndim}")
    r, c = self.shape[-2:]
    return _mask_where(self, ~np.tri(r, c, diagonal - 1, dtype=np.bool_))


def log1p(self):
    return (self + 1).log()


def expm1(self):
    return self.exp() - 1


def log2(self):
    return self.log() / math.log(2.0)


def log10(self):
    return self.log() / math.log(10.0)


def _rounding(fn):
    def f(self):
        if not self.dtype.is_floating_point:
            return self.clone()
        return _np_out(fn(self.detach().numpy()))

    return f


floor, ceil, trunc = _rounding(np.floor), _rounding(np.ceil), _rounding(np.trunc)


def round(self, decimals=0):
    if not self.dtype.is_floating_point:
        return self.clone()
    return _np_out(np.round(self.detach().numpy(), decimals))  # half to even, as PyTorch


def nonzero(self, as_tuple=False):
    idx = np.nonzero(self.detach().numpy())
    if as_tuple:
        return tuple(_np_out(i.astype(np.int64)) for i in idx)
    return _np_out(np.stack(idx, 1).astype(np.int64) if idx else np.zeros((0, 0), np.int64))


def outer(self, other):
    return self.reshape(-1, 1) * other.reshape(1, -1)


def dot(self, other):
    if self.ndim != 1 or other.ndim != 1:
        raise ValueError("dot: expected 1-d tensors")
    return (self * other).sum()


def mv(self, vec):
    if self.ndim != 2 or vec.ndim != 1:
        raise ValueError("mv: expected a 2-d matrix and a 1-d vector")
    return _C.matmul(self, vec)


def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
    x = self if dtype is None else self.to(dtype)
    if p in ("fro", 2, 2.0):
        return (x * x).sum(dim, keepdim).sqrt()
    if p in (1, 1.0):
        return x.abs().sum(dim, keepdim)
    if p in (float("inf"), "inf"):
        return x.abs().amax(dim, keepdim)
    if isinstance(p, (int, float)) and p > 0:
        return (x.abs() ** p).sum(dim, keepdim) ** (1.0 / p)
    raise ValueError(f"norm: unsupported p={p!r} (use 'fro', 1, 2, inf or a positive number)")


def diag(self, diagonal=0):
    from ._surface import take_flat

    if self.ndim == 1:
        k = self.shape[0]
        n = k + abs(diagonal)
        pos = np.full((n, n), k, dtype=np.int64)  # position k: the appended zero
        r = np.arange(k) + max(0, -diagonal)
        pos[r, r + diagonal] = np.arange(k)
        from ._functions import cat

        ext = cat([self, _C.full((1,), 0, self.dtype.code)])
        return take_flat(ext, pos, pos.shape)
    if self.ndim == 2:
        r, c = self.shape
        i = np.arange(max(0, -diagonal), min(r, c - diagonal))
        return take_flat(self, i * c + i + diagonal, (len(i),))
    raise ValueError(f"diag: expected a 1-d or 2-d tensor, got {self.ndim}-d")


def remainder(self, other):
    if not self.dtype.is_floating_point and not isinstance(other, float) and not (
            hasattr(other, "dtype") and other.dtype.is_floating_point):
        o = other.numpy() if hasattr(other, "numpy") else other
        return _np_out(np.remainder(self.numpy(), o))
    q = (self.detach() / (other.detach() if hasattr(other, "detach") else other))
    return self - floor(q) * other


def fmod(self, other):
    if not self.dtype.is_floating_point and not isinstance(other, float):
        o = other.numpy() if hasattr(other, "numpy") else other
        return _np_out(np.fmod(self.numpy(), o))
    q = (self.detach() / (other.detach() if hasattr(other, "detach") else other))
    return self - trunc(q) * other


def floor_divide(self, other):
    if not self.dtype.is_floating_point:
        o = other.numpy() if hasattr(other, "numpy") else other
        return _np_out(np.floor_divide(self.numpy(), o))
    return floor(self / other)


def logsumexp(self, dim, keepdim=False):
    m = self.detach().amax(dim, keepdim=True)
    m = _C.where(_C.from_buffer(np.isfinite(m.numpy())), m, _C.full((), 0, m.dtype.code))
    r = (self - m).exp().sum(dim, keepdim=True).log() + m
    return r if keepdim else r.squeeze(dim)


def cumprod(self, dim, dtype=None):
    x = self if dtype is None else self.to(dtype)
    if x.requires_grad:
        raise NotImplementedError("cumprod: no gradient in ddl; detach the input first")
    return _np_out(np.cumprod(x.numpy(), axis=dim))


def diff(self, n=1, dim=-1):
    x = self
    for _ in range(n):
        k = x.shape[dim]
        x = x.narrow(dim, 1, k - 1) - x.narrow(dim, 0, k - 1)
    return x


def tile(self, *dims):
    from ._tensor import _shape_args

    dims = tuple(_shape_args(dims))
    dims = (1,) * (self.ndim - len(dims)) + dims
    return self.repeat(*dims)


def roll(self, shifts, dims=None):
    from ._surface import take_flat

    ids = np.arange(self.numel(), dtype=np.int64).reshape(self.shape)
    ids = np.roll(ids, shifts, axis=dims)
    return take_flat(self, ids, ids.shape)


def masked_select(self, mask):
    return self[mask]


def index_add_(self, dim, index, source, alpha=1):
    a = self.numpy()
    idx = index.numpy() if hasattr(index, "numpy") else np.asarray(index)
    src = source.detach().numpy() * alpha
    np.add.at(np.moveaxis(a, dim, 0), idx, np.moveaxis(src, dim, 0))
    return self


# ---- in-place random fills (init code's habits), from ddl's generator ------------------------


def uniform_(self, a=0.0, b=1.0, generator=None):
    from ._functions import rand

    return self.copy_(rand(self.shape, dtype=self.dtype, generator=generator) * (b - a) + a)


def normal_(self, mean=0.0, std=1.0, generator=None):
    from ._functions import randn

    return self.copy_(randn(self.shape, dtype=self.dtype, generator=generator) * std + mean)


def bernoulli_(self, p=0.5, generator=None):
    from ._functions import rand

    return self.copy_((rand(self.shape, dtype=ddl_float64(), generator=generator) < p)
                      .to(self.dtype))


def exponential_(self, lambd=1.0, generator=None):
    from ._functions import rand

    u = rand(self.shape, dtype=ddl_float64(), generator=generator)
    return self.copy_(((1 - u).log() * (-1.0 / lambd)).to(self.dtype))


def random_(self, from_=0, to=None, generator=None):
    from ._functions import randint

    if to is None:
        from_, to = 0, from_ if from_ else 2**24
    return self.copy_(randint(from_, to, tuple(self.shape), generator=generator).to(self.dtype))


def ddl_float64():
    from ._dtype import float64

    return float64


# ---- devices: every tensor is on the CPU -------------------------------------------------------


def cpu(self):
    return self


def cuda(self, device=None, non_blocking=False):
    _device.check(device if device is not None else "cuda", "Tensor.cuda")
    return self


def pin_memory(self):
    """Page-locked memory only matters for GPU copies: returns self."""
    return self


def is_pinned(self):
    return False


def get_device(self):
    return -1


def data_ptr(self):
    return self._data_ptr


def nelement(self):
    return self.numel()


def ndimension(self):
    return self.ndim


_METHODS = [
    "tril", "triu", "log1p", "expm1", "log2", "log10", "floor", "ceil", "trunc", "round",
    "nonzero", "outer", "dot", "mv", "norm", "diag", "remainder", "fmod", "floor_divide",
    "logsumexp", "cumprod", "diff", "tile", "roll", "masked_select", "index_add_", "uniform_",
    "normal_", "bernoulli_", "exponential_", "random_", "cpu", "cuda", "pin_memory",
    "is_pinned", "get_device", "data_ptr", "nelement", "ndimension",
]
FUNCTIONS = [
    "tril", "triu", "log1p", "expm1", "log2", "log10", "floor", "ceil", "trunc", "round",
    "nonzero", "outer", "dot", "mv", "norm", "diag", "remainder", "fmod", "floor_divide",
    "logsumexp", "cumprod", "diff", "tile", "roll", "masked_select",
]


def install(cls):
    g = globals()
    for name in _METHODS:
        setattr(cls, name, g[name])
