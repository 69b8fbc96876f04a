"""NumPy interop: numpy() and from_numpy() share memory, __array__ / __array_interface__ /
the buffer protocol, ufuncs and NumPy functions applied to tensors."""
import numpy as np
import pytest
from _util import ALL_DTYPES, check, make

import ddl


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_numpy_is_zero_copy_for_contiguous(dtype):
    t = ddl.zeros(3, 4, dtype=dtype)
    a = t.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == dtype.numpy and a.shape == (3, 4)
    assert a.ctypes.data == t._data_ptr
    a[1, 2] = 1
    assert t[1, 2].item() == 1
    t[0, 0] = 1
    assert a[0, 0] == 1


def test_numpy_of_views_shares_memory():
    t = ddl.tensor(np.arange(24.0).reshape(4, 6))
    for v, ref in ((t.T, np.arange(24.0).reshape(4, 6).T),
                   (t[1::2, ::3], np.arange(24.0).reshape(4, 6)[1::2, ::3]),
                   (t[2], np.arange(24.0).reshape(4, 6)[2])):
        a = v.numpy()
        np.testing.assert_array_equal(a, ref)
        assert np.shares_memory(a, t.numpy())
        assert a.strides == tuple(s * 8 for s in v.stride())


def test_numpy_of_expanded_and_0d():
    t = ddl.tensor([1.0, 2.0])
    e = t.unsqueeze(0).expand(3, 2).numpy()
    np.testing.assert_array_equal(e, [[1, 2]] * 3)
    assert e.strides[0] == 0
    z = ddl.tensor(5.0).numpy()
    assert z.shape == () and z == 5.0
    assert ddl.zeros(0, 3).numpy().shape == (0, 3)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_round_trip_numpy_from_numpy(dtype):
    t = ddl.ones(2, 3, dtype=dtype)
    t2 = ddl.from_numpy(t.numpy())
    assert t2._data_ptr == t._data_ptr and t2.dtype is dtype
    t2.zero_()
    assert not t.numpy().any()


def test_array_protocols(rng):
    t, ref = make((3, 4), ddl.float32, "transposed", rng)
    a = np.asarray(t)
    np.testing.assert_array_equal(a, ref.astype(np.float32))
    assert np.shares_memory(a, t.numpy())
    c = np.array(t)  # a copy
    assert not np.shares_memory(c, t.numpy())
    d = np.asarray(t, dtype=np.float64)
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d, ref)
    with pytest.raises(ValueError):
        t.__array__(np.float64, copy=False)
    m = memoryview(ddl.tensor([1.0, 2.0]))
    assert m.format == "f" and m.shape == (2,) and m.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_array_interface(dtype):
    t = ddl.zeros(3, 4, dtype=dtype)[:, 1::2]
    ai = t.__array_interface__
    assert ai["version"] == 3 and ai["shape"] == (3, 2)
    assert np.dtype(ai["typestr"]) == dtype.numpy
    assert ai["data"] == (t._data_ptr, False)
    assert ai["strides"] == (4 * dtype.itemsize, 2 * dtype.itemsize)

    class Holder:  # NumPy reads the interface of a plain object that forwards it
        __array_interface__ = ai

    h = np.asarray(Holder())
    h[...] = 1
    assert t.numpy().astype(np.float64).sum() == 6


def test_numpy_functions_accept_tensors(rng):
    t, ref = make((3, 4), ddl.float64, "stepped", rng, 0.1, 2.0)
    check(np.sum(t), ref.sum())
    check(np.exp(t), np.exp(ref))
    check(np.add(t, 1.0), ref + 1)
    assert isinstance(np.exp(t), ddl.Tensor)
    s = np.sin(t)  # not a ddl op: computed by NumPy
    np.testing.assert_allclose(s, np.sin(ref))
    np.testing.assert_array_equal(np.concatenate([t, t]), np.concatenate([ref, ref]))
    assert np.allclose(t, ref) and ddl.allclose(t, ref)
    np.testing.assert_allclose(np.linalg.norm(t), np.linalg.norm(ref))
    assert np.argmax(t) == np.argmax(ref)
    np.testing.assert_array_equal(np.where(t > 1, 1.0, 0.0), np.where(ref > 1, 1.0, 0.0))


def test_ufunc_out_argument_writes_tensor():
    t = ddl.zeros(3)
    np.add(np.ones(3), 2.0, out=t)
    check(t, [3.0, 3.0, 3.0])


def test_ufunc_methods_run_in_numpy():
    t = ddl.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.add.accumulate(t), [1.0, 3.0, 6.0])
    assert np.add.reduce(t) == 6.0


def test_from_numpy_keeps_array_alive_and_views():
    a = np.arange(10.0)
    t = ddl.from_numpy(a[2:8:2])
    check(t, [2.0, 4.0, 6.0])
    t += 1
    np.testing.assert_array_equal(a[2:8:2], [3.0, 5.0, 7.0])
    np.testing.assert_array_equal(a[3], 3.0)  # neighbours untouched


def test_from_numpy_noncontiguous_ops_and_numpy_back():
    a = np.arange(24.0).reshape(4, 6)[::-1, ::2]  # negative strides
    t = ddl.from_numpy(a)
    check(t.sum(0), a.sum(0))
    check(t @ t.T, a @ a.T)
    b = t.numpy()
    assert np.shares_memory(a, b)
    np.testing.assert_array_equal(b, a)
