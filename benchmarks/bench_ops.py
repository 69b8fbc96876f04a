#!/usr/bin/env python3
"""bench_ops.py: ddl vs NumPy, side by side in one run: matmul, elementwise ops, import time.

    python benchmarks/bench_ops.py            # ~1-2 minutes
    python benchmarks/bench_ops.py --quick    # ~20 s, fewer repeats (rougher figures)

Prints a table and writes benchmarks/results/bench_ops.json and bench_ops.md.

How it measures (timings on shared machines are noisy):
- Each case times ddl and NumPy alternately (ABBA order) for several repeats; one sample is
  enough back-to-back calls to last ~20 ms. Samples are the calling thread's CPU time by
  default (--clock wall for wall time): both libraries run these ops on the calling thread, and
  CPU time leaves out the time a shared machine's other jobs take; the JSON keeps both clocks. A library's figure is the median of its
  samples; the ratio (NumPy time / ddl time, so > 1 means ddl is faster) is the median of the
  per-repeat ratios, each taken from two samples seconds apart.
- matmul runs with one thread on both sides (ddl.set_num_threads(1) and
  threadpoolctl.threadpool_limits(1)); the OpenBLAS kernel each one ran is recorded.
- Elementwise GB/s counts the bytes of the inputs and the output once each. Every call
  allocates its result, in both libraries (no out=).
- Import time is the wall time of fresh `python -c "import numpy"` vs `python -c "import ddl"`
  processes, interleaved, both from cached bytecode; the figure is the difference of the
  medians (ddl imports NumPy).
- a.T+b adds a transposed view (made once, outside the timing) to a contiguous array.

Targets (from the issue): matmul >= 0.95x NumPy, elementwise >= 1.0x, import <= +30 ms.
"""
import argparse
import gc
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

ROOT = C.ROOT
C.use_source_tree()

import numpy as np  # after use_source_tree: ddl from this checkout, not an installed one

import ddl

try:
    import threadpoolctl
except ImportError:
    raise SystemExit("bench_ops.py needs threadpoolctl: pip install threadpoolctl")

MATMUL_TARGET = 0.95
ELEMENTWISE_TARGET = 1.0
IMPORT_TARGET_MS = 30.0

KIB = 1024
SIZES = [4 * KIB, 256 * KIB, 4 * KIB * KIB, 64 * KIB * KIB]  # bytes of one float32 operand


def size_name(nbytes):
    return f"{nbytes // (KIB * KIB)} MiB" if nbytes >= KIB * KIB else f"{nbytes // KIB} KiB"


# ---- timing ---------------------------------------------------------------------------------


CLOCK = "cpu"  # set by main(): "cpu" (the calling thread's CPU time) or "wall"


def compare(ddl_fn, np_fn, reps, min_time):
    """Interleaved timing of two callables on one thread each.

    Returns (ddl seconds, NumPy seconds, median per-repeat ratio) on CLOCK, and the same on
    the other clock. Thread CPU time leaves out the time other processes take the core away
    (page faults and all work on this thread still count); on an idle machine both agree.
    """
    t_ddl, t_np = C.interleaved([ddl_fn, np_fn], reps, min_time)
    out = {}
    for clock, field in (("wall", "wall"), ("cpu", "thread_cpu")):
        d = [getattr(t, field) for t in t_ddl]
        n = [getattr(t, field) for t in t_np]
        ratio = statistics.median(b / max(a, 1e-12) for a, b in zip(d, n))
        out[clock] = (statistics.median(d), statistics.median(n), ratio)
    other = "wall" if CLOCK == "cpu" else "cpu"
    return out[CLOCK] + out[other]


# ---- cases ----------------------------------------------------------------------------------


def to_ddl(a):
    """A ddl-owned copy of a NumPy array (not a view of NumPy's memory)."""
    return ddl.tensor(a)


def max_rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def bench_matmul(args, rng):
    shapes = [(1, 64, 784, 256), (1, 64, 256, 10), (1, 256, 784, 256), (1, 512, 512, 512),
              (1, 1024, 1024, 1024), (32, 64, 64, 64)]
    rows = []
    for batch, m, k, n in shapes:
        ashape, bshape = ((m, k), (k, n)) if batch == 1 else ((batch, m, k), (batch, k, n))
        a = rng.standard_normal(ashape, dtype=np.float32)
        b = rng.standard_normal(bshape, dtype=np.float32)
        da, db = to_ddl(a), to_ddl(b)
        ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
        err = max(max_rel_err(da @ db, ref), max_rel_err(a @ b, ref))
        t_ddl, t_np, ratio, *other = compare(lambda da=da, db=db: da @ db,
                                             lambda a=a, b=b: a @ b, args.reps, args.min_time)
        flops = 2.0 * batch * m * n * k
        name = f"{m}x{k}x{n}" if batch == 1 else f"({batch},{m},{k})@({batch},{k},{n})"
        rows.append({
            "group": "matmul", "case": name, "size": "float32", "unit": "GFLOP/s",
            "ddl": flops / t_ddl / 1e9, "numpy": flops / t_np / 1e9,
            "ddl_s": t_ddl, "numpy_s": t_np, "ratio": ratio, "target": MATMUL_TARGET,
            "max_rel_err": err, "other_clock": other,
        })
        print_row(rows[-1])
    return rows


def elementwise_cases(nbytes, rng):
    """(name, ddl callable, NumPy callable, bytes moved, reference check) for one size."""
    n = nbytes // 4
    side = round(n ** 0.5)  # every size here is a power of 4: side * side == n
    x = rng.standard_normal(n, dtype=np.float32) * 3
    y = rng.standard_normal(n, dtype=np.float32) * 3
    dx, dy = to_ddl(x), to_ddl(y)
    col = rng.standard_normal((side, 1), dtype=np.float32)
    row = rng.standard_normal((1, side), dtype=np.float32)
    dcol, drow = to_ddl(col), to_ddl(row)
    sq_t = x.reshape(side, side).T  # a transposed (non-contiguous) view
    dsq_t = to_ddl(x.reshape(side, side)).T
    sq2 = y.reshape(side, side)
    dsq2 = to_ddl(sq2)
    e = 4 * n
    return [
        ("a+b", lambda: dx + dy, lambda: x + y, 3 * e),
        ("a*b", lambda: dx * dy, lambda: x * y, 3 * e),
        ("a+scalar", lambda: dx + 1.5, lambda: x + 1.5, 2 * e),
        ("relu", lambda: dx.relu(), lambda: np.maximum(x, 0), 2 * e),
        ("exp", lambda: dx.exp(), lambda: np.exp(x), 2 * e),
        ("tanh", lambda: dx.tanh(), lambda: np.tanh(x), 2 * e),
        ("sigmoid", lambda: dx.sigmoid(), lambda: 1 / (1 + np.exp(-x)), 2 * e),
        (f"({side},1)+(1,{side})", lambda: dcol + drow, lambda: col + row, 4 * (2 * side + n)),
        ("a.T+b", lambda: dsq_t + dsq2, lambda: sq_t + sq2, 3 * e),
    ]


def bench_elementwise(args, rng):
    rows = []
    for nbytes in args.sizes:
        for name, dfn, nfn, moved in elementwise_cases(nbytes, rng):
            err = max_rel_err(dfn(), nfn())
            reps = args.reps if nbytes < 64 * KIB * KIB else max(3, args.reps // 2 | 1)
            t_ddl, t_np, ratio, *other = compare(dfn, nfn, reps, args.min_time)
            rows.append({
                "group": "elementwise", "case": name, "size": size_name(nbytes), "unit": "GB/s",
                "ddl": moved / t_ddl / 1e9, "numpy": moved / t_np / 1e9,
                "ddl_s": t_ddl, "numpy_s": t_np, "ratio": ratio, "target": ELEMENTWISE_TARGET,
                "max_rel_err": err, "other_clock": other,
            })
            print_row(rows[-1])
            gc.collect()
    return rows


def bench_import(args, cache_dir):
    """Wall time of fresh interpreters importing numpy vs ddl (same cwd and environment).

    Both import from cached bytecode, as an installed package does: PYTHONDONTWRITEBYTECODE
    (set in some dev environments) would make every run recompile ddl's .py files but not
    NumPy's installed .pyc. The cache goes to a temporary PYTHONPYCACHEPREFIX, not the tree.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    cmds = {"numpy": [sys.executable, "-c", "import numpy"],
            "ddl": [sys.executable, "-c", "import ddl"]}
    for cmd in cmds.values():  # fill the bytecode cache
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    times = {"numpy": [], "ddl": []}
    cpu = {"numpy": [], "ddl": []}  # user + system time of the child, all its threads
    for r in range(args.import_runs):
        order = ["numpy", "ddl"] if r % 2 == 0 else ["ddl", "numpy"]
        for which in order:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmds[which], cwd=ROOT, env=env, check=True)
            times[which].append(time.perf_counter() - t0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[which].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    cpu_extra = (statistics.median(cpu["ddl"]) - statistics.median(cpu["numpy"])) * 1e3
    # where ddl's extra time goes: -X importtime self times of modules numpy alone doesn't load
    def importtime(mod):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {mod}"],
                             cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        rows = {}
        for line in out.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if m:
                rows[m.group(4)] = (int(m.group(1)), int(m.group(2)))
        return rows
    base = importtime("numpy")
    runs = [importtime("ddl") for _ in range(max(3, args.import_runs // 3))]
    mine = runs[0]
    extra = sorted(((v[0], k) for k, v in mine.items() if k not in base), reverse=True)
    # the import statement alone: ddl's cumulative time minus the NumPy import nested in it
    nested = statistics.median((r["ddl"][1] - r["numpy"][1]) / 1e3 for r in runs)
    row = {
        "group": "import", "case": "import ddl - import numpy", "size": "", "unit": "ms",
        "ddl": med["ddl"], "numpy": med["numpy"], "ddl_s": med["ddl"] / 1e3,
        "numpy_s": med["numpy"] / 1e3, "ratio": None, "target": IMPORT_TARGET_MS,
        "extra_ms": med["ddl"] - med["numpy"], "runs": args.import_runs,
        "importtime_extra_ms": nested, "importtime_runs": len(runs), "cpu_extra_ms": cpu_extra,
        "top_extra_modules_us": [[k, us] for us, k in extra[:6]],
    }
    print_row(row)
    print(f"{'':11}  -X importtime: ddl's import minus the NumPy import inside it: "
          f"{nested:.1f} ms (median of {len(runs)}); process CPU time (all threads): "
          f"+{cpu_extra:.1f} ms")
    return [row]


# ---- report ---------------------------------------------------------------------------------


def passed(row):
    if row["group"] == "import":
        return row["extra_ms"] <= row["target"]
    return row["ratio"] >= row["target"]


def fmt_row(row):
    if row["group"] == "import":
        return [row["group"], row["case"], "", f"{row['ddl']:.1f} ms", f"{row['numpy']:.1f} ms",
                f"+{row['extra_ms']:.1f} ms", f"<= +{row['target']:.0f} ms",
                "pass" if passed(row) else "MISS"]
    return [row["group"], row["case"], row["size"], f"{row['ddl']:.1f} {row['unit']}",
            f"{row['numpy']:.1f} {row['unit']}", f"{row['ratio']:.2f}x",
            f">= {row['target']:.2f}x", "pass" if passed(row) else "MISS"]


HEADER = ["group", "case", "size", "ddl", "NumPy", "ddl/NumPy", "target", ""]
WIDTHS = [11, 26, 8, 16, 16, 10, 11, 4]


def print_row(row):
    print("  ".join(c.ljust(w) for c, w in zip(fmt_row(row), WIDTHS)), flush=True)


def markdown(rows, meta):
    ddl_blas, np_blas = meta["blas"]["ddl"], meta["blas"]["numpy"]
    lines = [
        (f"Measured {meta['date']} on {meta['cpu'].get('model_name', '?')} "
         f"(family {meta['cpu'].get('family', '?')} model {meta['cpu'].get('model', '?')}, "
         f"{meta['cpu']['logical_cpus']} logical CPUs, Linux {meta['kernel']}), "
         f"Python {meta['python']}, NumPy {meta['numpy']}, ddl {meta['ddl']}"
         f"{' (--quick)' if meta['quick'] else ''}. Load average (1 min) "
         f"{meta['loadavg_start'][0]:.1f} at the start, {meta['loadavg_end'][0]:.1f} at the "
         "end."),
        "",
        f"- ddl's OpenBLAS: {ddl_blas['config']}, kernel **{ddl_blas['corename']}**.",
        "- NumPy's OpenBLAS: " + ", ".join(
            f"{p['version']} ({Path(p['filepath']).name}), kernel **{p['architecture']}**"
            for p in np_blas) + ".",
        "- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: "
        + " / ".join(str(meta["blas"]["env"][k]) for k in ("OPENBLAS_CORETYPE",
                                                           "OPENBLAS_L2_SIZE")) + ".",
        (f"- matmul on 1 thread each; median of {meta['reps']} interleaved repeats; "
         "ratio = median of per-repeat NumPy time / ddl time (> 1: ddl faster)."),
        (f"- clock: {meta['clock']} " + ("(the calling thread's CPU time, which leaves out "
         "the time other jobs hold the core; the JSON has the wall-clock figures too)."
         if meta["clock"] == "cpu" else "time (the JSON has thread CPU time too).")),
        ("- elementwise: float32, every call allocates its result; GB/s counts inputs + "
         "output; size is one operand's size."),
        (f"- import: median wall time of {meta['import_runs']} fresh interpreters each, "
         "interleaved, bytecode cached."),
        "",
        "| " + " | ".join(h or "result" for h in HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for r in rows:
        lines.append("| " + " | ".join(fmt_row(r)) + " |")
    imp = [r for r in rows if r["group"] == "import"]
    if imp:
        lines += ["", (f"Import: the wall-time figure is the whole process (start, import, "
                       f"exit), as a user sees it; `-X importtime` puts the import statement "
                       f"itself at {imp[0]['importtime_extra_ms']:.1f} ms over NumPy (ddl's "
                       f"cumulative time minus the NumPy import nested in it, median of "
                       f"{imp[0]['importtime_runs']}); the processes' CPU time (all threads) "
                       f"differs by {imp[0]['cpu_extra_ms']:+.1f} ms. Both wall-time figures "
                       f"grow with the machine's load; CPU time much less.")]
    if imp and imp[0]["top_extra_modules_us"]:
        lines += ["", "Modules `import ddl` loads beyond NumPy's (self time, -X importtime): "
                  + ", ".join(f"{k} {us / 1e3:.1f} ms"
                              for k, us in imp[0]["top_extra_modules_us"]) + "."]
    misses = [r for r in rows if not passed(r)]
    lines += ["", f"{len(rows) - len(misses)} of {len(rows)} cases meet their target."]
    return "\n".join(lines) + "\n"


DOCS_HEADING = "## Tensor ops (bench_ops.py)"

DOCS_NOTES = """\
Before the changes that came with this benchmark (same machine and script, 2026-11-26, wall
clock): exp 0.2-0.6x NumPy, tanh 0.02-0.08x, sigmoid 0.1-0.5x, every 64 MiB op 0.4-0.7x,
a+b/a*b/a+scalar at 4 KiB 0.8x, import +104 ms.

Where the time goes (profiles and timing experiments, 2026-11-26, this 2-vCPU machine):

- Small sizes (4 KiB) are per-call overhead: Python's method call, argument parsing, the
  result's allocation and the Tensor object. ddl's output storage is one malloc (header and
  data), a scalar operand lives on the stack, and operands of the right dtype are borrowed, not
  retained.
- Elementwise kernels are compiled for AVX-512, AVX2+FMA and the baseline (gcc target_clones,
  picked at load), bit-identical on all three.
- exp/tanh/sigmoid (float32) run csrc/vmath.h instead of libm's scalar expf/tanhf (tanhf:
  ~15 ns a value). exp works in float with FMA (<= 1 ulp of glibc, ~0.3 ns a value). tanh and
  sigmoid work in double so that they are correctly rounded but for rare ties: glibc's tanhf is
  itself up to 2 ulp off, and the target is "within 2 ulp of libm". That costs ~1.0 (tanh) and
  ~1.2 ns (sigmoid) a value, where NumPy's SVML-derived tanh (float, table-driven, up to 1 ulp
  off, so up to 3 ulp from glibc) takes ~0.35 ns: tanh stays below NumPy until memory traffic
  dominates. sigmoid has no NumPy ufunc; its NumPy figure is the 4-pass 1/(1+np.exp(-x)),
  which is cheap while the passes stay in L2 (256 KiB) and loses at every other size.
- 64 MiB results are bound by page faults on the fresh output (~2/3 of the time; the same op
  in place is ~3x faster) in both libraries. Storages of 4 MiB or more ask for transparent huge
  pages, as NumPy does, which puts ddl level with NumPy; beating it there would take reusing
  freed blocks (a caching allocator), which neither library does.
- Import: ddl's own import (modules, loading ddl._C and its libraries) is ~15 ms of wall time
  with OPENBLAS_NUM_THREADS=1. The rest is OpenBLAS's worker pool: ddl._C loads a second
  OpenBLAS (scipy-openblas32, next to NumPy's scipy-openblas64), which starts nproc - 1
  workers that spin before they sleep and are joined at exit; on 2 busy vCPUs that took
  ~35 ms of wall time. (NumPy's own pool costs NumPy ~70 ms the same way.)
"""


def update_docs(path, rows, meta):
    """Replace (or append) this benchmark's section of docs/benchmarks.md; keep the others."""
    C.update_docs_section(path, DOCS_HEADING, "\n".join([
        DOCS_HEADING, "",
        ("`python benchmarks/bench_ops.py --update-docs` (raw figures: "
         "benchmarks/results/bench_ops.json; `--quick` for a ~20 s run)."), "",
        markdown(rows, meta).rstrip(), "", DOCS_NOTES.rstrip(), "",
    ]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (~20 s)")
    p.add_argument("--out", default=str(C.RESULTS),
                   help="folder for bench_ops.json and bench_ops.md")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="time matmul/elementwise by the calling thread's CPU time (default: "
                        "robust on a shared machine) or by wall time; the JSON keeps both")
    p.add_argument("--update-docs", action="store_true",
                   help="also write the results into docs/benchmarks.md (its Tensor ops section)")
    p.add_argument("--only", choices=["matmul", "elementwise", "import"], action="append",
                   help="run only these groups (repeatable)")
    args = p.parse_args()
    global CLOCK
    CLOCK = args.clock
    args.reps = 5 if args.quick else 11
    args.min_time = 0.004 if args.quick else 0.02
    args.import_runs = 5 if args.quick else 15
    args.sizes = SIZES
    groups = args.only or ["matmul", "elementwise", "import"]

    ddl.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)
    meta = {
        "date": C.now(),
        "python": platform.python_version(), "numpy": np.__version__, "ddl": ddl.__version__,
        "kernel": platform.release(), "cpu": C.cpu_info(), "blas": C.blas_report(),
        "quick": args.quick, "reps": args.reps, "min_time_s": args.min_time,
        "import_runs": args.import_runs, "threads": 1, "clock": args.clock,
        "loadavg_start": list(os.getloadavg()),
    }
    print(f"ddl OpenBLAS: {meta['blas']['ddl']['corename']} ({meta['blas']['ddl']['config']})")
    for nb in meta["blas"]["numpy"]:
        print(f"NumPy OpenBLAS: {nb['architecture']} ({nb['version']}, {nb['filepath']})")
    print(f"env: {meta['blas']['env']}")
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, WIDTHS)))

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    rows = []
    if "matmul" in groups:
        rows += bench_matmul(args, rng)
    if "elementwise" in groups:
        rows += bench_elementwise(args, rng)
    if "import" in groups:
        with tempfile.TemporaryDirectory(prefix="bench_ops_pycache_") as cache_dir:
            rows += bench_import(args, cache_dir)
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_end"] = list(os.getloadavg())
    for r in rows:
        r["pass"] = passed(r)

    js, md = C.write_results(args.out, "bench_ops", {"meta": meta, "results": rows},
                             markdown(rows, meta))
    if args.update_docs:
        update_docs(C.DOCS, rows, meta)
    misses = [r for r in rows if not r["pass"]]
    print(f"\n{len(rows) - len(misses)}/{len(rows)} pass; {meta['elapsed_s']} s; "
          f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
