"""Elementwise ops against NumPy (float64 reference): binary ops with broadcasting, unary
ops, clamp, where, comparisons, in-place forms and the Python operators."""
import numpy as np
import pytest
from _util import FLOATS, LAYOUTS, check, make, np_ref

import ddl

BINARY = {
    "add": (ddl.add, np.add),
    "sub": (ddl.sub, np.subtract),
    "mul": (ddl.mul, np.multiply),
    "div": (ddl.div, np.divide),
    "pow": (ddl.pow, np.power),
    "maximum": (ddl.maximum, np.maximum),
    "minimum": (ddl.minimum, np.minimum),
}
COMPARE = {
    "eq": (lambda a, b: a == b, np.equal),
    "ne": (lambda a, b: a != b, np.not_equal),
    "lt": (lambda a, b: a < b, np.less),
    "le": (lambda a, b: a <= b, np.less_equal),
    "gt": (lambda a, b: a > b, np.greater),
    "ge": (lambda a, b: a >= b, np.greater_equal),
}
UNARY = {
    "neg": (ddl.neg, np.negative, (-3, 3)),
    "exp": (ddl.exp, np.exp, (-5, 5)),
    "log": (ddl.log, np.log, (0.01, 10)),
    "sqrt": (ddl.sqrt, np.sqrt, (0, 10)),
    "abs": (ddl.abs, np.abs, (-3, 3)),
    "tanh": (ddl.tanh, np.tanh, (-4, 4)),
    "sigmoid": (ddl.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-8, 8)),
    "relu": (ddl.relu, lambda x: np.maximum(x, 0), (-3, 3)),
    "sign": (ddl.sign, np.sign, (-3, 3)),
}

# broadcasting corner cases: scalars (0-d), size-1 dims, leading dims, zero-size dims
SHAPE_PAIRS = [
    ((), ()), ((4,), ()), ((), (4,)), ((1,), (5,)), ((2, 3), (3,)), ((3,), (2, 3)),
    ((2, 1), (1, 3)), ((4, 1, 3), (2, 1)), ((2, 3, 4), (2, 3, 4)), ((5, 1, 1, 2), (3, 1)),
    ((1, 1), (1,)), ((0,), ()), ((0, 3), (3,)), ((2, 0), (2, 1)), ((3, 1, 0), (1, 4, 1)),
    ((1, 2, 1, 2, 1, 2), (2, 1, 2, 1, 2, 1)),
]


def binary_inputs(name, shape, dtype, layout, rng):
    """Operands in the domain where the op is smooth: pow takes positive bases."""
    low, high = (0.25, 2.0) if name == "pow" else (-2.0, 2.0)
    return make(shape, dtype, layout, rng, low, high)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sa, sb", SHAPE_PAIRS)
def test_binary_broadcasting(name, dtype, sa, sb, rng):
    fn, ref_fn = BINARY[name]
    a, ra = binary_inputs(name, sa, dtype, "contiguous", rng)
    b, rb = binary_inputs(name, sb, dtype, "contiguous", rng)
    check(fn(a, b), np_ref(ref_fn, ra, rb), dtype)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
def test_binary_layouts(name, dtype, la, lb, rng):
    fn, ref_fn = BINARY[name]
    a, ra = binary_inputs(name, (3, 4, 5), dtype, la, rng)
    b, rb = binary_inputs(name, (4, 5), dtype, lb, rng)
    check(fn(a, b), np_ref(ref_fn, ra, rb), dtype)
    check(fn(b, a), np_ref(ref_fn, rb, ra), dtype)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "maximum", "minimum"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_binary_int64_exact(name, layout, rng):
    fn, ref_fn = BINARY[name]
    a, ra = make((3, 4), ddl.int64, layout, rng, -100, 100)
    b, rb = make((4,), ddl.int64, "contiguous", rng, -100, 100)
    check(fn(a, b), ref_fn(ra, rb).astype(np.int64), ddl.int64)


def test_int64_arithmetic_is_exact_beyond_2_53():
    big = 2**62 + 3
    a = ddl.tensor([big, -big])
    b = ddl.tensor([1, -1])
    assert (a + b).tolist() == [big + 1, -big - 1]
    assert (a - b).tolist() == [big - 1, -big + 1]
    assert ddl.maximum(a, b).tolist() == [big, -1]
    assert (a + 1).tolist() == [big + 1, -big + 1]  # python ints stay exact too
    assert (ddl.tensor([0]) + (2**53 + 1)).tolist() == [2**53 + 1]
    assert ((2**62 + 1) - ddl.tensor([1])).tolist() == [2**62]
    assert (ddl.tensor([2**62]) == 2**62 + 1).tolist() == [False]
    c = ddl.tensor([1])
    c += 2**53 + 1
    assert c.tolist() == [2**53 + 2]
    with pytest.raises(OverflowError):
        ddl.tensor([1]) + 2**64


def test_int64_pow():
    a = ddl.tensor([2, 3, -2, 0, 5])
    b = ddl.tensor([10, 3, 3, 0, 1])
    check(a ** b, np.array([1024, 27, -8, 1, 5]), ddl.int64)
    check(ddl.tensor([3]) ** 2, [9], ddl.int64)
    check(2 ** ddl.tensor([0, 1, 5]), [1, 2, 32], ddl.int64)


def test_int_true_division(rng):
    a, ra = make((4, 5), ddl.int64, "transposed", rng, -50, 50)
    b, rb = make((5,), ddl.int64, "contiguous", rng, 1, 9)
    check(a / b, ra / rb, ddl.float32)


def test_division_by_zero_gives_inf_and_nan():
    a = ddl.tensor([1.0, -1.0, 0.0], dtype=ddl.float64)
    out = (a / 0.0).numpy()
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


@pytest.mark.parametrize("dtype", FLOATS)
def test_maximum_minimum_propagate_nan(dtype):
    a = ddl.tensor([np.nan, 1.0, np.nan, 2.0], dtype=dtype)
    b = ddl.tensor([1.0, np.nan, np.nan, 3.0], dtype=dtype)
    for fn, ref in ((ddl.maximum, np.maximum), (ddl.minimum, np.minimum)):
        check(fn(a, b), ref(a.numpy(), b.numpy()), dtype)
        check(fn(b, a), ref(b.numpy(), a.numpy()), dtype)


@pytest.mark.parametrize("name", COMPARE)
@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64, ddl.int64])
@pytest.mark.parametrize("sa, sb", [((3, 4), (4,)), ((), (5,)), ((2, 1, 3), (4, 1)), ((0,), ())])
def test_comparisons(name, dtype, sa, sb, rng):
    fn, ref_fn = COMPARE[name]
    # small integers so that ties (the == and <= cases) happen
    a = ddl.tensor(rng.integers(-2, 3, size=sa)).to(dtype)
    b = ddl.tensor(rng.integers(-2, 3, size=sb)).to(dtype)
    check(fn(a, b), ref_fn(a.numpy(), b.numpy()), ddl.bool)


@pytest.mark.parametrize("name", COMPARE)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_comparisons_layouts_and_scalars(name, layout, rng):
    fn, ref_fn = COMPARE[name]
    a, ra = make((3, 4), ddl.float32, layout, rng)
    b, rb = make((3, 4), ddl.float64, layout, rng)
    check(fn(a, b), ref_fn(ra, rb), ddl.bool)
    check(fn(a, 0.5), ref_fn(ra, np.float32(0.5)), ddl.bool)
    check(fn(0.5, a), ref_fn(np.float32(0.5), ra), ddl.bool)
    check(fn(a, 0), ref_fn(ra, 0), ddl.bool)
    check(fn(a.long(), 1.5), ref_fn(ra.astype(np.int64), 1.5), ddl.bool)


def test_comparisons_with_nan():
    a = ddl.tensor([np.nan, 1.0])
    assert (a == a).tolist() == [False, True]  # noqa: PLR0124 (NaN is not equal to itself)
    assert (a != a).tolist() == [True, False]  # noqa: PLR0124
    assert (a < 2).tolist() == [False, True]


def test_bool_comparisons():
    a = ddl.tensor([True, False, True])
    b = ddl.tensor([True, True, False])
    check(a == b, [True, False, False], ddl.bool)
    check(a > b, [False, False, True], ddl.bool)


# ---- scalars ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("scalar", [2, 0.5, -1.5, True])
def test_binary_with_python_scalar(name, dtype, scalar, rng):
    fn, ref_fn = BINARY[name]
    a, ra = binary_inputs(name, (3, 4), dtype, "stepped", rng)
    s = dtype.numpy.type(scalar)  # the scalar takes the tensor's dtype
    check(fn(a, scalar), np_ref(ref_fn, ra, np.float64(s)), dtype)
    if name != "pow":
        check(fn(scalar, a), np_ref(ref_fn, np.float64(s), ra), dtype)


def test_reflected_operators(rng):
    a, ra = make((2, 3), ddl.float64, "transposed", rng, 0.5, 2)
    check(2 + a, 2 + ra)
    check(2 - a, 2 - ra)
    check(2 * a, 2 * ra)
    check(2 / a, 2 / ra)
    check(2 ** a, 2**ra)
    check(-a, -ra)
    check(+a, ra)
    check(abs(-a), ra)
    check(a ** 2, ra**2)
    check(a ** 0.5, np.sqrt(ra))


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "**", "<", ">=", "==", "!="])
@pytest.mark.parametrize("other", [
    np.arange(1.0, 4.0), np.arange(1, 4), np.array(2.0), np.float64(2.0), np.float32(2.0),
    np.int64(2), np.int32(2), np.arange(1.0, 4.0, dtype=np.float32), np.array([True, False, True]),
    np.arange(1, 4, dtype=np.int32)])
def test_numpy_operands_give_tensors(op, other):
    t = ddl.tensor([1.5, 2.0, 3.0])
    fwd = eval(f"t {op} other")
    rev = eval(f"other {op} t")
    assert isinstance(fwd, ddl.Tensor) and isinstance(rev, ddl.Tensor)
    tn = t.numpy().astype(np.float64)
    o = np.asarray(other, dtype=np.float64)
    check(fwd, np_ref(lambda x, y: eval(f"x {op} y"), tn, o))
    check(rev, np_ref(lambda x, y: eval(f"y {op} x"), tn, o))


def test_numpy_array_with_tensor_keeps_tensor_dtype_rules():
    t = ddl.tensor([1, 2, 3])
    r = np.array([0.5, 0.5, 0.5]) + t  # float64 array + int64 tensor -> float64
    assert isinstance(r, ddl.Tensor) and r.dtype is ddl.float64
    check(r, [1.5, 2.5, 3.5])


# ---- unary ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (2, 3, 4), (0, 3)])
def test_unary(name, dtype, layout, shape, rng):
    fn, ref_fn, (low, high) = UNARY[name]
    a, ra = make(shape, dtype, layout, rng, low, high)
    check(fn(a), np_ref(ref_fn, ra), dtype)
    check(getattr(a, name)(), np_ref(ref_fn, ra), dtype)


@pytest.mark.parametrize("name", UNARY)
def test_unary_of_int64(name, rng):
    fn, ref_fn, (low, high) = UNARY[name]
    a, ra = make((3, 4), ddl.int64, "transposed", rng, max(low, 1) if name == "log" else low,
                 high)
    out_dtype = ddl.int64 if name in ("neg", "abs", "relu", "sign") else ddl.float32
    check(fn(a), np_ref(ref_fn, ra), out_dtype)


def test_unary_special_values():
    x = ddl.tensor([-np.inf, -1000.0, -0.0, 0.0, 1000.0, np.inf, np.nan], dtype=ddl.float64)
    s = ddl.sigmoid(x).numpy()
    np.testing.assert_array_equal(s[:6], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    assert np.isnan(s[6])
    f = ddl.sigmoid(x.float()).numpy()
    assert np.isfinite(f[:6]).all() and np.isnan(f[6])
    r = ddl.relu(x).numpy()
    np.testing.assert_array_equal(r[:6], [0, 0, 0, 0, 1000, np.inf])
    assert np.isnan(r[6])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ddl.log(ddl.tensor([0.0, -1.0, 1.0])).numpy(),
                                      np.log(np.array([0.0, -1.0, 1.0], dtype=np.float32)))
    assert np.isnan(ddl.sqrt(ddl.tensor([-1.0])).item())
    np.testing.assert_array_equal(ddl.tanh(x).numpy()[:6], np.tanh(x.numpy()[:6]))


def test_ufunc_forms_give_tensors():
    t = ddl.tensor([0.5, 1.0])
    for ufunc in (np.exp, np.log, np.sqrt, np.tanh, np.negative, np.abs):
        r = ufunc(t)
        assert isinstance(r, ddl.Tensor)
        check(r, ufunc(t.numpy().astype(np.float64)))


# ---- clamp, where ---------------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi", [(-0.5, 0.5), (None, 0.3), (-0.2, None), (1.0, 2.0),
                                    (0, 0)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_clamp(lo, hi, dtype, layout, rng):
    a, ra = make((3, 5), dtype, layout, rng)
    ref = np.clip(ra, lo, hi)
    check(a.clamp(lo, hi), ref, dtype)
    check(ddl.clamp(a, min=lo, max=hi), ref, dtype)
    check(a.clip(lo, hi), ref, dtype)


def test_clamp_int_and_inplace(rng):
    a, ra = make((4, 4), ddl.int64, "stepped", rng, -10, 10)
    check(a.clamp(-3, 4), np.clip(ra, -3, 4), ddl.int64)
    b, rb = make((3, 3), ddl.float32, "transposed", rng)
    r = b.clamp_(min=0)
    assert r is b
    check(b, np.maximum(rb, 0))


def test_clamp_int_with_float_bounds_promotes():
    a = ddl.tensor([1, 5, -3])
    check(a.clamp(0.5, 2.5), [1.0, 2.5, 0.5], ddl.float32)  # PyTorch's promotion
    check(a.clamp(max=2.5), [1.0, 2.5, -3.0], ddl.float32)
    check(a.clamp(0, 2), [1, 2, 0], ddl.int64)
    with pytest.raises(TypeError):
        a.clamp_(0.5, 2.5)
    assert a.tolist() == [1, 5, -3]


def test_clamp_needs_a_bound():
    with pytest.raises(ValueError):
        ddl.ones(3).clamp()


def test_clamp_nan_passes_through():
    out = ddl.tensor([np.nan, 5.0]).clamp(0, 1).numpy()
    assert np.isnan(out[0]) and out[1] == 1


@pytest.mark.parametrize("sc, sa, sb", [((3, 4), (3, 4), (3, 4)), ((4,), (3, 4), ()),
                                        ((3, 1), (1, 4), (4,)), ((), (2, 2), (2, 2)),
                                        ((0, 2), (2,), (1,))])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_where(sc, sa, sb, layout, rng):
    c, rc = make(sc, ddl.bool, layout, rng)
    a, ra = make(sa, ddl.float64, layout, rng)
    b, rb = make(sb, ddl.float64, "contiguous", rng)
    check(ddl.where(c, a, b), np.where(rc.astype(bool), ra, rb), ddl.float64)


def test_where_scalars_and_promotion(rng):
    a, ra = make((3, 4), ddl.float32, "transposed", rng)
    cond = a > 0
    check(ddl.where(cond, a, 0.0), np.where(ra > 0, ra, 0.0), ddl.float32)
    check(ddl.where(cond, 1.0, a), np.where(ra > 0, 1.0, ra), ddl.float32)
    i = ddl.tensor([1, 2, 3])
    check(ddl.where(i > 1, i, 0.5), [0.5, 2, 3], ddl.float32)
    check(ddl.where(i > 1, i, 0), [0, 2, 3], ddl.int64)
    check(ddl.where(i > 1, i, a[0, :3].double()), np.where([0, 1, 1], [1, 2, 3], ra[0, :3]),
          ddl.float64)
    check(ddl.where(np.array([True, False, True]), i, -i), [1, -2, 3], ddl.int64)


def test_where_shape_mismatch():
    with pytest.raises(ValueError):
        ddl.where(ddl.ones(3) > 0, ddl.ones(3), ddl.ones(4))


# ---- in place --------------------------------------------------------------------------


@pytest.mark.parametrize("method, ref_fn", [("add_", np.add), ("sub_", np.subtract),
                                            ("mul_", np.multiply), ("div_", np.divide)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", LAYOUTS[:3])  # an expanded target would alias itself
@pytest.mark.parametrize("other_shape", [(), (4,), (3, 1), (3, 4)])
def test_inplace_binary(method, ref_fn, dtype, layout, other_shape, rng):
    a, ra = make((3, 4), dtype, layout, rng)
    b, rb = make(other_shape, ddl.float64, "contiguous", rng, 0.5, 2)
    storage, ptr = a._storage_id, a._data_ptr
    r = getattr(a, method)(b)
    assert r is a and a._storage_id == storage and a._data_ptr == ptr
    check(a, ref_fn(ra, rb), dtype)
    r = getattr(a, method)(2)
    check(a, ref_fn(ref_fn(ra, rb), 2), dtype)


def test_inplace_writes_through_to_the_base(rng):
    base, rbase = make((4, 6), ddl.float64, "contiguous", rng)
    v = base[1::2, ::3]
    v.add_(10)
    rbase[1::2, ::3] += 10
    check(base, rbase)
    base.T.mul_(2)
    check(base, rbase * 2)
    base[0].zero_()
    rbase = rbase * 2
    rbase[0] = 0
    check(base, rbase)


def test_inplace_alpha():
    a = ddl.tensor([1.0, 2.0])
    a.add_(ddl.tensor([1.0, 1.0]), alpha=3)
    check(a, [4.0, 5.0])
    a.sub_(ddl.tensor([1.0, 2.0]), alpha=0.5)
    check(a, [3.5, 4.0])
    check(a.add(ddl.tensor([1.0, 1.0]), alpha=2), [5.5, 6.0])


def test_inplace_int_ok():
    a = ddl.tensor([1, 2, 3])
    a += 2
    a *= ddl.tensor([2, 2, 2])
    a -= ddl.tensor([True, False, True])
    check(a, [5, 8, 9], ddl.int64)
    f = ddl.tensor([1.0, 2.0])
    f += ddl.tensor([1, 2])  # int into float is fine
    f *= True
    check(f, [2.0, 4.0], ddl.float32)
    d = ddl.tensor([1.0], dtype=ddl.float32)
    d += ddl.tensor([1e-3], dtype=ddl.float64)  # float64 into float32 rounds, as in PyTorch
    check(d, [1.001], ddl.float32)


@pytest.mark.parametrize("op", [
    lambda a: a.add_(1.5), lambda a: a.mul_(0.5), lambda a: a.sub_(ddl.tensor([0.5])),
    lambda a: a.div_(2), lambda a: a.div_(ddl.tensor([2])), lambda a: a.exp_(),
    lambda a: a.sqrt_(), lambda a: a.sigmoid_(), lambda a: a.__iadd__(0.5)])
def test_inplace_float_into_int_raises_type_error(op):
    a = ddl.tensor([1, 2, 3])
    with pytest.raises(TypeError):
        op(a)
    assert a.tolist() == [1, 2, 3]  # untouched


def test_inplace_iadd_statement_raises_type_error():
    a = ddl.tensor([1, 2])
    with pytest.raises(TypeError):
        a += 0.5
    with pytest.raises(TypeError):
        a /= 2
    b = ddl.tensor([True, False])
    with pytest.raises(TypeError):
        b += 1


def test_inplace_cannot_broadcast_target():
    a = ddl.ones(3)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        a.add_(ddl.ones(2, 3))
    with pytest.raises(ValueError):
        a.mul_(ddl.ones(4))


def test_python_inplace_operators_keep_identity(rng):
    a, ra = make((2, 3), ddl.float32, "contiguous", rng)
    alias = a
    view = a[0]
    a += 1
    a -= ddl.tensor([0.5, 0.5, 0.5])
    a *= 2
    a /= 4
    a **= 2
    assert a is alias
    ref = (((ra + 1 - 0.5) * 2) / 4) ** 2
    check(a, ref)
    check(view, ref[0])


@pytest.mark.parametrize("name", ["neg_", "exp_", "abs_", "tanh_", "sigmoid_", "relu_", "sqrt_",
                                  "log_"])
def test_inplace_unary_on_view(name, rng):
    base, rbase = make((4, 4), ddl.float64, "contiguous", rng, 0.1, 2)
    v = base[::2, 1:].T
    r = getattr(v, name)()
    assert r is v
    ref_fn = {"neg_": np.negative, "exp_": np.exp, "abs_": np.abs, "tanh_": np.tanh,
              "sigmoid_": lambda x: 1 / (1 + np.exp(-x)), "relu_": lambda x: np.maximum(x, 0),
              "sqrt_": np.sqrt, "log_": np.log}[name]
    rbase[::2, 1:] = ref_fn(rbase[::2, 1:])
    check(base, rbase)


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64, ddl.int64, ddl.bool])
@pytest.mark.parametrize("layout", LAYOUTS[:3])
def test_zero_and_fill(dtype, layout, rng):
    base = ddl.ones(5, 6, dtype=dtype)
    view = {"contiguous": base[1:3], "transposed": base.T[2:4],
            "stepped": base[::2, 1::3]}[layout]
    ref = np.ones((5, 6), dtype=dtype.numpy)
    ref_view = {"contiguous": ref[1:3], "transposed": ref.T[2:4],
                "stepped": ref[::2, 1::3]}[layout]
    assert view.zero_() is view
    ref_view[...] = 0
    check(base, ref)
    assert view.fill_(1 if dtype is ddl.bool else 7) is view
    ref_view[...] = 1 if dtype is ddl.bool else 7
    check(base, ref)


def test_fill_converts_value():
    a = ddl.zeros(3, dtype=ddl.int64)
    a.fill_(2**60 + 1)
    assert a.tolist() == [2**60 + 1] * 3
    f = ddl.zeros(2)
    f.fill_(True)
    check(f, [1.0, 1.0])
    f.fill_(ddl.tensor(2.5))
    check(f, [2.5, 2.5])


@pytest.mark.parametrize("src_shape", [(3, 4), (4,), (1, 4), (3, 1), ()])
@pytest.mark.parametrize("src_dtype", [ddl.float32, ddl.float64, ddl.int64, ddl.bool])
@pytest.mark.parametrize("dst_dtype", [ddl.float32, ddl.float64, ddl.int64])
def test_copy_broadcasts_and_converts(src_shape, src_dtype, dst_dtype, rng):
    dst = ddl.zeros(3, 4, dtype=dst_dtype)
    src, rsrc = make(src_shape, src_dtype, "contiguous", rng, -5, 5)
    assert dst.copy_(src) is dst
    check(dst, np.broadcast_to(rsrc, (3, 4)).astype(dst_dtype.numpy), dst_dtype)


def test_copy_truncates_float_to_int():
    a = ddl.zeros(4, dtype=ddl.int64)
    a.copy_(ddl.tensor([1.7, -1.7, 2.0, -0.5]))
    assert a.tolist() == [1, -1, 2, 0]


def test_copy_into_noncontiguous_from_noncontiguous(rng):
    base = ddl.zeros(4, 6, dtype=ddl.float64)
    src, rsrc = make((2, 3), ddl.float32, "transposed", rng)
    base[::2, ::2].copy_(src)
    ref = np.zeros((4, 6))
    ref[::2, ::2] = rsrc
    check(base, ref)
    base.copy_(np.arange(24.0).reshape(4, 6))  # from an ndarray
    check(base, np.arange(24.0).reshape(4, 6))


def test_copy_shape_mismatch():
    with pytest.raises(ValueError):
        ddl.zeros(3).copy_(ddl.ones(4))
    with pytest.raises(ValueError):
        ddl.zeros(3).copy_(ddl.ones(2, 3))


def test_ops_do_not_modify_inputs(rng):
    a, ra = make((3, 4), ddl.float32, "stepped", rng)
    b, rb = make((4,), ddl.float32, "contiguous", rng)
    for fn in (ddl.add, ddl.mul, ddl.maximum):
        fn(a, b)
    ddl.exp(a)
    a.clamp(0, 1)
    check(a, ra)
    check(b, rb)


# ---- aliasing: in-place ops and copies whose source shares memory with the target ------------


# (the op on a tensor, the same op in NumPy with the source copied out first)
OVERLAP_CASES = {
    "iadd_T": (lambda t: t.__iadd__(t.T), lambda r: r.__iadd__(r.T.copy())),
    "shift_add": (lambda t: t[1:].add_(t[:-1]), lambda r: r[1:].__iadd__(r[:-1].copy())),
    "shift_mul_cols": (lambda t: t[:, 1:].mul_(t[:, :-1]),
                       lambda r: r[:, 1:].__imul__(r[:, :-1].copy())),
    "sub_row": (lambda t: t.sub_(t[0]), lambda r: r.__isub__(r[0].copy())),
    "div_interleaved": (lambda t: t[::2].div_(t[1::2]), lambda r: r[::2].__itruediv__(r[1::2])),
    "self": (lambda t: t.__iadd__(t), lambda r: r.__iadd__(r.copy())),
    "copy_down": (lambda t: t[1:, :2].copy_(t[:-1, :2]),
                  lambda r: np.copyto(r[1:, :2], r[:-1, :2].copy())),
    "copy_up": (lambda t: t[:-1].copy_(t[1:]), lambda r: np.copyto(r[:-1], r[1:].copy())),
    "copy_T": (lambda t: t.copy_(t.T), lambda r: np.copyto(r, r.T.copy())),
    "setitem": (lambda t: t.__setitem__((slice(1, None), slice(None, 2)), t[:-1, 1:3]),
                lambda r: np.copyto(r[1:, :2], r[:-1, 1:3].copy())),
}


@pytest.mark.parametrize("name", OVERLAP_CASES)
def test_overlapping_source_reads_before_writes(name):
    """The result is as if the source were copied first (NumPy's semantics)."""
    op, ref_op = OVERLAP_CASES[name]
    t = ddl.tensor(np.arange(1.0, 17.0).reshape(4, 4))
    ref = np.arange(1.0, 17.0).reshape(4, 4)
    op(t)
    ref_op(ref)
    check(t, ref)


@pytest.mark.parametrize("op", [lambda e: e.add_(1), lambda e: e.mul_(ddl.ones(2, 3)),
                                lambda e: e.exp_(), lambda e: e.relu_(),
                                lambda e: e.__iadd__(1.0)])
def test_inplace_on_expanded_raises(op):
    base = ddl.ones(3)
    with pytest.raises(ValueError, match="share memory"):
        op(base.expand(2, 3))
    assert base.tolist() == [1.0, 1.0, 1.0]


# ---- the largest rank: 8 dims --------------------------------------------------------------


def test_eight_dims(rng):
    s1, s2 = (2, 1, 2, 1, 2, 1, 2, 1), (1, 2, 1, 2, 1, 2, 1, 2)
    a, ra = make(s1, ddl.float64, "stepped", rng)
    b, rb = make(s2, ddl.float64, "transposed", rng)
    check(a + b, ra + rb)
    check(ddl.where(a > 0, a, b), np.where(ra > 0, ra, rb))
    p = tuple(reversed(range(8)))
    check((a * b).permute(*p).exp(), np.exp((ra * rb).transpose(p)))
    a2, ra2 = make((1, 2, 1, 2, 1, 2, 3, 4), ddl.float64, "contiguous", rng)
    b2, rb2 = make((2, 1, 2, 1, 2, 1, 4, 2), ddl.float64, "contiguous", rng)
    check(a2 @ b2, ra2 @ rb2)
    check((a2 + 1).sum((1, 3, 5)), (ra2 + 1).sum((1, 3, 5)))
    check(a2.T.var((0, 2, 4, 6)), ra2.T.var((0, 2, 4, 6), ddof=1))
    check(ddl.cat([a2, a2], 7), np.concatenate([ra2, ra2], 7))
    with pytest.raises(ValueError):
        ddl.stack([a2, a2])  # would need 9 dims
