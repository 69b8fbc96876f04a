"""The narrow storage dtypes: int32, int16, int8, uint8, float16, bfloat16 (create, NumPy round
trip, conversion and rounding, arithmetic and promotion, views, cat/stack, save/load, errors)."""
import io

import numpy as np
import pytest

import ddl

NARROW = [ddl.int32, ddl.int16, ddl.int8, ddl.uint8, ddl.float16, ddl.bfloat16]
NP_KEPT = [ddl.int32, ddl.int16, ddl.int8, ddl.uint8, ddl.float16]  # NumPy has these


def _bf16_round(x):
    """float32 -> bfloat16 -> float32 by integer arithmetic: round to nearest even."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("dt", NARROW, ids=lambda d: d.name)
def test_create_is_real_storage(dt):
    t = ddl.zeros(3, 2, dtype=dt)
    assert t.dtype is dt
    assert t.element_size() == dt.itemsize == {"int32": 4}.get(dt.name, 2 if dt.name in (
        "int16", "float16", "bfloat16") else 1)
    assert t.is_floating_point() == (dt in (ddl.float16, ddl.bfloat16))
    assert ddl.ones(4, dtype=dt).tolist() == [1, 1, 1, 1]
    assert ddl.full((2,), 7, dtype=dt).tolist() == [7, 7]
    assert ddl.arange(4, dtype=dt).tolist() == [0, 1, 2, 3]
    assert ddl.empty(5, dtype=dt).dtype is dt
    if dt is not ddl.bfloat16:  # (bfloat16 has no buffer: see below)
        assert memoryview(t).nbytes == 6 * dt.itemsize  # itemsize bytes an element


@pytest.mark.parametrize("dt", NP_KEPT, ids=lambda d: d.name)
def test_numpy_round_trip_keeps_dtype(dt):
    a = np.arange(12).reshape(3, 4).astype(dt.numpy)
    t = ddl.tensor(a)
    assert t.dtype is dt
    assert t.numpy().dtype == a.dtype
    np.testing.assert_array_equal(t.numpy(), a)
    f = ddl.from_numpy(a)  # shares memory
    assert f.dtype is dt
    a[0, 0] = 9
    assert f[0, 0].item() == 9
    assert t[0, 0].item() == 0  # tensor() copied


def test_bfloat16_numpy_is_a_float32_copy():
    t = ddl.tensor([1.0, -2.5, 3.140625]).bfloat16()
    a = t.numpy()
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [1.0, -2.5, 3.140625])
    a[0] = 7  # a copy: the tensor is unchanged
    assert t[0].item() == 1.0
    with pytest.raises(BufferError, match="bfloat16"):
        memoryview(t)
    # NumPy falls back to the float32 copy
    assert np.asarray(t).dtype == np.float32 and np.asarray(t)[1] == -2.5
    # ddl.tensor(np array) never infers bfloat16; dtype= asks for it
    assert ddl.tensor(a).dtype is ddl.float32
    b = ddl.tensor(a, dtype=ddl.bfloat16)
    assert b.dtype is ddl.bfloat16 and b.tolist() == [7.0, -2.5, 3.140625]
    b[ddl.tensor([0, 2])] = 0.5  # advanced assignment writes back
    assert b.tolist() == [0.5, -2.5, 0.5]


def test_conversion_methods():
    x = ddl.tensor([1.7, -2.2, 300.0])
    assert x.int().dtype is ddl.int32 and x.int().tolist() == [1, -2, 300]
    assert x.short().dtype is ddl.int16
    assert x.char().dtype is ddl.int8
    assert x.byte().dtype is ddl.uint8
    assert x.half().dtype is ddl.float16
    assert x.bfloat16().dtype is ddl.bfloat16
    assert x.to(ddl.int16).tolist() == [1, -2, 300]
    assert x.to("int32").dtype is ddl.int32
    assert x.to(np.int8).dtype is ddl.int8
    assert x.half().float().dtype is ddl.float32
    assert x.int().type() == "ddl.IntTensor" and x.half().type() == "ddl.HalfTensor"
    # integer casts wrap like PyTorch's (300 -> 44 in int8 / uint8)
    assert x.to(ddl.int8).tolist()[2] == 44 and x.to(ddl.uint8).tolist()[2] == 44
    assert ddl.tensor([-1]).to(ddl.uint8).tolist() == [255]


def test_float16_rounding_overflow_nan():
    v = np.array([1.0, 0.1, 65504.0, 70000.0, -1e-8, np.nan, np.inf, 3.3e-5], np.float32)
    h = ddl.tensor(v).half()
    with np.errstate(over="ignore"):
        want = v.astype(np.float16)
    np.testing.assert_array_equal(h.numpy(), want)  # NumPy rounds to even too
    assert np.isinf(h.numpy()[3]) and np.isnan(h.numpy()[5])


def test_bfloat16_round_to_nearest_even_and_nan():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(1000).astype(np.float32) * 100,
                        np.array([1.00390625, 1.01171875, -1.00390625, 3.4e38, 1e-40],
                                 np.float32)])
    b = ddl.tensor(v).bfloat16()
    np.testing.assert_array_equal(b.numpy(), _bf16_round(v))
    # ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7
    assert b.numpy()[1000] == 1.0 and b.numpy()[1001] == np.float32(1.015625)
    n = ddl.tensor([float("nan"), float("-inf")]).bfloat16().numpy()
    assert np.isnan(n[0]) and n[1] == -np.inf


@pytest.mark.parametrize(("a", "b", "out"), [
    (ddl.int32, ddl.int32, ddl.int32), (ddl.int32, ddl.int64, ddl.int64),
    (ddl.int32, ddl.float32, ddl.float32), (ddl.int16, ddl.int8, ddl.int16),
    (ddl.uint8, ddl.int8, ddl.int16), (ddl.uint8, ddl.uint8, ddl.uint8),
    (ddl.bool, ddl.uint8, ddl.uint8), (ddl.float16, ddl.float16, ddl.float16),
    (ddl.float16, ddl.bfloat16, ddl.float32), (ddl.float16, ddl.float32, ddl.float32),
    (ddl.int64, ddl.float16, ddl.float16), (ddl.bfloat16, ddl.float64, ddl.float64),
    (ddl.int8, ddl.bfloat16, ddl.bfloat16)], ids=str)
def test_promotion_follows_pytorch(a, b, out):
    x, y = ddl.ones(3, dtype=a), ddl.full((3,), 2, dtype=b)
    r = x + y
    assert r.dtype is out
    assert r.tolist() == [3, 3, 3]
    assert (x * y).dtype is out and (y - x).dtype is out


def test_integer_arithmetic_stays_narrow_and_wraps():
    a = ddl.tensor(np.array([100, -7, 3], np.int8))
    assert (a + a).dtype is ddl.int8
    assert (a + a).tolist() == [-56, -14, 6]  # 200 wraps in int8, as in PyTorch
    assert (a * 2).dtype is ddl.int8  # a Python int scalar keeps the tensor's dtype
    assert (a * 2.5).dtype is ddl.float32  # a float scalar gives the default float
    assert (a / 2).dtype is ddl.float32  # true division of integers
    assert (-a).dtype is ddl.int8 and abs(a).tolist() == [100, 7, 3]
    assert (a > 0).dtype is ddl.bool and (a > 0).tolist() == [True, False, True]
    assert a.exp().dtype is ddl.float32  # float functions of integers give float32
    u = ddl.tensor(np.array([250, 3], np.uint8))
    assert (u + 10).tolist() == [4, 13]
    # comparisons with a scalar take it exactly, not wrapped or rounded to the narrow type
    assert (a > 200).tolist() == [False] * 3 and (a < 1000).tolist() == [True] * 3
    h = ddl.tensor([float("inf"), 1.0]).half()
    assert (h == 70000.0).tolist() == [False, False] and (h < 1e6).tolist() == [False, True]


def test_reductions():
    a = ddl.tensor(np.array([[1, 2], [3, 4]], np.int32))
    assert a.sum().dtype is ddl.int64 and a.sum().item() == 10  # integer sums widen, as PyTorch
    assert a.max().dtype is ddl.int32 and a.max().item() == 4
    assert a.argmax().dtype is ddl.int64 and a.argmax().item() == 3
    assert a.float().mean().item() == 2.5
    assert a.sum(0).tolist() == [4, 6]
    h = ddl.tensor([1.0, 2.0, 3.0]).half()
    assert h.sum().dtype is ddl.float16 and h.sum().item() == 6.0
    assert h.mean().dtype is ddl.float16 and h.mean().item() == 2.0
    b = ddl.tensor([1.0, 2.0, 4.0]).bfloat16()
    assert b.max().dtype is ddl.bfloat16 and b.max().item() == 4.0


def test_float16_compute_rounds_its_result():
    h = ddl.tensor([1.0, 2048.0]).half()
    r = h + ddl.tensor([0.0003, 1.0]).half()
    assert r.dtype is ddl.float16
    # computed in float32, then rounded to float16: 2048 + 1 is not representable (ulp 2)
    np.testing.assert_array_equal(r.numpy(), (np.array([1.0, 2048.0], np.float16) +
                                              np.array([0.0003, 1.0], np.float16)))
    assert h.exp().dtype is ddl.float16 and h.sqrt().dtype is ddl.float16
    assert h.clamp(0, 10).tolist() == [1.0, 10.0] and h.clamp(0, 10).dtype is ddl.float16


def test_in_place_ops():
    a = ddl.tensor(np.array([1, 2, 3], np.int16))
    a += 1
    assert a.dtype is ddl.int16 and a.tolist() == [2, 3, 4]
    a.mul_(2)
    assert a.tolist() == [4, 6, 8]
    a += ddl.tensor([1, 1, 1])  # int64 into int16: same kind, allowed as in PyTorch
    assert a.dtype is ddl.int16 and a.tolist() == [5, 7, 9]
    with pytest.raises(TypeError, match="can't be cast"):
        a += 0.5
    with pytest.raises(TypeError, match="can't be cast"):
        a += ddl.ones(3)
    h = ddl.ones(3, dtype=ddl.float16)
    h += ddl.ones(3)  # float32 into float16: allowed
    h.mul_(3)
    assert h.dtype is ddl.float16 and h.tolist() == [6.0, 6.0, 6.0]
    h.sqrt_() if hasattr(h, "sqrt_") else h.exp_()
    assert h.dtype is ddl.float16 and h.tolist()[0] == pytest.approx(6.0 ** 0.5, rel=1e-3)
    b = ddl.ones(3, dtype=ddl.bfloat16)
    b.zero_()
    assert b.tolist() == [0, 0, 0]
    b.fill_(2.5)
    assert b.tolist() == [2.5, 2.5, 2.5]


@pytest.mark.parametrize("dt", NARROW, ids=lambda d: d.name)
def test_views_indexing_copies(dt):
    base = np.arange(24).reshape(4, 6)
    t = ddl.tensor(base).to(dt)
    assert t.dtype is dt
    np.testing.assert_array_equal(t[1:3, ::2].numpy(), base[1:3, ::2])
    np.testing.assert_array_equal(t.t().numpy(), base.T)
    np.testing.assert_array_equal(t.reshape(6, 4).numpy(), base.reshape(6, 4))
    assert t.t().contiguous().dtype is dt
    np.testing.assert_array_equal(t.t().contiguous().numpy(), base.T)
    assert t.clone().dtype is dt
    v = t[0]
    v[...] = 5
    assert t[0].tolist() == [5] * 6  # a view writes through
    np.testing.assert_array_equal(t[ddl.tensor([3, 1])].numpy()[:, 0], [18, 6])
    c = ddl.cat([t, t], 0)
    assert c.dtype is dt and c.shape == (8, 6)
    s = ddl.stack([t[1], t[2]])
    assert s.dtype is dt and s.tolist()[1] == base[2].tolist()
    m = t.t() @ t if dt is not ddl.uint8 and dt is not ddl.int8 else None
    if m is not None:
        assert m.dtype is dt
    w = ddl.where(t > 10, t, ddl.zeros(1, dtype=dt))
    assert w.dtype is dt and w[3].tolist() == base[3].tolist()


def test_matmul_narrow():
    a = ddl.tensor(np.array([[1, 2], [3, 4]], np.int32))
    assert (a @ a).dtype is ddl.int32 and (a @ a).tolist() == [[7, 10], [15, 22]]
    h = a.half()
    assert (h @ h).dtype is ddl.float16 and (h @ h).tolist() == [[7, 10], [15, 22]]
    assert (a @ a.float()).dtype is ddl.float32


def test_random_narrow_floats():
    ddl.manual_seed(0)
    r = ddl.rand(1000, dtype=ddl.float16)
    assert r.dtype is ddl.float16
    assert 0 <= r.min().item() and r.max().item() <= 1.0
    assert ddl.randn(10, dtype=ddl.bfloat16).dtype is ddl.bfloat16


@pytest.mark.parametrize("dt", NARROW, ids=lambda d: d.name)
def test_save_load_round_trip(dt, tmp_path):
    t = (ddl.arange(10) - 3).to(dt) if dt is not ddl.uint8 else ddl.arange(10).to(dt)
    obj = {"t": t, "view": t[2:5]}
    path = tmp_path / "x.ddl"
    ddl.save(obj, path)
    back = ddl.load(path)
    assert back["t"].dtype is dt and back["view"].dtype is dt
    assert back["t"].tolist() == t.tolist() and back["view"].tolist() == t[2:5].tolist()
    buf = io.BytesIO()
    ddl.save(t, buf)
    buf.seek(0)
    again = ddl.load(buf)
    assert again.dtype is dt and again.tolist() == t.tolist()


def test_half_precision_refuses_gradients():
    for dt in (ddl.float16, ddl.bfloat16):
        t = ddl.zeros(3, dtype=dt)
        with pytest.raises(TypeError, match="can't require gradients"):
            t.requires_grad_()
        with pytest.raises(TypeError, match="can't require gradients"):
            t.requires_grad = True
    with pytest.raises(TypeError, match="floating-point"):
        ddl.zeros(3, dtype=ddl.int32).requires_grad_()


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="unsupported"):
        ddl.zeros(2, dtype=np.uint32)
    with pytest.raises(TypeError):
        ddl.from_numpy(np.zeros(3, np.uint16))
    with pytest.raises(TypeError, match="can't be cast"):
        ddl.ones(2, dtype=ddl.int32).exp_()


def test_dtype_objects():
    assert ddl.half is ddl.float16 and ddl.short is ddl.int16 and ddl.int is ddl.int32
    assert repr(ddl.int32) == "ddl.int32"
    assert ddl.float16.itemsize == 2 and ddl.bfloat16.is_floating_point
    import pickle
    assert pickle.loads(pickle.dumps(ddl.bfloat16)) is ddl.bfloat16


def test_gradients_flow_through_half_precision_intermediates():
    # a float32 leaf through float16 / bfloat16 ops: the gradient arrives in float32, computed
    # from the 16-bit values (so rounded as they are)
    for dt in (ddl.float16, ddl.bfloat16):
        x = ddl.tensor([1.0, 2.0, 3.0], requires_grad=True)
        h = x.to(dt)
        assert h.dtype is dt and h.requires_grad
        (h * h).float().sum().backward()
        assert x.grad.dtype is ddl.float32 and x.grad.tolist() == [2.0, 4.0, 6.0]
        x.grad = None
        x.to(dt).exp().float().sum().backward()
        want = ddl.tensor([1.0, 2.0, 3.0]).to(dt).exp().float()
        assert x.grad.tolist() == want.tolist()
