"""ddl's dtypes, each a storage type of the C core, with their NumPy equivalents.

float32, float64, int64, bool, and PyTorch's narrower int32, int16, int8, uint8, float16 and
bfloat16: a tensor of a narrow dtype stores its elements in that many bytes. Ops compute the
narrow types in int64 / float32 and cast the result back to the promoted dtype (PyTorch's
promotion: int32 + int32 -> int32, int32 + float32 -> float32, uint8 + int8 -> int16,
float16 + bfloat16 -> float32). NumPy has no bfloat16: `.numpy()` of a bfloat16 tensor is a
float32 copy (exact; it does not share memory), a bfloat16 tensor has no buffer (memoryview
raises BufferError), and `ddl.tensor(np_array)` makes bfloat16 only when asked (`dtype=`).
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



int32 = dtype("int32", _C.INT32, 4, np.int32, False)
int16 = dtype("int16", _C.INT16, 2, np.int16, False)
int8 = dtype("int8", _C.INT8, 1, np.int8, False)
uint8 = dtype("uint8", _C.UINT8, 1, np.uint8, False)
float16 = dtype("float16", _C.FLOAT16, 2, np.float16, True)
bfloat16 = dtype("bfloat16", _C.BFLOAT16, 2, np.float32, True)  # numpy(): a float32 copy

BY_CODE = tuple(sorted((float32, float64, int64, bool_, int32, int16, int8, uint8, float16,
                        bfloat16), key=lambda d: d.code))
_NAMES = {
    "float32": float32, "float": float32, "float64": float64, "double": float64,
    "int64": int64, "long": int64, "bool": bool_, "int32": int32, "int": int32,
    "int16": int16, "short": int16, "int8": int8, "uint8": uint8, "float16": float16,
    "half": float16, "bfloat16": bfloat16,
}
_NUMPY = {np.dtype(np.float32): float32, np.dtype(np.float64): float64,
          np.dtype(np.int64): int64, np.dtype(np.bool_): bool_, np.dtype(np.int32): int32,
          np.dtype(np.int16): int16, np.dtype(np.int8): int8, np.dtype(np.uint8): uint8,
          np.dtype(np.float16): float16}
_SUPPORTED = "float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8 or bool"


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
    raise TypeError(f"unsupported dtype {nd}: ddl tensors hold {_SUPPORTED}")


def from_numpy_dtype(nd):
    """The ddl dtype of a NumPy array's copy: the same type where ddl has it (uint16/32/64
    widen to int64, long double to float64)."""
    nd = np.dtype(nd)
    if nd in _NUMPY:
        return _NUMPY[nd]
    if nd.kind in "iu":
        return int64
    if nd.kind == "f":
        return float64
    if nd.kind == "b":
        return bool_
    raise TypeError(f"cannot make a tensor from a NumPy array of dtype {nd}: ddl tensors hold "
                    f"{_SUPPORTED}")
