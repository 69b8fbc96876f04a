#!/usr/bin/env python3
"""bench_deterministic.py: step time of the deterministic mode vs the default DDP mode, and
accuracy after one epoch of Fashion-MNIST in each.

    python benchmarks/bench_deterministic.py                  # 2 ranks, MLP and CNN timing,
                                                              # MLP accuracy (~2-4 minutes)
    python benchmarks/bench_deterministic.py --quick          # fewer steps, no accuracy
    python benchmarks/bench_deterministic.py --accuracy mlp,cnn

What runs: `python -m ddl.run --nproc-per-node 2` starts the ranks (1 kernel thread each). The
MLP and CNN of examples/fashion_common.py, Adam(lr=1e-3), global batch 128 (64 per rank),
micro-batches of 32 in the deterministic mode (so B / m = 4: world sizes 1, 2 and 4 give the
same bits). Timing: synthetic Fashion-MNIST-shaped batches held in memory; segments of steps
alternate default, deterministic, deterministic, default, ... (both models built once, the
same initial weights); medians of the per-segment step times. Accuracy: one epoch over the 60k
training images in each mode from the same initial weights and the same seed (the default mode
with DistributedSampler, batch 64 per rank; the deterministic one with GlobalBatchSampler),
test accuracy over the 10k test images. Results: printed, and benchmarks/results/
bench_deterministic.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _common as C

B, M, PER_RANK = 128, 32, 64


def _models(name):
    import fashion_common

    import ddl

    ddl.manual_seed(0)
    a = fashion_common.build_model(name)
    ddl.manual_seed(0)
    b = fashion_common.build_model(name)
    return a, b


def _timing(name, steps, segments):
    import numpy as np

    import ddl
    import ddl.distributed as dist
    import ddl.nn.functional as F
    from ddl.distributed.deterministic import DeterministicDataParallel, GlobalBatchSampler
    from ddl.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(rank)
    xs = [ddl.tensor(rng.standard_normal((PER_RANK, 1, 28, 28)).astype(np.float32))
          for _ in range(4)]
    ys = [ddl.tensor(rng.integers(0, 10, PER_RANK)) for _ in range(4)]
    plain, det = _models(name)
    ddp = DistributedDataParallel(plain)
    opt_d = ddl.optim.Adam(plain.parameters(), lr=1e-3)
    sampler = GlobalBatchSampler(10 ** 9, B, M, seed=0)
    dnet = DeterministicDataParallel(det, sampler)
    opt_x = ddl.optim.Adam(det.parameters(), lr=1e-3)
    _, comp = _models(name)
    csampler = GlobalBatchSampler(10 ** 9, B, M, seed=0)
    cnet = DeterministicDataParallel(comp, csampler, compact=True)
    opt_c = ddl.optim.Adam(comp.parameters(), lr=1e-3)

    def step_default(i):
        opt_d.zero_grad()
        F.cross_entropy(ddp(xs[i % 4]), ys[i % 4]).backward()
        opt_d.step()

    def step_det(i):
        opt_x.zero_grad()
        dnet.train_step(xs[i % 4], ys[i % 4], F.cross_entropy)
        opt_x.step()

    def step_compact(i):
        opt_c.zero_grad()
        cnet.train_step(xs[i % 4], ys[i % 4], F.cross_entropy)
        opt_c.step()

    fns = {"default": step_default, "deterministic": step_det, "compact": step_compact}
    for i in range(3):
        for fn in fns.values():
            fn(i)
    times = {k: [] for k in fns}
    order = ["default", "deterministic", "compact", "compact", "deterministic", "default"]
    for seg in range(segments):
        kind = order[seg % len(order)]
        fn = fns[kind]
        dist.barrier()
        t0 = time.perf_counter()
        for i in range(steps):
            fn(i)
        dt = np.array([(time.perf_counter() - t0) / steps], dtype=np.float64)
        dist.all_reduce(dt, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        times[kind].append(float(dt[0]))
    d, x = statistics.median(times["default"]), statistics.median(times["deterministic"])
    c = statistics.median(times["compact"])
    return {"model": name, "world": world, "global_batch": B, "micro_batch": M,
            "default_step_ms": d * 1e3, "deterministic_step_ms": x * 1e3, "ratio": x / d,
            "compact_step_ms": c * 1e3, "compact_ratio": c / d}


def _accuracy(name):
    import fashion_common
    import numpy as np

    import ddl
    import ddl.distributed as dist
    import ddl.nn.functional as F
    from ddl.data import DataLoader, DistributedSampler
    from ddl.distributed.deterministic import DeterministicDataParallel, GlobalBatchSampler
    from ddl.nn.parallel import DistributedDataParallel

    train, test = fashion_common.load_data()
    plain, det = _models(name)
    out = {"model": name}
    t0 = time.perf_counter()
    ddp = DistributedDataParallel(plain)
    opt = ddl.optim.Adam(plain.parameters(), lr=1e-3)
    sampler = DistributedSampler(train, shuffle=True, seed=0)
    for x, y in DataLoader(train, batch_size=PER_RANK, sampler=sampler):
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    out["default_epoch_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gs = GlobalBatchSampler(len(train), B, M, seed=0)
    dnet = DeterministicDataParallel(det, gs)
    opt = ddl.optim.Adam(det.parameters(), lr=1e-3)
    for x, y in DataLoader(train, batch_size=gs.local_batch_size, sampler=gs):
        opt.zero_grad()
        dnet.train_step(x, y, F.cross_entropy)
        opt.step()
    out["deterministic_epoch_s"] = time.perf_counter() - t0
    if dist.get_rank() == 0:
        loader = DataLoader(test, batch_size=1000)
        out["default_accuracy"] = fashion_common.evaluate(plain, loader)[0]
        out["deterministic_accuracy"] = fashion_common.evaluate(det, loader)[0]
        out["difference"] = out["deterministic_accuracy"] - out["default_accuracy"]
    dist.barrier()
    _ = np
    return out


def worker(args):
    C.use_source_tree()
    C.use_examples()
    import ddl
    import ddl.distributed as dist

    ddl.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {"timing": [], "accuracy": []}
    for name in ("mlp", "cnn"):
        results["timing"].append(_timing(name, args.steps if name == "mlp" else
                                         max(2, args.steps // 8), args.segments))
    for name in [a for a in args.accuracy.split(",") if a]:
        results["accuracy"].append(_accuracy(name))
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(results), flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="MLP steps per timing segment")
    p.add_argument("--segments", type=int, default=None)
    p.add_argument("--accuracy", default=None, help="models to train one epoch (mlp,cnn)")
    args = p.parse_args()
    if args.steps is None:
        args.steps = 10 if args.quick else 40
    if args.segments is None:
        args.segments = 4 if args.quick else 8
    if args.accuracy is None:
        args.accuracy = "" if args.quick else "mlp"
    if args.worker:
        return worker(args)
    cmd = [sys.executable, "-m", "ddl.run", "--nproc-per-node", "2", "--no-prefix", __file__,
           "--worker", "--steps", str(args.steps), "--segments", str(args.segments),
           "--accuracy", args.accuracy]
    env = dict(os.environ, PYTHONPATH=str(ROOT), DDL_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench_deterministic: the ranks failed (exit {proc.returncode})")
    results = json.loads(line[len("RESULT "):])
    print(f"{'model':6} {'default ms':>11} {'determ. ms':>11} {'ratio':>6} {'compact ms':>11} "
          f"{'ratio':>6}   (2 ranks, global batch {B}, micro-batch {M})")
    for r in results["timing"]:
        print(f"{r['model']:6} {r['default_step_ms']:11.2f} {r['deterministic_step_ms']:11.2f} "
              f"{r['ratio']:6.2f} {r['compact_step_ms']:11.2f} {r['compact_ratio']:6.2f}")
    for a in results["accuracy"]:
        print(f"{a['model']}: one epoch, test accuracy default {a['default_accuracy']:.4f}, "
              f"deterministic {a['deterministic_accuracy']:.4f} "
              f"(difference {a['difference']:+.4f}); epoch {a['default_epoch_s']:.1f} s vs "
              f"{a['deterministic_epoch_s']:.1f} s")
    C.RESULTS.mkdir(exist_ok=True)
    (C.RESULTS / "bench_deterministic.json").write_text(json.dumps(results, indent=1) + "\n")
    return None


if __name__ == "__main__":
    main()
