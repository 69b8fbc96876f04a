"""matmul (1-D, 2-D, batched, broadcast batch dims, non-contiguous operands) against NumPy in
float64, and cat/stack."""
import numpy as np
import pytest
from _util import ALL_DTYPES, FLOATS, LAYOUTS, check, make

import ddl


def check_matmul(out, ra, rb, dtype):
    """float32 results get an error bound relative to |a| @ |b| (cancellation-proof)."""
    ref = np.matmul(ra, rb)
    assert isinstance(out, ddl.Tensor) and out.dtype is dtype
    got = out.numpy().astype(np.float64)
    assert got.shape == ref.shape
    scale = np.matmul(np.abs(ra), np.abs(rb))
    rtol = 1e-5 if dtype is ddl.float32 else 1e-12
    excess = np.abs(got - ref) - rtol * scale
    assert np.all(excess <= 1e-30), excess.max()


SHAPES = [
    ((4,), (4,)),               # dot -> 0-d
    ((4,), (4, 3)),             # vector @ matrix
    ((3, 4), (4,)),             # matrix @ vector
    ((3, 4), (4, 5)),
    ((1, 4), (4, 1)),
    ((2, 3, 4), (2, 4, 5)),     # batched
    ((2, 3, 4), (4, 5)),        # batch @ matrix
    ((3, 4), (2, 4, 5)),        # matrix @ batch
    ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims
    ((1, 3, 4), (6, 4, 2)),
    ((2, 3, 4), (4,)),          # batch @ vector
    ((4,), (2, 4, 3)),          # vector @ batch
    ((0, 4), (4, 3)),           # zero-size
    ((3, 0), (0, 2)),           # empty inner dim: zeros
    ((2, 0, 4), (4, 3)),
    ((0,), (0,)),
    ((0, 3, 4), (4, 5)),
    ((17, 33), (33, 65)),
]


@pytest.mark.parametrize("sa, sb", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_shapes(sa, sb, dtype, rng):
    a, ra = make(sa, dtype, "contiguous", rng)
    b, rb = make(sb, dtype, "contiguous", rng)
    check_matmul(a @ b, ra, rb, dtype)
    check_matmul(ddl.matmul(a, b), ra, rb, dtype)
    check_matmul(a.matmul(b), ra, rb, dtype)


@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sa, sb", [((5, 6), (6, 7)), ((3, 5, 6), (3, 6, 4)), ((6,), (6, 3))],
                         ids=str)
def test_matmul_layouts(la, lb, dtype, sa, sb, rng):
    a, ra = make(sa, dtype, la, rng)
    b, rb = make(sb, dtype, lb, rng)
    check_matmul(a @ b, ra, rb, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_matmul_transposed_operands(dtype, rng):
    a, ra = make((7, 5), dtype, "contiguous", rng)
    b, rb = make((7, 3), dtype, "contiguous", rng)
    check_matmul(a.T @ b, ra.T, rb, dtype)
    check_matmul(b.T @ a, rb.T, ra, dtype)
    check_matmul(a.t() @ a, ra.T, ra, dtype)
    check_matmul(a @ a.T, ra, ra.T, dtype)
    c, rc = make((4, 7, 5), dtype, "contiguous", rng)
    check_matmul(c.mT @ c, np.swapaxes(rc, -1, -2), rc, dtype)
    check_matmul(c.transpose(0, 1)[:, ::2] @ a.T[:, ::2], np.swapaxes(rc, 0, 1)[:, ::2],
                 ra.T[:, ::2], dtype)
    # a column of a matrix (stride > 1 vector) and a row
    check_matmul(a[:, 1] @ b, ra[:, 1], rb, dtype)
    check_matmul(a.T @ b[:, 2], ra.T, rb[:, 2], dtype)


def test_matmul_expanded_batch(rng):
    a, ra = make((1, 3, 4), ddl.float64, "contiguous", rng)
    b, rb = make((5, 4, 2), ddl.float64, "contiguous", rng)
    check_matmul(a.expand(5, 3, 4) @ b, np.broadcast_to(ra, (5, 3, 4)), rb, ddl.float64)


def test_matmul_mixed_dtypes(rng):
    a, ra = make((3, 4), ddl.float32, "contiguous", rng)
    b, rb = make((4, 2), ddl.float64, "contiguous", rng)
    out = a @ b
    assert out.dtype is ddl.float64
    check_matmul(out, ra, rb, ddl.float64)
    i = ddl.tensor([[1, 2], [3, 4]])
    check(i @ i, np.array([[7, 10], [15, 22]]), ddl.int64)
    check(i @ ddl.tensor([[0.5], [1.0]]), [[2.5], [5.5]], ddl.float32)


def test_matmul_with_ndarrays(rng):
    a, ra = make((3, 4), ddl.float64, "contiguous", rng)
    rb = rng.standard_normal((4, 2))
    out = a @ rb
    assert isinstance(out, ddl.Tensor)
    check_matmul(out, ra, rb, ddl.float64)
    out = rb.T @ a.T
    assert isinstance(out, ddl.Tensor)
    check_matmul(out, rb.T, ra.T, ddl.float64)
    check_matmul(np.matmul(ra, ddl.tensor(rb)), ra, rb, ddl.float64)


def test_matmul_does_not_modify_operands(rng):
    a, ra = make((3, 4), ddl.float32, "transposed", rng)
    b, rb = make((4, 2), ddl.float32, "stepped", rng)
    a @ b
    check(a, ra)
    check(b, rb)


def test_matmul_result_is_fresh(rng):
    a, _ = make((3, 3), ddl.float64, "contiguous", rng)
    out = a @ a
    assert out._storage_id != a._storage_id and out.is_contiguous()


@pytest.mark.parametrize("sa, sb, msg", [
    ((2, 3), (4, 2), r"\(2, 3\) and \(4, 2\)"),
    ((3,), (4,), r"\(3,\) and \(4,\)"),
    ((2, 3, 4), (3, 4, 5), r"\(2,\).*\(3,\)|\(2, 3, 4\)"),
    ((5, 2), (3,), r"\(5, 2\) and \(3,\)"),
])
def test_matmul_shape_errors(sa, sb, msg):
    with pytest.raises(ValueError, match=msg):
        ddl.zeros(sa) @ ddl.zeros(sb)


def test_matmul_0d_raises():
    with pytest.raises(ValueError):
        ddl.tensor(2.0) @ ddl.ones(3)
    with pytest.raises(ValueError):
        ddl.matmul(ddl.ones(3), ddl.tensor(1.0))


# ---- cat, stack -----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cat(dim, layout, rng):
    shapes = [[2, 3, 4] for _ in range(3)]
    for i, s in enumerate(shapes):
        s[dim] = i + 1
    pieces = [make(s, ddl.float32, layout, rng) for s in shapes]
    out = ddl.cat([t for t, _ in pieces], dim)
    check(out, np.concatenate([r for _, r in pieces], axis=dim), ddl.float32)
    assert all(out._storage_id != t._storage_id for t, _ in pieces)


def test_cat_with_empty_pieces_and_dtypes(rng):
    a, ra = make((2, 3), ddl.float32, "contiguous", rng)
    e = ddl.zeros(0, 3, dtype=ddl.float32)
    check(ddl.cat([e, a, e]), ra)
    i = ddl.tensor([[1, 2, 3]])
    out = ddl.cat([a, i])
    assert out.dtype is ddl.float32
    check(out, np.concatenate([ra, [[1, 2, 3]]]))
    check(ddl.cat([i, a.double()]), np.concatenate([[[1, 2, 3]], ra]), ddl.float64)
    check(ddl.concat((a,), 1), ra)
    check(ddl.cat([ddl.tensor([True]), ddl.tensor([False])]), [True, False], ddl.bool)
    check(ddl.cat([a, ra], 0), np.concatenate([ra, ra]))  # ndarray pieces


def test_cat_errors():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        ddl.cat([ddl.ones(2, 3), ddl.ones(2, 4)], 0)
    with pytest.raises(ValueError):
        ddl.cat([ddl.ones(2, 3), ddl.ones(3)])
    with pytest.raises(ValueError):
        ddl.cat([])
    with pytest.raises(ValueError):
        ddl.cat([ddl.tensor(1.0), ddl.tensor(2.0)])
    with pytest.raises(IndexError):
        ddl.cat([ddl.ones(2)], 1)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_stack(dim, dtype, rng):
    pieces = [make((2, 3), dtype, layout, rng) for layout in LAYOUTS]
    out = ddl.stack([t for t, _ in pieces], dim)
    check(out, np.stack([r for _, r in pieces], axis=dim).astype(dtype.numpy), dtype)


def test_stack_0d_and_errors():
    check(ddl.stack([ddl.tensor(1.0), ddl.tensor(2.0)]), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        ddl.stack([ddl.ones(2), ddl.ones(3)])
    with pytest.raises(ValueError):
        ddl.stack([])
    with pytest.raises(IndexError):
        ddl.stack([ddl.ones(2)], 2)


@pytest.mark.parametrize("la", LAYOUTS)
@pytest.mark.parametrize("lb", LAYOUTS)
@pytest.mark.parametrize("sa, sb", [((5, 6), (6, 7)), ((2, 5, 6), (6,)), ((6,), (2, 6, 3)),
                                    ((6,), (6,))], ids=str)
def test_matmul_int64_exact(la, lb, sa, sb, rng):
    a, ra = make(sa, ddl.int64, la, rng, -50, 50)
    b, rb = make(sb, ddl.int64, lb, rng, -50, 50)
    check(a @ b, np.matmul(ra.astype(np.int64), rb.astype(np.int64)), ddl.int64)


def test_matmul_bool_gives_int64():
    a = ddl.tensor([[True, True], [False, True]])
    check(a @ a, [[1, 2], [0, 1]], ddl.int64)
