"""The everyday tensor surface (ddl/_surface.py and its function forms): values against NumPy,
gradients against PyTorch when it is installed, and the error paths."""
import numpy as np
import pytest

import ddl


def test_split_chunk_unbind_narrow(rng):
    a = rng.standard_normal((5, 4)).astype(np.float32)
    x = ddl.tensor(a)
    assert [t.shape for t in x.split(2)] == [(2, 4), (2, 4), (1, 4)]
    assert [t.shape for t in x.split([1, 3], dim=1)] == [(5, 1), (5, 3)]
    assert [t.shape for t in ddl.chunk(x, 3, 1)] == [(5, 2), (5, 2)]
    assert np.array_equal(x.unbind(1)[2].numpy(), a[:, 2])
    assert np.array_equal(x.narrow(0, 1, 3).numpy(), a[1:4])
    with pytest.raises(ValueError, match="do not sum"):
        x.split([1, 1])
    with pytest.raises(IndexError):
        x.narrow(0, 4, 3)


def test_gather_scatter_index_select(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    idx = np.array([[0, 3], [1, 1], [2, 0]])
    x = ddl.tensor(a)
    assert np.array_equal(x.gather(1, ddl.tensor(idx)).numpy(), np.take_along_axis(a, idx, 1))
    assert np.array_equal(ddl.index_select(x, 1, ddl.tensor([3, 0])).numpy(), a[:, [3, 0]])
    z = ddl.zeros(3, 4).scatter(1, ddl.tensor(idx), 1.0)
    ref = np.zeros((3, 4), np.float32)
    np.put_along_axis(ref, idx, 1.0, 1)
    assert np.array_equal(z.numpy(), ref)
    s = ddl.zeros(2, 3).scatter_add_(1, ddl.tensor([[0, 0, 1], [2, 2, 2]]), ddl.ones(2, 3))
    assert s.tolist() == [[2, 1, 0], [0, 0, 3]]
    onehot = ddl.zeros(3, 5).scatter_(1, ddl.tensor([[1], [4], [0]]), 1)
    assert onehot.argmax(1).tolist() == [1, 4, 0]
    with pytest.raises(IndexError):
        x.gather(1, ddl.tensor([[4]] * 3))
    with pytest.raises(TypeError, match="integer"):
        x.gather(1, ddl.zeros(3, 1))


def test_sort_topk_cumsum_masked_fill_where(rng):
    a = rng.standard_normal((3, 6)).astype(np.float32)
    x = ddl.tensor(a)
    v, i = x.sort(1, descending=True)
    assert np.array_equal(v.numpy(), -np.sort(-a, 1)) and np.array_equal(
        i.numpy(), np.argsort(-a, 1, kind="stable"))
    t = x.topk(2, dim=0)
    assert np.array_equal(t.values.numpy(), -np.sort(-a, 0)[:2])
    assert np.array_equal(x.argsort(1).numpy(), np.argsort(a, 1, kind="stable"))
    assert np.allclose(x.cumsum(1).numpy(), np.cumsum(a, 1), rtol=1e-6)
    assert ddl.tensor([1, 2, 3]).cumsum(0).tolist() == [1, 3, 6]
    m = x > 0
    assert np.array_equal(x.masked_fill(m, -1.0).numpy(), np.where(a > 0, -1, a))
    assert np.array_equal(x.where(m, 0.0).numpy(), np.where(a > 0, a, 0))
    with pytest.raises(ValueError, match="k="):
        x.topk(7)


def test_arithmetic_helpers_and_new_factories(rng):
    a, b, c = (ddl.tensor(rng.standard_normal(4).astype(np.float32)) for _ in range(3))
    ref = a.numpy() + 0.5 * b.numpy() * c.numpy()
    assert np.allclose(a.clone().addcmul_(b, c, value=0.5).numpy(), ref)
    assert np.allclose(a.clone().addcdiv_(b, c.abs() + 1, value=2).numpy(),
                       a.numpy() + 2 * b.numpy() / (np.abs(c.numpy()) + 1))
    assert np.allclose(a.clone().lerp_(b, 0.25).numpy(), a.numpy() + 0.25 * (b - a).numpy())
    assert a.new_zeros(2, 3).shape == (2, 3) and a.new_ones((2,)).dtype is ddl.float32
    assert a.new_full((2,), 7).tolist() == [7, 7] and a.new_tensor([1, 2]).dtype is ddl.float32
    assert ddl.tensor([1, 2]).type_as(a).dtype is ddl.float32
    assert ddl.mm(ddl.ones(2, 3), ddl.ones(3, 4)).shape == (2, 4)
    with pytest.raises(ValueError, match="2-d"):
        ddl.mm(ddl.ones(2, 3, 4), ddl.ones(4, 2))
    assert np.allclose(ddl.sin(a).numpy(), np.sin(a.numpy()), atol=1e-6)
    assert np.allclose(a.cos().numpy(), np.cos(a.numpy()), atol=1e-6)
    assert np.allclose(a.softmax(0).sum().item(), 1.0)
    assert np.allclose(a.log_softmax(-1).exp().sum().item(), 1.0)


def test_format_data_item_tolist():
    t = ddl.tensor(1.2345)
    assert f"{t:+.2f}" == "+1.23" and f"{ddl.tensor([2.25]):.1f}" == "2.2"
    assert f"{ddl.zeros(2)}" == repr(ddl.zeros(2))
    with pytest.raises(TypeError, match="format"):
        f"{ddl.zeros(2):.2f}"
    w = ddl.ones(3, requires_grad=True)
    d = w.data
    assert not d.requires_grad
    d.mul_(2)  # shares storage, as PyTorch's .data
    assert w.tolist() == [2, 2, 2]
    w.data = ddl.zeros(3)
    assert w.tolist() == [0, 0, 0] and w.requires_grad


def test_einsum_patterns(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((2, 4, 5)).astype(np.float32)
    m = rng.standard_normal((3, 4)).astype(np.float32)
    for eq, ops in [("bij,bjk->bik", (a, b)), ("ij->ji", (m,)), ("ij->", (m,)),
                    ("ij,ij->i", (m, m)), ("i,j->ij", (m[0], m[1])), ("bij,bjk", (a, b)),
                    ("bij->bj", (a,)), ("ij,kj->ik", (m, m))]:
        got = ddl.einsum(eq, *[ddl.tensor(o) for o in ops]).numpy()
        assert np.allclose(got, np.einsum(eq, *ops), atol=1e-5), eq
    with pytest.raises(NotImplementedError, match="ellipsis"):
        ddl.einsum("...i->i", ddl.tensor(m))


def test_random_surface():
    p = ddl.randperm(10)
    assert sorted(p.tolist()) == list(range(10)) and p.dtype is ddl.int64
    g = ddl.Generator().manual_seed(5)
    assert ddl.randperm(8, generator=g).tolist() == ddl.randperm(
        8, generator=ddl.Generator().manual_seed(5)).tolist()
    s = ddl.multinomial(ddl.tensor([0.0, 1.0, 0.0, 3.0]), 2)
    assert sorted(s.tolist()) == [1, 3]
    r = ddl.multinomial(ddl.tensor([[0.0, 1.0], [1.0, 0.0]]), 5, replacement=True)
    assert r.tolist() == [[1] * 5, [0] * 5]
    with pytest.raises(ValueError, match="without replacement"):
        ddl.multinomial(ddl.tensor([1.0, 0.0]), 2)


def test_inference_mode():
    w = ddl.ones(2, requires_grad=True)
    with ddl.inference_mode():
        assert not (w * 2).requires_grad
    with ddl.inference_mode(False):
        assert (w * 2).requires_grad

    @ddl.inference_mode()
    def f():
        return w * 2

    assert not f().requires_grad


def test_seeding_os_random_by_default_and_manual_seed():
    import subprocess
    import sys

    code = "import ddl; print(ddl.initial_seed(), ddl.rand(1).item())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, check=True).stdout for _ in range(2)}
    assert len(outs) == 2  # two fresh processes draw different numbers
    g = ddl.manual_seed(3)
    assert ddl.initial_seed() == 3 and g is ddl.default_generator
    s = ddl.seed()
    assert ddl.initial_seed() == s


# ---- gradients against PyTorch ---------------------------------------------------------------

CASES = {
    "gather": lambda m, x: x.gather(1, m.tensor([[0, 2, 2], [1, 0, 3], [3, 3, 0]])),
    "index_select": lambda m, x: m.index_select(x, 0, m.tensor([2, 0, 2])),
    "adv_index": lambda m, x: x[m.tensor([0, 2, 2]), m.tensor([1, 1, 3])],
    "mask_index": lambda m, x: x[x > 0],
    "sort": lambda m, x: x.sort(1, descending=True)[0] * m.arange(4.0),
    "topk": lambda m, x: x.topk(2, 0).values,
    "cumsum": lambda m, x: x.cumsum(1) * m.arange(4.0),
    "masked_fill": lambda m, x: x.masked_fill(x < 0, 0.5) * x,
    "split": lambda m, x: x.split([1, 3], 1)[1] * 2,
    "chunk_unbind": lambda m, x: x.chunk(2, 1)[0].unbind(0)[1],
    "narrow": lambda m, x: x.narrow(1, 1, 2),
    "einsum": lambda m, x: m.einsum("ij,kj->ik", x, x),
    "einsum3": lambda m, x: m.einsum("ij,jk,kl->il", x, x.t(), x),
    "lerp": lambda m, x: x.lerp(x * x, 0.3),
    "addcmul": lambda m, x: x.addcmul(x, x, value=0.5),
    "sin_cos": lambda m, x: m.sin(x) * x.cos(),
    "softmax": lambda m, x: x.softmax(0) * m.arange(4.0),
    "log_softmax": lambda m, x: x.log_softmax(1)[:, 0],
    "flip": lambda m, x: x.flip(1) * m.arange(4.0),
    "repeat": lambda m, x: x.repeat(2, 1) * 3,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_pytorch(name, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs it)")
    a = rng.standard_normal((3, 4))
    xd = ddl.tensor(a, dtype=ddl.float64, requires_grad=True)
    xt = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    yd, yt = CASES[name](ddl, xd), CASES[name](torch, xt)
    assert np.allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    proj = rng.standard_normal(tuple(yt.shape))
    (yd * ddl.tensor(proj)).sum().backward()
    (yt * torch.tensor(proj)).sum().backward()
    assert np.allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_take_op_gathers_any_dtype_and_accumulates():
    from ddl import _C

    x = ddl.arange(12.0).reshape(3, 4).requires_grad_()
    y = _C.take(x, ddl.tensor([[0, 5], [5, 11]]))
    assert y.tolist() == [[0, 5], [5, 11]] and y.grad_fn == "TakeBackward"
    y.sum().backward()
    assert x.grad.numpy().reshape(-1).tolist() == [1, 0, 0, 0, 0, 2] + [0] * 5 + [1]
    assert _C.take(ddl.tensor([True, False]), ddl.tensor([1, 0])).tolist() == [False, True]
    assert _C.take(ddl.arange(5).t(), ddl.tensor([4])).tolist() == [4]
    xt = ddl.arange(6.0).reshape(2, 3).t()  # a strided source reads in its logical order
    assert _C.take(xt, ddl.tensor([1, 2])).tolist() == [3, 1]
    with pytest.raises(IndexError, match="out of range"):
        _C.take(x, ddl.tensor([12]))
    with pytest.raises(TypeError, match="int64"):
        _C.take(x, ddl.tensor([0.0]))
    big = ddl.randn(300, 300, dtype=ddl.float64, requires_grad=True)  # no size limit
    big[ddl.arange(300), ddl.arange(300)].sum().backward()
    assert big.grad.sum().item() == 300


def test_more_surface_values(rng):
    a = rng.standard_normal((4, 5)).astype(np.float64)
    x = ddl.tensor(a)
    pairs = [
        (ddl.tril(x), np.tril(a)), (x.triu(1), np.triu(a, 1)), (x.tril(-1), np.tril(a, -1)),
        (ddl.floor(x), np.floor(a)), (x.ceil(), np.ceil(a)), (x.round(), np.round(a)),
        (x.trunc(), np.trunc(a)), (ddl.log1p(x.abs()), np.log1p(np.abs(a))),
        (x.expm1(), np.expm1(a)), (x.abs().log2(), np.log2(np.abs(a))),
        (x.norm(), np.linalg.norm(a)), (x.norm(1, dim=1), np.abs(a).sum(1)),
        (ddl.logsumexp(x, 1), np.log(np.exp(a).sum(1))), (x.diff(dim=1), np.diff(a, axis=1)),
        (x.roll(2, 1), np.roll(a, 2, 1)), (x.roll(1), np.roll(a, 1)),
        (ddl.diag(x), np.diag(a)), (ddl.diag(x, -1), np.diag(a, -1)),
        (ddl.diag(x[0], 1), np.diag(a[0], 1)), (x.tile(2), np.tile(a, 2)),
        (ddl.outer(x[0], x[1]), np.outer(a[0], a[1])), (ddl.dot(x[0], x[1]), a[0] @ a[1]),
        (ddl.mv(x, x[0]), a @ a[0]), (x.remainder(0.7), np.remainder(a, 0.7)),
        (x.fmod(0.7), np.fmod(a, 0.7)), (x.cumprod(1), np.cumprod(a, 1)),
        (ddl.addmm(x[:, :4], x, x.t()[:, :4], beta=0.5, alpha=2),
         0.5 * a[:, :4] + 2 * a @ a.T[:, :4]),
        (x.masked_select(x > 0), a[a > 0]),
    ]
    for i, (got, ref) in enumerate(pairs):
        assert np.allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12), i
    assert ddl.tensor([[0, 1], [2, 0]]).nonzero().tolist() == [[0, 1], [1, 0]]
    assert ddl.tensor([7, -7]).remainder(3).tolist() == [1, 2]
    assert ddl.tensor([7, -7]).floor_divide(2).tolist() == [3, -4]
    assert ddl.Size([2, 3]) == (2, 3) and ddl.Size([2, 3]).numel() == 6
    i, j = ddl.meshgrid(ddl.arange(3), ddl.arange(2), indexing="ij")
    assert i.shape == (3, 2) and j.tolist() == [[0, 1]] * 3
    z = ddl.zeros(3, 4).index_add_(0, ddl.tensor([0, 0, 2]), ddl.ones(3, 4))
    assert z[:, 0].tolist() == [2, 0, 1]


def test_in_place_random_fills_follow_the_seed():
    ddl.manual_seed(4)
    a = ddl.empty(1000).uniform_(-2, 3)
    assert -2 <= a.min().item() and a.max().item() < 3
    n = ddl.empty(2000, dtype=ddl.float64).normal_(1.0, 0.5)
    assert abs(n.mean().item() - 1.0) < 0.05 and abs(n.std().item() - 0.5) < 0.05
    b = ddl.empty(1000).bernoulli_(0.25)
    assert set(b.tolist()) <= {0.0, 1.0} and 0.15 < b.mean().item() < 0.35
    assert ddl.empty(500).exponential_(2.0).min().item() >= 0
    assert 0 <= ddl.empty(100).random_(0, 5).max().item() < 5
    ddl.manual_seed(4)
    assert ddl.empty(1000).uniform_(-2, 3).tolist() == a.tolist()


MORE = {
    "tril": lambda m, x: m.tril(x) * 2,
    "triu": lambda m, x: x.triu(1) * 2,
    "norm": lambda m, x: x.norm(dim=1),
    "logsumexp": lambda m, x: m.logsumexp(x, 1),
    "diag2": lambda m, x: m.diag(x, 1),
    "diag1": lambda m, x: m.diag(x[0], -1),
    "roll": lambda m, x: x.roll(1, 1) * m.arange(4.0),
    "diff": lambda m, x: x.diff(dim=0),
    "outer": lambda m, x: m.outer(x[0], x[1]),
    "log1p": lambda m, x: (x * x).log1p(),
    "remainder": lambda m, x: x.remainder(0.7),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_gradients_match_pytorch(name, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (CI installs it)")
    a = rng.standard_normal((3, 4))
    xd = ddl.tensor(a, dtype=ddl.float64, requires_grad=True)
    xt = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    yd, yt = MORE[name](ddl, xd), MORE[name](torch, xt)
    assert np.allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    proj = rng.standard_normal(tuple(yt.shape))
    (yd * ddl.tensor(proj)).sum().backward()
    (yt * torch.tensor(proj)).sum().backward()
    assert np.allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
