"""Ownership across the NumPy boundary (either side may die first), views of views, and leak
loops whose resident memory must stay flat."""
import gc
import os
import sys
import threading
import weakref

import numpy as np
import pytest

import ddl


def scribble():
    """Allocate and fill memory so freed blocks would be reused and overwritten."""
    junk = [np.full(1000 + 37 * i, -7.0) for i in range(200)]
    junk += [ddl.full((1000 + 37 * i,), -7.0) for i in range(200)]
    del junk
    gc.collect()


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- either side may go first -------------------------------------------------------------


def test_numpy_array_deleted_while_tensor_lives():
    a = np.arange(1000.0)
    t = ddl.from_numpy(a)
    v = t[10:20]
    del a
    gc.collect()
    scribble()
    np.testing.assert_array_equal(t.numpy(), np.arange(1000.0))
    np.testing.assert_array_equal(v.numpy(), np.arange(10.0, 20.0))
    assert t.sum().item() == sum(range(1000))


def test_numpy_view_of_array_deleted_while_tensor_lives():
    base = np.arange(100.0).reshape(10, 10)
    t = ddl.from_numpy(base[::2, 1:].T)
    del base
    gc.collect()
    scribble()
    np.testing.assert_array_equal(t.numpy(), np.arange(100.0).reshape(10, 10)[::2, 1:].T)


def test_tensor_freed_while_numpy_view_lives():
    t = ddl.arange(1000, dtype=ddl.float64)
    n = t.numpy()
    s = t[::3].numpy()
    ref = weakref.ref(t)
    del t
    gc.collect()
    assert ref() is not None  # the arrays keep the tensor alive
    scribble()
    np.testing.assert_array_equal(n, np.arange(1000.0))
    np.testing.assert_array_equal(s, np.arange(0.0, 1000.0, 3.0))
    n[0] = 5
    assert s[0] == 5
    del n, s
    gc.collect()
    assert ref() is None  # and let it go afterwards


def test_memoryview_keeps_tensor_alive():
    t = ddl.ones(100)
    m = memoryview(t)
    del t
    gc.collect()
    scribble()
    assert m.tolist() == [1.0] * 100
    m.release()


def test_views_of_views_outlive_base():
    base = ddl.tensor(np.arange(120.0).reshape(2, 3, 4, 5))
    v = base.permute(3, 1, 0, 2)[1:4, ::2].reshape(3, 2, 8)[..., 2:6].transpose(0, 2)
    ref = np.arange(120.0).reshape(2, 3, 4, 5).transpose(3, 1, 0, 2)[1:4, ::2].reshape(
        3, 2, 8)[..., 2:6].swapaxes(0, 2)
    w = v[1]
    del base
    gc.collect()
    scribble()
    np.testing.assert_array_equal(v.numpy(), ref)
    del v
    gc.collect()
    scribble()
    np.testing.assert_array_equal(w.numpy(), ref[1])


def test_chain_across_the_boundary():
    a = np.arange(60.0).reshape(3, 4, 5)
    t1 = ddl.from_numpy(a)[1:]
    n1 = t1.numpy()[:, ::2]
    t2 = ddl.from_numpy(n1).T
    n2 = t2.numpy()
    del a, t1, n1, t2
    gc.collect()
    scribble()
    np.testing.assert_array_equal(n2, np.arange(60.0).reshape(3, 4, 5)[1:, ::2].T)
    n2[0, 0, 0] = -1  # still the same writable memory
    assert n2[0, 0, 0] == -1


def test_from_numpy_releases_the_array():
    a = np.zeros(10)
    before = sys.getrefcount(a)
    t = ddl.from_numpy(a)
    views = [t[1:], t.T, t.reshape(2, 5)]
    assert sys.getrefcount(a) > before
    del t, views
    gc.collect()
    assert sys.getrefcount(a) == before
    ref = weakref.ref(ddl.from_numpy(a))
    gc.collect()
    assert ref() is None


def test_ops_on_arrays_release_them():
    a = np.ones(10)
    before = sys.getrefcount(a)
    for _ in range(10):
        ddl.add(a, a)
        ddl.ones(10) * a
        a @ ddl.ones(10)
        ddl.cat([a, ddl.ones(3, dtype=ddl.float64)])
        with pytest.raises(ValueError):
            ddl.ones(3) + a
    gc.collect()
    assert sys.getrefcount(a) == before


# ---- leak loops ------------------------------------------------------------------------


def _cycle(a, b, i):
    t = ddl.from_numpy(a)
    v = t.T[1:, ::2]
    w = v.reshape(-1).unsqueeze(0)
    r = (t * 2.0 + b).relu()
    s = r.sum(1).mean() + v.max()
    m = t @ b.T
    c = ddl.cat([t, r])[None]
    n = w.numpy()
    back = ddl.from_numpy(n)
    x = ddl.tensor([i, i + 1])
    x += 1
    y = t[[0, 2]] if i % 8 == 0 else t[t > 0.5] if i % 8 == 4 else t[..., 1]
    z = ddl.randn(3, 2)
    t.numpy()[0, 0] = float(i)
    return s.item() + m.numel() + c.numel() + back.numel() + y.numel() + z.numel() + x.sum().item()


def _error_cycle(a):
    for fn in (lambda: ddl.ones(2, 3) @ ddl.ones(4, 2),
               lambda: ddl.from_numpy(a.astype(np.uint32)),
               lambda: ddl.ones(3)[5],
               lambda: ddl.tensor([1]).add_(0.5),
               lambda: ddl.empty(2**40, 2**20),
               lambda: ddl.from_numpy(a).view(7),
               lambda: ddl.cat([ddl.ones(2), ddl.ones(2, 2)]),
               lambda: ddl.from_numpy(a) + np.ones((5, 5))):
        try:
            fn()
        except (ValueError, TypeError, IndexError, MemoryError):
            pass
        else:
            raise AssertionError("expected an error")


from _util import rss_test as needs_plain_malloc


def _assert_flat(step, iters, slack=5 * 2**20):
    for i in range(iters // 10):  # warm up: allocator pools, caches
        step(i)
    gc.collect()
    start = rss_bytes()
    for i in range(iters):
        step(i)
    gc.collect()
    grown = rss_bytes() - start
    assert grown < slack, f"RSS grew by {grown / 2**20:.1f} MiB over {iters} cycles"


@needs_plain_malloc
@pytest.mark.timeout(120)
def test_no_leak_create_free_cycles():
    rng = np.random.default_rng(0)
    a = rng.random((3, 4))
    b = rng.random((3, 4))
    _assert_flat(lambda i: _cycle(a, b, i), 100_000)


@needs_plain_malloc
@pytest.mark.timeout(60)
def test_no_leak_error_paths():
    a = np.ones((3, 4))
    _assert_flat(lambda i: _error_cycle(a), 20_000)


@needs_plain_malloc
@pytest.mark.timeout(60)
def test_no_leak_large_buffers():
    # each cycle allocates and frees ~800 KB: a leak shows at once
    a = np.ones((100, 1000))

    def step(i):
        t = ddl.from_numpy(a)
        (t + 1).sum()
        t.T.contiguous().numpy()
        ddl.zeros(100_000, dtype=ddl.float64).fill_(i)

    _assert_flat(step, 2000)


# ---- threads: big ops drop the GIL ----------------------------------------------------------


def test_concurrent_ops_from_threads():
    rng = np.random.default_rng(1)
    x = rng.random((300, 300))
    ref = ((x @ x) + 1).sum(0)
    results, errors = [None] * 4, []

    def work(k):
        try:
            t = ddl.from_numpy(x)
            for _ in range(5):
                results[k] = ((t @ t) + 1).sum(0).numpy()
        except Exception as e:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    for r in results:
        np.testing.assert_allclose(r, ref, rtol=1e-10)
