"""ddl's dtypes: float32, float64, int64 and bool, with their NumPy equivalents."""
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

BY_CODE = tuple(sorted((float32, float64, int64, bool_), key=lambda d: d.code))
_NAMES = {
    "float32": float32, "float": float32, "float64": float64, "double": float64,
    "int64": int64, "long": int64, "bool": bool_,
}
_NUMPY = {np.dtype(np.float32): float32, np.dtype(np.float64): float64,
          np.dtype(np.int64): int64, np.dtype(np.bool_): bool_}


def _by_name(name):
    return _NAMES[name]


def to_dtype(d):
    """Accept a ddl dtype, a NumPy dtype or type, a name, or the Python types float/int/bool."""
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
    try:
        nd = np.dtype(d)
    except TypeError:
        raise TypeError(f"not a dtype: {d!r}") from None
    if nd in _NUMPY:
        return _NUMPY[nd]
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
