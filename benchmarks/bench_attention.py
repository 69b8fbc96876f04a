#!/usr/bin/env python3
"""bench_attention.py: MultiheadAttention and a TransformerEncoderLayer, forward + backward,
ddl vs PyTorch at 1 thread, sequence lengths 64 to 1024; and the peak memory of ddl's fused
attention kernel against its naive twin (which materializes the (L, L) score matrix).

    python benchmarks/bench_attention.py            # a few minutes
    python benchmarks/bench_attention.py --quick    # fewer lengths and repeats

Prints a table and writes benchmarks/results/bench_attention.json and .md.

How it measures:
- Both libraries run one thread (ddl.set_num_threads(1), torch.set_num_threads(1)); d_model
  256, 4 heads, batch 4 (batch_first), need_weights=False, dropout 0, float32, the same
  weights (PyTorch's state_dict loaded into ddl's module). One call is a forward, the sum of
  the output and a backward; samples alternate between the libraries (ABBA), each the median
  of its samples' thread CPU time. Ratio = PyTorch time / ddl time (> 1: ddl is faster).
- Memory: one fresh process per (kernel, length) runs a forward + backward of one head
  (D = 64) twice and reports the second run's peak RSS (VmHWM, reset through
  /proc/self/clear_refs) minus the RSS before it: what one call needs beyond its inputs.
Target (from the issue): ddl >= 1.3x PyTorch at 1 thread; fused memory linear in L.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys

import _common as C

C.use_source_tree()

import numpy as np

import ddl


def _pair(kind, L, torch):
    E, H, N = 256, 4, 4
    if kind == "mha":
        theirs = torch.nn.MultiheadAttention(E, H, batch_first=True)
        ours = ddl.nn.MultiheadAttention(E, H, batch_first=True)
    else:
        theirs = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=4 * E, dropout=0.0,
                                                  batch_first=True)
        ours = ddl.nn.TransformerEncoderLayer(E, H, dim_feedforward=4 * E, dropout=0.0,
                                              batch_first=True)
    ours.load_state_dict({k: ddl.tensor(v.detach().numpy().copy())
                          for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((N, L, E)).astype(np.float32)
    ox, tx = ddl.tensor(x).requires_grad_(), torch.tensor(x, requires_grad=True)

    def run_ours():
        out = ours(ox, ox, ox, need_weights=False)[0] if kind == "mha" else ours(ox)
        out.sum().backward()

    def run_theirs():
        out = theirs(tx, tx, tx, need_weights=False)[0] if kind == "mha" else theirs(tx)
        out.sum().backward()

    return run_ours, run_theirs


def _memory(kernel, L):
    code = f"""
import sys
sys.path.insert(0, {str(C.ROOT)!r})
import numpy as np, ddl
from ddl.nn import attention as A
rng = np.random.default_rng(0)
q, k, v = (ddl.tensor(rng.standard_normal((1, 1, {L}, 64)).astype(np.float32)).requires_grad_()
           for _ in range(3))
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
f = A._sdpa_naive if {kernel!r} == "naive" else A.scaled_dot_product_attention
f(q, k, v).sum().backward()  # warm up: first-use allocations of the library
base = rss()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
f(q, k, v).sum().backward()
print(hwm() - base)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip()) / 1024.0  # MiB


def torch_backend(torch):
    """PyTorch's version and CPU kernels (MKL, oneDNN, capability), as bench_train.py reports."""
    cfg = torch.__config__.show()
    mkl = re.search(r"Intel\(R\) (?:oneAPI )?Math Kernel Library Version ([^\n]*)", cfg)
    dnnl = re.search(r"(?:oneDNN|MKL-DNN)[^\n]*?(v[\d.]+)", cfg)
    return {"version": torch.__version__, "mkl": mkl.group(1).strip() if mkl else None,
            "onednn": dnnl.group(1) if dnnl else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def environment(meta):
    """The opening lines of the report: when, where, which libraries, how loaded."""
    cpu, tb, blas = meta["cpu"], meta["torch"], meta["blas"]
    return [
        (f"Measured {meta['date']} on {cpu.get('model_name', '?')} (family "
         f"{cpu.get('family', '?')} model {cpu.get('model', '?')}, {cpu['logical_cpus']} "
         f"logical CPUs, shared; load average {meta['loadavg_before'][0]:.1f} before, "
         f"{meta['loadavg_after'][0]:.1f} after), Python {meta['python']}, ddl {meta['ddl']}, "
         f"PyTorch {tb['version']}{' (--quick)' if meta['quick'] else ''}."),
        "",
        (f"- ddl's BLAS: {blas['config']}, kernel **{blas['corename']}**. PyTorch: MKL "
         f"{tb['mkl']}, oneDNN {tb['onednn']}, CPU capability {tb['cpu_capability']}. "
         "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: "
         + " / ".join(str(meta["env"][k]) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
         + "."),
        ("- 1 thread each; d_model 256, 4 heads, batch 4, batch_first, need_weights=False, "
         "dropout 0, float32, the same weights. One call = forward, sum, backward. Median of "
         f"{meta['reps']} interleaved (ABBA) samples of the calling thread's CPU time; "
         "torch/ddl > 1: ddl is faster (target >= 1.3). load = the 1-minute load average "
         "when the row finished."),
        "",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(C.RESULTS))
    ap.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 64..1024)")
    ap.add_argument("--cases", nargs="+", choices=["mha", "encoder_layer"],
                    default=["mha", "encoder_layer"])
    ap.add_argument("--no-memory", action="store_true", help="skip the memory part")
    args = ap.parse_args()
    missing = C.torch_missing("the ddl vs PyTorch comparison")
    if missing:
        print(missing)
        return
    import torch

    torch.set_num_threads(1)
    ddl.set_num_threads(1)
    lengths = args.lengths or ([64, 256] if args.quick else [64, 128, 256, 512, 1024])
    reps = 3 if args.quick else 5
    meta = {"date": C.now(), "python": platform.python_version(), "ddl": ddl.__version__,
            "cpu": C.cpu_info(), "blas": ddl.blas_info(), "torch": torch_backend(torch),
            "env": C.blas_env(), "quick": args.quick, "reps": reps,
            "loadavg_before": os.getloadavg()}
    print(f"ddl BLAS: {meta['blas']['corename']}; PyTorch {meta['torch']['version']}; load "
          f"{meta['loadavg_before'][0]:.1f}", flush=True)
    rows = []
    for kind in args.cases:
        for L in lengths:
            ours, theirs = _pair(kind, L, torch)
            a, b = C.interleaved([ours, theirs], reps=reps, min_time=0.05)
            t_ours = statistics.median(s.thread_cpu for s in a)
            t_theirs = statistics.median(s.thread_cpu for s in b)
            rows.append({"case": kind, "L": L, "ddl_ms": t_ours * 1e3,
                         "torch_ms": t_theirs * 1e3, "ratio": t_theirs / t_ours,
                         "loadavg_1min_after": os.getloadavg()[0]})
            print(f"{kind:14s} L={L:5d}  ddl {t_ours * 1e3:8.2f} ms  torch "
                  f"{t_theirs * 1e3:8.2f} ms  torch/ddl {t_theirs / t_ours:5.2f}  load "
                  f"{rows[-1]['loadavg_1min_after']:.1f}", flush=True)
    mem = []
    for L in [] if args.no_memory else ([512, 2048] if args.quick else [512, 1024, 2048, 4096]):
        f, n = _memory("fused", L), _memory("naive", L)
        mem.append({"L": L, "fused_mib": f, "naive_mib": n})
        print(f"memory L={L:5d}  fused {f:7.1f} MiB  naive {n:7.1f} MiB", flush=True)
    meta["loadavg_after"] = os.getloadavg()
    md = environment(meta)
    md += ["| case | L | ddl ms | torch ms | torch/ddl | load |", "|---|---|---|---|---|---|"]
    md += [f"| {r['case']} | {r['L']} | {r['ddl_ms']:.2f} | {r['torch_ms']:.2f} | "
           f"{r['ratio']:.2f} | {r['loadavg_1min_after']:.1f} |" for r in rows]
    md += ["", "| L | fused peak MiB | naive peak MiB |", "|---|---|---|"]
    md += [f"| {m['L']} | {m['fused_mib']:.1f} | {m['naive_mib']:.1f} |" for m in mem]
    payload = {"meta": meta, "times": rows, "memory": mem}
    C.write_results(args.out, "bench_attention", payload, "\n".join(md) + "\n",
                    json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
