"""The autograd engine: accumulation, retain_graph, error paths, grad mode, detach, in-place
guards, leaf hooks (the order and the values the DDP reducer relies on) and a leak loop."""
import os
import threading

import numpy as np
import pytest

import ddl

F32, F64 = ddl.float32, ddl.float64


def leaf(shape, seed=0, low=-2.0, high=2.0, dtype=F64):
    vals = np.random.RandomState(seed).uniform(low, high, shape)
    return ddl.tensor(vals, dtype=dtype, requires_grad=True)


def npy(t):
    return t.detach().numpy().astype(np.float64)


# ---- accumulation and retain_graph ----------------------------------------------------------


def test_backward_twice_on_fresh_graphs_doubles_grad():
    x = leaf((3, 4))
    (x * x).sum().backward()
    g1 = x.grad.numpy().copy()
    np.testing.assert_allclose(g1, 2 * npy(x), rtol=1e-15)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1, rtol=1e-15)
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), g1, rtol=1e-15)


def test_grad_is_private_and_contiguous_for_noncontiguous_leaf():
    base = ddl.tensor(np.arange(12.0).reshape(3, 4))
    x = base.t().requires_grad_()  # a non-contiguous leaf
    assert x.is_leaf and not x.is_contiguous()
    g = ddl.tensor(np.arange(12.0).reshape(4, 3) + 1)
    (x * 1.0).backward(g)
    assert x.grad.shape == (4, 3)
    np.testing.assert_array_equal(x.grad.numpy(), g.numpy())
    g.add_(100)  # the seed we passed is not aliased by .grad
    np.testing.assert_array_equal(x.grad.numpy(), np.arange(12.0).reshape(4, 3) + 1)


def test_retain_graph_allows_a_second_backward():
    x = leaf((3,), 1)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    g = (np.exp(npy(x)) * (1 + npy(x)))
    np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-14)
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), 2 * g, rtol=1e-14)
    y.backward()  # the last one may free the graph
    np.testing.assert_allclose(x.grad.numpy(), 3 * g, rtol=1e-14)
    with pytest.raises(ValueError, match="retain_graph"):
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * g, rtol=1e-14)


def test_backward_twice_without_retain_graph_raises():
    x = leaf((2, 2))
    y = (x * x).sum()
    y.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        y.backward()
    # a graph sharing the freed part fails too; a fresh graph over the same leaf works
    h = x * x
    z = h.sum()
    z.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        (h * 2).sum().backward()
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 3.0))


def test_backward_non_scalar_needs_gradient():
    x = leaf((3, 4))
    y = x * 2
    with pytest.raises(ValueError, match="one-element"):
        y.backward()
    assert x.grad is None
    one = (x * 2).sum(1, keepdim=True)[:1]  # shape (1, 1): one element is fine
    assert one.shape == (1, 1)
    one.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0] * 4, [0.0] * 4, [0.0] * 4])


@pytest.mark.parametrize("gshape", [(4, 3), (4,), (3, 4, 1), (1, 3, 4), ()])
def test_backward_gradient_wrong_shape_raises(gshape):
    x = leaf((3, 4))
    y = x * 2
    with pytest.raises(ValueError, match="shape"):
        y.backward(ddl.ones(*gshape, dtype=F64))
    assert x.grad is None


def test_backward_with_gradient():
    x = leaf((3, 4))
    g = np.random.RandomState(1).standard_normal((3, 4))
    (x * x).backward(ddl.tensor(g))  # float64 gradient
    np.testing.assert_allclose(x.grad.numpy(), 2 * npy(x) * g, rtol=1e-15)
    x.grad = None
    (x * x).backward(ddl.tensor(g, dtype=F32))  # another dtype is cast to the root's
    np.testing.assert_allclose(x.grad.numpy(), 2 * npy(x) * g.astype(np.float32), rtol=1e-15)
    assert x.grad.dtype is F64


def test_backward_on_tensor_without_graph_raises():
    with pytest.raises(ValueError, match="require"):
        ddl.tensor([1.0, 2.0]).sum().backward()
    x = leaf((2,))
    with ddl.no_grad():
        y = (x * 2).sum()
    with pytest.raises(ValueError):
        y.backward()


def test_backward_on_a_leaf():
    x = leaf((1,))
    x.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0])
    x.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0])


def test_diamond_sums_gradients():
    x = leaf((5,), 3, -1, 1)
    y = x * x + x.exp()
    z = y * y
    z.sum().backward()
    xv = npy(x)
    yv = xv * xv + np.exp(xv)
    np.testing.assert_allclose(x.grad.numpy(), 2 * yv * (2 * xv + np.exp(xv)), rtol=1e-14)


def test_shared_subgraph_reached_by_many_paths():
    x = leaf((4,), 4, -1, 1)
    h = x.tanh()
    y = h * 2 + h * h + h.exp() + h[1:].sum() + h  # h feeds 6 consumers
    y.sum().backward()
    hv = np.tanh(npy(x))
    dh = 2 + 2 * hv + np.exp(hv) + np.array([0, 4, 4, 4.0]) + 1  # the 0-d sum broadcasts to 4
    np.testing.assert_allclose(x.grad.numpy(), dh * (1 - hv * hv), rtol=1e-14)


def test_deep_chain_does_not_overflow_the_stack():
    x = leaf((2,), 5, 0.5, 1.0)
    y = x
    for _ in range(20000):
        y = y * 1.0
    (y * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    del y  # releasing a 20k-node chain is iterative, too
    z = x
    for _ in range(20000):
        z = z + 0.0
    del z


def test_leaves_with_unused_requires_grad_get_no_grad():
    x, w = leaf((3,)), leaf((3,), 1)
    (x * 2).sum().backward()
    assert w.grad is None
    assert x.grad is not None


def test_constant_operand_gets_no_grad():
    x = leaf((3,))
    c = ddl.tensor([1.0, 2.0, 3.0], dtype=F64)
    (x * c).sum().backward()
    assert c.grad is None and not c.requires_grad
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


# ---- grad mode ------------------------------------------------------------------------------


def test_no_grad_context_manager():
    x = leaf((3,))
    with ddl.no_grad():
        assert not ddl.is_grad_enabled()
        y = x * 2 + x.exp()
        z = x[1:] @ x[1:]
    assert ddl.is_grad_enabled()
    for t in (y, z):
        assert not t.requires_grad and t.grad_fn is None and t.is_leaf
    assert (x * 2).requires_grad


def test_no_grad_decorator():
    x = leaf((3,))

    @ddl.no_grad()
    def f(t):
        """doc"""
        assert not ddl.is_grad_enabled()
        return t * t

    y = f(x)
    assert not y.requires_grad and y.grad_fn is None
    assert f.__name__ == "f" and f.__doc__ == "doc"
    assert ddl.is_grad_enabled()
    assert f(x).grad_fn is None  # reusable


def test_no_grad_restores_mode_on_exception():
    with pytest.raises(KeyError), ddl.no_grad():
        raise KeyError("x")
    assert ddl.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = leaf((3,))
    with ddl.no_grad():
        with ddl.enable_grad():
            assert ddl.is_grad_enabled()
            y = x * 2
        z = x * 2
        assert not ddl.is_grad_enabled()

        @ddl.enable_grad()
        def g(t):
            return t * 3

        w = g(x)
    assert y.requires_grad and y.grad_fn == "MulBackward"
    assert w.requires_grad and w.grad_fn == "MulBackward"
    assert not z.requires_grad


def test_set_grad_enabled_forms():
    x = leaf((3,))
    ddl.set_grad_enabled(False)  # as a plain call
    try:
        assert not ddl.is_grad_enabled()
        assert not (x * 2).requires_grad
    finally:
        ddl.set_grad_enabled(True)
    assert ddl.is_grad_enabled()
    with ddl.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with ddl.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not ddl.is_grad_enabled()
    assert ddl.is_grad_enabled()

    @ddl.set_grad_enabled(False)
    def f(t):
        return t * 2

    assert ddl.is_grad_enabled()  # decorating does not switch the mode
    assert not f(x).requires_grad
    assert ddl.is_grad_enabled()


def test_grad_mode_is_per_thread():
    x = leaf((3,))
    seen = {}

    def worker():
        seen["enabled"] = ddl.is_grad_enabled()
        seen["rg"] = (x * 2).requires_grad

    with ddl.no_grad():
        th = threading.Thread(target=worker)
        th.start()
        th.join()
    assert seen == {"enabled": True, "rg": True}


# ---- requires_grad, detach, leaves ----------------------------------------------------------


def test_detach_shares_memory():
    x = leaf((3,))
    y = x * 2
    for src in (x, y):
        d = src.detach()
        assert not d.requires_grad and d.is_leaf and d.grad_fn is None
        before = npy(src)
        d.add_(1.0)  # allowed: d does not require grad; src sees it
        np.testing.assert_array_equal(npy(src), before + 1.0)
    assert x.requires_grad and y.grad_fn == "MulBackward"


def test_requires_grad_on_integer_tensor_raises():
    t = ddl.tensor([1, 2, 3])
    assert t.dtype is ddl.int64
    with pytest.raises(TypeError):
        t.requires_grad = True
    with pytest.raises(TypeError):
        t.requires_grad_()
    with pytest.raises(TypeError):
        ddl.tensor([True, False]).requires_grad_()
    with pytest.raises(TypeError):
        ddl.tensor([1, 2], requires_grad=True)
    assert not t.requires_grad


def test_requires_grad_flags():
    x = ddl.tensor([1.0, 2.0])
    assert not x.requires_grad and x.is_leaf
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad = False
    assert not x.requires_grad
    x.requires_grad = True
    y = x * 2
    with pytest.raises(ValueError):
        y.requires_grad = False  # only leaves
    assert y.requires_grad


def test_grad_setter():
    x = leaf((2, 3))
    x.grad = ddl.ones(2, 3, dtype=F64)
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 3.0))
    with pytest.raises(ValueError):
        x.grad = ddl.ones(3, 2, dtype=F64)
    with pytest.raises(ValueError):
        x.grad = ddl.ones(2, 3, dtype=F32)
    x.grad = None
    assert x.grad is None


@pytest.mark.parametrize("op", [
    lambda x: x.__iadd__(1.0),
    lambda x: x.add_(1.0),
    lambda x: x.mul_(ddl.full((3,), 2.0, dtype=F64)),
    lambda x: x.copy_(ddl.zeros(3, dtype=F64)),
    lambda x: x.zero_(),
    lambda x: x.fill_(2.0),
    lambda x: x.exp_(),
    lambda x: x.__setitem__(0, 5.0),
], ids=["iadd", "add_", "mul_", "copy_", "zero_", "fill_", "exp_", "setitem"])
def test_inplace_on_leaf_requiring_grad(op):
    x = ddl.tensor([1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        op(x)
    np.testing.assert_array_equal(npy(x), [1.0, 2.0, 3.0])  # untouched
    with ddl.no_grad():
        op(x)
    assert not np.array_equal(npy(x), [1.0, 2.0, 3.0])
    assert x.requires_grad and x.is_leaf and x.grad_fn is None


def test_iadd_statement_under_no_grad_keeps_leaf():
    x = ddl.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    with pytest.raises(RuntimeError):
        x += 1
    with ddl.no_grad():
        x += 1
        x -= ddl.tensor([0.5, 0.5], dtype=F64)
    np.testing.assert_array_equal(npy(x), [1.5, 2.5])
    assert x.is_leaf and x.requires_grad
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 5.0])


def test_integer_results_have_no_grad_fn():
    x = leaf((3, 4))
    ints = [x > 0, x == x, x <= 1.0,  # noqa: PLR0124 - a comparison op, on purpose
            x.argmax(), x.argmin(1), x.max(dim=1).indices,
            x.long(), (x * 2).to("bool"), ddl.argmax(x * 2)]
    for t in ints:
        assert not t.dtype.is_floating_point
        assert t.grad_fn is None and not t.requires_grad and t.is_leaf
    m = x.max(dim=1)
    assert m.values.grad_fn == "MaxBackward" and m.indices.grad_fn is None


def test_grad_fn_names_and_is_leaf():
    x, w = leaf((3, 4)), leaf((4, 2), 1)
    p = leaf((3, 4), 2, 0.5, 2.0)
    names = {
        "AddBackward": x + w.t().sum(0), "SubBackward": 1 - x, "MulBackward": x * 2,
        "DivBackward": x / p, "PowBackward": p ** x, "MaximumBackward": ddl.maximum(x, p),
        "MinimumBackward": x.minimum(p), "NegBackward": -x, "ExpBackward": x.exp(),
        "LogBackward": p.log(), "SqrtBackward": p.sqrt(), "AbsBackward": x.abs(),
        "TanhBackward": x.tanh(), "SigmoidBackward": x.sigmoid(), "ReluBackward": x.relu(),
        "SignBackward": x.sign(), "SumBackward": x.sum(), "MeanBackward": x.mean(0),
        "MaxBackward": x.amax(1), "MinBackward": x.min(), "VarBackward": x.var(),
        "StdBackward": x.std(1), "ProdBackward": x.prod(0), "MatmulBackward": x @ w,
        "ViewBackward": x.view(12), "ExpandBackward": x[:1].expand(3, 4),
        "PermuteBackward": x.t(), "ToCopyBackward": x.float(), "SliceBackward": x[1:],
        "SelectBackward": x[0],
    }
    for name, t in names.items():
        assert t.grad_fn == name, (name, t.grad_fn)
        assert not t.is_leaf and t.requires_grad
    for t in (x, w, p):
        assert t.is_leaf and t.grad_fn is None
    c = ddl.tensor([1.0])
    assert c.is_leaf and (c * 2).is_leaf and (c * 2).grad_fn is None
    (x * 2).sum().backward()
    assert x.is_leaf and x.grad_fn is None  # backward does not change leafness


# ---- hooks ----------------------------------------------------------------------------------


def test_hook_fires_once_with_the_total_gradient():
    w = leaf((3,), 1)
    x = ddl.tensor([1.0, 2.0, 3.0], dtype=F64)
    seen = []
    w.register_hook(lambda g: seen.append(g.numpy().copy()))
    loss = (w * x).sum() + (w * w).sum() + w.exp()[1:].sum()  # w used by four ops
    loss.backward()
    wv = npy(w)
    expected = x.numpy() + 2 * wv + np.exp(wv) * [0, 1, 1]
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected, rtol=1e-14)
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-14)


def test_hook_fires_once_per_pass():
    w = leaf((2,))
    calls = []
    w.register_hook(lambda g: calls.append(1))
    y = (w * w).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert len(calls) == 2
    w.grad = None
    (w * 3 + w * 4).sum().backward()
    assert len(calls) == 3


def test_hooks_fire_from_the_loss_backwards_before_backward_ends():
    x = ddl.tensor(np.linspace(-1, 1, 4))
    w1, w2, w3 = leaf((4,), 1), leaf((4,), 2), leaf((4,), 3)
    order, grads_seen = [], {}

    def hook(name):
        def fn(g):
            order.append(name)
            # which other leaves have a gradient already, while backward is still running
            grads_seen[name] = {n: t.grad is not None for n, t in
                                (("w1", w1), ("w2", w2), ("w3", w3))}
        return fn

    handles = [w.register_hook(hook(n)) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))]
    loss = (w3 * (w2 * (w1 * x).exp()).sigmoid()).tanh().sum()
    loss.backward()
    assert order == ["w3", "w2", "w1"]
    assert grads_seen["w3"] == {"w1": False, "w2": False, "w3": True}
    assert grads_seen["w2"] == {"w1": False, "w2": True, "w3": True}
    assert grads_seen["w1"] == {"w1": True, "w2": True, "w3": True}
    # an MLP-shaped graph: the last layer's parameters are final first
    for h in handles:
        h.remove()
    order.clear()
    hs = [w.register_hook(hook(n)) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))]
    for w in (w1, w2, w3):
        w.grad = None
    W1, W2, W3 = (w.view(2, 2) for w in (w1, w2, w3))
    h = (x.view(2, 2) @ W1).relu() + 1.0
    h = (h @ W2).tanh()
    ((h @ W3) ** 2).mean().backward()
    assert order == ["w3", "w2", "w1"]
    for h in hs:
        h.remove()


def test_hook_return_value_replaces_gradient():
    w = leaf((3,))
    x = ddl.tensor([1.0, 2.0, 3.0], dtype=F64)
    seen = []
    w.register_hook(lambda g: g * 10)
    w.register_hook(lambda g: seen.append(g.numpy().copy()))  # later hooks see the new value
    (w * x).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(seen[0], [10.0, 20.0, 30.0])


def test_hook_returning_none_keeps_gradient():
    w = leaf((3,))
    w.register_hook(lambda g: None)
    (w * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])


def test_hook_handle_remove():
    w = leaf((3,))
    calls = []
    h = w.register_hook(lambda g: calls.append(1) or g * 0)
    (w * 2).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 0.0, 0.0])
    h.remove()
    h.remove()  # idempotent
    w.grad = None
    (w * 2).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])


def test_hook_that_raises_makes_backward_raise():
    w = leaf((3,))

    def bad(g):
        raise ZeroDivisionError("boom in hook")

    h = w.register_hook(bad)
    with pytest.raises(ZeroDivisionError, match="boom in hook"):
        (w * 2).sum().backward()
    h.remove()
    w.grad = None  # the engine is usable afterwards
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0, 3.0])
    assert ddl.is_grad_enabled()


def test_hook_returning_garbage_raises():
    w = leaf((3,))
    w.register_hook(lambda g: "not a tensor")
    with pytest.raises((TypeError, ValueError)):
        (w * 2).sum().backward()


def test_hook_on_non_leaf_or_no_grad_tensor_raises():
    w = leaf((3,))
    with pytest.raises(ValueError):
        (w * 2).register_hook(lambda g: None)
    with pytest.raises(ValueError):
        ddl.tensor([1.0]).register_hook(lambda g: None)
    with pytest.raises(TypeError):
        w.register_hook(42)


def test_hook_on_root_leaf():
    x = leaf(())
    calls = []
    x.register_hook(lambda g: calls.append(float(g)))
    x.backward()
    assert calls == [1.0]


# ---- memory ---------------------------------------------------------------------------------


from _util import rss_test


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@rss_test
def test_training_loop_rss_is_flat():
    rs = np.random.RandomState(0)
    x = ddl.tensor(rs.standard_normal((16, 32)))
    w1 = ddl.tensor(rs.standard_normal((32, 64)) * 0.1, requires_grad=True)
    b1 = ddl.tensor(np.zeros(64), requires_grad=True)
    w2 = ddl.tensor(rs.standard_normal((64, 8)) * 0.1, requires_grad=True)
    params = (w1, b1, w2)

    def step():
        loss = ((x @ w1 + b1).relu() @ w2).mean()
        loss.backward()
        with ddl.no_grad():
            for p in params:
                p -= 0.01 * p.grad
                p.grad = None
        return loss

    for _ in range(500):  # warm-up: allocator pools, caches
        step()
    before = _rss_mb()
    for _ in range(9500):
        loss = step()
    after = _rss_mb()
    # each step makes ~10 tensors of ~8 KiB and ~6 graph nodes: a leak of any of them
    # per step would be > 5 MB over 9500 steps
    assert after - before < 3.0, (before, after)
    assert np.isfinite(float(loss))
    assert all(p.is_leaf and p.requires_grad and p.grad is None for p in params)


@rss_test
def test_graphs_dropped_without_backward_are_freed():
    w = ddl.tensor(np.ones((64, 64)), requires_grad=True)
    for _ in range(200):
        (w * 2).exp().sum()
    before = _rss_mb()
    for _ in range(3000):
        y = (w * 2).exp().sum()  # 32 KiB tensors saved in nodes, never backpropagated
    del y
    assert _rss_mb() - before < 3.0


def test_hook_list_is_freed_with_the_tensor():
    import gc
    import weakref

    class Marker:
        pass

    m = Marker()
    ref = weakref.ref(m)
    w = leaf((3,))
    w.register_hook(lambda g, m=m: None)
    del m, w
    gc.collect()
    assert ref() is None, "the hook list (and what its closures hold) outlived the tensor"


# ---- more engine behaviour ------------------------------------------------------------------


def test_hook_sees_the_accumulated_grad_on_a_second_pass():
    # the hook gets the leaf's .grad once this pass's contributions are all in: across passes
    # without a reset that is the running total (what a DDP reducer all-reduces after no_sync
    # accumulation), and a returned tensor replaces that total
    w = leaf((2,))
    seen = []
    w.register_hook(lambda g: seen.append(g.numpy().copy()))
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 2.0])
    np.testing.assert_array_equal(seen[1], [5.0, 5.0])
    np.testing.assert_array_equal(w.grad.numpy(), [5.0, 5.0])


def test_backward_inside_no_grad():
    x = leaf((3,))
    y = (x * x).sum()
    with ddl.no_grad():
        y.backward()
        assert not ddl.is_grad_enabled()
    np.testing.assert_allclose(x.grad.numpy(), 2 * npy(x), rtol=1e-15)
    assert ddl.is_grad_enabled()


def test_backward_does_not_record_and_grad_has_no_graph():
    x = leaf((3,))
    (x.exp() * x).sum().backward()
    assert x.grad.grad_fn is None and not x.grad.requires_grad
    assert ddl.is_grad_enabled()


def test_concurrent_backward_on_independent_graphs():
    # backward drops the GIL: threads training their own replicas must not interfere
    rs = np.random.RandomState(0)
    data = [rs.standard_normal((8, 6)) for _ in range(4)]
    w0 = rs.standard_normal((6, 5)) * 0.3
    v0 = rs.standard_normal((5, 1)) * 0.3

    def train(x_np, n_steps=150):
        x = ddl.tensor(x_np)
        w = ddl.tensor(w0, requires_grad=True)
        v = ddl.tensor(v0, requires_grad=True)
        for _ in range(n_steps):
            loss = ((x @ w).tanh() @ v).pow(2).mean()
            loss.backward()
            with ddl.no_grad():
                w -= 0.1 * w.grad
                v -= 0.1 * v.grad
            w.grad = v.grad = None
        return npy(w), npy(v)

    expected = [train(x) for x in data]
    results = [None] * 4

    def worker(i):
        results[i] = train(data[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, exp in zip(results, expected):
        np.testing.assert_array_equal(got[0], exp[0])
        np.testing.assert_array_equal(got[1], exp[1])


def test_hook_clearing_grad_does_not_crash():
    # a hook may drop leaf.grad; later hooks are skipped, and a returned tensor becomes .grad
    w = leaf((3,))
    calls = []

    def clear(g):
        calls.append("clear")
        w.grad = None

    w.register_hook(clear)
    w.register_hook(lambda g: calls.append("later"))
    (w * 2).sum().backward()
    assert calls == ["clear"] and w.grad is None

    v = leaf((3,))

    def clear_and_return(g):
        v.grad = None
        return g * 5

    v.register_hook(clear_and_return)
    (v * 2).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [10.0, 10.0, 10.0])
    assert v.grad.dtype is F64

    u = leaf((3,))

    def clear_and_return_wrong_shape(g):
        u.grad = None
        return ddl.ones(2, dtype=F64)

    u.register_hook(clear_and_return_wrong_shape)
    with pytest.raises(ValueError, match="shape"):
        (u * 2).sum().backward()


def test_hook_that_removes_itself():
    w = leaf((3,))
    calls = []
    box = {}

    def once(g):
        calls.append(1)
        box.pop("h").remove()  # drops the last reference to this hook while it runs
        return g * 2

    box["h"] = w.register_hook(once)
    del once
    (w * 1).sum().backward()
    (w * 1).sum().backward()
    assert calls == [1]
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0, 3.0])
