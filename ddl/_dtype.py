"""ddl's dtypes: float32, float64, int64 and bool, with their NumPy equivalents.

PyTorch's narrower types (int32, int16, int8, uint8, float16, bfloat16) are accepted wherever
a dtype is (`dtype=ddl.int32`, `t.to(ddl.float16)`) and stored widened: integers as int64,
the 16-bit floats as float32 (the C core has no narrower storage). `t.dtype` then reports the
stored type.
"""
import builtins

import numpy as np

from . import _C


class dtype:
    """A tensor element type. Compare with `is` or `==`; `ddl.float32.itemsize == 4`."""

    __slots__ = ("code", "is_floating_point", "itemsize", "name", "numpy")

    def __init__(self, name, code, itemsize, numpy_dtype, is_float):
        self.name = name
        self.code = code
        self.itemsize = itemsize
        self.numpy = np.dtype(numpy_dtype)
        self.is_floating_point = is_float

    def __repr__(self):
        return f"ddl.{self.name}"

    def __reduce__(self):
        return (_by_name, (self.name,))


float32 = dtype("float32", _C.FLOAT32, 4, np.float32, True)
float64 = dtype("float64", _C.FLOAT64, 8, np.float64, True)
int64 = dtype("int64", _C.INT64, 8, np.int64, False)
bool_ = dtype("bool", _C.BOOL, 1, np.bool_, False)



class _Widened(dtype):
    """A PyTorch dtype ddl accepts and stores as a wider one (see the module docstring)."""

    __slots__ = ("stored",)

    def __init__(self, name, stored, numpy_dtype):
        super().__init__(name, stored.code, stored.itemsize, numpy_dtype, stored.is_floating_point)
        self.stored = stored

    def __repr__(self):
        return f"ddl.{self.name} (stored as {self.stored.name})"


int32 = _Widened("int32", int64, np.int32)
int16 = _Widened("int16", int64, np.int16)
int8 = _Widened("int8", int64, np.int8)
uint8 = _Widened("uint8", int64, np.uint8)
float16 = _Widened("float16", float32, np.float16)
bfloat16 = _Widened("bfloat16", float32, np.float32)  # NumPy has no bfloat16
_WIDENED = {d.name: d for d in (int32, int16, int8, uint8, float16, bfloat16)}

BY_CODE = tuple(sorted((float32, float64, int64, bool_), key=lambda d: d.code))
_NAMES = {
    "float32": float32, "float": float32, "float64": float64, "double": float64,
    "int64": int64, "long": int64, "bool": bool_,
}
_NUMPY = {np.dtype(np.float32): float32, np.dtype(np.float64): float64,
          np.dtype(np.int64): int64, np.dtype(np.bool_): bool_}


def _by_name(name):
    return _NAMES.get(name) or _WIDENED[name]


def to_dtype(d):
    """Accept a ddl dtype, a NumPy dtype or type, a name, or the Python types float/int/bool."""
    if isinstance(d, _Widened):
        return d.stored
    if d is None or isinstance(d, dtype):
        return d
    if d is builtins.float:
        return float32
    if d is builtins.int:
        return int64
    if d is builtins.bool:
        return bool_
    if isinstance(d, str) and d in _NAMES:
        return _NAMES[d]
    if isinstance(d, str) and d in _WIDENED:
        return _WIDENED[d].stored
    try:
        nd = np.dtype(d)
    except TypeError:
        raise TypeError(f"not a dtype: {d!r}") from None
    if nd in _NUMPY:
        return _NUMPY[nd]
    if nd.kind in "iuf" and nd.itemsize < 8:  # int32, uint8, float16, ...: stored widened
        return from_numpy_dtype(nd)
    raise TypeError(f"unsupported dtype {nd}: ddl tensors hold float32, float64, int64 or bool")


def from_numpy_dtype(nd):
    """The ddl dtype a NumPy array converts to when copied (ints widen, float16 to float32)."""
    nd = np.dtype(nd)
    if nd in _NUMPY:
        return _NUMPY[nd]
    if nd.kind in "iu":
        return int64
    if nd.kind == "f":
        return float32 if nd.itemsize < 8 else float64
    if nd.kind == "b":
        return bool_
    raise TypeError(
        f"cannot make a tensor from a NumPy array of dtype {nd}: ddl tensors hold float32, "
        "float64, int64 or bool"
    )
