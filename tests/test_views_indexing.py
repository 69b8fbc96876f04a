"""Views share storage (checked by writing through them), copies do not; metadata,
conversions, repr, iteration; basic and advanced indexing and __setitem__."""
import numpy as np
import pytest
from _util import ALL_DTYPES, check, make

import ddl


def base_and_ref():
    ref = np.arange(24.0).reshape(2, 3, 4)
    return ddl.tensor(ref), ref.copy()


# each: (tensor -> view, ndarray -> the same view)
VIEWS = {
    "reshape": (lambda t: t.reshape(6, 4), lambda a: a.reshape(6, 4)),
    "reshape-1": (lambda t: t.reshape(-1), lambda a: a.reshape(-1)),
    "view": (lambda t: t.view(4, 6), lambda a: a.reshape(4, 6)),
    "view_tuple": (lambda t: t.view((3, 2, 4)), lambda a: a.reshape(3, 2, 4)),
    "transpose": (lambda t: t.transpose(0, 2), lambda a: a.swapaxes(0, 2)),
    "permute": (lambda t: t.permute(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    "T": (lambda t: t.T, lambda a: a.T),
    "mT": (lambda t: t.mT, lambda a: a.swapaxes(-1, -2)),
    "slice": (lambda t: t[1:, ::2, 1:3], lambda a: a[1:, ::2, 1:3]),
    "slice_neg": (lambda t: t[:, -2:, -3:-1], lambda a: a[:, -2:, -3:-1]),
    "int": (lambda t: t[1], lambda a: a[1]),
    "int_tuple": (lambda t: t[1, 2], lambda a: a[1, 2]),
    "int_neg": (lambda t: t[-1, :, -2], lambda a: a[-1, :, -2]),
    "none": (lambda t: t[None, :, None], lambda a: a[None, :, None]),
    "ellipsis": (lambda t: t[..., 1], lambda a: a[..., 1]),
    "ellipsis_mid": (lambda t: t[1, ..., ::3], lambda a: a[1, ..., ::3]),
    "npint": (lambda t: t[np.int64(1)], lambda a: a[1]),
    "unsqueeze": (lambda t: t.unsqueeze(1), lambda a: a[:, None]),
    "unsqueeze_neg": (lambda t: t.unsqueeze(-1), lambda a: a[..., None]),
    "squeeze": (lambda t: t[:, :1].squeeze(), lambda a: a[:, 0]),
    "squeeze_dim": (lambda t: t[:, :1].squeeze(1), lambda a: a[:, 0]),
    "flatten": (lambda t: t.flatten(), lambda a: a.reshape(-1)),
    "flatten_part": (lambda t: t.flatten(1), lambda a: a.reshape(2, 12)),
    "expand": (lambda t: t[:, :1].expand(2, 3, 4), lambda a: np.broadcast_to(a[:, :1], (2, 3, 4))),
    "view_of_view": (lambda t: t.T[1:].unsqueeze(0)[..., ::2].transpose(0, 1).reshape(3, 3),
                     lambda a: a.T[1:][None][..., ::2].swapaxes(0, 1).reshape(3, 3)),
    "contiguous_of_contiguous": (lambda t: t.contiguous(), lambda a: a),
}


@pytest.mark.parametrize("name", VIEWS)
def test_views_share_storage(name):
    t, ref = base_and_ref()
    tf, nf = VIEWS[name]
    v = tf(t)
    check(v, nf(ref))
    assert v._storage_id == t._storage_id
    # writing through the view changes the base (every alias of an element included)
    v.fill_(-1)
    if name == "expand":
        ref[:, :1] = -1
    else:
        rv = nf(ref)
        assert np.shares_memory(rv, ref)
        rv[...] = -1
    check(t, ref)
    check(v, nf(ref))
    # and writing the base shows in the view
    t.fill_(3)
    assert (v == 3).all().item()


def test_view_then_base_write_shows_in_view():
    t = ddl.zeros(3, 4)
    v = t.T[1]
    t[2, 1] = 5
    assert v[2].item() == 5
    s = t[1:3].reshape(8)  # viewable: a contiguous block of rows
    t[1, 2] = 7
    assert s[2].item() == 7


def test_view_of_non_viewable_raises_and_reshape_copies():
    t = ddl.tensor(np.arange(12.0).reshape(3, 4))
    tt = t.T
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        tt.view(12)
    with pytest.raises(ValueError):
        t[:, :3].view(9)
    check(t[:, ::2].view(6), np.arange(0.0, 12.0, 2.0))  # a uniform stride is viewable
    with pytest.raises(ValueError):
        t[:1].expand(2, 4).view(8)
    r = tt.reshape(12)
    check(r, np.arange(12.0).reshape(3, 4).T.reshape(12))
    assert r._storage_id != t._storage_id
    r[0] = 100
    assert t[0, 0].item() == 0  # the copy is independent
    f = tt.flatten()  # flatten also copies when it must
    check(f, np.arange(12.0).reshape(3, 4).T.reshape(-1))


@pytest.mark.parametrize("shape, new", [((2, 3), (4, 2)), ((6,), (-1, 4)), ((2, 3), (-1, -1))])
def test_reshape_bad_shape_raises(shape, new):
    with pytest.raises(ValueError):
        ddl.zeros(shape).reshape(new)
    with pytest.raises(ValueError):
        ddl.zeros(shape).view(new)


def test_reshape_edge_cases():
    assert ddl.zeros(0, 3).reshape(-1).shape == (0,)
    assert ddl.zeros(0, 3).reshape(3, 0).shape == (3, 0)
    assert ddl.tensor(5.0).reshape(1, 1).shape == (1, 1)
    assert ddl.zeros(1, 1).reshape(()).shape == ()
    assert ddl.tensor(5.0).flatten().shape == (1,)
    t = ddl.zeros(2, 1, 3)
    assert t.squeeze().shape == (2, 3) and t.squeeze(0).shape == (2, 1, 3)
    assert ddl.zeros(1, 1).squeeze().shape == ()
    assert t.unsqueeze(3).shape == (2, 1, 3, 1)
    x = ddl.tensor(np.arange(12.0).reshape(3, 4))
    check(x.reshape_as(ddl.zeros(4, 3)), np.arange(12.0).reshape(4, 3))
    check(x.view_as(ddl.zeros(2, 6)), np.arange(12.0).reshape(2, 6))
    check(x[:1].expand(3, -1), np.broadcast_to(np.arange(4.0), (3, 4)))
    check(x[:1].expand_as(x), np.broadcast_to(np.arange(4.0), (3, 4)))


@pytest.mark.parametrize("make_copy", [
    lambda t: t.clone(), lambda t: t.T.contiguous(), lambda t: t[:, ::2].contiguous(),
    lambda t: ddl.tensor(t), lambda t: t.double(), lambda t: t.to(ddl.float64).float()])
def test_copies_are_independent(make_copy):
    t = ddl.tensor(np.arange(12.0).reshape(3, 4), dtype=ddl.float32)
    c = make_copy(t)
    assert c._storage_id != t._storage_id and c.is_contiguous()
    before = c.numpy().copy()
    t.fill_(-5)
    np.testing.assert_array_equal(c.numpy(), before)
    c.fill_(3)
    assert (t == -5).all().item()


def test_contiguous_of_contiguous_is_same_tensor():
    t = ddl.ones(2, 3)
    assert t.contiguous() is t or t.contiguous()._storage_id == t._storage_id
    assert t.to(ddl.float32) is t


def test_is_contiguous():
    t = ddl.zeros(3, 4)
    assert t.is_contiguous() and not t.T.is_contiguous()
    assert t[1:].is_contiguous() and not t[:, 1:].is_contiguous()
    assert t[:, :1].squeeze(1).is_contiguous() is False
    assert t[0].is_contiguous() and t[0:1].T.is_contiguous()


def test_strides():
    t = ddl.zeros(2, 3, 4)
    assert t.stride() == (12, 4, 1) and t.stride(1) == 4
    assert t.T.stride() == (1, 4, 12)
    assert t[:, ::2].stride() == (12, 8, 1)
    assert t[:1].expand(5, 3, 4).stride() == (0, 4, 1)


# ---- metadata and conversions ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_metadata(dtype):
    t = ddl.zeros(2, 3, 4, dtype=dtype)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.dtype is dtype and t.ndim == 3 and t.dim() == 3
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    assert t.numel() == 24 and ddl.numel(t) == 24
    assert len(t) == 2
    assert t.is_floating_point() == dtype.is_floating_point
    z = ddl.zeros((), dtype=dtype)
    assert z.ndim == 0 and z.numel() == 1 and z.shape == ()


def test_item():
    assert ddl.tensor(2.5).item() == 2.5 and isinstance(ddl.tensor(2.5).item(), float)
    assert ddl.tensor([7]).item() == 7 and isinstance(ddl.tensor(7).item(), int)
    assert ddl.tensor(True).item() is True
    assert ddl.tensor([[2**62 + 1]]).item() == 2**62 + 1
    assert ddl.tensor(np.arange(6).reshape(2, 3)).T[2, 1].item() == 5
    assert float(ddl.tensor(1.5)) == 1.5 and int(ddl.tensor(3)) == 3
    assert bool(ddl.tensor([1.0])) is True
    with pytest.raises(ValueError):
        ddl.ones(2).item()
    with pytest.raises(ValueError):
        bool(ddl.ones(2))
    with pytest.raises(ValueError):
        ddl.ones(0).item()


def test_index_protocol():
    assert [10, 20, 30][ddl.tensor(2)] == 30
    with pytest.raises(TypeError):
        [1, 2][ddl.tensor(1.0)]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_tolist(dtype):
    ref = np.array([[0, 1, 2], [3, 0, 5]]).astype(dtype.numpy)
    t = ddl.tensor(ref)
    assert t.tolist() == ref.tolist()
    assert t.T.tolist() == ref.T.tolist()
    assert ddl.tensor(3).tolist() == 3
    assert ddl.zeros(0, 2).tolist() == []


@pytest.mark.parametrize("method, dtype", [("float", ddl.float32), ("double", ddl.float64),
                                           ("long", ddl.int64), ("bool", ddl.bool)])
def test_conversions(method, dtype):
    src = ddl.tensor([[-1.7, 0.0], [2.5, 3.9]]).T  # non-contiguous
    out = getattr(src, method)()
    assert out.dtype is dtype
    check(out, np.array([[-1.7, 0.0], [2.5, 3.9]], dtype=np.float32).T.astype(dtype.numpy))
    assert src.to(dtype).dtype is dtype and src.type(dtype).dtype is dtype
    assert src.to("float64").dtype is ddl.float64 and src.to(np.int64).dtype is ddl.int64


def test_conversion_preserves_large_ints():
    assert ddl.tensor([2**62 + 1]).long().tolist() == [2**62 + 1]
    assert ddl.tensor([3.0], dtype=ddl.float64).long().tolist() == [3]


def test_repr():
    r = repr(ddl.tensor([[1.5, 2.0], [3.0, 4.0]]))
    assert r.startswith("tensor(") and "1.5" in r and "dtype" not in r
    assert "dtype=ddl.float64" in repr(ddl.tensor([1.0], dtype=ddl.float64))
    assert "dtype=ddl.bool" in repr(ddl.tensor([True]))
    assert repr(ddl.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(ddl.tensor(3.5)) == "tensor(3.5)"
    assert "4." in repr(ddl.tensor(np.arange(6.0).reshape(2, 3)).T)
    str(ddl.zeros(0, 3))


def test_iteration():
    ref = np.arange(12.0).reshape(3, 4)
    t = ddl.tensor(ref)
    rows = list(t)
    assert len(rows) == 3
    for row, rr in zip(rows, ref):
        check(row, rr)
        assert row._storage_id == t._storage_id
    assert [c.tolist() for c in t.T] == ref.T.tolist()
    assert list(ddl.zeros(0, 2)) == []
    with pytest.raises(TypeError):
        iter(ddl.tensor(1.0)).__next__()
    with pytest.raises(TypeError):
        len(ddl.tensor(1.0))


# ---- basic indexing ---------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    0, -1, (1, 2), (slice(None), 1), (Ellipsis, 2), (None,), (1, None, slice(1, 3)),
    slice(1, None), slice(None, None, 2), slice(5, 10), slice(-10, 2), (slice(2, 1),),
    (Ellipsis,), (), (0, Ellipsis, None), (slice(None, None, 3), slice(1, None, 2), -1),
    (np.int64(1), slice(None), np.int64(-1))], ids=str)
def test_basic_indexing_matches_numpy(key):
    ref = np.arange(60.0).reshape(3, 4, 5)
    t = ddl.tensor(ref)
    v = t[key]
    check(v, ref[key])
    assert v._storage_id == t._storage_id


def test_indexing_noncontiguous_base(rng):
    t, ref = make((4, 5, 6), ddl.float64, "stepped", rng)
    check(t[1:, ::2, -1], ref[1:, ::2, -1])
    t2, ref2 = make((4, 5, 6), ddl.float64, "transposed", rng)
    check(t2[..., 1:4][2], ref2[..., 1:4][2])


def test_index_0d():
    t = ddl.tensor(3.0)
    check(t[()], np.array(3.0))
    check(t[...], np.array(3.0))
    check(t[None], np.array([3.0]))
    with pytest.raises(IndexError):
        t[0]


@pytest.mark.parametrize("key", [3, -4, (0, 4), (0, 0, 0), (Ellipsis, 4), (slice(None), -5)],
                         ids=str)
def test_index_out_of_range_raises_index_error(key):
    t = ddl.zeros(3, 4)
    with pytest.raises(IndexError):
        t[key]
    with pytest.raises(IndexError):
        t[key] = 1.0


def test_two_ellipses_raise():
    with pytest.raises(IndexError):
        ddl.zeros(2, 2)[..., ...]


def test_negative_step_raises():
    with pytest.raises(ValueError):
        ddl.zeros(4)[::-1]


# ---- advanced indexing (copies) ---------------------------------------------------------


ADVANCED_KEYS = {   # id -> key factory (ids spelled out: str() of a lambda names its address,
    # which differs between pytest-xdist workers and breaks their collection)
    "list": lambda: [0, 2], "array": lambda: np.array([2, 0, 2]),
    "tensor": lambda: ddl.tensor([1, -1]), "array2d": lambda: np.array([[0, 1], [2, 2]]),
    "slice,list": lambda: (slice(None), [0, 3]), "list,list": lambda: ([0, 2], [1, 3]),
    "ellipsis,array": lambda: (Ellipsis, np.array([4, 0])),
    "bool_array": lambda: np.array([True, False, True]),
    "bool_tensor": lambda: ddl.tensor([False, True, True]),
    "bool_array,slice": lambda: (np.arange(3) > 0, slice(1, 3)),
    "int,list": lambda: (1, [0, 0, 3])}


@pytest.mark.parametrize("key_fn", list(ADVANCED_KEYS.values()), ids=list(ADVANCED_KEYS))
def test_advanced_indexing_copies(key_fn):
    ref = np.arange(60.0).reshape(3, 4, 5)
    t = ddl.tensor(ref)
    key = key_fn()
    npkey = tuple(k.numpy() if isinstance(k, ddl.Tensor) else k for k in key) \
        if isinstance(key, tuple) else (key.numpy() if isinstance(key, ddl.Tensor) else key)
    out = t[key]
    check(out, ref[npkey])
    assert out._storage_id != t._storage_id
    out.fill_(-1)
    check(t, ref)  # the base is untouched


def test_bool_mask_from_comparison(rng):
    t, ref = make((4, 5), ddl.float32, "transposed", rng)
    check(t[t > 0], ref[ref > 0])
    check(t[(t > 0).numpy()], ref[ref > 0])
    assert t[t > 100].shape == (0,)


def test_advanced_index_errors():
    t = ddl.zeros(3, 4)
    with pytest.raises(IndexError):
        t[[0, 5]]
    with pytest.raises(IndexError):
        t[np.array([True, False])]  # wrong mask length


# ---- __setitem__ --------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, (0, 2), (slice(None), 1), (Ellipsis, slice(1, 3)),
                                 (slice(None, None, 2), slice(None, None, 3)), ()], ids=str)
@pytest.mark.parametrize("value_kind", ["scalar", "int", "tensor", "broadcast", "array"])
def test_setitem_basic(key, value_kind, rng):
    ref = np.arange(20.0).reshape(4, 5)
    t = ddl.tensor(ref)
    target_shape = ref[key].shape
    value = {"scalar": 2.5, "int": 7,
             "tensor": ddl.tensor(rng.standard_normal(target_shape)),
             "broadcast": ddl.tensor(rng.standard_normal(target_shape[-1:])),
             "array": rng.standard_normal(target_shape)}[value_kind]
    ptr = t._data_ptr
    t[key] = value
    ref[key] = value.numpy() if isinstance(value, ddl.Tensor) else value
    check(t, ref)
    assert t._data_ptr == ptr


def test_setitem_sequences():
    t = ddl.zeros(2, 3)
    t[0] = [1, 2, 3]
    t[:, 2] = (5.5, 6.5)
    check(t, [[1, 2, 5.5], [0, 0, 6.5]])
    i = ddl.zeros(3, dtype=ddl.int64)
    i[1:] = [2**62 + 1, -1]
    assert i.tolist() == [0, 2**62 + 1, -1]
    with pytest.raises(ValueError):
        t[0] = [1, 2]


def test_setitem_through_noncontiguous_view():
    base = ddl.zeros(4, 6, dtype=ddl.float64)
    view = base.T[::2]
    view[1:, 2] = ddl.tensor([1.0, 2.0])
    ref = np.zeros((4, 6))
    ref.T[::2][1:, 2] = [1.0, 2.0]
    check(base, ref)


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.int64])
def test_setitem_advanced(dtype):
    ref = np.arange(12).reshape(3, 4).astype(dtype.numpy)
    t = ddl.tensor(ref)
    t[t > 8] = 0
    ref[ref > 8] = 0
    t[[0, 2], [1, 3]] = ddl.tensor([-1, -2]).to(dtype)
    ref[[0, 2], [1, 3]] = [-1, -2]
    t[np.array([True, False, True]), 0] = 5
    ref[np.array([True, False, True]), 0] = 5
    check(t, ref, dtype)


def test_setitem_advanced_on_noncontiguous_base():
    base = ddl.zeros(4, 4)
    t = base.T[:, ::2]
    t[t == 0] = 1.0
    ref = np.zeros((4, 4), dtype=np.float32)
    ref.T[:, ::2] = 1.0
    check(base, ref)


def test_setitem_shape_mismatch_raises():
    t = ddl.zeros(3, 4)
    with pytest.raises(ValueError):
        t[0] = ddl.ones(5)
    with pytest.raises(ValueError):
        t[:, 1] = ddl.ones(2, 3)


def _factorizations(n, rng, ndim):
    """A random shape of `ndim` dims with product n."""
    shape = [1] * ndim
    for p in (2, 2, 2, 3, 3, 5):
        while n % p == 0 and n > 1:
            n //= p
            shape[rng.integers(ndim)] *= p
    shape[0] *= n
    return tuple(int(s) for s in shape)


def test_reshape_view_fuzz_against_numpy():
    """Random strided views reshaped to random shapes: values always match NumPy; view()
    succeeds exactly when NumPy can reshape without a copy, and then shares storage."""
    rng = np.random.default_rng(7)
    for _ in range(400):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(s) for s in rng.integers(1, 4, size=ndim))
        bshape = tuple(2 * s for s in shape) + (2,)
        base = np.arange(float(np.prod(bshape))).reshape(bshape)
        sl = tuple(slice(None, None, int(rng.integers(1, 3))) for _ in shape)
        perm = tuple(int(p) for p in rng.permutation(ndim))
        a = base[sl][..., 0][tuple(slice(0, s) for s in shape)].transpose(perm)
        t = ddl.tensor(base)[sl][..., 0][tuple(slice(0, s) for s in shape)].permute(perm)
        np.testing.assert_array_equal(t.numpy(), a)
        new = _factorizations(a.size, rng, int(rng.integers(1, 5)))
        check(t.reshape(new), a.reshape(new))
        try:
            np.reshape(a, new, copy=False)
            viewable = True
        except ValueError:
            viewable = False
        if viewable:
            v = t.view(new)
            check(v, a.reshape(new))
            assert v._storage_id == t._storage_id
        else:
            with pytest.raises(ValueError):
                t.view(new)
