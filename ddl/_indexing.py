"""Tensor indexing: basic keys (int, slice, None, Ellipsis) as views, advanced keys (integer
arrays, boolean masks) as copies through NumPy, or through the differentiable gather of
_surface.py when there is a graph to record. install(Tensor) attaches __getitem__/__setitem__.
"""

import numpy as np

from . import _C, _surface


def basic_index(self, key):
    """A view for int/slice/None/Ellipsis keys; None when the key needs advanced indexing."""
    if not isinstance(key, tuple):
        key = (key,)
    n_real = 0
    for k in key:
        if k is None or k is Ellipsis:
            continue
        if isinstance(k, (slice, int, np.integer)) and not isinstance(k, bool):
            n_real += 1
        else:
            return None
    if n_real > self.ndim:
        raise IndexError(f"too many indices for a tensor of {self.ndim} dims: {n_real} were given")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    t, dim = self, 0
    for k in key:
        if k is Ellipsis:
            dim += self.ndim - n_real
        elif k is None:
            t = _C.dimop("unsqueeze", t, dim)
            dim += 1
        elif isinstance(k, slice):
            start, stop, step = k.indices(t.shape[dim])
            if k.step is not None and k.step <= 0:
                raise ValueError("slice step must be positive (use flip on a copy)")
            t = _C.slice(t, dim, start, stop, step)
            dim += 1
        else:
            t = _C.dimop("select", t, dim, int(k))
    return t


def numpy_key(key):
    if isinstance(key, tuple):
        return tuple(k.numpy() if isinstance(k, _C.TensorBase) else k for k in key)
    return key.numpy() if isinstance(key, _C.TensorBase) else key


def getitem(self, key):
    t = basic_index(self, key)
    if t is not None:
        return t
    # advanced (integer-array or boolean-mask) indexing copies, as in NumPy and PyTorch;
    # with a graph to record, through the differentiable gather of _surface.py
    if self.requires_grad or _C.grad_fn_name(self) is not None:
        return _surface.getitem_advanced(self, key)
    from ._tensor import _from_array_copy

    return _from_array_copy(self.numpy()[numpy_key(key)])


def setitem(self, key, value):
    t = basic_index(self, key)
    if t is not None:
        if isinstance(value, (list, tuple)):  # t[0] = [1, 2, 3], as NumPy and PyTorch allow
            value = np.asarray(value, dtype=self.dtype.numpy)
        _C.copy_(t, value)
        return
    if isinstance(value, _C.TensorBase):
        value = value.numpy()
    if self.dtype.code == _C.BFLOAT16:  # numpy() is a copy: write it back
        a = self.numpy()
        a[numpy_key(key)] = value
        _C.copy_(self, _C.from_buffer(a))
        return
    self.numpy()[numpy_key(key)] = value


def install(cls):
    cls._basic_index = basic_index
    cls.__getitem__ = getitem
    cls.__setitem__ = setitem
