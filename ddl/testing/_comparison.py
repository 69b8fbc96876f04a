"""ddl.testing.assert_close: PyTorch's torch.testing.assert_close for ddl tensors, NumPy arrays,
torch tensors, Python numbers and nested sequences / mappings of them.

Semantics follow PyTorch: `|actual - expected| <= atol + rtol * |expected|` elementwise, with
default tolerances chosen by dtype (float32: rtol 1.3e-6, atol 1e-5; float64: 1e-7, 1e-7; ...;
integers and bools must be equal); shapes must match exactly (no broadcasting); dtypes must
match unless check_dtype=False (then both are promoted and the looser tolerances are used);
rtol and atol are given together or not at all; NaNs are equal only with equal_nan=True;
infinities must match exactly. One deviation: PyTorch has one tensor type, ddl's tests
compare against NumPy or torch references, so a ddl tensor, a NumPy array and a torch tensor
may be compared with one another (their dtypes are compared by name).
"""
import collections.abc

import numpy as np

__all__ = ["assert_close"]

# (rtol, atol) by dtype name, as torch.testing._comparison._DTYPE_PRECISIONS
_PRECISIONS = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "complex32": (1e-3, 1e-5),
    "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}
# Python numbers compare as PyTorch's NumberPair does: int as int64, float as float64, ...
_NUMBER_DTYPES = {bool: "bool", int: "int64", float: "float64", complex: "complex128"}


class _Mismatch(AssertionError):
    """A failed comparison; `path` locates it inside nested containers."""

    def __init__(self, text, path=()):
        super().__init__(text)
        self.text, self.path = text, path


def _is_ddl_tensor(x):
    from .. import Tensor

    return isinstance(x, Tensor)


def _is_torch_tensor(x):
    t = type(x)
    return t.__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "numpy")


def _as_array(x):
    """(NumPy array, dtype name, kind label) for a tensor-like, or None for anything else."""
    if _is_ddl_tensor(x):
        a = x.detach().numpy()
        return a, x.dtype.name, "ddl.Tensor"
    if isinstance(x, np.ndarray):
        return x, x.dtype.name, "numpy.ndarray"
    if _is_torch_tensor(x):
        name = str(x.dtype).replace("torch.", "")
        t = x.detach().cpu()
        if name == "bfloat16":  # NumPy has no bfloat16: exact in float32
            t = t.float()
        if t.is_conj():
            t = t.resolve_conj()
        return t.numpy(), name, "torch.Tensor"
    if isinstance(x, np.generic):
        return np.asarray(x), x.dtype.name, "NumPy scalar"
    return None


def _tolerances(dtypes, rtol, atol):
    if (rtol is None) != (atol is None):
        raise ValueError(f"assert_close: both 'rtol' and 'atol' must be given or neither; got "
                         f"rtol={rtol!r}, atol={atol!r}")
    if rtol is not None:
        for name, v in (("rtol", rtol), ("atol", atol)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"assert_close: {name} must be a number >= 0, got {v!r}")
        return float(rtol), float(atol)
    pairs = [_PRECISIONS.get(d, (0.0, 0.0)) for d in dtypes]
    return max(p[0] for p in pairs), max(p[1] for p in pairs)


def _fmt(v):
    """A value in full (repr) precision: the two sides may differ in the 8th digit."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def _fmt_diff(v):
    return f"{float(v):.6g}"


def _index(flat, shape):
    if not shape:
        return "()"
    idx = np.unravel_index(flat, shape)
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def _compare_arrays(a, e, a_dtype, e_dtype, *, rtol, atol, equal_nan, check_dtype, what):
    if a.shape != e.shape:
        raise _Mismatch(f"The values for attribute 'shape' do not match: {tuple(a.shape)} != "
                        f"{tuple(e.shape)}.")
    if check_dtype and a_dtype != e_dtype:
        raise _Mismatch(f"The values for attribute 'dtype' do not match: {a_dtype} != "
                        f"{e_dtype}.")
    rtol, atol = _tolerances({a_dtype, e_dtype}, rtol, atol)
    kind = np.result_type(a.dtype, e.dtype).kind
    exact = kind in "biu"
    wide = np.complex128 if kind == "c" else np.float64
    if kind == "b":
        a, e = a.astype(np.int64), e.astype(np.int64)
    elif not exact:
        a, e = a.astype(wide), e.astype(wide)
    if exact:
        close = a == e
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(a) & np.isfinite(e)
            diff = np.where(finite, np.abs(a - e), 0.0)
            close = np.where(finite, diff <= atol + rtol * np.abs(e), a == e)
            if equal_nan:
                close |= np.isnan(a) & np.isnan(e)
    if bool(np.all(close)):
        return
    bad = ~close
    n_bad, total = int(bad.sum()), int(bad.size)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absdiff = np.abs(a.astype(wide) - e.astype(wide)).astype(np.float64)
        absdiff = np.where(np.isnan(absdiff), np.inf, absdiff)
        reldiff = absdiff / np.abs(e.astype(wide))
        reldiff = np.where(np.isnan(reldiff), np.inf, reldiff)
    # the worst element: among the mismatched ones, the greatest absolute difference
    ab = np.where(bad, absdiff, -1.0).reshape(-1)
    rb = np.where(bad, reldiff, -1.0).reshape(-1)
    worst_abs, worst_rel = int(np.argmax(ab)), int(np.argmax(rb))
    label = "Scalars" if what == "number" else "Tensor-likes"
    lines = [f"{label} are not {'equal' if exact else 'close'}!", ""]
    if a.ndim == 0:
        lines.append(f"Actual:   {_fmt(a.reshape(-1)[0])}")
        lines.append(f"Expected: {_fmt(e.reshape(-1)[0])}")
    else:
        lines.append(f"Mismatched elements: {n_bad} / {total} ({100.0 * n_bad / total:.1f}%)")
    flat_a, flat_e = a.reshape(-1), e.reshape(-1)
    at = "" if a.ndim == 0 else f" at index {_index(worst_abs, a.shape)}"
    if exact:
        lines.append(f"Greatest absolute difference: {_fmt_diff(ab[worst_abs])}{at}")
    else:
        lines.append(f"Greatest absolute difference: {_fmt_diff(ab[worst_abs])}{at} "
                     f"(up to {atol:g} allowed)")
        rat = "" if a.ndim == 0 else f" at index {_index(worst_rel, a.shape)}"
        lines.append(f"Greatest relative difference: {_fmt_diff(rb[worst_rel])}{rat} "
                     f"(up to {rtol:g} allowed)")
    if a.ndim:
        lines.append(f"Worst element{at}: actual {_fmt(flat_a[worst_abs])}, expected "
                     f"{_fmt(flat_e[worst_abs])}")
    raise _Mismatch("\n".join(lines))


def _compare(actual, expected, path, opts):
    if actual is None or expected is None:
        if actual is not expected:
            raise _Mismatch(f"None mismatch: {actual!r} is not {expected!r}", path)
        return
    a_arr, e_arr = _as_array(actual), _as_array(expected)
    if a_arr is not None and e_arr is not None:
        try:
            _compare_arrays(a_arr[0], e_arr[0], a_arr[1], e_arr[1], what="tensor", **opts)
        except _Mismatch as m:
            raise _Mismatch(m.text, path) from None
        return
    num = (bool, int, float, complex)
    if isinstance(actual, num) and isinstance(expected, num):
        if opts["check_dtype"] and type(actual) is not type(expected):
            raise _Mismatch(f"The values for attribute 'dtype' do not match: "
                            f"{type(actual)} != {type(expected)}.", path)
        a_dt, e_dt = _NUMBER_DTYPES[type(actual)], _NUMBER_DTYPES[type(expected)]
        if type(actual) is bool and type(expected) is bool:
            if actual is not expected:
                raise _Mismatch(f"Booleans mismatch: {actual} is not {expected}", path)
            return
        try:
            _compare_arrays(np.asarray(actual), np.asarray(expected), a_dt, e_dt,
                            what="number", **opts)
        except _Mismatch as m:
            raise _Mismatch(m.text, path) from None
        return
    if _is_seq(actual) and _is_seq(expected):
        if len(actual) != len(expected):
            raise _Mismatch(f"The length of the sequences mismatch: {len(actual)} != "
                            f"{len(expected)}", path)
        for i, (x, y) in enumerate(zip(actual, expected)):
            _compare(x, y, (*path, i), opts)
        return
    if isinstance(actual, collections.abc.Mapping) and isinstance(expected,
                                                                  collections.abc.Mapping):
        ka, ke = set(actual.keys()), set(expected.keys())
        if ka != ke:
            raise _Mismatch(f"The keys of the mappings do not match:\nMissing keys in the "
                            f"actual mapping: {sorted(map(repr, ke - ka))}\nExtra keys in the "
                            f"actual mapping: {sorted(map(repr, ka - ke))}", path)
        for k in _sorted_keys(ka):
            _compare(actual[k], expected[k], (*path, k), opts)
        return
    raise TypeError(f"assert_close: cannot compare {type(actual).__name__} with "
                    f"{type(expected).__name__}{_where(path)}: give ddl tensors, NumPy arrays, "
                    "torch tensors, Python numbers, or sequences / mappings of them")


def _is_seq(x):
    return isinstance(x, collections.abc.Sequence) and not isinstance(x, (str, bytes,
                                                                          bytearray))


def _sorted_keys(keys):
    try:
        return sorted(keys)
    except TypeError:
        return list(keys)


def _where(path):
    return "" if not path else " at item " + "".join(f"[{k!r}]" for k in path)


def assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=False, check_dtype=True,
                 msg=None):
    """Assert that `actual` and `expected` are close, as torch.testing.assert_close does.

    actual, expected: ddl tensors, NumPy arrays, torch tensors, Python or NumPy numbers, None,
    or sequences / mappings of them (compared item by item; a list and a tuple compare equal).
    rtol, atol: both or neither; by default the larger of the per-dtype defaults of the two
    inputs (float32: 1.3e-6 / 1e-5, float64: 1e-7 / 1e-7, integers and bools: exact).
    equal_nan: NaN == NaN. check_dtype: dtypes (number types) must be equal; False promotes.
    msg: a str replacing the message, or a callable taking the generated message and returning
    the one to raise. Raises AssertionError on a mismatch, TypeError on inputs that cannot be
    compared, ValueError on bad tolerances."""
    _tolerances(("bool",), rtol, atol)  # checks them before anything is compared
    opts = {"rtol": rtol, "atol": atol, "equal_nan": bool(equal_nan),
            "check_dtype": bool(check_dtype)}
    try:
        _compare(actual, expected, (), opts)
    except _Mismatch as m:
        text = m.text
        if m.path:
            text += f"\n\nThe failure occurred for item {''.join(f'[{k!r}]' for k in m.path)}"
        if callable(msg):
            text = msg(text)
        elif msg is not None:
            text = str(msg)
        raise AssertionError(text) from None

