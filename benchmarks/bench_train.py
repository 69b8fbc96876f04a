#!/usr/bin/env python3
"""bench_train.py: training throughput of ddl vs PyTorch, side by side in one process.

    python benchmarks/bench_train.py                 # ~6-8 minutes
    python benchmarks/bench_train.py --quick         # ~1 minute (rougher figures)
    python benchmarks/bench_train.py --update-docs   # also rewrite the "Training speed"
                                                     # section of docs/benchmarks.md
    python benchmarks/bench_train.py --sweep         # how cost grows with work (_sweep.py):
                                                     # sizes x batches x threads, GFLOP/s
                                                     # against the measured sgemm peak

Prints a table and writes benchmarks/results/bench_train.json and bench_train.md.

What it measures:
- images/s of one training step -- forward, cross entropy, zero_grad, backward, Adam step --
  at batch 64 for the MLP, CNN and LSTM of examples/fashion_common.py, and the same
  architecture in PyTorch (built layer by layer from the ddl model, with the ddl model's
  initial weights copied in, and checked to give the same loss on the same batch), each with
  1 and with 2 threads (ddl.set_num_threads / torch.set_num_threads), in one process.
  Data: 8 synthetic batches held in memory (no data loading is timed).
- Timing on a shared machine is noisy, so the two libraries alternate (ABBA order) for
  several repeats; one sample runs enough steps to last --min-time seconds. A library's
  figure is the median of its samples; the ratio (ddl img/s / torch img/s, > 1: ddl faster)
  is the median of the per-repeat ratios.
- Linear forward+backward vs raw sgemm: for each Linear shape of the MLP at batch 64, the
  time of F.linear forward + backward (all three products: y, dx, dW, plus the bias) against
  the three bare sgemm calls into ddl's own OpenBLAS (cblas_sgemm through ctypes, reading
  the same input buffers as the layer and writing into preallocated ones, same thread count). The fraction is raw time / layer time (1.0: no
  overhead at all). PyTorch's F.linear is timed the same way for reference.

Targets (issue 14): at 1 thread MLP >= 2.0x PyTorch, CNN >= 1.6x, LSTM/GRU >= 1.6x; at 2
threads MLP >= 1.5x, CNN >= 1.3x (LSTM/GRU: >= 1.0x, issue 8's); Linear fwd+bwd >= 90% of
raw sgemm (the MLP's two large layers). The CNN's own 2-thread / 1-thread speedup (target
>= 1.6x) and the GEMM-bound fraction of the sgemm peak are in the --sweep table.
"""
import argparse
import ctypes
import os
import platform
import re
import statistics
import time

import _common as C

C.use_source_tree()
C.use_examples()

import fashion_common  # after use_source_tree / use_examples: this checkout's
import numpy as np

import ddl
import ddl.nn as dnn
import ddl.nn.functional as DF
import ddl.optim

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF
except ImportError:
    raise SystemExit("bench_train.py needs PyTorch: pip install torch")

TARGETS = {1: {"mlp": 2.0, "cnn": 1.6, "lstm": 1.6, "gru": 1.6},
           2: {"mlp": 1.5, "cnn": 1.3, "lstm": 1.0, "gru": 1.0}}
LINEAR_TARGET = 0.90
BATCH = 64
N_BATCHES = 8
DOCS_SECTION = "## Training speed (bench_train.py)"
SWEEP_SECTION = "## How cost grows with work (bench_train.py --sweep)"


# ---- models -------------------------------------------------------------------------------


def torch_layer(m):
    """The PyTorch layer equivalent to ddl layer m, with m's parameters copied in."""
    t = None
    if isinstance(m, dnn.Sequential):
        return tnn.Sequential(*[torch_layer(c) for c in m.children()])
    if isinstance(m, dnn.Linear):
        t = tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    elif isinstance(m, dnn.Conv2d):
        t = tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                       m.dilation, bias=m.bias is not None)
    elif isinstance(m, dnn.BatchNorm2d):
        t = tnn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine)
    elif isinstance(m, dnn.BatchNorm1d):
        t = tnn.BatchNorm1d(m.num_features, m.eps, m.momentum, m.affine)
    elif isinstance(m, dnn.MaxPool2d):
        t = tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    elif isinstance(m, dnn.Dropout):
        t = tnn.Dropout(m.p)
    elif isinstance(m, dnn.Flatten):
        t = tnn.Flatten(m.start_dim, m.end_dim)
    elif isinstance(m, dnn.LSTM):
        t = tnn.LSTM(m.input_size, m.hidden_size, m.num_layers, bias=m.bias,
                     batch_first=m.batch_first, dropout=m.dropout)
    elif isinstance(m, dnn.GRU):
        t = tnn.GRU(m.input_size, m.hidden_size, m.num_layers, bias=m.bias,
                    batch_first=m.batch_first, dropout=m.dropout)
    elif type(m).__name__ in ("ReLU", "Tanh", "Sigmoid"):
        t = getattr(tnn, type(m).__name__)()
    if t is None:
        raise TypeError(f"no PyTorch equivalent for {type(m).__name__}")
    copy_params(m, t)
    return t


def copy_params(src, dst):
    sd = {k: np.array(v.numpy()) for k, v in src.state_dict().items()}
    tsd = dst.state_dict()
    for k in tsd:
        if k in sd:
            tsd[k] = torch.from_numpy(sd[k]).to(tsd[k].dtype).reshape(tsd[k].shape)
    dst.load_state_dict(tsd)


class TorchMLP(tnn.Module):
    def __init__(self, m):
        super().__init__()
        self.net = torch_layer(m.net)

    def forward(self, x):
        return self.net(x)


class TorchCNN(tnn.Module):
    def __init__(self, m):
        super().__init__()
        self.features, self.classifier = torch_layer(m.features), torch_layer(m.classifier)

    def forward(self, x):
        return self.classifier(self.features(x))


class TorchRNN(tnn.Module):
    def __init__(self, m):
        super().__init__()
        self.rnn, self.head = torch_layer(m.rnn), torch_layer(m.head)

    def forward(self, x):
        out, _ = self.rnn(x.reshape(x.shape[0], 28, 28))
        return self.head(out[:, -1])


def build_pair(name):
    ddl.manual_seed(0)
    torch.manual_seed(0)
    dm = fashion_common.build_model(name)
    wrap = {"mlp": TorchMLP, "cnn": TorchCNN}.get(name, TorchRNN)
    tm = wrap(dm)
    return dm, tm


def check_same_model(dm, tm, x, y):
    """Same architecture and weights: the same loss on one batch (eval mode: no dropout)."""
    dm.eval(), tm.eval()
    with ddl.no_grad():
        ld = float(DF.cross_entropy(dm(ddl.from_numpy(x)), ddl.from_numpy(y)))
    with torch.no_grad():
        lt = float(TF.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y)))
    dm.train(), tm.train()
    n_d = sum(p.numel() for p in dm.parameters())
    n_t = sum(p.numel() for p in tm.parameters())
    if n_d != n_t or abs(ld - lt) > 1e-3 * max(1.0, abs(lt)):
        raise SystemExit(f"model mismatch: ddl {n_d} params, loss {ld:.6f}; "
                         f"torch {n_t} params, loss {lt:.6f}")
    return n_d, ld


# ---- timing ---------------------------------------------------------------------------------


def interleaved(fn_a, fn_b, reps, min_time):
    """Samples (C.Sample) of fn_a and fn_b, ABBA, after 3 warm-up calls each."""
    return C.interleaved([fn_a, fn_b], reps, min_time, warmup=3)


def walls(samples):
    return [s.wall for s in samples]


def cpus(samples):
    return [s.cpu for s in samples]


def set_threads(n):
    ddl.set_num_threads(n)
    torch.set_num_threads(n)


# ---- training step ------------------------------------------------------------------------


def stepper(lib, model, xs, ys):
    """One training step (Adam, cross entropy) of model in lib (ddl or torch)."""
    F = DF if lib is ddl else TF
    opt = lib.optim.Adam(model.parameters(), lr=1e-3)
    data = [(lib.from_numpy(x), lib.from_numpy(y)) for x, y in zip(xs, ys)]
    return C.training_step(model, opt, F.cross_entropy, data)


def bench_models(args, rng):
    rows = []
    for name in args.models:
        dm, tm = build_pair(name)
        xs, ys = C.synthetic_batches(rng, N_BATCHES, BATCH)
        n_params, _ = check_same_model(dm, tm, xs[0], ys[0])
        d_step, t_step = stepper(ddl, dm, xs, ys), stepper(torch, tm, xs, ys)
        for threads in args.threads:
            set_threads(threads)
            sd, st = interleaved(d_step, t_step, args.reps, args.min_time)
            td, tt, cd, ct = walls(sd), walls(st), cpus(sd), cpus(st)
            ratio = statistics.median(b / a for a, b in zip(td, tt))
            row = {
                "group": "train", "case": name, "threads": threads, "batch": BATCH,
                "params": n_params, "unit": "img/s",
                "ddl": BATCH / statistics.median(td), "torch": BATCH / statistics.median(tt),
                "ddl_ms_per_step": 1e3 * statistics.median(td),
                "torch_ms_per_step": 1e3 * statistics.median(tt),
                "ddl_samples_ms": [round(1e3 * t, 3) for t in td],
                "torch_samples_ms": [round(1e3 * t, 3) for t in tt],
                "ratio": ratio, "target": TARGETS[min(threads, 2)][name],
                # CPU seconds of the whole process per step (all threads, spinning included):
                # steadier than wall time on a loaded machine, reported beside it
                "ddl_cpu_ms_per_step": 1e3 * statistics.median(cd),
                "torch_cpu_ms_per_step": 1e3 * statistics.median(ct),
                "cpu_ratio": statistics.median(b / a for a, b in zip(cd, ct)),
                "loadavg_1min_after": os.getloadavg()[0],
            }
            row["pass"] = row["ratio"] >= row["target"]
            rows.append(row)
            print_row(row)
    return rows


# ---- Linear vs raw sgemm --------------------------------------------------------------------


def openblas_sgemm():
    """cblas_sgemm of the OpenBLAS that ddl._C runs (the scipy-openblas32 wheel's)."""
    import scipy_openblas32

    lib = ctypes.CDLL(os.path.join(os.path.dirname(scipy_openblas32.__file__), "lib",
                                   "libscipy_openblas.so"))
    for name in ("scipy_cblas_sgemm", "cblas_sgemm"):
        if hasattr(lib, name):
            f = getattr(lib, name)
            break
    else:
        raise SystemExit("no cblas_sgemm in libscipy_openblas.so")
    f.restype = None
    i, fl, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    f.argtypes = [i, i, i, i, i, i, fl, p, i, p, i, fl, p, i]
    return f


ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def bench_linear(args, rng):
    sgemm = openblas_sgemm()
    m = fashion_common.build_model("mlp")
    rows = []
    for layer in m.modules():
        if isinstance(layer, dnn.Linear):
            rows += linear_case(args, rng, sgemm, BATCH, layer.in_features, layer.out_features)
    return rows


def linear_case(args, rng, sgemm, B, IN, OUT):
    """Rows (one per thread count) for one Linear shape: x (B, IN) -> (B, OUT)."""
    rows = []
    x = rng.standard_normal((B, IN), dtype=np.float32)
    w = rng.standard_normal((OUT, IN), dtype=np.float32) * 0.05
    b = rng.standard_normal(OUT, dtype=np.float32)
    gy = rng.standard_normal((B, OUT), dtype=np.float32)
    dx = ddl.tensor(x).requires_grad_()
    dw = ddl.tensor(w).requires_grad_()
    db = ddl.tensor(b).requires_grad_()
    dgy = ddl.tensor(gy)
    # the raw products read the very buffers the layer reads (ddl's 64-byte aligned
    # storage) and write into preallocated ddl tensors
    y_, dx_, dw_ = ddl.empty(B, OUT), ddl.empty(B, IN), ddl.empty(OUT, IN)
    px, pw, pgy = dx._data_ptr, dw._data_ptr, dgy._data_ptr
    py, pdx, pdw = y_._data_ptr, dx_._data_ptr, dw_._data_ptr

    def raw():
        # y = x @ w^T ; dx = gy @ w ; dW = gy^T @ x
        sgemm(ROW_MAJOR, NO_TRANS, TRANS, B, OUT, IN, 1.0, px, IN, pw, IN, 0.0, py, OUT)
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, B, IN, OUT, 1.0, pgy, OUT, pw, IN, 0.0, pdx, IN)
        sgemm(ROW_MAJOR, TRANS, NO_TRANS, OUT, IN, B, 1.0, pgy, OUT, px, IN, 0.0, pdw, IN)

    def layer():
        DF.linear(dx, dw, db).backward(dgy)
        dx.grad = dw.grad = db.grad = None  # zero_grad(set_to_none=True)

    tx = torch.from_numpy(x.copy()).requires_grad_()
    tw = torch.from_numpy(w.copy()).requires_grad_()
    tb = torch.from_numpy(b.copy()).requires_grad_()
    tgy = torch.from_numpy(gy.copy())

    def tlayer():
        TF.linear(tx, tw, tb).backward(tgy)
        tx.grad = tw.grad = tb.grad = None

    # correctness: the layer's gradients match the raw products
    raw()
    layer_out = DF.linear(dx, dw, db)
    layer_out.backward(dgy)
    rdw, rdx = np.asarray(dw_), np.asarray(dx_)
    err = max(float(np.max(np.abs(np.asarray(dw.grad) - rdw)) / np.max(np.abs(rdw))),
              float(np.max(np.abs(np.asarray(dx.grad) - rdx)) / np.max(np.abs(rdx))))
    dx.grad = dw.grad = db.grad = None
    flops = 3 * 2.0 * B * IN * OUT
    for threads in args.threads:
        set_threads(threads)
        s_raw, s_layer = interleaved(raw, layer, args.reps, args.min_time / 4)
        t_raw, t_layer, c_raw, c_layer = walls(s_raw), walls(s_layer), cpus(s_raw), cpus(s_layer)
        t_torch = walls(interleaved(raw, tlayer, max(3, args.reps // 2), args.min_time / 4)[1])
        row = {
            "group": "linear", "case": f"{B}x{IN}->{OUT}", "threads": threads,
            "unit": "GFLOP/s",
            "raw_gflops": flops / statistics.median(t_raw) / 1e9,
            "ddl": flops / statistics.median(t_layer) / 1e9,
            "torch": flops / statistics.median(t_torch) / 1e9,
            "raw_us": 1e6 * statistics.median(t_raw),
            "ddl_us": 1e6 * statistics.median(t_layer),
            "torch_us": 1e6 * statistics.median(t_torch),
            "ratio": statistics.median(r / l for r, l in zip(t_raw, t_layer)),
            "cpu_ratio": statistics.median(r / l for r, l in zip(c_raw, c_layer)),
            "target": LINEAR_TARGET, "max_rel_err": err,
            "judged": IN * OUT >= 64 * 1024,  # the small head layer is reported, not judged
        }
        row["pass"] = row["ratio"] >= row["target"] or not row["judged"]
        rows.append(row)
        print_row(row)
    return rows


# ---- report -------------------------------------------------------------------------------


def torch_backend():
    cfg = torch.__config__.show()
    mkl = re.search(r"Intel\(R\) (?:oneAPI )?Math Kernel Library Version ([^\n]*)", cfg)
    dnnl = re.search(r"(?:oneDNN|MKL-DNN)[^\n]*?(v[\d.]+)", cfg)
    return {"version": torch.__version__, "mkl": mkl.group(1).strip() if mkl else None,
            "onednn": dnnl.group(1) if dnnl else None,
            "mkldnn_enabled": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


HEADER = ["case", "thr", "ddl", "PyTorch", "ddl/torch", "(CPU)", "target", ""]
WIDTHS = [22, 3, 22, 16, 9, 12, 8, 4]


def fmt_row(r):
    if r["group"] == "train":
        return [r["case"].upper() + " train step", str(r["threads"]),
                f"{r['ddl']:,.0f} img/s", f"{r['torch']:,.0f} img/s", f"{r['ratio']:.2f}x",
                f"({r['cpu_ratio']:.2f}x)", f">= {r['target']:.1f}x",
                "ok" if r["pass"] else "MISS"]
    return [f"Linear {r['case']}", str(r["threads"]),
            f"{r['ratio'] * 100:.0f}% of sgemm ({r['ddl']:.0f} GF)",
            f"{r['torch'] / r['raw_gflops'] * 100:.0f}% ({r['torch']:.0f} GF)", "",
            f"({r['cpu_ratio'] * 100:.0f}%)",
            f">= {r['target'] * 100:.0f}%",
            ("ok" if r["pass"] else "MISS") if r["judged"] else "n/a"]


def print_row(row):
    print("  ".join(c.ljust(w) for c, w in zip(fmt_row(row), WIDTHS)), flush=True)


def markdown(rows, meta):
    tb = meta["torch"]
    lines = [
        (f"Measured {meta['date']} on {meta['cpu'].get('model_name', '?')} "
        f"(family {meta['cpu'].get('family', '?')} model {meta['cpu'].get('model', '?')}, "
        f"{meta['cpu']['logical_cpus']} logical CPUs, shared; load average "
        f"{meta['loadavg_before'][0]:.1f} before, {meta['loadavg_after'][0]:.1f} after), "
        f"Python {meta['python']}, ddl {meta['ddl']}, PyTorch {tb['version']}"
        f"{' (--quick)' if meta['quick'] else ''}."),
        "",
        f"- ddl's BLAS: {meta['blas']['config']}, kernel **{meta['blas']['corename']}**. "
        f"PyTorch: MKL {tb['mkl']}, oneDNN {tb['onednn']}, CPU capability "
        f"{tb['cpu_capability']}. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: "
        + " / ".join(str(meta["env"][k]) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
        + ".",
        (f"- One training step = forward + cross entropy + zero_grad + backward + Adam step, "
        f"batch {BATCH}, synthetic data in memory; same architecture and initial weights in "
        "both libraries; one process, threads set with ddl.set_num_threads / "
        "torch.set_num_threads."),
        (f"- Median of {meta['reps']} interleaved (ABBA) samples of >= {meta['min_time_s']} s "
        "each; ratio = median of per-repeat ratios (> 1: ddl faster)."),
        ("- Linear: F.linear forward + backward (y, dx, dW, db) vs the three bare sgemm calls "
        "into ddl's OpenBLAS (ctypes; the layer's own input buffers, preallocated outputs) at "
        "the same thread count; "
        "percentage = raw sgemm time / layer time. GF = GFLOP/s of the three products. "
        "The 10-wide head is reported, not judged."),
        ("- The CPU columns are the process's CPU time per step (all its threads, spin-waiting "
        "included), which a loaded machine disturbs less than wall time; targets are judged "
        "on wall time. load = the 1-minute load average when the row finished: with 2 threads "
        "on this 2-CPU machine, any other load makes both libraries' spinning thread pools "
        "collapse (10-20x slower steps), so 2-thread rows measured under load say little."),
        "",
        ("| case | threads | ddl | PyTorch | ddl / PyTorch | ddl CPU ms/step | "
        "PyTorch CPU ms/step | CPU ratio | load | target | result |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["group"] == "train":
            lines.append(f"| {r['case'].upper()} train step | {r['threads']} | "
                         f"{r['ddl']:,.0f} img/s | {r['torch']:,.0f} img/s | "
                         f"**{r['ratio']:.2f}x** | {r['ddl_cpu_ms_per_step']:.2f} | "
                         f"{r['torch_cpu_ms_per_step']:.2f} | {r['cpu_ratio']:.2f}x | "
                         f"{r['loadavg_1min_after']:.1f} | "
                         f">= {r['target']:.1f}x | {'pass' if r['pass'] else 'MISS'} |")
    lines += ["", ("| Linear fwd+bwd | threads | raw sgemm x3 | ddl F.linear | "
              "ddl % of raw | (CPU time) | PyTorch F.linear | PyTorch % of raw | target | result |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["group"] == "linear":
            lines.append(
                f"| {r['case']} | {r['threads']} | {r['raw_us']:.1f} us ({r['raw_gflops']:.0f} "
                f"GF) | {r['ddl_us']:.1f} us ({r['ddl']:.0f} GF) | **{r['ratio'] * 100:.0f}%** | "
                f"{r['cpu_ratio'] * 100:.0f}% | "
                f"{r['torch_us']:.1f} us ({r['torch']:.0f} GF) | "
                f"{r['torch'] / r['raw_gflops'] * 100:.0f}% | >= {r['target'] * 100:.0f}% | "
                f"{('pass' if r['pass'] else 'MISS') if r['judged'] else 'n/a'} |")
    judged = [r for r in rows if r.get("judged", True)]
    misses = [r for r in judged if not r["pass"]]
    lines += ["", (f"{len(judged) - len(misses)} of {len(judged)} judged cases meet their "
              "target.")]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter repeats (~1 minute)")
    p.add_argument("--models", nargs="+", default=["mlp", "cnn", "lstm"],
                   choices=["mlp", "cnn", "lstm", "gru"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--only", choices=["train", "linear"],
                   help="run only the training steps or only the Linear vs sgemm part")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--min-time", type=float, default=None)
    p.add_argument("--out", default=str(C.RESULTS),
                   help="folder for bench_train.json and bench_train.md")
    p.add_argument("--update-docs", action="store_true",
                   help="rewrite the 'Training speed' section of docs/benchmarks.md")
    p.add_argument("--sweep", action="store_true",
                   help="run the size/batch/thread sweep instead (benchmarks/_sweep.py)")
    p.add_argument("--sweep-models", nargs="+", choices=["mlp", "cnn", "lstm"], default=None)
    p.add_argument("--sweep-reps", type=int, default=3)
    p.add_argument("--sweep-min-time", type=float, default=0.3)
    args = p.parse_args()
    args.reps = args.reps or (3 if args.quick else 7)
    args.min_time = args.min_time or (0.6 if args.quick else 1.5)

    meta = {
        "date": C.now(),
        "python": platform.python_version(), "numpy": np.__version__, "ddl": ddl.__version__,
        "kernel": platform.release(), "cpu": C.cpu_info(), "blas": ddl.blas_info(),
        "torch": torch_backend(), "quick": args.quick, "reps": args.reps,
        "min_time_s": args.min_time, "threads": args.threads, "batch": BATCH,
        "env": C.blas_env(["MKL_NUM_THREADS"]),
        "loadavg_before": os.getloadavg(),
    }
    print(f"ddl BLAS: {meta['blas']['corename']} ({meta['blas']['config']}); "
          f"PyTorch {meta['torch']['version']} (MKL {meta['torch']['mkl']}, oneDNN "
          f"{meta['torch']['onednn']}, {meta['torch']['cpu_capability']}); "
          f"load {meta['loadavg_before'][0]:.1f}")
    t0 = time.perf_counter()
    if args.sweep:
        return run_sweep(args, meta, t0)
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, WIDTHS)))
    rng = np.random.default_rng(0)
    rows = bench_models(args, rng) if args.only != "linear" else []
    if args.only != "train":
        rows += bench_linear(args, rng)
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_after"] = os.getloadavg()

    md = markdown(rows, meta)
    js, mdp = C.write_results(args.out, "bench_train", {"meta": meta, "results": rows}, md)
    if args.update_docs:
        C.update_docs_written_by(C.DOCS, DOCS_SECTION, "bench_train", md)
    judged = [r for r in rows if r.get("judged", True)]
    misses = [r for r in judged if not r["pass"]]
    print(f"\n{len(judged) - len(misses)}/{len(judged)} pass; {meta['elapsed_s']} s; "
          f"wrote {js} and {mdp}"
          + ("; updated docs/benchmarks.md" if args.update_docs else ""))


def run_sweep(args, meta, t0):
    import _sweep

    rows, peaks = _sweep.run(args, C, ddl, torch, set_threads, openblas_sgemm())
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_after"] = os.getloadavg()
    meta["sgemm_peak_gflops"] = peaks
    md = _sweep.markdown(rows, peaks, meta)
    js, mdp = C.write_results(args.out, "bench_train_sweep", {"meta": meta, "results": rows}, md)
    if args.update_docs:
        C.update_docs_section(C.DOCS, SWEEP_SECTION, (
            f"{SWEEP_SECTION}\n\nWritten by `python benchmarks/bench_train.py --sweep "
            "--update-docs` (raw figures: benchmarks/results/bench_train_sweep.json). "
            + _sweep.__doc__.split("\n\n", 1)[1].strip() + "\n\n" + md))
    print(f"\n{len(rows)} rows; {meta['elapsed_s']} s; wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
