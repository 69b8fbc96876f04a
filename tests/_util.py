"""Helpers shared by the tensor-core tests: inputs in several memory layouts, and comparison
against a NumPy float64 reference."""
import warnings

import numpy as np
import pytest

import ddl

FLOATS = [ddl.float32, ddl.float64]
ALL_DTYPES = [ddl.float32, ddl.float64, ddl.int64, ddl.bool]

# contiguous; permuted storage viewed back (transposed); an offset, stepped slice of a larger
# buffer (stepped); a stride-0 broadcast along dim 0 (expanded)
LAYOUTS = ["contiguous", "transposed", "stepped", "expanded"]


def tol(dtype):
    """assert_allclose tolerances for results computed in `dtype`."""
    if dtype is ddl.float32:
        return {"rtol": 1e-5, "atol": 1e-6}
    return {"rtol": 1e-12, "atol": 1e-12}


def values(shape, dtype, rng, low=-2.0, high=2.0):
    """Random values of `dtype` as a NumPy array of that dtype."""
    if dtype is ddl.bool:
        return rng.random(shape) < 0.5
    if dtype is ddl.int64:
        return rng.integers(int(low), int(high) + 1, size=shape).astype(np.int64)
    return rng.uniform(low, high, size=shape).astype(dtype.numpy)


def make(shape, dtype, layout="contiguous", rng=None, low=-2.0, high=2.0):
    """(tensor, float64 reference): a tensor of `shape` and `dtype` laid out per `layout`,
    and its values as a float64 array (the tensor's own values, rounding included)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    shape = tuple(shape)
    nd = len(shape)
    if layout == "expanded" and nd > 0:
        base = values((1,) + shape[1:], dtype, rng, low, high)
        t = ddl.tensor(base).expand(shape)
        ref = np.broadcast_to(base, shape)
    elif layout == "transposed" and nd > 1:
        vals = values(shape, dtype, rng, low, high)
        t = ddl.tensor(np.ascontiguousarray(vals.transpose())).permute(*reversed(range(nd)))
        ref = vals
    elif layout == "stepped" and nd > 0:
        vals = values(shape, dtype, rng, low, high)
        big = np.zeros([2 * s + 1 for s in shape], dtype=dtype.numpy)
        sl = tuple(slice(1, None, 2) for _ in shape)
        big[sl] = vals
        t = ddl.tensor(big)[sl]
        ref = vals
    else:
        vals = values(shape, dtype, rng, low, high)
        t = ddl.tensor(vals)
        ref = vals
    assert t.shape == shape and t.dtype is dtype
    if layout != "contiguous" and nd > 1 and min(shape) > 1:
        assert not t.is_contiguous()
    return t, np.asarray(ref, dtype=np.float64)


def check(t, ref, dtype=None, exact=False, **kw):
    """Assert that tensor t has ref's shape and values (and `dtype` when given)."""
    assert isinstance(t, ddl.Tensor), type(t)
    if dtype is not None:
        assert t.dtype is dtype, (t.dtype, dtype)
    got = t.numpy()
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if exact or t.dtype in (ddl.int64, ddl.bool):
        np.testing.assert_array_equal(got, ref)
    else:
        opts = tol(t.dtype)
        opts.update(kw)
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64),
                                   equal_nan=True, **opts)


def np_ref(fn, *args):
    """Run a NumPy reference with floating-point warnings silenced (inf/nan are expected)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice", ...
        return fn(*args)


# ASan's quarantine keeps freed memory resident, so RSS cannot show leaks under the sanitizer
# build (scripts/sanitize.sh); there ASan checks the memory accesses and the C harnesses
# (tests/test_c_kernels.py) run with LeakSanitizer.
def _sanitized():
    import os

    return "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_test(fn):
    import pytest

    return pytest.mark.skipif(_sanitized(), reason="RSS is meaningless under ASan")(fn)


def torch_or_skip():
    """PyTorch, the parity peer (CI installs it); elsewhere the test skips, saying so."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("torch", reason="the PyTorch parity tests need torch")
