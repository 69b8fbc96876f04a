"""_sweep.py: how the cost of a training step grows with work (bench_train.py --sweep).

For MLP widths 256..4096, CNN channels 32..256, LSTM hidden sizes 128..1024 (batch 64) and
batches 16..512 (the middle size of each model), at each thread count: ddl's and PyTorch's
time per training step (forward, cross entropy, backward, Adam), the step's matrix FLOPs
(counted from the shapes: 3 products per Linear/conv/recurrent GEMM, forward and two for
backward), the GFLOP/s that gives, and that as a fraction of the sgemm peak measured in the
same run (a 2048^3 cblas_sgemm into ddl's own OpenBLAS at the same thread count). A model
near 1.0 is GEMM-bound at the machine's limit; far below, framework overhead, memory-bound
ops or small GEMMs decide.
"""
import statistics
import time

import numpy as np

MLP_WIDTHS = [256, 1024, 4096]
CNN_CHANNELS = [32, 64, 128, 256]
LSTM_HIDDEN = [128, 256, 512, 1024]
BATCHES = [16, 64, 256, 512]
MID = {"mlp": 1024, "cnn": 64, "lstm": 256}


def build(nn, name, size):
    """(model, GEMM FLOPs of one forward per sample) for ddl.nn or torch.nn."""
    if name == "mlp":
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, size), nn.ReLU(), nn.Linear(size, size),
                          nn.ReLU(), nn.Linear(size, 10))
        return m, 2 * (784 * size + size * size + size * 10)
    if name == "cnn":
        c = size
        m = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * c * 49, 128), nn.ReLU(), nn.Linear(128, 10))
        flops = 2 * (c * 9 * 784 + 2 * c * c * 9 * 196 + 2 * c * 49 * 128 + 128 * 10)
        return m, flops
    h = size

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(28, h, batch_first=True), nn.Linear(h, 10)

        def forward(self, x):
            out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
            return self.head(out[:, -1])

    return Seq(), 2 * (28 * 4 * h * (28 + h) + h * 10)


def sgemm_peak(sgemm, n=2048, reps=3):
    """GFLOP/s of an n^3 sgemm (best of reps) through ddl's OpenBLAS at its thread count."""
    a = np.ones((n, n), np.float32)
    b = np.ones((n, n), np.float32)
    c = np.empty((n, n), np.float32)
    args = (101, 111, 111, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0,
            c.ctypes.data, n)
    sgemm(*args)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        sgemm(*args)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def cases():
    for name, sizes in (("mlp", MLP_WIDTHS), ("cnn", CNN_CHANNELS), ("lstm", LSTM_HIDDEN)):
        for s in sizes:
            yield name, s, 64
        for b in BATCHES:
            if b != 64:
                yield name, MID[name], b


def run(args, C, ddl, torch, set_threads, sgemm, print_fn=print):
    """The sweep's rows (one per model, size, batch and thread count)."""
    import torch.nn as tnn
    import torch.nn.functional as TF

    import ddl.nn as dnn
    import ddl.nn.functional as DF

    rng = np.random.default_rng(0)
    rows = []
    peaks = {}
    for threads in args.threads:
        set_threads(threads)
        peaks[threads] = sgemm_peak(sgemm)
        print_fn(f"sgemm 2048^3 peak at {threads} thread(s): {peaks[threads]:.0f} GFLOP/s")
    for name, size, batch in cases():
        if args.sweep_models and name not in args.sweep_models:
            continue
        ddl.manual_seed(0)
        torch.manual_seed(0)
        dm, flops = build(dnn, name, size)
        tm, _ = build(tnn, name, size)
        xs, ys = C.synthetic_batches(rng, 4, batch)
        steps = []
        for lib, m, F in ((ddl, dm, DF), (torch, tm, TF)):
            opt = lib.optim.Adam(m.parameters(), lr=1e-3)
            data = [(lib.from_numpy(x), lib.from_numpy(y)) for x, y in zip(xs, ys)]
            steps.append(C.training_step(m, opt, F.cross_entropy, data))
        step_flops = 3 * flops * batch
        for threads in args.threads:
            set_threads(threads)
            sd, st = C.interleaved(steps, args.sweep_reps, args.sweep_min_time, warmup=2)
            td = statistics.median(s.wall for s in sd)
            tt = statistics.median(s.wall for s in st)
            row = {
                "group": "sweep", "case": name, "size": size, "batch": batch,
                "threads": threads, "gflop_per_step": step_flops / 1e9,
                "ddl_ms": 1e3 * td, "torch_ms": 1e3 * tt, "ratio": tt / td,
                "ddl_gflops": step_flops / td / 1e9, "torch_gflops": step_flops / tt / 1e9,
                "sgemm_peak_gflops": peaks[threads],
            }
            row["ddl_frac_peak"] = row["ddl_gflops"] / peaks[threads]
            row["torch_frac_peak"] = row["torch_gflops"] / peaks[threads]
            rows.append(row)
            print_fn(f"{name:4s} size {size:5d} batch {batch:4d} {threads}t: ddl "
                     f"{row['ddl_ms']:8.2f} ms ({row['ddl_gflops']:6.1f} GFLOP/s, "
                     f"{row['ddl_frac_peak']:4.0%} of peak), torch {row['torch_ms']:8.2f} ms "
                     f"({row['torch_frac_peak']:4.0%}), ddl/torch speed {row['ratio']:.2f}x")
    # 2-thread over 1-thread speedup of ddl, per case
    by = {(r["case"], r["size"], r["batch"], r["threads"]): r for r in rows}
    for r in rows:
        one = by.get((r["case"], r["size"], r["batch"], 1))
        r["ddl_speedup_vs_1t"] = one["ddl_ms"] / r["ddl_ms"] if one else None
    return rows, peaks


def markdown(rows, peaks, meta):
    lines = [
        f"Sweep ({meta['date']}, load {meta['loadavg_before'][0]:.1f} before, "
        f"{meta['loadavg_after'][0]:.1f} after; ddl BLAS {meta['blas']['corename']}). "
        "sgemm 2048^3 peak: " + ", ".join(f"{t} thread(s) {p:.0f} GFLOP/s"
                                         for t, p in peaks.items()) + ".",
        "",
        ("| model | size | batch | threads | GFLOP/step | ddl ms | ddl GFLOP/s (of peak) | "
         "torch ms | torch GFLOP/s (of peak) | ddl/torch | ddl 2t/1t |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sp = r["ddl_speedup_vs_1t"]
        lines.append(
            f"| {r['case']} | {r['size']} | {r['batch']} | {r['threads']} | "
            f"{r['gflop_per_step']:.3f} | {r['ddl_ms']:.2f} | {r['ddl_gflops']:.0f} "
            f"({r['ddl_frac_peak']:.0%}) | {r['torch_ms']:.2f} | {r['torch_gflops']:.0f} "
            f"({r['torch_frac_peak']:.0%}) | {r['ratio']:.2f}x | "
            + (f"{sp:.2f}x" if sp and r["threads"] != 1 else "") + " |")
    return "\n".join(lines) + "\n"

