"""Reductions against NumPy: sum, mean, max, min, argmax, argmin, var, std and prod over any
dims, with keepdim, on every layout; empty reductions; the PyTorch return conventions."""
import itertools

import numpy as np
import pytest
from _util import LAYOUTS, check, make, np_ref

import ddl

SHAPE = (3, 4, 5)
# every subset of the dims, plus negative spellings and None (all dims)
DIMS = [None] + [d for r in (1, 2, 3) for d in itertools.combinations(range(3), r)] + [
    (-1,), (-3, -1), -2, 0]


def np_dims(dims):
    return None if dims is None else (dims if isinstance(dims, tuple) else (dims,))


def ref_reduce(name, r, dims, keepdim, correction=1):
    axis = np_dims(dims)
    fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "amax": np.max, "amin": np.min}
    if name in fn:
        return np_ref(fn[name], r, axis) if not keepdim else np_ref(
            lambda x: fn[name](x, axis=axis, keepdims=True), r)
    if name == "var":
        return np_ref(lambda x: np.var(x, axis=axis, ddof=correction, keepdims=keepdim), r)
    if name == "std":
        return np_ref(lambda x: np.std(x, axis=axis, ddof=correction, keepdims=keepdim), r)
    raise AssertionError(name)


def reduce_out_dtype(name, dtype):
    if dtype in (ddl.float32, ddl.float64):
        return dtype
    return ddl.int64 if name in ("sum", "prod") else dtype if name in ("amax", "amin") else \
        ddl.float32


@pytest.mark.parametrize("name", ["sum", "mean", "prod", "amax", "amin"])
@pytest.mark.parametrize("dims", DIMS, ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_reduce_dims(name, dims, keepdim, dtype, rng):
    a, ra = make(SHAPE, dtype, "contiguous", rng, 0.5, 1.5)
    out = getattr(a, name)(dims, keepdim)
    check(out, ref_reduce(name, ra, dims, keepdim), dtype)


@pytest.mark.parametrize("name", ["sum", "mean", "prod", "amax", "amin", "var", "std"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dims", [None, 0, 1, 2, (0, 2), (1, 2), (0, 1)], ids=str)
def test_reduce_layouts(name, layout, dims, rng):
    a, ra = make(SHAPE, ddl.float64, layout, rng, 0.5, 1.5)
    check(getattr(a, name)(dims), ref_reduce(name, ra, dims, False), ddl.float64)
    check(getattr(a, name)(dims, keepdim=True), ref_reduce(name, ra, dims, True), ddl.float64)


@pytest.mark.parametrize("name", ["sum", "mean", "prod", "amax", "amin"])
@pytest.mark.parametrize("dtype", [ddl.int64, ddl.bool])
@pytest.mark.parametrize("dims", [None, 1, (0, 2)], ids=str)
def test_reduce_integer_inputs(name, dtype, dims, rng):
    a, ra = make(SHAPE, dtype, "transposed", rng, -3, 3)
    out = getattr(a, name)(dims)
    ref = ref_reduce(name, ra, dims, False)
    out_dtype = reduce_out_dtype(name, dtype)
    if out_dtype is ddl.int64 or out_dtype is ddl.bool:
        ref = ref.astype(out_dtype.numpy)
    check(out, ref, out_dtype)


def test_int_sum_is_exact():
    big = 2**60
    assert ddl.tensor([big, 1, 2]).sum().item() == big + 3


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("correction", [0, 1, 2])
@pytest.mark.parametrize("dims", [None, 0, 2, (0, 1), (-1, -2)], ids=str)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_var_std_correction(name, correction, dims, keepdim, dtype, rng):
    a, ra = make(SHAPE, dtype, "stepped", rng, -3, 3)
    out = getattr(a, name)(dims, keepdim, correction=correction)
    check(out, ref_reduce(name, ra, dims, keepdim, correction), dtype)


def test_var_std_defaults_and_spellings(rng):
    a, ra = make((6, 7), ddl.float64, "contiguous", rng)
    check(a.var(), np.var(ra, ddof=1))  # PyTorch's default: unbiased
    check(a.std(1), np.std(ra, axis=1, ddof=1))
    check(a.var(0, unbiased=False), np.var(ra, axis=0))
    check(a.std(unbiased=True), np.std(ra, ddof=1))
    check(ddl.var(a, 1, correction=0), np.var(ra, axis=1))
    check(ddl.std(a, 0, keepdim=True), np.std(ra, axis=0, ddof=1, keepdims=True))
    check(a.var(axis=1, ddof=0), np.var(ra, axis=1))
    v = ddl.tensor([1, 2, 3, 4]).var()
    assert v.dtype is ddl.float32 and v.item() == pytest.approx(np.var([1, 2, 3, 4], ddof=1))


def test_var_of_constant_is_zero_not_negative():
    a = ddl.full((1000,), 0.1, dtype=ddl.float32)
    assert a.var().item() >= 0
    assert a.std().item() == pytest.approx(0, abs=1e-6)


def test_var_too_few_elements_is_nan():
    assert np.isnan(ddl.tensor([1.0]).var().item())  # one element, correction 1
    assert ddl.tensor([1.0]).var(correction=0).item() == 0


def test_var_stable_with_large_offset():
    x = np.array([1e8 + 1, 1e8 + 2, 1e8 + 3, 1e8 + 4])
    assert ddl.tensor(x).var().item() == pytest.approx(np.var(x, ddof=1), rel=1e-9)


# ---- max/min/argmax/argmin --------------------------------------------------------------


@pytest.mark.parametrize("which", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64, ddl.int64])
def test_max_min_dim_returns_values_and_indices(which, dim, keepdim, layout, dtype, rng):
    a, ra = make(SHAPE, dtype, layout, rng, -100, 100)
    res = getattr(a, which)(dim, keepdim)
    values, indices = res
    assert res.values is values and res.indices is indices
    npf = np.max if which == "max" else np.min
    argf = np.argmax if which == "max" else np.argmin
    check(values, npf(ra, axis=dim, keepdims=keepdim), dtype)
    ref_idx = argf(ra, axis=dim)
    if keepdim:
        ref_idx = np.expand_dims(ref_idx, dim)
    check(indices, ref_idx, ddl.int64)
    check(getattr(a, "arg" + which)(dim, keepdim), ref_idx, ddl.int64)


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64, ddl.int64, ddl.bool])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_min_all(dtype, layout, rng):
    a, ra = make(SHAPE, dtype, layout, rng, -9, 9)
    mx, mn = a.max(), a.min()
    assert mx.shape == () and mn.shape == () and mx.dtype is dtype
    assert mx.item() == ra.max() and mn.item() == ra.min()
    am, ai = a.argmax(), a.argmin()
    assert am.dtype is ddl.int64 and am.shape == ()
    assert am.item() == np.argmax(ra) and ai.item() == np.argmin(ra)  # flat index, first tie
    assert ddl.max(a).item() == ra.max()


def test_argmax_ties_take_first():
    a = ddl.tensor([[1, 3, 3], [2, 2, 0], [5, 5, 5]])
    assert a.argmax(1).tolist() == [1, 0, 0]
    assert a.argmin(1).tolist() == [0, 2, 0]
    assert a.argmax(0).tolist() == [2, 2, 2]
    assert a.argmax().item() == 6


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_max_min_propagate_nan(dtype):
    a = ddl.tensor([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], dtype=dtype)
    assert np.isnan(a.max().item()) and np.isnan(a.min().item())
    v, i = a.max(1)
    assert np.isnan(v[0].item()) and v[1].item() == 6
    assert i.tolist() == [1, 2]
    assert a.argmin(1).tolist() == [1, 0]
    assert np.isnan(a.sum().item())


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_max_of_infinities(dtype):
    a = ddl.tensor([-np.inf, -np.inf], dtype=dtype)
    assert a.max().item() == -np.inf and a.argmax().item() == 0
    assert ddl.tensor([np.inf, 1.0], dtype=dtype).min(0).indices.item() == 1


def test_numpy_style_max_with_axis_returns_values():
    a = ddl.tensor([[1.0, 5.0], [7.0, 2.0]])
    out = np.max(a, axis=1)
    check(out, [5.0, 7.0])
    check(a.max(dim=(0, 1)), 7.0)
    check(a.amax(0), [7.0, 5.0])
    check(a.amin(1, keepdim=True), [[1.0], [2.0]])


def test_max_with_tensor_is_maximum():
    a = ddl.tensor([1.0, 5.0])
    b = ddl.tensor([3.0, 2.0])
    check(a.max(b), [3.0, 5.0])
    check(a.min(b), [1.0, 2.0])


def test_argmax_rejects_several_dims():
    with pytest.raises((ValueError, TypeError)):
        ddl.ones(2, 3).argmax((0, 1))


# ---- empty and degenerate -----------------------------------------------------------------


@pytest.mark.parametrize("shape, dims", [((0,), None), ((0, 3), 0), ((3, 0), 1), ((2, 0, 3), (1,)),
                                         ((2, 0, 3), (0, 1))], ids=str)
def test_empty_reductions(shape, dims):
    a = ddl.zeros(shape, dtype=ddl.float64)
    r = np.zeros(shape)
    axis = np_dims(dims)
    check(a.sum(dims), np.sum(r, axis=axis))
    check(a.prod(dims), np.prod(r, axis=axis))
    check(a.mean(dims), np_ref(lambda x: np.mean(x, axis=axis), r))  # nan
    check(ddl.zeros(shape, dtype=ddl.int64).sum(dims), np.sum(r, axis=axis).astype(np.int64))


@pytest.mark.parametrize("op", ["max", "min", "argmax", "argmin", "amax"])
def test_empty_max_raises_value_error(op):
    with pytest.raises(ValueError):
        getattr(ddl.zeros(0), op)()
    with pytest.raises(ValueError):
        getattr(ddl.zeros(2, 0), op)(1)


def test_reduce_over_nonempty_dim_of_empty_tensor():
    a = ddl.zeros(0, 3)
    v, i = a.max(1)
    assert v.shape == (0,) and i.shape == (0,)
    assert a.sum(1).shape == (0,)


def test_reduce_0d():
    a = ddl.tensor(2.5)
    assert a.sum().item() == 2.5 and a.max().item() == 2.5 and a.argmax().item() == 0
    assert a.sum(0).item() == 2.5  # dim 0 of a 0-d tensor, as in PyTorch
    assert a.mean(keepdim=True).shape == ()
    assert a.var(correction=0).item() == 0


def test_size1_dims_and_keepdim_shapes(rng):
    a, ra = make((1, 4, 1), ddl.float32, "contiguous", rng)
    assert a.sum(0).shape == (4, 1)
    assert a.sum((0, 2), keepdim=True).shape == (1, 4, 1)
    assert a.sum(keepdim=True).shape == (1, 1, 1)
    check(a.mean(1), ra.mean(axis=1))


def test_reduce_bad_dim_raises_index_error():
    a = ddl.ones(2, 3)
    with pytest.raises(IndexError):
        a.sum(2)
    with pytest.raises(IndexError):
        a.max(-3)


def test_repeated_dim_raises():
    with pytest.raises(ValueError):
        ddl.ones(2, 3).sum((0, 0))


# ---- accuracy, larger sizes ------------------------------------------------------------


def test_float32_sum_is_accurate():
    x = np.full(1_000_003, 0.1, dtype=np.float32)
    assert ddl.from_numpy(x).sum().item() == pytest.approx(float(x.astype(np.float64).sum()),
                                                           rel=1e-6)


@pytest.mark.parametrize("shape, dim", [((257, 33), 0), ((33, 257), 1), ((70, 3, 40), (0, 2)),
                                        ((2, 1000), 0), ((1000, 2), 1)], ids=str)
@pytest.mark.parametrize("name", ["sum", "amax", "var"])
def test_reduce_larger_shapes(shape, dim, name, rng):
    for layout in ("contiguous", "transposed"):
        a, ra = make(shape, ddl.float32, layout, rng)
        check(getattr(a, name)(dim), ref_reduce(name, ra, dim, False), ddl.float32,
              rtol=2e-5, atol=2e-5)


# ---- all/any, function forms, NumPy entry points ------------------------------------------


def test_all_any():
    a = ddl.tensor([[True, False], [True, True]])
    assert a.all().item() is False and a.any().item() is True
    assert a.all(1).tolist() == [False, True]
    assert ddl.tensor([0.0, 2.0]).any().item() is True


def test_function_forms_and_numpy(rng):
    a, ra = make((3, 4), ddl.float64, "contiguous", rng)
    check(ddl.sum(a, 1), ra.sum(1))
    check(ddl.mean(a, (0, 1), keepdim=True), ra.mean(keepdims=True).reshape(1, 1))
    check(ddl.prod(a), ra.prod())
    assert ddl.argmax(a).item() == np.argmax(ra)
    check(ddl.min(a, 0).values, ra.min(0))
    s = np.sum(a)
    assert isinstance(s, ddl.Tensor)
    check(s, ra.sum())
    check(np.sum(a, axis=0), ra.sum(axis=0))
    check(np.mean(a, axis=1, keepdims=True), ra.mean(axis=1, keepdims=True))
    check(np.max(a), ra.max())
    check(np.std(a), ra.std())  # NumPy's default ddof=0 reaches us as ddof
    check(a.sum(dtype=ddl.float32), ra.sum(), ddl.float32)
    check(a.sum(axis=1), ra.sum(axis=1))
