"""DDP communication hooks (ddl.distributed.algorithms.ddp_comm_hooks): the 16-bit
conversions in C against NumPy's float16 and PyTorch's bfloat16 bit for bit, and
register_comm_hook with the stock hooks and a custom one on forked ranks."""
import numpy as np
import pytest

import ddl
import ddl.distributed as dist
from ddl.distributed.algorithms.ddp_comm_hooks import Future, default_hooks


def _values(n=20000, seed=0):
    rs = np.random.RandomState(seed)
    x = rs.randn(n) * 10.0 ** rs.randint(-12, 7, n)
    special = [0.0, -0.0, 1.0, 65504, 65519.99, 65520, -70000, 6.1e-5, 6.0e-8, 2.9e-8,
               1e-30, np.inf, -np.inf, np.nan, 3.4e38]
    return np.concatenate([x, special]).astype(np.float32)


def test_fp16_matches_numpy_bit_for_bit():
    x = _values()
    out = np.empty(x.size, np.uint16)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16)
    ddl._C.half_compress(out, x, 1.0, 0)
    nan = np.isnan(x)
    assert np.array_equal(out[~nan], ref.view(np.uint16)[~nan])
    assert np.isnan(out[nan].view(np.float16)).all()
    back = np.empty(x.size, np.float32)
    ddl._C.half_decompress_sum(back, out, 1, 0)
    assert np.array_equal(back[~nan], ref[~nan].astype(np.float32))


def test_bf16_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    x = _values(seed=1)
    out = np.empty(x.size, np.uint16)
    ddl._C.half_compress(out, x, 0.5, 1)
    ref = torch.from_numpy(x * np.float32(0.5)).to(torch.bfloat16).view(torch.int16).numpy()
    nan = np.isnan(x)
    assert np.array_equal(out[~nan], ref.view(np.uint16)[~nan])
    parts = np.stack([out, out[::-1]])
    s = np.empty(x.size, np.float32)
    ddl._C.half_decompress_sum(s, parts, 2, 1)
    as_f = torch.from_numpy(parts.view(np.int16)).view(torch.bfloat16).float().numpy()
    ok = ~np.isnan(as_f.sum(0))
    assert np.array_equal(s[ok], as_f.sum(0)[ok])


def test_bad_buffers_raise():
    with pytest.raises(ValueError, match="sizes do not match"):
        ddl._C.half_compress(np.empty(3, np.uint16), np.zeros(4, np.float32), 1.0, 0)
    with pytest.raises(ValueError, match="parts"):
        ddl._C.half_decompress_sum(np.empty(4, np.float32), np.zeros(4, np.uint16), 2, 0)


def test_future_then_chains_and_keeps_errors():
    f = Future()
    f.set_result(2)
    assert f.then(lambda fut: fut.value() * 3).wait() == 6
    g = Future()
    g.set_exception(KeyError("x"))
    with pytest.raises(KeyError):
        g.then(lambda fut: 1).wait()
    with pytest.raises(RuntimeError, match="not done"):
        Future().value()


def _train(hook_name, steps=3):
    import numpy as np

    import ddl
    import ddl.distributed as dist
    from ddl.distributed.algorithms.ddp_comm_hooks import Future, default_hooks
    from ddl.nn.parallel import DistributedDataParallel as DDP

    ddl.manual_seed(0)
    net = ddl.nn.Sequential(ddl.nn.Linear(50, 300), ddl.nn.ReLU(), ddl.nn.Linear(300, 7))
    model = DDP(net, bucket_cap_mb=0.02)   # several buckets
    rank, world = dist.get_rank(), dist.get_world_size()
    calls = []
    if hook_name == "local":   # no communication: each rank keeps its own gradients
        def local(state, bucket):
            calls.append((bucket.index(), bucket.is_last(), len(bucket.parameters())))
            fut = Future()
            fut.set_result(bucket.buffer())
            return fut

        model.register_comm_hook(None, local)
    elif hook_name != "none":
        model.register_comm_hook(None, getattr(default_hooks, hook_name))
    grads = []
    for step in range(steps):
        x = ddl.randn(16, 50) * (rank + 1) + step
        y = ddl.randn(16, 7)
        loss = ((model(x) - y) ** 2).mean()
        for p in model.parameters():
            p.grad = None
        loss.backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    mine = np.concatenate([g.ravel() for g in grads[-1]])
    everyone = np.zeros((world, mine.size), np.float32)
    dist.all_gather_into_tensor(everyone, mine)
    return calls, everyone


def _local_grads(world):
    """Each rank's own gradients (no communication), gathered by rank 0."""
    return dist.launch(_train, nprocs=world, args=("local",), timeout=120)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world", [2, 3])
def test_stock_hooks_average_like_ddp(world):
    calls, local = _local_grads(world)
    assert len(calls) == 2 * 3 and calls[1][1] and not calls[0][1]   # 2 buckets a step
    assert [c[0] for c in calls] == [0, 1] * 3                          # in bucket order
    assert not np.allclose(local[0], local[1])           # the ranks' own gradients differ
    mean = local.mean(0)
    _, plain = dist.launch(_train, nprocs=world, args=("none",), timeout=120)
    for name, tol in (("allreduce_hook", 1e-6), ("fp16_compress_hook", 2e-3),
                      ("bf16_compress_hook", 1.6e-2)):
        _, got = dist.launch(_train, nprocs=world, args=(name,), timeout=120)
        assert np.array_equal(got[0], got[-1]), name     # every rank got the same result
        scale = np.abs(mean).max()
        err = np.abs(got[0] - mean).max() / scale
        assert err < tol, (name, err)
        assert np.allclose(plain[0], mean, rtol=1e-5, atol=1e-6 * scale)


def _misuse():
    import ddl
    from ddl.distributed.algorithms.ddp_comm_hooks import default_hooks
    from ddl.nn.parallel import DistributedDataParallel as DDP

    model = DDP(ddl.nn.Linear(3, 2))
    out = []
    try:
        model.register_comm_hook(None, 5)
    except TypeError as e:
        out.append(str(e))
    model.register_comm_hook(None, default_hooks.allreduce_hook)
    try:
        model.register_comm_hook(None, default_hooks.allreduce_hook)
    except RuntimeError as e:
        out.append(str(e))
    late = DDP(ddl.nn.Linear(3, 2))
    late(ddl.ones(1, 3)).sum().backward()
    try:
        late.register_comm_hook(None, default_hooks.allreduce_hook)
    except RuntimeError as e:
        out.append(str(e))
    return out


@pytest.mark.timeout(120)
def test_register_comm_hook_misuse_is_named():
    msgs = dist.launch(_misuse, nprocs=2, timeout=100)
    assert "hook must be callable" in msgs[0]
    assert "already registered" in msgs[1]
    assert "before the first forward" in msgs[2]


def test_default_hooks_have_pytorchs_names():
    torch_hooks = pytest.importorskip("torch.distributed.algorithms.ddp_comm_hooks.default_hooks")
    for name in ("allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"):
        assert callable(getattr(torch_hooks, name)) and callable(getattr(default_hooks, name))
