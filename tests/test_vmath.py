"""float32 exp, tanh and sigmoid (csrc/vmath.h through ddl's unary ops): within 1 ulp of the
exact value over a wide spread of float32 bit patterns, libm's special values exactly, the same
bits in every memory layout. float64 stays on libm.

tests/c/test_vmath.c checks the kernels against glibc itself (and all 2^32 inputs with --all).
"""
import math

import numpy as np
import pytest

import ddl

SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-38, -1e-38, 0.5, -0.5,
     88.72283172607421875, 88.72283935546875, 89.0, 1e30, -87.33654, -103.972076, -103.97208,
     -104.0, -1e30, 9.01, 10.0, -10.0, 3.4028235e38, -3.4028235e38],
    dtype=np.float32,
)


def spread():
    """Every 2039th float32 bit pattern (~2.1M values, all exponents, both signs)."""
    x = np.arange(0, 2**32, 2039, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([SPECIALS, x])


def reference(name, x):
    """The exact value, rounded once to float32 (float64 libm is exact enough here)."""
    with np.errstate(over="ignore", invalid="ignore"):  # signaling NaNs, overflow to inf
        d = x.astype(np.float64)
        if name == "exp":
            r = np.exp(d)
        elif name == "tanh":
            r = np.tanh(d)
        else:
            r = np.where(d >= 0, 1 / (1 + np.exp(-d)), np.exp(d) / (1 + np.exp(d)))
        return r.astype(np.float32)


def ulp_distance(a, b):
    """|a - b| in float32 ulps (ordered bit patterns); NaN vs NaN counts 0."""
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    oa = np.where(ia < 0, -(2**31) - ia, ia)
    ob = np.where(ib < 0, -(2**31) - ib, ib)
    d = np.abs(oa - ob)
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.where(np.isnan(a) | np.isnan(b), 2**40, d))


def run(name, x):
    return getattr(ddl.from_numpy(x), name)().numpy()


@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid"])
def test_float32_within_one_ulp_of_exact(name):
    x = spread()
    got, ref = run(name, x), reference(name, x)
    d = ulp_distance(got, ref)
    worst = int(np.argmax(d))
    assert d.max() <= 1, f"{name}({x[worst]!r}) = {got[worst]!r}, exact {ref[worst]!r}"


@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid"])
def test_float32_special_values_exact(name):
    got, ref = run(name, SPECIALS), reference(name, SPECIALS)
    special = np.isnan(ref) | np.isinf(ref) | (ref == 0)
    np.testing.assert_array_equal(got[special], ref[special])
    # zeros and infinities keep their sign (tanh(-0) = -0, exp(-inf) = +0, sigmoid(-inf) = +0)
    signed = special & ~np.isnan(ref)
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(ref[signed]))


def test_float32_special_values_spelled_out():
    t = ddl.tensor(np.array([np.inf, -np.inf, np.nan, 88.72283935546875, 88.72283172607421875,
                             -104.0, 0.0, -0.0], dtype=np.float32))
    e = t.exp().numpy()
    assert e[0] == np.inf and e[1] == 0 and not np.signbit(e[1]) and np.isnan(e[2])
    assert e[3] == np.inf and np.isfinite(e[4]) and e[5] == 0 and e[6] == 1 and e[7] == 1
    th = t.tanh().numpy()
    assert th[0] == 1 and th[1] == -1 and np.isnan(th[2])
    assert th[6] == 0 and not np.signbit(th[6]) and th[7] == 0 and np.signbit(th[7])
    s = t.sigmoid().numpy()
    assert s[0] == 1 and s[1] == 0 and np.isnan(s[2]) and s[6] == 0.5 and s[7] == 0.5


@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid"])
def test_float32_same_bits_in_every_layout(name):
    x = spread()[: 4096 * 3].reshape(4096, 3)
    want = run(name, np.ascontiguousarray(x))
    # transposed view, a stepped slice, and in place
    got_t = getattr(ddl.from_numpy(np.ascontiguousarray(x.T)).T, name)().numpy()
    np.testing.assert_array_equal(got_t.view(np.uint32), want.view(np.uint32))
    wide = np.repeat(x, 2, axis=0)
    got_s = getattr(ddl.from_numpy(wide)[::2], name)().numpy()
    np.testing.assert_array_equal(got_s.view(np.uint32), want.view(np.uint32))
    y = ddl.tensor(x)
    getattr(y, name + "_")()
    np.testing.assert_array_equal(y.numpy().view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("name, fn", [("exp", math.exp), ("tanh", math.tanh)])
def test_float64_is_libm(name, fn):
    x = np.array([-700.0, -20.5, -1.25, -1e-300, 0.0, 1e-10, 0.3, 2.5, 19.0, 709.0])
    got = run(name, x)
    assert got.tolist() == [fn(v) for v in x.tolist()]
