"""ddl's own kernel threads (ddl.set_num_threads): conv2d splits the batch over threads, each
running batched im2col with single-threaded sgemm, and sums the per-thread weight gradients;
the results at 1 and 2 threads agree (and with PyTorch), for shapes that give several chunks
per thread, an odd batch, pointwise and strided convolutions."""

import numpy as np
import pytest

import ddl
import ddl.nn.functional as F

CASES = [  # (N, C, H, W, O, k, stride, pad)
    (7, 3, 9, 8, 5, 3, 1, 1),
    (5, 4, 6, 6, 6, 1, 1, 0),
    (6, 2, 11, 10, 3, 3, 2, 0),
    (5, 64, 40, 40, 72, 3, 1, 1),  # chunks of 2 samples: several per thread
    (9, 1, 28, 28, 8, 3, 1, 1),  # 9 taps: the direct small-K forward and weight gradient
]


@pytest.fixture
def threads():
    before = ddl.get_num_threads()
    yield ddl.set_num_threads
    ddl.set_num_threads(before)


def conv_run(case, rng):
    N, C, H, W, O, k, s, p = case
    x = ddl.tensor(rng.standard_normal((N, C, H, W)).astype(np.float32), requires_grad=True)
    w = ddl.tensor((rng.standard_normal((O, C, k, k)) * 0.2).astype(np.float32),
                   requires_grad=True)
    b = ddl.tensor(rng.standard_normal(O).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, stride=s, padding=p)
    R = ddl.tensor(np.random.RandomState(1).standard_normal(tuple(y.shape)).astype(np.float32))
    (y * R).sum().backward()
    return [t.numpy().copy() for t in (y, x.grad, w.grad, b.grad)]


@pytest.mark.parametrize("case", CASES)
def test_conv2d_threads_agree(case, threads):
    res = []
    for n in (1, 2):
        threads(n)
        res.append(conv_run(case, np.random.default_rng(0)))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    # the forward and dinp never sum across samples: bit-identical at any thread count
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])


@pytest.mark.parametrize("case", CASES[:3] + CASES[4:])
def test_conv2d_two_threads_vs_torch(case, threads):
    torch = pytest.importorskip("torch")
    threads(2)
    y, dx, dw, db = conv_run(case, np.random.default_rng(0))
    N, C, H, W, O, k, s, p = case
    rng = np.random.default_rng(0)
    xt = torch.tensor(rng.standard_normal((N, C, H, W)), requires_grad=True)
    wt = torch.tensor(rng.standard_normal((O, C, k, k)).astype(np.float32) * 0.2,
                      dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(rng.standard_normal(O).astype(np.float32), dtype=torch.float64,
                      requires_grad=True)
    with torch.no_grad():
        xt.copy_(xt.float().double())
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=s, padding=p)
    R = np.random.RandomState(1).standard_normal(tuple(yt.shape)).astype(np.float32)
    (yt * torch.tensor(R, dtype=torch.float64)).sum().backward()
    for a, t in ((y, yt), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-4, atol=1e-4)


def norm_pool_run(rng, training):
    x = ddl.tensor(rng.standard_normal((8, 32, 32, 32)).astype(np.float32), requires_grad=True)
    w = ddl.tensor(rng.standard_normal(32).astype(np.float32), requires_grad=True)
    b = ddl.tensor(rng.standard_normal(32).astype(np.float32), requires_grad=True)
    rm, rv = ddl.zeros(32), ddl.ones(32)
    y = F.batch_norm(x, rm, rv, w, b, training=training)
    z = F.max_pool2d(y, 2) + F.max_pool2d(y, 3, stride=2, padding=1).sum()
    R = ddl.tensor(np.random.RandomState(3).standard_normal(tuple(z.shape)).astype(np.float32))
    (z * R).sum().backward()
    return [t.numpy().copy() for t in (y, z, x.grad, w.grad, b.grad, rm, rv)]


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_and_pooling_threads_bit_identical(training, threads):
    """Both split over channels (planes), each computed alone: the same bits at 1 and 2."""
    res = []
    for n in (1, 2):
        threads(n)
        res.append(norm_pool_run(np.random.default_rng(5), training))
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("B,IN,OUT", [(64, 300, 257), (33, 1000, 130), (64, 256, 10)])
def test_linear_threads_agree_and_match_float64(B, IN, OUT, threads):
    """Large Linear calls split their three products over ddl's threads (output columns, input
    columns, weight rows); the small head stays on one thread. Same results at 1 and 2 threads
    and against a float64 NumPy reference."""
    rng = np.random.default_rng(7)
    xs, ws, bs = (rng.standard_normal(s).astype(np.float32) for s in ((B, IN), (OUT, IN), OUT))
    R = rng.standard_normal((B, OUT)).astype(np.float32)
    res = []
    for n in (1, 2):
        threads(n)
        x, w, b = (ddl.tensor(a.copy(), requires_grad=True) for a in (xs, ws, bs))
        y = F.linear(x, w, b)
        (y * ddl.tensor(R)).sum().backward()
        res.append([t.numpy().copy() for t in (y, x.grad, w.grad, b.grad)])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    x64, w64, R64 = xs.astype(np.float64), ws.astype(np.float64), R.astype(np.float64)
    ref = (x64 @ w64.T + bs, R64 @ w64, R64.T @ x64, R64.sum(0))
    for a, r in zip(res[1], ref):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-3)


def test_pool_survives_fork_and_concurrent_callers(threads):
    """The persistent pool: a forked child (a DataLoader worker, say) starts with no workers
    of its parent's and still runs 2-thread kernels; two Python threads calling kernels at once
    (GIL released) get the pool and the per-call fallback, with identical results."""
    import os
    import threading

    threads(2)
    rng = np.random.default_rng(3)
    case = CASES[3]
    want = conv_run(case, rng)
    pid = os.fork()
    if pid == 0:  # child: same computation on a fresh pool, exit code says whether it agreed
        try:
            got = conv_run(case, np.random.default_rng(3))
            ok = all(np.array_equal(a, b) for a, b in zip(got, want))
            os._exit(0 if ok else 1)
        except BaseException:  # noqa: BLE001 (the child must never return into pytest)
            os._exit(2)
    done_pid, status = 0, 0
    for _ in range(600):  # a hang in the child fails here, within 60 s
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid:
            break
        threading.Event().wait(0.1)
    if not done_pid:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done_pid and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status

    results = [None] * 4

    def work(i):
        results[i] = conv_run(case, np.random.default_rng(3))

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for r in results:
        assert r is not None and all(np.array_equal(a, b) for a, b in zip(r, want))
