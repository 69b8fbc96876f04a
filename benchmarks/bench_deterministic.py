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
training images in each mode, for --seeds seeds (a seed fixes the initial weights and the
sample order; the default mode with DistributedSampler, batch 64 per rank, the deterministic
one with GlobalBatchSampler: the same 128 samples each step), test accuracy over the 10k test
images; the difference of the modes' means is reported next to the default mode's own
seed-to-seed spread. Results: printed, and benchmarks/results/
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


def _one_epoch(name, mode, seed, train, test):
    import fashion_common

    import ddl
    import ddl.distributed as dist
    import ddl.nn.functional as F
    from ddl.data import DataLoader, DistributedSampler
    from ddl.distributed.deterministic import DeterministicDataParallel, GlobalBatchSampler
    from ddl.nn.parallel import DistributedDataParallel

    ddl.manual_seed(seed)
    model = fashion_common.build_model(name)
    opt = ddl.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    if mode == "default":
        net = DistributedDataParallel(model)
        sampler = DistributedSampler(train, shuffle=True, seed=seed)
        for x, y in DataLoader(train, batch_size=PER_RANK, sampler=sampler):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    else:
        gs = GlobalBatchSampler(len(train), B, M, seed=seed)
        net = DeterministicDataParallel(model, gs)
        for x, y in DataLoader(train, batch_size=gs.local_batch_size, sampler=gs):
            opt.zero_grad()
            net.train_step(x, y, F.cross_entropy)
            opt.step()
    seconds = time.perf_counter() - t0
    acc = None
    if dist.get_rank() == 0:
        acc = fashion_common.evaluate(model, DataLoader(test, batch_size=1000))[0]
    dist.barrier()
    return acc, seconds


def _accuracy(name, seeds):
    """Test accuracy after one epoch in each mode, for each seed (the seed sets the initial
    weights, the sample order and dropout): the difference between the modes' means set
    against the seed-to-seed spread of the default mode."""
    import fashion_common

    train, test = fashion_common.load_data()
    out = {"model": name, "seeds": list(range(seeds))}
    for mode in ("default", "deterministic"):
        runs = [_one_epoch(name, mode, s, train, test) for s in range(seeds)]
        out[f"{mode}_accuracy"] = [r[0] for r in runs]
        out[f"{mode}_epoch_s"] = statistics.median(r[1] for r in runs)
    if out["default_accuracy"][0] is not None:
        d, x = out["default_accuracy"], out["deterministic_accuracy"]
        out["difference_of_means"] = statistics.mean(x) - statistics.mean(d)
        out["default_spread"] = max(d) - min(d)
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
        results["accuracy"].append(_accuracy(name, args.seeds))
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
    p.add_argument("--seeds", type=int, default=2, help="seeds per mode for the accuracy")
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
           "--accuracy", args.accuracy, "--seeds", str(args.seeds)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), DDL_NUM_THREADS="1")
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench_deterministic: the ranks failed (exit {proc.returncode})")
    results = json.loads(line[len("RESULT "):])
    results["load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute, before and after
    print(f"{'model':6} {'default ms':>11} {'determ. ms':>11} {'ratio':>6} {'compact ms':>11} "
          f"{'ratio':>6}   (2 ranks, global batch {B}, micro-batch {M})")
    for r in results["timing"]:
        print(f"{r['model']:6} {r['default_step_ms']:11.2f} {r['deterministic_step_ms']:11.2f} "
              f"{r['ratio']:6.2f} {r['compact_step_ms']:11.2f} {r['compact_ratio']:6.2f}")
    print("load average (1 min) before {:.2f}, after {:.2f} (a shared machine: compare ratios "
          "from one run)".format(*results["load_average"]))
    for a in results["accuracy"]:
        d = " ".join(f"{v:.4f}" for v in a["default_accuracy"])
        x = " ".join(f"{v:.4f}" for v in a["deterministic_accuracy"])
        print(f"{a['model']}: one epoch, test accuracy per seed: default {d}; deterministic {x}; "
              f"difference of the means {a['difference_of_means']:+.4f} (default's seed-to-seed "
              f"spread {a['default_spread']:.4f}); epoch {a['default_epoch_s']:.1f} s vs "
              f"{a['deterministic_epoch_s']:.1f} s")
    C.RESULTS.mkdir(exist_ok=True)
    (C.RESULTS / "bench_deterministic.json").write_text(json.dumps(results, indent=1) + "\n")
    return None


if __name__ == "__main__":
    main()
