#!/usr/bin/env python3
"""bench_autocast.py: bf16 autocast vs float32, in ddl and in PyTorch, side by side in one run.

    python benchmarks/bench_autocast.py                # ~5 minutes
    python benchmarks/bench_autocast.py --quick        # ~1 minute (rougher figures)
    python benchmarks/bench_autocast.py --threads 1    # one thread count only
    python benchmarks/bench_autocast.py --accuracy     # Fashion-MNIST test accuracy, float32
                                                       # vs bf16 after the same epochs

Prints a table and writes benchmarks/results/bench_autocast.json and bench_autocast.md.

What it measures, each case in four variants timed in turn (ABBA order, several repeats, one
sample lasting >= --min-time s): ddl float32, ddl under ddl.autocast("cpu",
dtype=ddl.bfloat16), PyTorch float32, PyTorch under torch.autocast("cpu",
dtype=torch.bfloat16) (oneDNN's bf16 kernels):
- Linear layers, (batch, in, out): forward alone (no_grad) and forward + backward (y, dx, dW,
  db). GFLOP/s count the products (2 MNK each; three of them with backward).
- Conv2d layers (3x3, padding 1): forward + backward.
- Whole training steps (forward, cross entropy, zero_grad, backward, Adam) of the
  Fashion-MNIST MLP and CNN (examples/fashion_models.py) and wider versions of both, on
  synthetic batches held in memory; same initial weights in both libraries.
The speedup columns are float32 time / bf16 time of the same library (> 1: bf16 faster).
With one thread the figures are the calling thread's CPU time (a loaded machine's other jobs
leave it alone); with two, wall time. Load averages are recorded with every row.

--accuracy trains the Fashion-MNIST MLP and CNN (examples/fashion_common.py: Adam, cosine
schedule, batch 64) from the same seed twice, float32 and under ddl.autocast (the whole loop,
evaluation included), and prints both test accuracies (needs the dataset; see
ddl.datasets.FashionMNIST).

The issue's targets (14): large Linear/conv layers >= 1.5x their float32 speed under autocast
on a CPU with bf16 instructions; whole-model speedups reported; Fashion-MNIST accuracy within
0.005 of float32 after the same epochs.
"""
import argparse
import os
import statistics

import _common as C

C.use_source_tree()
C.use_examples()

import fashion_models  # after use_examples: this checkout's
import numpy as np

import ddl
import ddl.nn.functional as DF
import ddl.optim

try:
    import torch
    import torch.nn.functional as TF
except ImportError:
    raise SystemExit(C.torch_missing("bench_autocast compares against PyTorch's autocast"))

TARGET = 1.5
LINEAR = [(512, 4096, 4096), (256, 1024, 1024), (64, 1024, 1024), (128, 512, 512),
          (64, 784, 512), (32, 256, 256)]
CONV = [(32, 64, 128, 28), (16, 128, 256, 16), (64, 32, 64, 14)]  # (batch, cin, cout, hw)
MODELS = [("mlp", {}, 64), ("mlp-wide", {"hidden": (2048, 2048)}, 256),
          ("cnn", {}, 64), ("cnn-wide", {"channels": (64, 128), "hidden": 512}, 64)]
VARIANTS = ["ddl f32", "ddl bf16", "torch f32", "torch bf16"]


def judged_linear(shape):
    b, i, o = shape
    return b >= 256 and i * o >= 1 << 20


def judged_conv(shape):
    return shape[2] >= 128


# ---- the four variants of one case ----------------------------------------------------------


def ddl_ctx(bf16):
    return ddl.autocast("cpu", dtype=ddl.bfloat16, enabled=bf16)


def torch_ctx(bf16):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def layer_fns(rng, kind, shape, backward):
    """Four callables (VARIANTS order) running one layer, forward or forward + backward."""
    if kind == "linear":
        b, i, o = shape
        xa = rng.standard_normal((b, i), dtype=np.float32)
        wa = (rng.standard_normal((o, i), dtype=np.float32) / np.sqrt(i)).astype(np.float32)
        ga = rng.standard_normal((b, o), dtype=np.float32)
    else:
        b, ci, co, hw = shape
        xa = rng.standard_normal((b, ci, hw, hw), dtype=np.float32)
        wa = (rng.standard_normal((co, ci, 3, 3), dtype=np.float32) / np.sqrt(9 * ci))
        wa = wa.astype(np.float32)
        ga = rng.standard_normal((b, co, hw, hw), dtype=np.float32)
    ba = np.zeros(wa.shape[0], np.float32)
    fns = []
    for lib, ctx, F in ((ddl, ddl_ctx, DF), (torch, torch_ctx, TF)):
        x, w, bias = (lib.from_numpy(a.copy()) for a in (xa, wa, ba))
        g = lib.from_numpy(ga.copy())
        if backward:
            for t in (x, w, bias):
                t.requires_grad_(True)
        op = (lambda x, w, b, F=F: F.linear(x, w, b)) if kind == "linear" else \
            (lambda x, w, b, F=F: F.conv2d(x, w, b, padding=1))
        for bf16 in (False, True):
            def fn(lib=lib, ctx=ctx, op=op, x=x, w=w, bias=bias, g=g, bf16=bf16):
                if backward:
                    with ctx(bf16):
                        y = op(x, w, bias)
                    y.backward(g)
                    x.grad = w.grad = bias.grad = None
                else:
                    with lib.no_grad(), ctx(bf16):
                        op(x, w, bias)
            fns.append(fn)
    return fns


def model_fns(rng, name, kwargs, batch):
    """Four callables (VARIANTS order): one training step of the model."""
    base = name.split("-")[0]
    dm = fashion_models.build(fashion_models.model_classes(ddl.nn), base, **kwargs)
    tm = fashion_models.build(fashion_models.model_classes(torch.nn), base, **kwargs)
    tm.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                        for k, v in dm.state_dict().items()})
    xs, ys = C.synthetic_batches(rng, 4, batch)
    fns = []
    for lib, ctx, F, m in ((ddl, ddl_ctx, DF, dm), (torch, torch_ctx, TF, tm)):
        opt = lib.optim.Adam(m.parameters(), lr=1e-4)
        data = [(lib.from_numpy(x), lib.from_numpy(y)) for x, y in zip(xs, ys)]
        for bf16 in (False, True):
            it = {"i": 0}

            def fn(m=m, opt=opt, data=data, ctx=ctx, F=F, bf16=bf16, it=it):
                x, y = data[it["i"] % len(data)]
                it["i"] += 1
                with ctx(bf16):
                    loss = F.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            fns.append(fn)
    return fns


# ---- timing and rows ------------------------------------------------------------------------


def measure(fns, args, threads):
    ddl.set_num_threads(threads)
    torch.set_num_threads(threads)
    samples = C.interleaved(fns, args.reps, args.min_time, warmup=2)
    clock = "thread_cpu" if threads == 1 else "wall"
    times = [[getattr(s, clock) for s in ss] for ss in samples]
    med = [statistics.median(t) for t in times]
    # per-repeat speedups (samples of one repeat are seconds apart at most)
    sp_ddl = statistics.median(a / b for a, b in zip(times[0], times[1]))
    sp_torch = statistics.median(a / b for a, b in zip(times[2], times[3]))
    return med, sp_ddl, sp_torch, clock


def flops(kind, shape, backward):
    if kind == "linear":
        b, i, o = shape
        f = 2.0 * b * i * o
    elif kind == "conv":
        b, ci, co, hw = shape
        f = 2.0 * b * co * hw * hw * ci * 9
    else:
        return None
    return f * (3 if backward else 1)


def run_case(args, rng, kind, shape, threads, backward=True, extra=None):
    if kind == "model":
        name, kwargs, batch = shape
        fns = model_fns(rng, name, kwargs, batch)
        label = f"{name} step (batch {batch})"
    else:
        fns = layer_fns(rng, kind, shape, backward)
        label = (f"{'Linear' if kind == 'linear' else 'Conv3x3'} {'x'.join(map(str, shape))} "
                 f"{'fwd+bwd' if backward else 'fwd'}")
    med, sp_ddl, sp_torch, clock = measure(fns, args, threads)
    f = flops(kind, shape, backward)
    judged = kind != "model" and backward and (
        judged_linear(shape) if kind == "linear" else judged_conv(shape))
    row = {"case": label, "kind": kind, "shape": list(shape) if kind != "model" else shape[0],
           "backward": backward, "threads": threads, "clock": clock,
           "ms": dict(zip(VARIANTS, (1e3 * t for t in med))),
           "gflops": dict(zip(VARIANTS, (f / t / 1e9 for t in med))) if f else None,
           "ddl_speedup": sp_ddl, "torch_speedup": sp_torch,
           "ddl_bf16_vs_torch_bf16": med[3] / med[1],
           "judged": judged, "target": TARGET if judged else None,
           "loadavg_1min_after": os.getloadavg()[0]}
    if judged:
        row["pass"] = sp_ddl >= TARGET
    print_row(row)
    return row


def print_row(r):
    ms = r["ms"]
    verdict = ("ok" if r["pass"] else "MISS") if r["judged"] else ""
    gf = ""
    if r["gflops"]:
        gf = f"  ({r['gflops']['ddl f32']:.0f} -> {r['gflops']['ddl bf16']:.0f} GF/s)"
    print(f"{r['case']:<34} {r['threads']}  ddl {ms['ddl f32']:8.2f} -> {ms['ddl bf16']:8.2f} ms"
          f" {r['ddl_speedup']:5.2f}x | torch {ms['torch f32']:8.2f} -> {ms['torch bf16']:8.2f}"
          f" ms {r['torch_speedup']:5.2f}x | bf16 ddl/torch {r['ddl_bf16_vs_torch_bf16']:5.2f}x"
          f"  load {r['loadavg_1min_after']:.1f} {verdict}{gf}", flush=True)


def markdown(rows, meta):
    lines = [
        (f"Measured {meta['date']} on {meta['cpu_name']} ({meta['cpu']['logical_cpus']} logical "
         f"CPUs, shared; SIMD {', '.join(meta['cpu'].get('simd', []))}; load average "
         f"{meta['loadavg_before'][0]:.1f} before, {meta['loadavg_after'][0]:.1f} after), ddl "
         f"bf16 path: {meta['ddl_bf16_path']}, PyTorch {meta['torch']} (CPU capability "
         f"{meta['torch_cpu_capability']}){' (--quick)' if meta['quick'] else ''}."),
        "",
        ("- Each case: ddl float32, ddl autocast bf16, PyTorch float32, PyTorch autocast bf16, "
         f"interleaved (ABBA), median of {meta['reps']} samples of >= {meta['min_time_s']} s. "
         "Speedup = float32 time / bf16 time of the same library (median of per-repeat "
         "ratios). bf16 ddl/torch = PyTorch bf16 time / ddl bf16 time (> 1: ddl faster). "
         "1 thread: the calling thread's CPU time; 2 threads: wall time."),
        "",
        ("| case | threads | ddl f32 ms | ddl bf16 ms | ddl speedup | torch f32 ms | "
         "torch bf16 ms | torch speedup | bf16 ddl/torch | load | target |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = r["ms"]
        verdict = (("pass" if r["pass"] else "MISS") + f" (>= {TARGET}x)") if r["judged"] else ""
        lines.append(
            f"| {r['case']} | {r['threads']} | {ms['ddl f32']:.2f} | {ms['ddl bf16']:.2f} | "
            f"**{r['ddl_speedup']:.2f}x** | {ms['torch f32']:.2f} | {ms['torch bf16']:.2f} | "
            f"{r['torch_speedup']:.2f}x | {r['ddl_bf16_vs_torch_bf16']:.2f}x | "
            f"{r['loadavg_1min_after']:.1f} | {verdict} |")
    return "\n".join(lines) + "\n"


def accuracy(args):
    import fashion_common

    train_set, test_set = fashion_common.load_data()
    rows = []
    for name, epochs in (("mlp", args.acc_epochs[0]), ("cnn", args.acc_epochs[1])):
        acc = {}
        for bf16 in (False, True):
            ddl.manual_seed(0)
            np.random.seed(0)
            model = fashion_common.build_model(name)
            lr = fashion_common.DEFAULTS[name]["lr"]
            with ddl_ctx(bf16):
                acc[bf16], _ = fashion_common.train(model, train_set, test_set, epochs, lr,
                                                    log=lambda *a: None)
        row = {"model": name, "epochs": epochs, "float32": acc[False], "bf16": acc[True],
               "difference": acc[True] - acc[False], "target": 0.005,
               "pass": abs(acc[True] - acc[False]) <= 0.005,
               "loadavg_1min_after": os.getloadavg()[0]}
        print(f"{name}: {epochs} epochs, test accuracy float32 {acc[False]:.4f}, bf16 "
              f"{acc[True]:.4f} (difference {row['difference']:+.4f}; target within 0.005: "
              f"{'ok' if row['pass'] else 'MISS'})", flush=True)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None)
    p.add_argument("--only", choices=["linear", "conv", "model"], nargs="+",
                   default=["linear", "conv", "model"])
    p.add_argument("--out", default=str(C.RESULTS))
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--acc-epochs", type=int, nargs=2, default=[5, 2], metavar=("MLP", "CNN"))
    args = p.parse_args()
    if args.accuracy:
        ddl.set_num_threads(args.threads[0])
        rows = accuracy(args)
        C.write_results(args.out, "bench_autocast_accuracy", {"rows": rows},
                        "\n".join(f"- {r['model']}: {r['epochs']} epochs, float32 "
                                  f"{r['float32']:.4f}, bf16 {r['bf16']:.4f}" for r in rows)
                        + "\n")
        return
    args.reps = args.reps or (3 if args.quick else 5)
    args.min_time = args.min_time or (0.05 if args.quick else 0.2)
    cpu = C.cpu_info()
    path = "none"
    if ddl.amp.is_autocast_available():  # AMX unless hidden (DDL_NO_AMX) or absent
        amx = "amx_tile" in cpu.get("simd", []) and not os.environ.get("DDL_NO_AMX")
        path = "AMX" if amx else "AVX512-BF16"
    if path == "none":
        print("ddl: no bf16 path on this CPU: its autocast rows measure float32 twice")
    meta = {"date": C.now(), "cpu": cpu, "cpu_name": C.cpu_name(cpu),
            "loadavg_before": os.getloadavg(), "ddl_bf16_path": path,
            "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "reps": args.reps, "min_time_s": args.min_time, "quick": args.quick,
            "blas": ddl.blas_info()}
    print(f"{meta['cpu_name']}; ddl bf16 path: {path}; load {meta['loadavg_before'][0]:.1f}")
    rng = np.random.default_rng(0)
    rows = []
    for threads in args.threads:
        if "linear" in args.only:
            for shape in LINEAR:
                rows.append(run_case(args, rng, "linear", shape, threads, backward=False))
                rows.append(run_case(args, rng, "linear", shape, threads))
        if "conv" in args.only:
            for shape in CONV:
                rows.append(run_case(args, rng, "conv", shape, threads))
        if "model" in args.only:
            for m in MODELS:
                rows.append(run_case(args, rng, "model", m, threads))
    meta["loadavg_after"] = os.getloadavg()
    md = markdown(rows, meta)
    paths = C.write_results(args.out, "bench_autocast", {"meta": meta, "rows": rows}, md)
    print(f"wrote {paths[0]} and {paths[1]}")
    judged = [r for r in rows if r["judged"]]
    print(f"{sum(r['pass'] for r in judged)}/{len(judged)} judged layer rows reach "
          f">= {TARGET}x")


if __name__ == "__main__":
    main()
