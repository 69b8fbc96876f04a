"""What the bench_*.py scripts share: timing, the environment report, data, results and docs.

Only the standard library is imported here at load time: bench_allreduce.py's driver never
imports ddl, and bench_ddp.py's workers import only the library they measure (their start-up
time and memory are part of the figures). ddl, NumPy and threadpoolctl are imported inside the
functions that need them.

    import _common as C
    C.use_source_tree()                          # benchmark ./ddl (an in-place build) if any
    a, b = C.interleaved([f, g], reps=7, min_time=0.02)    # samples, ABBA order
    C.update_docs_section(C.ROOT / "docs" / "benchmarks.md", "## X (bench_x.py)", text)
"""
import datetime
import gc
import json
import os
import platform
import re
import sys
import time
from collections import namedtuple
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
# the OpenBLAS (and thread-count) variables every report records
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def use_source_tree():
    """Import ddl from this checkout (an in-place build) when it has one, not an installed one."""
    if (ROOT / "ddl" / "__init__.py").exists() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def use_examples():
    """Make examples/ importable (fashion_common, fashion_models)."""
    path = str(ROOT / "examples")
    if path not in sys.path:
        sys.path.insert(0, path)


# ---- timing ---------------------------------------------------------------------------------

# seconds per call of one sample, on three clocks: wall time, the calling thread's CPU time
# (leaves out the time other jobs hold the core) and the whole process's CPU time (all threads)
Sample = namedtuple("Sample", ["wall", "thread_cpu", "cpu"])


def calibrate(fn, min_time):
    """Calls per sample so that one sample lasts at least min_time seconds."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_time / max(dt, 1e-9) * 1.2))


def sample(fn, number):
    """One Sample of `number` back-to-back calls of fn."""
    w0, t0, c0 = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(number):
        fn()
    w1, t1, c1 = time.perf_counter(), time.thread_time(), time.process_time()
    return Sample((w1 - w0) / number, (t1 - t0) / number, (c1 - c0) / number)


def interleaved(fns, reps, min_time, warmup=1):
    """Samples of each callable in fns, taking turns in ABBA order (even repeats in the given
    order, odd ones reversed) so that drift and other load fall on all of them alike; one
    sample lasts >= min_time. Returns one list of Samples per callable. The garbage collector
    is off while timing (the libraries free tensors by refcount)."""
    for _ in range(warmup):  # first-touch allocations, code paths
        for fn in fns:
            fn()
    numbers = [calibrate(fn, min_time) for fn in fns]
    out = [[] for _ in fns]
    order = list(range(len(fns)))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            for i in (order if r % 2 == 0 else order[::-1]):
                out[i].append(sample(fns[i], numbers[i]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def training_step(model, opt, loss_fn, batches, it=None):
    """A function running one training step (forward, loss, zero_grad, backward, optimizer
    step) on the next of `batches` ((x, y) pairs), cycling. `it` ({"i": 0}) may be shared by
    several such functions so that they walk the batches together."""
    it = {"i": 0} if it is None else it

    def step():
        x, y = batches[it["i"] % len(batches)]
        it["i"] += 1
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# ---- data -----------------------------------------------------------------------------------


def synthetic_batches(rng, n_batches, batch, pixels=False):
    """Fashion-MNIST-shaped batches in memory: xs (batch, 1, 28, 28) float32, ys int64 labels.
    pixels=True: normalized random pixel values, as the examples feed; else N(0, 1)."""
    import numpy as np

    if pixels:
        xs = [(rng.integers(0, 256, (batch, 1, 28, 28)).astype(np.float32) / 255.0 - 0.286)
              / 0.353 for _ in range(n_batches)]
    else:
        xs = [rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
              for _ in range(n_batches)]
    ys = [rng.integers(0, 10, batch).astype(np.int64) for _ in range(n_batches)]
    return xs, ys


# ---- the environment ------------------------------------------------------------------------


def now():
    """The local time, ISO 8601 with its offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_info():
    """The CPU from /proc/cpuinfo: model name, family, model, SIMD flags; transparent huge
    pages."""
    info = {"processor": platform.processor(), "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for key, name in [("model name", "model_name"), ("cpu family", "family"),
                          ("model", "model")]:
            m = re.search(rf"^{key}\s*:\s*(.*)$", text, re.MULTILINE)
            if m:
                info[name] = m.group(1).strip()
        m = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
        if m:
            flags = set(m.group(1).split())
            info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                            if f in flags]
    except OSError:
        pass
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
        info["transparent_hugepages"] = thp
    except OSError:
        pass
    return info


def cpu_name(info=None):
    """'model name (family F model M)' for a report line."""
    info = info or cpu_info()
    if "model_name" not in info:
        return info.get("processor") or platform.machine() or "?"
    return (f"{info['model_name']} (family {info.get('family', '?')} model "
            f"{info.get('model', '?')})")


def cpu_pressure():
    """Linux's CPU pressure (some, avg10, %), or None."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(re.search(r"avg10=([\d.]+)", line).group(1))
    except (OSError, AttributeError, IndexError, ValueError):
        return None


def blas_env(extra=()):
    """The OpenBLAS and thread-count environment variables (None where unset)."""
    return {k: os.environ.get(k) for k in BLAS_ENV + tuple(extra)}


def blas_report():
    """Which OpenBLAS ddl and NumPy run, from the libraries themselves: ddl._C.blas_info()
    (config, corename) and threadpoolctl's view of the loaded BLAS pools, if installed."""
    import ddl

    keep = ("internal_api", "version", "architecture", "filepath", "num_threads")
    try:
        import threadpoolctl
    except ImportError:
        pools = []
    else:
        pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    return {
        "ddl": dict(ddl.blas_info(), threadpoolctl=[{k: p.get(k) for k in keep} for p in pools
                                                    if "numpy" not in p["filepath"]]),
        "numpy": [{k: p.get(k) for k in keep} for p in pools if "numpy" in p["filepath"]],
        "env": blas_env(),
    }


def package_version(name):
    """An installed distribution's version without importing it, or None."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def torch_missing(what):
    """None if PyTorch imports here, else the line saying what is skipped without it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return f"PyTorch is not installed: {what} (pip install torch for a CPU build)"
    return None


# ---- results --------------------------------------------------------------------------------


def write_results(out, name, payload, md, json_text=None):
    """out/name.json (payload, or json_text as given) and out/name.md; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{name}.json", out / f"{name}.md"
    paths[0].write_text(json_text if json_text is not None else json.dumps(payload, indent=1))
    paths[1].write_text(md)
    return paths


def update_docs_section(path, heading, section):
    """Put `section` (markdown starting with the line `heading`) in place of that section of
    the file at path (up to the next "## " heading), or append it; the rest stays as it is."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = section.rstrip("\n") + "\n"
    m = re.search(rf"^{re.escape(heading)}$", text, re.MULTILINE)
    if m is None:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    nxt = re.search(r"^## ", text[m.end():], re.MULTILINE)
    rest = text[m.end() + nxt.start():] if nxt else ""
    path.write_text(text[:m.start()] + section + ("\n" + rest if rest else ""))


def update_docs_written_by(path, heading, script, md_body):
    """update_docs_section with the usual opening: which command writes the section (`python
    benchmarks/<script>.py --update-docs`) and where its raw figures are."""
    update_docs_section(path, heading, (
        f"{heading}\n\nWritten by `python benchmarks/{script}.py --update-docs` (raw figures: "
        f"benchmarks/results/{script}.json).\n\n" + md_body))
