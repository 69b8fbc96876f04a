"""One rank of a DistributedDataParallel scenario for tests/test_ddp.py.

    RANK=r WORLD_SIZE=n MASTER_ADDR=127.0.0.1 MASTER_PORT=p python ddp_worker.py SCENARIO OUTDIR
    (SCENARIO may be several names joined by '+': each then writes to OUTDIR/<name>/)

Each rank writes OUTDIR/rank{r}.npz (arrays: parameters, gradients, buffers, ...) and
OUTDIR/rank{r}.json (scalars, messages, timings); rank 0 also writes the single-process
reference it computes after the distributed run (same seed, same data, the whole global batch
in one process, no process group involved) as OUTDIR/ref.npz. The test process compares them.
Any uncaught exception exits 1 with the traceback on stderr.
"""
import json
import os
import signal
import sys
import time

import numpy as np

import ddl
import ddl.distributed as dist
import ddl.nn.functional as F
import ddl.optim
from ddl import nn
from ddl.nn.parallel import DistributedDataParallel as DDP
from ddl.nn.parallel import SyncBatchNorm

RANK = WORLD = 0
OUT = "."
LR, MOMENTUM, STEPS = 0.05, 0.9, 12


# ---- models -------------------------------------------------------------------------------


def mlp():
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 5))


def cnn(bn=False):
    extra1 = [nn.BatchNorm2d(4)] if bn else []
    extra2 = [nn.BatchNorm2d(8)] if bn else []
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), *extra1, nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), *extra2, nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5))


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
        self.unused = nn.Linear(20, 4)

    def forward(self, x):
        return self.used(x)


def build(kind, seed=0):
    ddl.manual_seed(seed)
    if kind == "mlp":
        return mlp()
    if kind == "cnn":
        return cnn(False)
    if kind == "cnn_bn":
        return cnn(True)
    if kind == "unused":
        return WithUnused()
    raise ValueError(kind)


def batch(kind, step, n, salt=0):
    """The global batch of `step`: n samples, the same on every rank and in the reference."""
    rng = np.random.default_rng([step, salt, 777])
    shape = (n, 1, 8, 8) if kind.startswith("cnn") else (n, 20)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 5, size=n).astype(np.int64)
    return x, y


def shard(x, y, rank, world):
    per = x.shape[0] // world
    return ddl.tensor(x[rank * per:(rank + 1) * per]), ddl.tensor(y[rank * per:(rank + 1) * per])


def sgd(params):
    return ddl.optim.SGD(params, lr=LR, momentum=MOMENTUM)


def local_batch(kind, step, per_rank=16):
    """This rank's shard of the global batch of `step` (per_rank samples on each rank)."""
    x, y = batch(kind, step, per_rank * WORLD)
    return shard(x, y, RANK, WORLD)


def train_step(model, opt, kind, step):
    """One SGD step of model on this rank's shard of batch `step`."""
    xs, ys = local_batch(kind, step)
    loss = F.cross_entropy(model(xs), ys)
    opt.zero_grad()
    loss.backward()
    opt.step()


def params_of(module, prefix="p:"):
    return {prefix + n: p.detach().numpy().copy() for n, p in module.named_parameters()}


def buffers_of(module, prefix="b:"):
    return {prefix + n: b.numpy().copy() for n, b in module.named_buffers()}


def grads_of(module, prefix="g:"):
    return {prefix + n: p.grad.numpy().copy() for n, p in module.named_parameters()
            if p.grad is not None}


def save(arrays=None, info=None, name=None):
    name = name or f"rank{RANK}"
    if arrays is not None:
        np.savez(os.path.join(OUT, name + ".npz"), **arrays)
    if info is not None:
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(info, f)


def reference(kind, steps, n, loss_scale=None):
    """Single-process SGD-momentum training on the whole global batch of each step."""
    model = build(kind)
    opt = sgd(model.parameters())
    for s in range(steps):
        x, y = batch(kind, s, n)
        loss = F.cross_entropy(model(ddl.tensor(x)), ddl.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# ---- scenarios ------------------------------------------------------------------------------


def equivalence(kind, per_rank=32):
    """DDP on per_rank samples per rank for STEPS steps vs one process on all of them."""
    n = per_rank * WORLD
    base = build(kind)
    if kind == "cnn_bn":
        base = SyncBatchNorm.convert_sync_batchnorm(base)
    model = DDP(base, bucket_cap_mb=0.001)  # ~1 KiB buckets: several of them
    opt = sgd(model.parameters())
    for s in range(STEPS):
        x, y = batch(kind, s, n)
        xs, ys = shard(x, y, RANK, WORLD)
        loss = F.cross_entropy(model(xs), ys)
        # the CNN zeroes the bucket views in place; the others drop .grad (set_to_none)
        opt.zero_grad(set_to_none=kind != "cnn")
        loss.backward()
        opt.step()
    out = params_of(base)
    out.update(buffers_of(base))
    save(out, {"buckets": [b[0] for b in model.bucket_info()],
               "sync_bn": sum(isinstance(m, SyncBatchNorm) for m in base.modules())})
    if RANK == 0:
        ref = reference(kind, STEPS, n)
        refs = params_of(ref)
        refs.update(buffers_of(ref))
        save(refs, name="ref")


def eq_mlp3():
    equivalence("mlp", per_rank=16)


def overlap():
    """Times of each bucket's allreduce vs the start and end of backward, and the time of the
    same backward with no communication at all (under no_sync)."""
    ddl.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 512),
                              nn.ReLU(), nn.Linear(512, 10)), bucket_cap_mb=0.5)
    rng = np.random.default_rng(RANK)
    x = ddl.tensor(rng.standard_normal((256, 1024)).astype(np.float32))
    y = ddl.tensor(rng.integers(0, 10, 256).astype(np.int64))
    runs, local = [], []
    for it in range(6):
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        dist.barrier()
        t0 = ddl._C.now_us()
        loss.backward()
        t1 = ddl._C.now_us()
        if it >= 2:  # after the rebuild
            runs.append({"before": t0, "after": t1,
                         "buckets": [[names, s, e] for names, s, e in model.bucket_info()]})
    for it in range(3):
        model.zero_grad()
        with model.no_sync():
            loss = F.cross_entropy(model(x), y)
            t0 = ddl._C.now_us()
            loss.backward()
            local.append(ddl._C.now_us() - t0)
    save(info={"runs": runs, "local_backward_us": local})


def no_sync():
    """Two micro-batches under no_sync, then a synced third, vs one step on all of them."""
    per_mb, nmb, rounds = 8, 3, 2
    model = DDP(build("mlp"), bucket_cap_mb=0.001)
    opt = sgd(model.parameters())
    info = {"local_grad_norms": []}
    arrays = {}
    for r in range(rounds):
        x, y = batch("mlp", r, per_mb * nmb * WORLD)
        xs, ys = shard(x, y, RANK, WORLD)  # this rank's 24 samples, as 3 micro-batches
        opt.zero_grad()
        with model.no_sync():
            for m in range(nmb - 1):
                xm, ym = xs[m * per_mb:(m + 1) * per_mb], ys[m * per_mb:(m + 1) * per_mb]
                (F.cross_entropy(model(xm), ym) / nmb).backward()
            info["local_grad_norms"].append(
                float(sum(float((p.grad * p.grad).sum()) for p in model.parameters())))
        xm, ym = xs[(nmb - 1) * per_mb:], ys[(nmb - 1) * per_mb:]
        (F.cross_entropy(model(xm), ym) / nmb).backward()
        arrays.update(grads_of(model.module, prefix=f"g{r}:"))
        opt.step()
    arrays.update(params_of(model.module))
    save(arrays, info)
    if RANK == 0:
        ref = build("mlp")
        ropt = sgd(ref.parameters())
        refs = {}
        for r in range(rounds):
            x, y = batch("mlp", r, per_mb * nmb * WORLD)
            ropt.zero_grad()
            F.cross_entropy(ref(ddl.tensor(x)), ddl.tensor(y)).backward()
            refs.update(grads_of(ref, prefix=f"g{r}:"))
            ropt.step()
        refs.update(params_of(ref))
        save(refs, name="ref")


def unused_error():
    """Without find_unused_parameters: the forward after a pass that left parameters without
    gradients raises ValueError naming them."""
    model = DDP(build("unused"), bucket_cap_mb=0.001)
    opt = sgd(model.parameters())
    info = {}
    for s in range(3):
        x, y = batch("mlp", s, 16 * WORLD)
        xs, ys = shard(x, y, RANK, WORLD)
        try:
            loss = F.cross_entropy(model(xs), ys)
        except ValueError as e:
            info = {"step": s, "type": type(e).__name__, "message": str(e)}
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    save(info=info)


def unused_ok():
    """With find_unused_parameters=True: trains; used parameters match one process."""
    model = DDP(build("unused"), bucket_cap_mb=0.001, find_unused_parameters=True)
    init = params_of(model.module, prefix="init:")
    opt = sgd(model.parameters())
    n = 16 * WORLD
    for s in range(STEPS):
        x, y = batch("mlp", s, n)
        xs, ys = shard(x, y, RANK, WORLD)
        loss = F.cross_entropy(model(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = params_of(model.module)
    out.update(init)
    save(out, {"steps": STEPS})
    if RANK == 0:
        save(params_of(reference("unused", STEPS, n)), name="ref")


def join():
    """Uneven inputs: rank r has counts[r] batches of 16; all finish inside model.join()."""
    counts = [5, 3] if WORLD == 2 else [3, 5, 4][:WORLD]  # the last to join: rank 0, rank 1
    model = DDP(build("mlp"), bucket_cap_mb=0.001)
    opt = sgd(model.parameters())
    with model.join():
        for s in range(counts[RANK]):
            train_step(model, opt, "mlp", s)
    # and the group still works afterwards
    x, y = batch("mlp", 99, 16 * WORLD)
    xs, ys = shard(x, y, RANK, WORLD)
    F.cross_entropy(model(xs), ys).backward()
    save(params_of(model.module), {"batches": counts[RANK]})
    if RANK == 0:
        # one process: each step's gradient is the sum over the ranks still training of their
        # local mean gradient, divided by the world size (a joined rank contributes zeros)
        ref = build("mlp")
        ropt = sgd(ref.parameters())
        for s in range(max(counts)):
            x, y = batch("mlp", s, 16 * WORLD)
            ropt.zero_grad()
            for r in range(WORLD):
                if s < counts[r]:
                    xs, ys = shard(x, y, r, WORLD)
                    (F.cross_entropy(ref(xs), ys) / WORLD).backward()
            ropt.step()
        save(params_of(ref), name="ref")


def broadcast_state():
    """Differently seeded ranks end up with rank 0's parameters; state_dict has 'module.'."""
    before = build("cnn_bn", seed=100 + RANK)
    pre = params_of(before, prefix="pre:")
    pre.update(buffers_of(before, prefix="prebuf:"))
    with ddl.no_grad():  # make a buffer differ too
        before[1].running_mean.add_(float(RANK + 1))
    pre.update(buffers_of(before, prefix="prebuf:"))
    model = DDP(before)
    post = params_of(model.module, prefix="post:")
    post.update(buffers_of(model.module, prefix="postbuf:"))
    sd = model.state_dict()
    keys = list(sd.keys())
    bare = build("cnn_bn", seed=555)
    stripped = {k[len("module."):]: v for k, v in sd.items()}
    result = bare.load_state_dict(stripped)
    loaded = params_of(bare, prefix="loaded:")
    loaded.update(buffers_of(bare, prefix="loadedbuf:"))
    pre.update(post)
    pre.update(loaded)
    save(pre, {"keys": keys, "bare_keys": list(bare.state_dict().keys()),
               "load_result": [list(result[0]), list(result[1])] if result is not None else None})


def buffers(broadcast=True):
    """BatchNorm running stats: rank 0's are broadcast at each forward when broadcast_buffers."""
    model = DDP(build("cnn_bn"), broadcast_buffers=broadcast)
    opt = sgd(model.parameters())
    arrays = {}
    for s in range(3):
        train_step(model, opt, "cnn", s)
    arrays.update(buffers_of(model.module, prefix="train:"))  # after local updates: differ
    model.eval()
    with ddl.no_grad():
        x, y = batch("cnn", 50, 16 * WORLD)
        xs, _ = shard(x, y, RANK, WORLD)
        model(xs)
    arrays.update(buffers_of(model.module, prefix="eval:"))
    save(arrays, {"broadcast": broadcast})


def buffers_on():
    buffers(True)


def buffers_off():
    buffers(False)


def peer_dies():
    """Rank 1 dies after its forward; rank 0's backward must raise DistributedError."""
    model = DDP(build("mlp"), bucket_cap_mb=0.001)
    x, y = batch("mlp", 0, 16 * WORLD)
    xs, ys = shard(x, y, RANK, WORLD)
    loss = F.cross_entropy(model(xs), ys)
    dist.barrier()
    if RANK == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    t0 = time.monotonic()
    info = {"raised": None}
    try:
        loss.backward()
    except dist.DistributedError as e:
        info = {"raised": type(e).__name__, "message": str(e)}
    except Exception as e:  # noqa: BLE001 (the wrong type: report it)
        info = {"raised": "other:" + type(e).__name__, "message": str(e)}
    info["elapsed"] = time.monotonic() - t0
    save(info=info)
    os._exit(0)  # the group is broken: skip teardown


def sampler():
    """DistributedSampler from the process group's defaults: eval mode (pad=False) and the
    padded training mode, for two epochs; every rank reports its indices."""
    from ddl.data import DistributedSampler, TensorDataset

    ds = TensorDataset(ddl.arange(10))
    info = {}
    for pad in (False, True):
        s = DistributedSampler(ds, shuffle=True, seed=7, pad=pad)
        for epoch in (0, 1):
            s.set_epoch(epoch)
            info[f"pad={pad} epoch={epoch}"] = list(s)
            info[f"pad={pad} len"] = len(s)
    save(info=info)


# (equivalence on 2 ranks, the shape mismatch and use after destroy run as ddl_world tests in
# tests/test_ddp.py, on this file's models and data)
SCENARIOS = {f.__name__: f for f in (
    eq_mlp3, overlap, no_sync, unused_error, unused_ok, join, broadcast_state, buffers_on,
    buffers_off, peer_dies, sampler)}


def main():
    global RANK, WORLD, OUT
    names, base = sys.argv[1].split("+"), sys.argv[2]
    timeout = float(os.environ.get("DDP_TEST_PG_TIMEOUT", "30"))
    dist.init_process_group("gloo", timeout=timeout)
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    for name in names:  # several scenarios in one world: OUTDIR/<scenario>/ each
        OUT = os.path.join(base, name) if len(names) > 1 else base
        os.makedirs(OUT, exist_ok=True)
        SCENARIOS[name]()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
