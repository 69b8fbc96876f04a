"""Tensor creation: tensor(), from_numpy(), the fill constructors, ranges, *_like, random
numbers, dtypes and promotion."""
import numpy as np
import pytest
from _util import ALL_DTYPES, check

import ddl

# ---- dtypes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dt, np_dt, size", [
    (ddl.float32, np.float32, 4), (ddl.float64, np.float64, 8), (ddl.int64, np.int64, 8),
    (ddl.bool, np.bool_, 1)])
def test_dtype_attributes(dt, np_dt, size):
    assert dt.itemsize == size
    assert dt.numpy == np.dtype(np_dt)
    assert dt.is_floating_point == (np.dtype(np_dt).kind == "f")
    assert repr(dt) == f"ddl.{dt.name}"
    assert ddl.zeros(2, dtype=dt).element_size() == size


def test_dtype_aliases():
    assert ddl.float is ddl.float32 and ddl.double is ddl.float64 and ddl.long is ddl.int64
    for spelling in ("float64", "double", np.float64, np.dtype("float64")):
        assert ddl.zeros(1, dtype=spelling).dtype is ddl.float64
    assert ddl.zeros(1, dtype=float).dtype is ddl.float32
    assert ddl.zeros(1, dtype=int).dtype is ddl.int64
    assert ddl.zeros(1, dtype=bool).dtype is ddl.bool


@pytest.mark.parametrize("bad", [np.complex64, "complex64", "float128", object])
def test_unsupported_dtype_raises_type_error(bad):
    with pytest.raises(TypeError):
        ddl.zeros(2, dtype=bad)


@pytest.mark.parametrize(("narrow", "stored"), [
    (np.int32, "int32"), (np.float16, "float16"), ("int8", "int8"), ("uint8", "uint8"),
    ("int32", "int32"), ("bfloat16", "bfloat16"), ("int16", "int16")])
def test_narrow_dtypes_are_real_storage_dtypes(narrow, stored):
    assert ddl.zeros(2, dtype=narrow).dtype.name == stored
    t = ddl.tensor([1, 2]).to(getattr(ddl, narrow) if isinstance(narrow, str) else narrow)
    assert t.dtype.name == stored and t.tolist() == [1, 2]
    assert t.element_size() == getattr(ddl, stored).itemsize


# ---- tensor() ------------------------------------------------------------------------------


@pytest.mark.parametrize("data, dtype, shape", [
    ([1, 2, 3], ddl.int64, (3,)),
    ([1.0, 2, 3], ddl.float32, (3,)),
    ([True, False], ddl.bool, (2,)),
    (3.5, ddl.float32, ()),
    (7, ddl.int64, ()),
    (True, ddl.bool, ()),
    ([[1, 2], [3, 4], [5, 6]], ddl.int64, (3, 2)),
    ([[[0.5]]], ddl.float32, (1, 1, 1)),
    ([], ddl.float32, (0,)),
    ([[], []], ddl.float32, (2, 0)),
    ((1, 2.5), ddl.float32, (2,)),
])
def test_tensor_infers_dtype_and_shape(data, dtype, shape):
    t = ddl.tensor(data)
    assert t.dtype is dtype
    assert t.shape == shape
    np.testing.assert_array_equal(t.numpy(), np.array(data, dtype=dtype.numpy))


@pytest.mark.parametrize("np_dt, dtype", [
    (np.float64, ddl.float64), (np.float32, ddl.float32), (np.int64, ddl.int64),
    (np.bool_, ddl.bool), (np.int32, ddl.int32), (np.uint8, ddl.uint8), (np.int16, ddl.int16),
    (np.int8, ddl.int8), (np.float16, ddl.float16), (np.uint16, ddl.int64),
    (np.uint32, ddl.int64)])
def test_tensor_from_array_keeps_or_widens_dtype(np_dt, dtype):
    a = np.arange(6).reshape(2, 3).astype(np_dt)
    t = ddl.tensor(a)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), a.astype(dtype.numpy))
    a[0, 0] = 5  # tensor() copies
    assert t[0, 0].item() == 0


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tensor_with_dtype(dtype):
    t = ddl.tensor([[0, 1.5], [-2, 3]], dtype=dtype)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), np.array([[0, 1.5], [-2, 3]]).astype(dtype.numpy))


def test_tensor_of_noncontiguous_array_copies_values():
    a = np.arange(24.0).reshape(4, 6)[::2, ::-3].T
    t = ddl.tensor(a)
    assert t.is_contiguous()
    np.testing.assert_array_equal(t.numpy(), a)


def test_tensor_of_tensor_is_a_copy():
    a = ddl.tensor([1.0, 2.0])
    b = ddl.tensor(a)
    b[0] = 9
    assert a[0].item() == 1.0
    assert ddl.tensor(a, dtype=ddl.int64).dtype is ddl.int64


def test_tensor_of_numpy_scalars():
    assert ddl.tensor(np.float64(2.5)).dtype is ddl.float64
    assert ddl.tensor(np.float64(2.5)).item() == 2.5
    assert ddl.tensor([np.int64(1), np.int64(2)]).dtype is ddl.int64


def test_as_tensor_shares_supported_arrays():
    a = np.zeros(3)
    t = ddl.as_tensor(a)
    t[1] = 4
    assert a[1] == 4
    b = ddl.as_tensor([1, 2])
    assert b.dtype is ddl.int64
    assert ddl.as_tensor(t) is t


# ---- from_numpy ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_from_numpy_is_zero_copy_both_ways(dtype):
    a = np.zeros((3, 4), dtype=dtype.numpy)
    t = ddl.from_numpy(a)
    assert t.dtype is dtype and t.shape == (3, 4)
    assert t._data_ptr == a.ctypes.data
    t[1, 2] = 1
    assert a[1, 2] == 1
    a[2, 3] = 1
    assert t[2, 3].item() == 1
    assert np.shares_memory(t.numpy(), a)


@pytest.mark.parametrize("make_view", [
    lambda a: a[::2, 1:],
    lambda a: a.T,
    lambda a: a[::-1, ::-2],
    lambda a: a[2],
    lambda a: a[:, 3],
    lambda a: np.broadcast_to(a[:1], (5, 6)),
])
def test_from_numpy_of_views_keeps_strides(make_view):
    base = np.arange(30.0).reshape(5, 6)
    v = make_view(base)
    t = ddl.from_numpy(v)
    assert t.shape == v.shape
    np.testing.assert_array_equal(t.numpy(), v)
    assert np.shares_memory(t.numpy(), base)
    check(t * 2, v * 2)  # ops read the strided layout correctly


def test_from_numpy_0d_and_empty():
    t = ddl.from_numpy(np.array(2.5))
    assert t.shape == () and t.item() == 2.5
    e = ddl.from_numpy(np.zeros((0, 3)))
    assert e.shape == (0, 3) and e.numel() == 0


@pytest.mark.parametrize("arr", [
    np.zeros(3, dtype=np.uint16), np.zeros(3, dtype=np.uint32), np.zeros(3, dtype=np.uint64),
    np.zeros(3, dtype=np.complex128), np.array([1, "a"], dtype=object),
    np.zeros(3, dtype=">f8"), np.zeros(2, dtype=[("x", "f4")])])
def test_from_numpy_unsupported_dtype_raises_type_error(arr):
    with pytest.raises(TypeError):
        ddl.from_numpy(arr)


def test_from_numpy_rejects_non_arrays():
    with pytest.raises(TypeError):
        ddl.from_numpy([1.0, 2.0])


# ---- fill constructors ---------------------------------------------------------------------


@pytest.mark.parametrize("fn, value", [(ddl.zeros, 0), (ddl.ones, 1)])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 1, 1, 1, 1, 1, 1, 1)])
def test_zeros_ones(fn, value, dtype, shape):
    t = fn(shape, dtype=dtype)
    assert t.shape == shape and t.dtype is dtype and t.is_contiguous()
    np.testing.assert_array_equal(t.numpy(), np.full(shape, value, dtype=dtype.numpy))


def test_shape_spellings():
    for t in (ddl.zeros(2, 3), ddl.zeros((2, 3)), ddl.zeros([2, 3]), ddl.zeros(np.int64(2), 3),
              ddl.ones(2, 3), ddl.empty(2, 3), ddl.rand(2, 3), ddl.randn([2, 3])):
        assert t.shape == (2, 3)
    assert ddl.zeros(()).shape == ()
    assert ddl.zeros(2, 3).dtype is ddl.float32


@pytest.mark.parametrize("value, dtype", [(2.5, ddl.float32), (7, ddl.int64), (True, ddl.bool),
                                          (-1.0, ddl.float32)])
def test_full_infers_dtype(value, dtype):
    t = ddl.full((2, 2), value)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), np.full((2, 2), value, dtype=dtype.numpy))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_full_with_dtype(dtype):
    t = ddl.full((3,), 3, dtype=dtype)
    np.testing.assert_array_equal(t.numpy(), np.full(3, 3, dtype=dtype.numpy))
    assert ddl.full(4, 1.5).shape == (4,)


def test_full_large_int_is_exact():
    big = 2**62 + 1
    assert ddl.full((2,), big).tolist() == [big, big]
    assert ddl.full((), -0.0).numpy().tobytes() == np.float32(-0.0).tobytes()


def test_empty_has_shape_and_dtype():
    t = ddl.empty(4, 5, dtype=ddl.float64)
    assert t.shape == (4, 5) and t.dtype is ddl.float64 and t.is_contiguous()
    t.fill_(3)
    assert (t == 3).all().item()


@pytest.mark.parametrize("like, args, value", [
    (ddl.zeros_like, (), 0), (ddl.ones_like, (), 1), (ddl.full_like, (4,), 4),
    (ddl.empty_like, (), None)])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_like_constructors(like, args, value, dtype):
    src = ddl.tensor(np.arange(6).reshape(2, 3)).to(dtype).T  # a non-contiguous source
    t = like(src, *args)
    assert t.shape == (3, 2) and t.dtype is dtype and t.is_contiguous()
    assert t._storage_id != src._storage_id
    if value is not None:
        np.testing.assert_array_equal(t.numpy(), np.full((3, 2), value, dtype=dtype.numpy))
    t2 = like(src, *args, dtype=ddl.float64)
    assert t2.dtype is ddl.float64


def test_rand_like_randn_like():
    src = ddl.zeros(3, 4, dtype=ddl.float64)
    for fn in (ddl.rand_like, ddl.randn_like):
        t = fn(src)
        assert t.shape == (3, 4) and t.dtype is ddl.float64
        assert t.numpy().std() > 0


# ---- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(5,), (0,), (2, 9), (2, 9, 3), (10, 0, -3), (0, -5, -1),
                                  (5, 2), (-3, 3)])
def test_arange_ints(args):
    t = ddl.arange(*args)
    assert t.dtype is ddl.int64
    np.testing.assert_array_equal(t.numpy(), np.arange(*args))


@pytest.mark.parametrize("args", [(2.5,), (0, 1, 0.1), (1.0, -1.0, -0.25), (0, 5, 0.5),
                                  (-1, 1.5, 0.7)])
def test_arange_floats(args):
    t = ddl.arange(*args)
    assert t.dtype is ddl.float32
    ref = np.arange(*[float(a) for a in args])
    assert t.shape == ref.shape
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_arange_dtype():
    t = ddl.arange(4, dtype=ddl.float64)
    assert t.dtype is ddl.float64
    np.testing.assert_array_equal(t.numpy(), [0, 1, 2, 3])


def test_arange_bad_step():
    with pytest.raises(ValueError):
        ddl.arange(0, 5, 0)


@pytest.mark.parametrize("start, end, steps", [(0, 1, 5), (-2, 3, 1), (1, 1, 4), (0, 10, 0),
                                               (3, -3, 7), (0, 1, 50), (0.0, 1.0, 2)])
@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_linspace(start, end, steps, dtype):
    t = ddl.linspace(start, end, steps, dtype=dtype)
    assert t.dtype is dtype
    ref = np.linspace(start, end, steps)
    assert t.shape == ref.shape
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6, atol=1e-6)
    if steps > 1:
        assert t[-1].item() == pytest.approx(end) and t[0].item() == pytest.approx(start)


def test_linspace_negative_steps():
    with pytest.raises(ValueError):
        ddl.linspace(0, 1, -1)


@pytest.mark.parametrize("n, m", [(0, None), (1, None), (4, None), (3, 5), (5, 2), (3, 0)])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_eye(n, m, dtype):
    t = ddl.eye(n, m, dtype=dtype)
    assert t.dtype is dtype
    np.testing.assert_array_equal(t.numpy(), np.eye(n, m, dtype=dtype.numpy))


# ---- random numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: ddl.rand(5, 7), lambda: ddl.randn(3, 33), lambda: ddl.rand(17, dtype=ddl.float64),
    lambda: ddl.randn(9, dtype=ddl.float64), lambda: ddl.randint(-5, 5, (4, 6))])
def test_manual_seed_determinism(make):
    ddl.manual_seed(42)
    a = make()
    b = make()
    ddl.manual_seed(42)
    a2 = make()
    b2 = make()
    np.testing.assert_array_equal(a.numpy(), a2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())
    assert not np.array_equal(a.numpy(), b.numpy())  # the stream advances
    ddl.manual_seed(43)
    assert not np.array_equal(make().numpy(), a.numpy())


def test_rng_state_round_trip():
    ddl.manual_seed(7)
    ddl.rand(10)
    state = ddl.get_rng_state()
    a = ddl.randn(100)
    b = ddl.randint(0, 1000, (50,))
    ddl.randn(13)  # move on
    ddl.set_rng_state(state)
    assert ddl.get_rng_state() == state
    np.testing.assert_array_equal(ddl.randn(100).numpy(), a.numpy())
    np.testing.assert_array_equal(ddl.randint(0, 1000, (50,)).numpy(), b.numpy())
    assert ddl.get_rng_state() != state


def test_initial_seed():
    ddl.manual_seed(1234)
    assert ddl.initial_seed() == 1234
    ddl.rand(3)
    assert ddl.initial_seed() == 1234
    s = ddl.seed()
    assert ddl.initial_seed() == s


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_rand_range_and_moments(dtype):
    ddl.manual_seed(3)
    x = ddl.rand(200_000, dtype=dtype).numpy().astype(np.float64)
    assert x.min() >= 0.0 and x.max() < 1.0
    assert abs(x.mean() - 0.5) < 0.005
    assert abs(x.var() - 1 / 12) < 0.002


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64])
def test_randn_moments(dtype):
    ddl.manual_seed(5)
    x = ddl.randn(200_000, dtype=dtype).numpy().astype(np.float64)
    assert np.isfinite(x).all()
    assert abs(x.mean()) < 0.015
    assert abs(x.std() - 1) < 0.015
    assert abs(np.mean(x**3)) < 0.05  # symmetric
    assert abs(np.mean(x**4) - 3) < 0.1  # normal kurtosis
    assert abs(np.mean(np.abs(x) < 1) - 0.6827) < 0.01


@pytest.mark.parametrize("low, high", [(0, 2), (-3, 4), (10, 11), (-(2**40), 2**40)])
def test_randint_range(low, high):
    t = ddl.randint(low, high, (20_000,))
    assert t.dtype is ddl.int64
    x = t.numpy()
    assert x.min() >= low and x.max() < high
    if high - low <= 8:
        assert set(np.unique(x)) == set(range(low, high))  # every value shows up


def test_randint_forms():
    t = ddl.randint(5, size=(3, 4))
    assert t.shape == (3, 4) and t.numpy().min() >= 0 and t.numpy().max() < 5
    assert ddl.randint(0, 3, (2,), dtype=ddl.float64).dtype is ddl.float64
    assert ddl.randint(0, 3).shape == ()


def test_randint_empty_range_raises():
    with pytest.raises(ValueError):
        ddl.randint(5, 5, (3,))


def test_random_empty_and_scalar():
    assert ddl.rand(0, 3).shape == (0, 3)
    assert ddl.randn(()).shape == ()


# ---- promotion -----------------------------------------------------------------------------


@pytest.mark.parametrize("make, dtype", [
    (lambda: ddl.tensor([1, 2]) + 0.5, ddl.float32),            # int tensor + float scalar
    (lambda: 0.5 * ddl.tensor([1, 2]), ddl.float32),
    (lambda: ddl.tensor([1.0, 2.0]) + 2.5, ddl.float32),        # float32 stays float32
    (lambda: ddl.tensor([1.0], dtype=ddl.float64) * 3, ddl.float64),
    (lambda: ddl.tensor([1, 2]) / ddl.tensor([2, 4]), ddl.float32),  # int / int
    (lambda: ddl.tensor([1, 2]) / 2, ddl.float32),
    (lambda: ddl.tensor([1, 2]) + 2, ddl.int64),
    (lambda: ddl.tensor([1, 2]) * ddl.tensor([True, False]), ddl.int64),
    (lambda: ddl.tensor([1, 2]) + ddl.tensor([1.0, 2.0]), ddl.float32),
    (lambda: ddl.tensor([1.0]) + ddl.tensor([1.0], dtype=ddl.float64), ddl.float64),
    (lambda: ddl.tensor([True]) + 1.5, ddl.float32),
    (lambda: ddl.tensor([1, 2]) < 1.5, ddl.bool),                # comparisons
    (lambda: ddl.tensor([1.0, 2.0]) == ddl.tensor([1, 2]), ddl.bool),
    (lambda: ddl.tensor([1.0]) >= 1, ddl.bool),
    (lambda: ddl.tensor([1, 2]).exp(), ddl.float32),           # float functions of ints
    (lambda: ddl.tensor([1, -2]).abs(), ddl.int64),
    (lambda: ddl.tensor([1, 2]).mean(), ddl.float32),
    (lambda: ddl.tensor([1, 2]).sum(), ddl.int64),
])
def test_promotion(make, dtype):
    assert make().dtype is dtype


def test_promotion_values():
    check(ddl.tensor([1, 2]) + 0.5, [1.5, 2.5], ddl.float32)
    check(ddl.tensor([1, 3]) / ddl.tensor([2, 4]), [0.5, 0.75], ddl.float32)
    check(7 / ddl.tensor([2]), [3.5], ddl.float32)
    check(ddl.tensor([2**53 + 1]) + 1, np.array([2**53 + 2]), ddl.int64)


@pytest.mark.parametrize("make", [lambda: ddl.randn(100_003), lambda: ddl.rand(70_001),
                                  lambda: ddl.randint(0, 10**9, (50_001,))])
def test_random_independent_of_thread_count(make):
    n = ddl.get_num_threads()
    try:
        ddl.set_num_threads(1)
        ddl.manual_seed(11)
        a = make().numpy()
        ddl.set_num_threads(2)
        ddl.manual_seed(11)
        b = make().numpy()
    finally:
        ddl.set_num_threads(n)
    np.testing.assert_array_equal(a, b)


def test_random_stream_does_not_depend_on_chunking():
    """Drawing n then m numbers continues the stream: no number is drawn twice."""
    ddl.manual_seed(9)
    a = ddl.rand(1000, dtype=ddl.float64).numpy()
    b = ddl.rand(1000, dtype=ddl.float64).numpy()
    assert len(np.intersect1d(a, b)) == 0
