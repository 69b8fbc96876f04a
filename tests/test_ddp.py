"""DistributedDataParallel, Join and SyncBatchNorm on real multi-process worlds.

Tests marked ddl_world run their body on N ranks forked by ddl's pytest plugin and assert there
(docs/testing.md). The others start a world of 2 (or 3) processes running tests/ddp_workers/ddp_worker.py with
RANK / WORLD_SIZE / MASTER_ADDR=127.0.0.1 / MASTER_PORT=<free port> in the environment; each
rank writes its results (parameters, gradients, buffers, messages, timings) to tmp_path and
rank 0 also writes the single-process reference on the whole global batch. The comparisons
happen here. Every process started is killed and reaped however the test ends, and each test
has a hard timeout well under pytest's global one.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import ddl
import ddl.distributed as dist
import ddl.nn.functional as F
from ddl.nn.parallel import DistributedDataParallel as DDP
from ddl.nn.parallel import SyncBatchNorm

# the ddl_world tests share the spawned workers' models, data and reference (tests/ is on
# sys.path); tests/conftest.py loads the plugin
from ddp_workers import ddp_worker as W  # isort: skip

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "ddp_workers", "ddp_worker.py")
RTOL = 1e-5  # "within 1e-5 relative", per parameter tensor


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank, world, port):
    env = dict(os.environ)
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DDL_NUM_THREADS="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               DDP_TEST_PG_TIMEOUT="30")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass


def spawn(tmp_path, scenario, world=2, timeout=40, expect=None):
    """Run `scenario` on `world` ranks; returns {rank: (returncode, stderr)}. Fails the test
    when a rank exits with a code other than expect[rank] (default 0) or the world does not
    finish within `timeout` seconds (then every rank is SIGKILLed)."""
    port = _free_port()
    procs, logs = [], []
    try:
        for r in range(world):
            err = open(tmp_path / f"stderr{r}.txt", "wb")  # noqa: SIM115 (closed in finally)
            logs.append(err)
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, scenario, str(tmp_path)], env=_env(r, world, port),
                cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                start_new_session=True))
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                _kill(procs)
                pytest.fail(f"{scenario}: {world} ranks did not finish in {timeout} s (hang?); "
                            + _tails(tmp_path, world))
            time.sleep(0.02)
    finally:
        _kill(procs)
        for f in logs:
            f.close()
    expect = expect or {}
    out = {}
    for r, p in enumerate(procs):
        text = (tmp_path / f"stderr{r}.txt").read_text(errors="replace")
        out[r] = (p.returncode, text)
        want = expect.get(r, 0)
        assert p.returncode == want, f"{scenario}: rank {r} exited {p.returncode}, expected " \
                                     f"{want}:\n{text[-3000:]}"
    return out


def _tails(tmp_path, world):
    parts = []
    for r in range(world):
        try:
            parts.append(f"rank {r}: " + (tmp_path / f"stderr{r}.txt").read_text()[-1500:])
        except OSError:
            pass
    return "\n".join(parts)


def arrays(d, name):
    with np.load(os.path.join(d, name + ".npz")) as z:
        return {k: z[k] for k in z.files}


def info(d, name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.load(f)


def assert_close_rel(got, want, what, rtol=RTOL):
    """max |got - want| <= rtol * max |want| (relative to the tensor's scale)."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1e-12)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


def assert_same_across_ranks(results, what=""):
    first = results[0]
    for r, res in results.items():
        assert res.keys() == first.keys()
        for k in first:
            np.testing.assert_array_equal(res[k], first[k], err_msg=f"{what}{k}: rank {r} vs 0")


def rank_and_ref_arrays(tmp_path, world=2):
    """({rank: its saved arrays}, the one-process reference's arrays)."""
    return ({r: arrays(tmp_path, f"rank{r}") for r in range(world)}, arrays(tmp_path, "ref"))


# ---- equivalence with one process ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_bn"])
@pytest.mark.ddl_world(2, timeout=60)
def test_equivalent_to_one_process(kind, rank, world_size):
    """2 ranks x 32 samples == 1 process x 64 samples after 12 SGD-momentum steps (several
    buckets; the BatchNorm CNN converted with convert_sync_batchnorm vs plain BatchNorm)."""
    n, base = 32 * world_size, W.build(kind)
    if kind == "cnn_bn":
        base = SyncBatchNorm.convert_sync_batchnorm(base)
        assert sum(isinstance(m, SyncBatchNorm) for m in base.modules()) == 2
    model = DDP(base, bucket_cap_mb=0.001)  # ~1 KiB buckets: several of them
    assert len(model.bucket_info()) >= 3, model.bucket_info()
    opt = W.sgd(model.parameters())
    for s in range(W.STEPS):
        xs, ys = W.shard(*W.batch(kind, s, n), rank, world_size)
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad(set_to_none=kind != "cnn")  # the CNN zeroes the bucket views in place
        loss.backward()
        opt.step()
    got = {**W.params_of(base), **W.buffers_of(base)}
    for k, v in got.items():  # the same on every rank, bit for bit
        mine = ddl.tensor(v)
        dist.broadcast(mine, src=0)
        np.testing.assert_array_equal(v, mine.numpy(), err_msg=f"{k}: rank {rank} vs 0")
    if rank == 0:
        ref = W.reference(kind, W.STEPS, n)
        want = {**W.params_of(ref), **W.buffers_of(ref)}
        assert set(got) == set(want) and (kind != "cnn_bn" or any("running_var" in k
                                                                  for k in want))
        for k, v in want.items():
            if k.endswith("num_batches_tracked"):
                assert got[k] == v == 12
            else:
                assert_close_rel(got[k], v, k)


@pytest.mark.timeout(60)
def test_three_ranks_equivalence_and_sampler(tmp_path):
    """3 ranks x 16 samples == 1 process x 48; DistributedSampler from the group's defaults."""
    spawn(tmp_path, "eq_mlp3+sampler", world=3)
    d = tmp_path / "eq_mlp3"
    ranks = {r: arrays(d, f"rank{r}") for r in range(3)}
    ref = arrays(d, "ref")
    assert_same_across_ranks(ranks)
    for k in ref:
        assert_close_rel(ranks[0][k], ref[k], k)
    s = {r: info(tmp_path / "sampler", f"rank{r}") for r in range(3)}
    for epoch in (0, 1):
        got = [i for r in range(3) for i in s[r][f"pad=False epoch={epoch}"]]
        assert sorted(got) == list(range(10)), got  # each index exactly once
        assert [len(s[r][f"pad=False epoch={epoch}"]) for r in range(3)] == [4, 3, 3]
        padded = [s[r][f"pad=True epoch={epoch}"] for r in range(3)]
        assert all(len(p) == 4 for p in padded) and {i for p in padded for i in p} == set(range(10))
        assert [s[r]["pad=True len"] for r in range(3)] == [4, 4, 4]
    # the permutation (interleave the ranks' shares) changes with the epoch
    perm = {e: [s[i % 3][f"pad=False epoch={e}"][i // 3] for i in range(10)] for e in (0, 1)}
    assert perm[0] != perm[1]


# ---- overlap -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_allreduce_overlaps_backward(tmp_path):
    """The first bucket's allreduce starts on the comm thread while backward still computes
    the other gradients: well before backward returns, and early compared to the time the
    same backward takes with no communication at all."""
    spawn(tmp_path, "overlap")
    for r in range(2):
        res = info(tmp_path, f"rank{r}")
        runs, local = res["runs"], min(res["local_backward_us"])
        assert local > 2000, f"backward should take a few ms, took {local} us"
        early = []
        for run in runs:
            buckets = run["buckets"]
            assert len(buckets) >= 3
            starts = [s for _, s, _ in buckets]
            first_start, first_end = buckets[0][1], buckets[0][2]
            # every bucket ran during this backward, in bucket order
            assert run["before"] <= first_start < run["after"], run
            assert starts == sorted(starts)
            assert all(run["before"] <= e <= run["after"] for _, _, e in buckets), run
            assert first_start < buckets[-1][1]
            early.append(first_start - run["before"] < 0.5 * local
                         and first_end < run["after"] - 0.25 * local)
        # robust to a descheduled rank now and then: one clear instance per rank suffices
        assert any(early), (local, runs)


def _local_average(base, xs, ys, world_size):
    """The gradients of base (a plain copy) on this rank's shard, averaged over the ranks."""
    F.cross_entropy(base(xs), ys).backward()
    out = {}
    for n, p in base.named_parameters():
        g = p.grad.numpy().astype(np.float64)
        dist.all_reduce(g)
        out[n] = g / world_size
    return out


@pytest.mark.ddl_world(2, timeout=60)
def test_overlap_on_and_off_give_the_same_gradients(rank, world_size):
    """Buckets reduced on the comm thread (overlap) or on backward's own thread give the same
    gradients bit for bit, the average of the ranks' local gradients, also when gradients
    accumulate into the buckets (a second backward under no_sync then a synced one). A
    parameter of first-bucket size or more is alone in its bucket (reduced in its .grad)."""
    xs, ys = W.shard(*W.batch("mlp", 0, 16 * world_size), rank, world_size)
    want = _local_average(W.build("mlp"), xs, ys, world_size)
    got = {}
    for overlap in (True, False):
        model = DDP(W.build("mlp"), bucket_cap_mb=0.001)   # first bucket 1 KiB
        ddl._C.reducer_set_overlap(model._reducer, overlap)
        buckets = [names for names, _, _ in model.bucket_info()]
        assert ["0.weight"] in buckets and ["2.weight"] in buckets, buckets  # 2.5 / 4 KiB
        assert any(len(b) > 1 for b in buckets), buckets
        F.cross_entropy(model(xs), ys).backward()
        got[overlap] = {n: p.grad.numpy().copy() for n, p in model.module.named_parameters()}
        with model.no_sync():
            F.cross_entropy(model(xs), ys).backward()
        F.cross_entropy(model(xs), ys).backward()  # local + local + this one, averaged
        for n, p in model.module.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), 2 * want[n] + got[overlap][n],
                                       rtol=1e-5, atol=1e-7, err_msg=n)
    for n in want:
        np.testing.assert_array_equal(got[True][n], got[False][n], err_msg=n)
        np.testing.assert_allclose(got[True][n], want[n], rtol=1e-5, atol=1e-7, err_msg=n)


@pytest.mark.ddl_world(1, timeout=60)
def test_one_rank_ddp_is_the_plain_model(rank, world_size):
    """On a group of one rank there is nothing to send: the gradients are the local ones, bit
    for bit, and still land in .grad (set_to_none or zeroed in place)."""
    xs, ys = W.shard(*W.batch("cnn", 0, 16), rank, world_size)
    plain, model = W.build("cnn"), DDP(W.build("cnn"), bucket_cap_mb=0.001)
    for step in range(2):
        for m in (plain, model):
            for p in m.parameters():
                p.grad = None if step == 0 else p.grad.zero_()
            F.cross_entropy(m(xs), ys).backward()
        for (n, p), q in zip(plain.named_parameters(), model.module.parameters()):
            np.testing.assert_array_equal(q.grad.numpy(), p.grad.numpy(), err_msg=n)


class _Buffers(ddl.nn.Module):
    """Buffers of several dtypes and odd sizes (packing pads each to 8 bytes)."""

    def __init__(self, rank):
        super().__init__()
        self.lin = ddl.nn.Linear(3, 2)
        self.register_buffer("a", ddl.tensor(np.full(3, 1.5 + rank, np.float32)))
        self.register_buffer("b", ddl.tensor(np.arange(5, dtype=np.float64) * (rank + 1)))
        self.register_buffer("c", ddl.tensor(np.array([2**60 + 7 + 7 * rank], np.int64)))
        self.register_buffer("d", ddl.tensor(np.full((2, 2), -rank, np.float32)))

    def forward(self, x):
        return self.lin(x)


@pytest.mark.ddl_world(2, timeout=60)
def test_buffers_of_every_dtype_broadcast_bit_for_bit(rank, world_size):
    """Every forward packs the buffers into one message from rank 0: float32, float64 and
    int64 (a value beyond float64's exact range) arrive bit for bit on every rank."""
    model = DDP(_Buffers(rank))
    want = {n: b.numpy().copy() for n, b in _Buffers(0).named_buffers()}
    for n, b in model.module.named_buffers():   # construction broadcast
        np.testing.assert_array_equal(b.numpy(), want[n], err_msg=n)
    for n, b in model.module.named_buffers():   # diverge, then one forward
        b.numpy()[...] = np.asarray(want[n]) * 3 + rank
    model(ddl.ones(2, 3))
    for n, b in model.module.named_buffers():
        np.testing.assert_array_equal(b.numpy(), np.asarray(want[n]) * 3, err_msg=n)
    assert int(model.module.c.numpy()[0]) == 3 * 2**60 + 21  # not a float64: exact int64


# ---- no_sync ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_no_sync_accumulation_equals_one_large_batch(tmp_path):
    spawn(tmp_path, "no_sync")
    ranks, ref = rank_and_ref_arrays(tmp_path)
    assert_same_across_ranks(ranks)
    assert {k for k in ref if k.startswith("g")} and set(ref) == set(ranks[0])
    for k in ref:
        assert_close_rel(ranks[0][k], ref[k], k)
    # inside no_sync the gradients were local: they differed between the ranks
    n0, n1 = (info(tmp_path, f"rank{r}")["local_grad_norms"] for r in range(2))
    assert all(abs(a - b) > 1e-6 * max(a, b) for a, b in zip(n0, n1)), (n0, n1)


# ---- unused parameters ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_unused_parameters_error_names_them(tmp_path):
    spawn(tmp_path, "unused_error")
    for r in range(2):
        res = info(tmp_path, f"rank{r}")
        assert res.get("type") == "ValueError", res
        assert res["step"] == 1  # the forward after the incomplete iteration
        msg = res["message"]
        assert "unused.weight" in msg and "unused.bias" in msg, msg
        assert "used.0.weight" not in msg.replace("unused", "")
        assert "find_unused_parameters=True" in msg


@pytest.mark.timeout(60)
def test_find_unused_parameters_trains_like_one_process(tmp_path):
    spawn(tmp_path, "unused_ok")
    ranks, ref = rank_and_ref_arrays(tmp_path)
    assert_same_across_ranks(ranks)
    for k in ref:
        assert_close_rel(ranks[0][k], ref[k], k)
        if k.startswith("p:unused"):  # no gradient ever: never moved
            np.testing.assert_array_equal(ranks[0][k], ranks[0]["init:" + k[2:]])
        else:
            assert not np.array_equal(ranks[0][k], ranks[0]["init:" + k[2:]]), k


# ---- uneven inputs -------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world", [2, 3])
def test_join_uneven_inputs(tmp_path, world):
    """2 ranks: 5 and 3 batches; 3 ranks: 3, 5 and 4 (the last to join is not rank 0). All
    finish; the parameters end equal on every rank and equal one process that averages the
    gradients of the ranks still training over the whole world at each step."""
    spawn(tmp_path, "join", world=world, timeout=45)
    ranks = {r: arrays(tmp_path, f"rank{r}") for r in range(world)}
    assert [info(tmp_path, f"rank{r}")["batches"] for r in range(world)] == \
        ([5, 3] if world == 2 else [3, 5, 4])
    assert_same_across_ranks(ranks)
    ref = arrays(tmp_path, "ref")
    for k in ref:
        assert_close_rel(ranks[0][k], ref[k], k)


# ---- construction ----------------------------------------------------------------------------


@pytest.mark.ddl_world(2, timeout=60)
def test_parameter_shape_mismatch_is_an_error_naming_it(rank):
    ddl.manual_seed(0)  # rank 1's model has a differently shaped second layer
    m = ddl.nn.Sequential(ddl.nn.Linear(4, 8), ddl.nn.ReLU(),
                          ddl.nn.Linear(8, 6 if rank == 1 else 5))
    with pytest.raises(ValueError) as e:
        DDP(m)
    msg = str(e.value)
    assert "'2.weight'" in msg and "(5, 8)" in msg and "(6, 8)" in msg, msg
    assert "rank 0" in msg and "rank 1" in msg, msg


@pytest.mark.timeout(60)
def test_broadcast_from_rank0_and_state_dict_prefix(tmp_path):
    spawn(tmp_path, "broadcast_state")
    r0, r1 = arrays(tmp_path, "rank0"), arrays(tmp_path, "rank1")
    pre = [k for k in r0 if k.startswith(("pre:", "prebuf:"))]
    # differently seeded: the conv/linear weights and one running_mean differed
    assert any(not np.array_equal(r0[k], r1[k]) for k in pre if k.startswith("pre:"))
    assert not np.array_equal(r0["prebuf:1.running_mean"], r1["prebuf:1.running_mean"])
    for k in pre:
        post = k.replace("pre", "post", 1)
        np.testing.assert_array_equal(r0[post], r0[k], err_msg=k)  # rank 0 kept its own
        np.testing.assert_array_equal(r1[post], r0[k], err_msg=k)  # rank 1 got rank 0's
        loaded = k.replace("pre", "loaded", 1)
        np.testing.assert_array_equal(r1[loaded], r0[k], err_msg=k)  # round trip
    for r in range(2):
        res = info(tmp_path, f"rank{r}")
        assert res["keys"] and all(k.startswith("module.") for k in res["keys"])
        assert [k[len("module."):] for k in res["keys"]] == res["bare_keys"]
        assert res["load_result"] in (None, [[], []])


@pytest.mark.timeout(60)
def test_buffers_broadcast_each_forward(tmp_path):
    spawn(tmp_path, "buffers_on+buffers_off")
    for mode in ("buffers_on", "buffers_off"):
        r0, r1 = arrays(tmp_path / mode, "rank0"), arrays(tmp_path / mode, "rank1")
        for k in r0:
            if k.endswith("num_batches_tracked"):
                continue
            if k.startswith("train:"):  # after a local update on different data
                assert not np.array_equal(r0[k], r1[k]), (mode, k)
            elif mode == "buffers_on":  # the next forward started from rank 0's stats
                np.testing.assert_array_equal(r1[k], r0[k], err_msg=k)
                np.testing.assert_array_equal(r0[k], r0[k.replace("eval:", "train:")])
            else:
                assert not np.array_equal(r0[k], r1[k]), (mode, k)


# ---- failures ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_peer_death_during_backward_raises(tmp_path):
    spawn(tmp_path, "peer_dies", expect={1: -signal.SIGKILL}, timeout=45)
    res = info(tmp_path, "rank0")
    assert res["raised"] == "DistributedError", res
    assert "1" in res["message"], res
    assert res["elapsed"] < 25, res  # a detected death, not a 30 s timeout


@pytest.mark.ddl_world(2, timeout=60)
def test_wrap_twice_and_use_after_destroy_are_errors(rank, world_size):
    """Wrapping a module twice is an error; so is using a DDP model after
    destroy_process_group (not a hang or a crash)."""
    model = DDP(W.build("mlp"))
    with pytest.raises(ValueError, match="gradient hook"):  # one reducer per parameter
        DDP(model.module)
    xs, ys = W.shard(*W.batch("mlp", 0, 8 * world_size), rank, world_size)
    F.cross_entropy(model(xs), ys).backward()
    dist.destroy_process_group()
    with pytest.raises(RuntimeError, match="destroyed"):
        F.cross_entropy(model(xs), ys).backward()


# ---- single process (no group needed) ---------------------------------------------------------


def test_ddp_needs_a_process_group():
    from ddl.nn.parallel import DistributedDataParallel

    with pytest.raises(RuntimeError, match="not initialized"):
        DistributedDataParallel(ddl.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="device_ids"):
        DistributedDataParallel(ddl.nn.Linear(2, 2), device_ids=[0])


def test_convert_sync_batchnorm_shares_parameters_and_buffers():
    nn = ddl.nn
    from ddl.nn.parallel import SyncBatchNorm

    ddl.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sequential(nn.BatchNorm1d(4)))
    bn, bn1 = m[1], m[2][0]
    out = SyncBatchNorm.convert_sync_batchnorm(m)
    assert out is m
    assert isinstance(m[1], SyncBatchNorm) and isinstance(m[2][0], SyncBatchNorm)
    assert m[1].weight is bn.weight and m[1].running_mean is bn.running_mean
    assert m[2][0].bias is bn1.bias and m[2][0].num_features == 4
    assert list(dict(m.named_parameters())) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                 "2.0.weight", "2.0.bias"]
    # without a process group it is plain batch norm
    x = ddl.randn(4, 1, 5, 5)
    ref = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("2.")})
    np.testing.assert_allclose(m[1](m[0](x)).detach().numpy(), ref(x).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
