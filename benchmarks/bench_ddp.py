#!/usr/bin/env python3
"""bench_ddp.py: data-parallel training speed of ddl's DistributedDataParallel vs PyTorch's.

    python benchmarks/bench_ddp.py                # ~6-7 minutes
    python benchmarks/bench_ddp.py --quick        # ~2 minutes (rougher figures)
    python benchmarks/bench_ddp.py --update-docs  # also rewrite the "## DDP (bench_ddp.py)"
                                                  # section of docs/benchmarks.md

Prints a table and writes benchmarks/results/bench_ddp.json and bench_ddp.md.

What runs: the MLP and the CNN of examples/fashion_common.py (PyTorch: the same layers, checked
shape by shape), batch 64 per rank, Adam(lr=1e-3), 1 BLAS / intra-op thread per rank, on 1 and
on 2 ranks. Every run is a fresh job of real processes started through `python -m ddl.run`
(the same launcher for both libraries: it only sets RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT and the thread variables; PyTorch joins with init_process_group("gloo",
"env://")). Data: 8 synthetic Fashion-MNIST-shaped batches per rank held in memory (no data
loading is timed). The libraries alternate run by run (ddl, torch, torch, ddl, ...); figures
are medians.

Each rank, in one job:
 1. records wall-clock times from the parent's launch timestamp (DDP_BENCH_T0): worker start,
    after imports, after init_process_group, after building + wrapping the model, after the
    first training step (forward, loss, zero_grad, backward, optimizer step);
 2. warms up, then agrees with the other ranks on a step count per timing segment;
 3. reads its peak RSS (getrusage ru_maxrss) -- only the DDP model exists at this point;
 4. builds a second, unwrapped copy of the same model (plain ddl.nn / torch.nn, its own Adam)
    and alternates timed segments: DDP steps, then the same steps without DDP (no
    communication), ABBA, all ranks in lockstep (a barrier before each segment, so both ranks
    compete for the CPUs the same way in both kinds of segment);
 5. times the phases (forward+loss, zero_grad, backward, optimizer) of a few more steps of
    each kind, and for ddl the buckets' allreduce start/end times.

Reported: images/s over all ranks (batch x ranks / the slowest rank's step time), the DDP step
against the no-communication step (overlap: 1.00 = communication fully hidden), peak RSS per
rank, launch -> end of first step. Targets (issue 10): 2 ranks, MLP >= 2.0x PyTorch DDP img/s
and CNN >= 1.5x; DDP step <= 1.25x the step without communication for the MLP, <= 1.05x for the
CNN; 4 ranks on this machine: MLP img/s >= 0.9x the 2-rank figure (no
collapse).

ddl's process group uses its default transport: shared memory when the ranks share a host
(reported per rank under "threads"/"transport"); DDL_COMM_TRANSPORT=gloo in the environment
measures the Gloo path instead. `--ranks 1 2` leaves out the 4-rank case.

Internal: `--worker ddl|torch` is the per-rank entry point the launcher runs.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # the standard library only

_T_WORKER_START = time.time()  # a worker's start (after the interpreter and the stdlib imports)

ROOT = C.ROOT
BATCH = 64
N_BATCHES = 8
LR = 1e-3
MODELS = ("mlp", "cnn")
DOCS_SECTION = "## DDP (bench_ddp.py)"
# issue 10's targets
TARGET_VS_TORCH = {"mlp": 2.0, "cnn": 1.5}  # 2-rank img/s, ddl / PyTorch DDP
TARGET_OVERLAP = {"mlp": 1.25, "cnn": 1.05}  # 2-rank DDP step / no-communication step
TARGET_NO_COLLAPSE = 0.9    # MLP 4-rank img/s / 2-rank img/s
THREAD_VARS = ("DDL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# =============================================================================================
# worker side (one process per rank; imports only the library it benchmarks)
# =============================================================================================


class _Lib:
    """What a worker asks of the library it measures; the subclasses import it."""

    name = ""

    def init(self):
        raise NotImplementedError

    def build(self, name, seed):
        """examples/fashion_models.py's model, on this library's nn."""
        self.seed(seed)
        return self.fm.build(self.models, name)

    def wrap(self, model):
        return self.DDP(model)

    def optimizer(self, model):
        return self.optim.Adam(model.parameters(), lr=LR)

    def data(self, xs, ys):
        return [(self.lib.from_numpy(x), self.lib.from_numpy(y)) for x, y in zip(xs, ys)]

    def loss(self, out, y):
        return self.F.cross_entropy(out, y)

    def barrier(self):
        self.dist.barrier()

    def param_shapes(self, model):
        return [[n, list(p.shape)] for n, p in model.named_parameters()]

    def now_us(self):
        return None

    def buckets(self, ddp):
        return None

    def finish(self):
        self.dist.destroy_process_group()


class DDLLib(_Lib):
    name = "ddl"

    def __init__(self):
        C.use_examples()
        import fashion_models
        import numpy as np

        import ddl
        import ddl.distributed as dist
        import ddl.nn.functional as F
        import ddl.optim
        from ddl.nn.parallel import DistributedDataParallel

        self.np, self.lib, self.dist, self.F, self.optim = np, ddl, dist, F, ddl.optim
        self.DDP, self.fm = DistributedDataParallel, fashion_models
        self.models, self.seed = fashion_models.model_classes(ddl.nn), ddl.manual_seed

    def init(self):
        self.dist.init_process_group("gloo")
        self.lib.set_num_threads(1)
        return self.dist.get_rank(), self.dist.get_world_size()

    def threads(self):
        # (with the group's transport: shared memory on one host unless DDL_COMM_TRANSPORT)
        return {"ddl.get_num_threads": self.lib.get_num_threads(),
                "blas": self.lib.blas_info()["corename"],
                "transport": self.dist.get_backend_info()["transport"]}

    def allreduce_max(self, value):
        a = self.np.array([value], dtype=self.np.float64)
        self.dist.all_reduce(a, op=self.dist.ReduceOp.MAX)
        return float(a[0])

    def now_us(self):
        return self.lib._C.now_us()

    def buckets(self, ddp):
        return [(len(names), s, e) for names, s, e in ddp.bucket_info()]


class TorchLib(_Lib):
    name = "torch"

    def __init__(self):
        C.use_examples()
        import fashion_models
        import torch
        import torch.distributed as dist
        import torch.nn.functional as F
        from torch.nn.parallel import DistributedDataParallel

        self.lib, self.dist, self.F, self.optim = torch, dist, F, torch.optim
        self.DDP, self.fm = DistributedDataParallel, fashion_models
        self.models, self.seed = fashion_models.model_classes(torch.nn), torch.manual_seed

    def init(self):
        self.dist.init_process_group("gloo", init_method="env://")
        self.lib.set_num_threads(1)
        return self.dist.get_rank(), self.dist.get_world_size()

    def threads(self):
        return {"torch.get_num_threads": self.lib.get_num_threads(),
                "torch.get_num_interop_threads": self.lib.get_num_interop_threads(),
                "cpu_capability": self.lib.backends.cpu.get_cpu_capability()}

    def allreduce_max(self, value):
        t = self.lib.tensor([value], dtype=self.lib.float64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return float(t[0])


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(args):
    t0 = float(os.environ["DDP_BENCH_T0"])
    marks = {"worker_start": _T_WORKER_START - t0}
    lib = (DDLLib if args.worker == "ddl" else TorchLib)()
    import numpy as np

    marks["imported"] = time.time() - t0
    rank, world = lib.init()
    marks["process_group"] = time.time() - t0
    model = lib.build(args.model, 0)
    ddp = lib.wrap(model)
    opt = lib.optimizer(ddp)
    xs, ys = C.synthetic_batches(np.random.default_rng(1000 + rank), N_BATCHES, BATCH,
                                 pixels=True)
    data = lib.data(xs, ys)
    marks["model_ready"] = time.time() - t0
    it = {"i": 0}  # one walk through the batches for every kind of step

    def stepper(m, o):
        return C.training_step(m, o, lib.loss, data, it)

    ddp_step = stepper(ddp, opt)
    ddp_step()
    marks["first_step"] = time.time() - t0
    cpu_first = time.process_time()  # this process's CPU seconds (all threads) until then
    for _ in range(args.warmup):
        ddp_step()

    # a step count per segment that every rank agrees on (DDP steps must match across ranks)
    lib.barrier()
    t = time.perf_counter()
    for _ in range(3):
        ddp_step()
    per = lib.allreduce_max((time.perf_counter() - t) / 3)
    n_steps = int(min(2000, max(3, args.seg_time / max(per, 1e-6))))
    rss_ddp = rss_mb()  # peak RSS with only the DDP model (and its optimizer) alive

    local = lib.build(args.model, 0)
    local_opt = lib.optimizer(local)
    local_step = stepper(local, local_opt)
    for _ in range(max(2, args.warmup // 2)):
        local_step()

    cpu = {"ddp": [], "local": []}

    def segment(step, kind):
        lib.barrier()
        c = time.process_time()
        t = time.perf_counter()
        for _ in range(n_steps):
            step()
        dt = (time.perf_counter() - t) / n_steps
        cpu[kind].append((time.process_time() - c) / n_steps)
        return dt

    t_ddp, t_local = [], []
    for p in range(args.pairs):
        if p % 2 == 0:
            t_ddp.append(segment(ddp_step, "ddp"))
            t_local.append(segment(local_step, "local"))
        else:
            t_local.append(segment(local_step, "local"))
            t_ddp.append(segment(ddp_step, "ddp"))

    # phase breakdown (a separate pass: the timestamps themselves cost a little)
    n_phase = min(args.phase_steps, max(3, n_steps))

    def phases(m, o, ddp_model=None):
        rows = []
        for _ in range(n_phase):
            x, y = data[it["i"] % N_BATCHES]
            it["i"] += 1
            a = time.perf_counter()
            loss = lib.loss(m(x), y)
            b = time.perf_counter()
            o.zero_grad()
            c = time.perf_counter()
            us0 = lib.now_us()
            loss.backward()
            us1 = lib.now_us()
            d = time.perf_counter()
            o.step()
            e = time.perf_counter()
            row = {"forward": b - a, "zero_grad": c - b, "backward": d - c, "optimizer": e - d}
            if ddp_model is not None and us0 is not None:
                bk = lib.buckets(ddp_model)
                row["buckets"] = [[n, (s - us0) / 1e6, (t_ - us0) / 1e6] for n, s, t_ in bk]
                row["backward_s"] = (us1 - us0) / 1e6
            rows.append(row)
        return rows

    lib.barrier()
    ph_ddp = phases(ddp, opt, ddp)
    lib.barrier()
    ph_local = phases(local, local_opt)
    lib.barrier()

    out = {
        "lib": lib.name, "model": args.model, "rank": rank, "world": world,
        "marks": marks, "cpu_to_first_step_s": cpu_first, "steps_per_segment": n_steps,
        "ddp_step_s": t_ddp, "local_step_s": t_local,
        "ddp_cpu_s": cpu["ddp"], "local_cpu_s": cpu["local"],
        "rss_ddp_mb": rss_ddp, "rss_end_mb": rss_mb(),
        "phases_ddp": ph_ddp, "phases_local": ph_local,
        "params": lib.param_shapes(model), "threads": lib.threads(),
        "env": {k: os.environ.get(k) for k in THREAD_VARS},
    }
    print("BENCH_RESULT " + json.dumps(out), flush=True)
    lib.finish()


# =============================================================================================
# parent side
# =============================================================================================


def launch(lib, model, nranks, args):
    """One job: `python -m ddl.run --nproc-per-node N bench_ddp.py --worker LIB ...`; returns
    the ranks' result dicts (sorted by rank) and the job's wall time."""
    env = os.environ.copy()
    for k in THREAD_VARS:
        env[k] = "1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    cmd = [sys.executable, "-m", "ddl.run", "--nproc-per-node", str(nranks),
           str(Path(__file__).resolve()), "--worker", lib, "--model", model,
           "--seg-time", str(args.seg_time), "--pairs", str(args.pairs),
           "--warmup", str(args.warmup), "--phase-steps", str(args.phase_steps)]
    t0 = time.time()
    env["DDP_BENCH_T0"] = repr(t0)
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False,
                          text=True, timeout=600, cwd=str(ROOT))
    wall = time.time() - t0
    results = []
    for line in proc.stdout.splitlines():
        i = line.find("BENCH_RESULT ")
        if i >= 0:
            results.append(json.loads(line[i + len("BENCH_RESULT "):]))
    if proc.returncode != 0 or len(results) != nranks:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{lib} {model} x{nranks}: the job failed (exit {proc.returncode})")
    return sorted(results, key=lambda r: r["rank"]), wall


def summarize_run(ranks, wall):
    """One job's figures: the slowest rank per segment, then the median over segments."""
    world = ranks[0]["world"]
    n_seg = len(ranks[0]["ddp_step_s"])
    ddp = [max(r["ddp_step_s"][i] for r in ranks) for i in range(n_seg)]
    loc = [max(r["local_step_s"][i] for r in ranks) for i in range(n_seg)]
    ph = {}
    for kind in ("phases_ddp", "phases_local"):
        ph[kind] = {k: statistics.median(max(r[kind][j][k] for r in ranks)
                                          for j in range(len(ranks[0][kind])))
                    for k in ("forward", "zero_grad", "backward", "optimizer")}
    marks = {k: max(r["marks"][k] for r in ranks) for k in ranks[0]["marks"]}
    out = {
        "world": world,
        "ddp_step_ms": 1e3 * statistics.median(ddp),
        "local_step_ms": 1e3 * statistics.median(loc),
        "overlap": statistics.median(a / b for a, b in zip(ddp, loc)),
        "ddp_img_s": world * BATCH / statistics.median(ddp),
        "local_img_s": world * BATCH / statistics.median(loc),
        "rss_mb": max(r["rss_ddp_mb"] for r in ranks),
        "rss_end_mb": max(r["rss_end_mb"] for r in ranks),
        "first_step_s": marks["first_step"], "marks": marks,
        "cpu_to_first_step_s": max(r["cpu_to_first_step_s"] for r in ranks),
        # CPU seconds per step per rank (all the process's threads): load-independent-ish
        "ddp_cpu_ms": 1e3 * statistics.median(statistics.median(r["ddp_cpu_s"]) for r in ranks),
        "local_cpu_ms": 1e3 * statistics.median(statistics.median(r["local_cpu_s"])
                                                for r in ranks),
        "phases_ms": {k: {p: 1e3 * v for p, v in d.items()} for k, d in ph.items()},
        "segments_ddp_ms": [round(1e3 * t, 3) for t in ddp],
        "segments_local_ms": [round(1e3 * t, 3) for t in loc],
        "steps_per_segment": ranks[0]["steps_per_segment"], "job_wall_s": wall,
        "threads": ranks[0]["threads"], "env": ranks[0]["env"],
    }
    bk = [row for r in ranks for row in r["phases_ddp"] if "buckets" in row]
    if bk:
        # ddl: how much of backward is left after the last bucket's allreduce was launched,
        # and how long the allreduces took (rank 0's view, medians over the phase steps)
        r0 = [row for row in ranks[0]["phases_ddp"] if "buckets" in row]
        out["buckets"] = {
            "count": len(r0[0]["buckets"]),
            "params_per_bucket": [b[0] for b in r0[0]["buckets"]],
            "allreduce_ms": [1e3 * statistics.median(row["buckets"][i][2] - row["buckets"][i][1]
                                                     for row in r0)
                             for i in range(len(r0[0]["buckets"]))],
            "start_in_backward_ms": [1e3 * statistics.median(row["buckets"][i][1] for row in r0)
                                     for i in range(len(r0[0]["buckets"]))],
            "backward_ms": 1e3 * statistics.median(row["backward_s"] for row in r0),
        }
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def aggregate(runs):
    """runs[(lib, model, world)] = [per-job summaries]; medians over jobs."""
    agg = {}
    for key, jobs in runs.items():
        a = {k: med([j[k] for j in jobs]) for k in
             ("ddp_step_ms", "local_step_ms", "overlap", "ddp_img_s", "local_img_s", "rss_mb",
              "rss_end_mb", "first_step_s", "job_wall_s", "cpu_to_first_step_s",
              "ddp_cpu_ms", "local_cpu_ms")}
        a["marks"] = {k: med([j["marks"][k] for j in jobs]) for k in jobs[0]["marks"]}
        a["phases_ms"] = {kind: {p: med([j["phases_ms"][kind][p] for j in jobs])
                                 for p in jobs[0]["phases_ms"][kind]}
                          for kind in jobs[0]["phases_ms"]}
        if "buckets" in jobs[0]:
            a["buckets"] = jobs[len(jobs) // 2]["buckets"]
        a["jobs"] = len(jobs)
        agg[key] = a
    return agg


def paired_ratio(runs, model, world, field, inverse=False):
    """Median over repeats of ddl/torch (torch/ddl with inverse) for one field (the jobs of
    repeat i ran back to back)."""
    d, t = runs.get(("ddl", model, world), []), runs.get(("torch", model, world), [])
    return med([(b[field] / a[field]) if inverse else (a[field] / b[field])
                for a, b in zip(d, t)])


def judge(runs, agg, have_torch):
    checks = []

    def add(name, value, target, op, note=""):
        ok = None if value is None or math.isnan(value) else (
            value >= target if op == ">=" else value <= target)
        checks.append({"check": name, "value": value, "target": target, "op": op,
                       "pass": ok, "note": note})

    for m in MODELS:
        d2 = agg.get(("ddl", m, 2))
        if d2 is None:
            continue
        if have_torch:
            add(f"{m.upper()} 2-rank img/s, ddl / PyTorch DDP",
                paired_ratio(runs, m, 2, "ddp_img_s"), TARGET_VS_TORCH[m], ">=")
        t2 = agg.get(("torch", m, 2))
        add(f"{m.upper()} 2-rank DDP step / step without communication", d2["overlap"],
            TARGET_OVERLAP[m], "<=", f"PyTorch: {t2['overlap']:.2f}x" if t2 else "")
    if ("ddl", "mlp", 2) in agg and ("ddl", "mlp", 4) in agg:
        v = agg[("ddl", "mlp", 4)]["ddp_img_s"] / agg[("ddl", "mlp", 2)]["ddp_img_s"]
        t2, t4 = agg.get(("torch", "mlp", 2)), agg.get(("torch", "mlp", 4))
        add("MLP 4-rank img/s / 2-rank img/s (no collapse)", v, TARGET_NO_COLLAPSE, ">=",
            f"PyTorch: {t4['ddp_img_s'] / t2['ddp_img_s']:.2f}x" if t2 and t4 else "")
    return checks


def table_rows(runs, agg, have_torch):
    rows = []
    for m in MODELS:
        for w in (1, 2, 4):
            d = agg.get(("ddl", m, w))
            t = agg.get(("torch", m, w)) or {}
            if d is None:
                continue
            rows.append({
                "case": f"{m.upper()} x{w}",
                "ddl_img_s": d["ddp_img_s"], "torch_img_s": t.get("ddp_img_s"),
                "ratio": paired_ratio(runs, m, w, "ddp_img_s") if t else None,
                "ddl_step_ms": d["ddp_step_ms"], "ddl_nocomm_ms": d["local_step_ms"],
                "ddl_overlap": d["overlap"], "torch_overlap": t.get("overlap"),
                "ddl_rss": d["rss_mb"], "torch_rss": t.get("rss_mb"),
                "ddl_first": d["first_step_s"], "torch_first": t.get("first_step_s"),
                "ddl_first_cpu": d["cpu_to_first_step_s"],
                "torch_first_cpu": t.get("cpu_to_first_step_s"),
                "ddl_cpu_ms": d["ddp_cpu_ms"], "ddl_nocomm_cpu_ms": d["local_cpu_ms"],
                "torch_cpu_ms": t.get("ddp_cpu_ms"), "torch_nocomm_cpu_ms": t.get("local_cpu_ms"),
                "cpu_ratio": paired_ratio(runs, m, w, "ddp_cpu_ms", inverse=True) if t else None,
            })
    return rows


def fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


TABLES = [
    # (header, cell function): wall-clock speed and overlap
    (["case", "ddl img/s", "PyTorch img/s", "ddl/PyTorch", "ddl DDP step", "ddl no-comm step",
      "ddl ovl", "PyTorch ovl"],
     lambda r: [r["case"], fmt(r["ddl_img_s"], ",.0f"), fmt(r["torch_img_s"], ",.0f"),
                fmt(r["ratio"], ".2f", "x"), fmt(r["ddl_step_ms"], ".2f", " ms"),
                fmt(r["ddl_nocomm_ms"], ".2f", " ms"), fmt(r["ddl_overlap"], ".2f", "x"),
                fmt(r["torch_overlap"], ".2f", "x")]),
    # memory, start-up, and CPU time per step (less sensitive to other jobs than wall time)
    (["case", "RSS/rank ddl", "PyTorch", "1st step ddl", "PyTorch", "(CPU ddl", "PyTorch)",
      "CPU/step ddl DDP", "no-comm", "PyTorch DDP", "no-comm", "PyTorch/ddl CPU"],
     lambda r: [r["case"], fmt(r["ddl_rss"], ".0f", " MB"), fmt(r["torch_rss"], ".0f", " MB"),
                fmt(r["ddl_first"], ".2f", " s"), fmt(r["torch_first"], ".2f", " s"),
                fmt(r["ddl_first_cpu"], ".2f", " s"), fmt(r["torch_first_cpu"], ".2f", " s"),
                fmt(r["ddl_cpu_ms"], ".2f", " ms"), fmt(r["ddl_nocomm_cpu_ms"], ".2f", " ms"),
                fmt(r["torch_cpu_ms"], ".2f", " ms"), fmt(r["torch_nocomm_cpu_ms"], ".2f", " ms"),
                fmt(r["cpu_ratio"], ".2f", "x")]),
]


def print_table(rows):
    for head, cellf in TABLES:
        cells = [head] + [cellf(r) for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
        for c in cells:
            print("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in
                            enumerate(zip(c, widths))))
        print()


def md_tables(rows):
    lines = []
    for head, cellf in TABLES:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cellf(r)) + " |" for r in rows]
        lines.append("")
    return lines


def check_cell(c):
    v = c["value"]
    if v is None or math.isnan(v):
        return "-"
    return f"{v:.2f}x"


def markdown(rows, checks, agg, meta):
    lines = [
        f"Measured {meta['date']} on {meta['cpu']}, {meta['cpus']} logical CPUs usable, "
        f"shared with other jobs: load average {meta['loadavg_before'][0]:.1f} at start, "
        f"{meta['loadavg_after'][0]:.1f} at the end"
        + (f", CPU pressure (some, avg10) {meta['cpu_pressure_before']:.0f}% at start"
           if meta.get("cpu_pressure_before") is not None else "")
        + f". Python {meta['python']}, ddl {meta['ddl_version']} (OpenBLAS kernel "
        f"{meta['ddl_blas']}), PyTorch {meta['torch_version'] or 'not run'}"
        f"{' (--quick)' if meta['quick'] else ''}; {meta['elapsed_s']:.0f} s in all.",
        "",
        (f"- What ran: the MLP and CNN of examples/fashion_common.py (PyTorch: the same layers), "
        f"batch {BATCH} per rank, Adam(lr={LR}), 1 thread per rank (ddl.set_num_threads(1) / "
        "torch.set_num_threads(1); DDL/OMP/OPENBLAS/MKL_NUM_THREADS=1), synthetic in-memory "
        "data. Each job = fresh processes started by `python -m ddl.run --nproc-per-node N` "
        "(PyTorch: gloo, env://); both libraries' DDP with default settings."),
        (f"- {meta['reps']} job(s) per library and case, libraries alternating job by job; per "
        f"job {meta['pairs']} DDP segments alternating with {meta['pairs']} no-DDP segments of "
        f"~{meta['seg_time']} s (ranks in lockstep). Step time = slowest rank; figures are "
        "medians; ddl/torch = median of per-repeat ratios."),
        ("- img/s = batch x ranks / DDP step time. \"no-comm\" = the same model unwrapped (plain "
        "module + optimizer, no communication) trained in the same processes at the same time. "
        "ovl = DDP step / no-comm step. RSS = peak RSS per rank (ru_maxrss) with the DDP model "
        "trained. 1st step = launch of the job -> end of the first training step (slowest rank); "
        "(CPU ...) = that worker's own CPU seconds until then, a floor for an idle machine."),
        ("- CPU/step = CPU seconds per step per rank of the whole process (all threads: compute, "
        "the communication thread, Gloo), from time.process_time(); on a busy machine it moves "
        "much less than wall time. PyTorch/ddl CPU > 1: ddl uses less CPU per step."),
        "",
    ]
    if meta["loadavg_before"][0] > meta["cpus"]:
        load = meta["loadavg_before"][0]
        lines[1:1] = ["", (f"**The machine was oversubscribed** (load {load:.1f} "
                      f"on {meta['cpus']} CPUs): wall-clock figures (img/s, ovl, 1st step) carry "
                      "the other jobs' scheduling delays and move a lot from run to run; the CPU "
                      "columns are the steadier comparison.")]
    lines += md_tables(rows)
    lines += ["| target | measured | target | result | note |", "|---|---|---|---|---|"]
    for c in checks:
        tgt = f"{c['op']} {c['target']:.2f}x"
        res = "n/a" if c["pass"] is None else ("pass" if c["pass"] else "MISS")
        lines.append(f"| {c['check']} | {check_cell(c)} | {tgt} | {res} | {c['note']} |")
    lines += ["", "Launch -> first step, slowest rank, medians (s):", "",
              ("| case | worker started | imported | process group | model + DDP built | "
              "first step done |"), "|---|---|---|---|---|---|"]
    for (lib, m, w), a in sorted(agg.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        mk = a["marks"]
        lines.append(f"| {lib} {m.upper()} x{w} | {mk['worker_start']:.2f} | {mk['imported']:.2f}"
                     f" | {mk['process_group']:.2f} | {mk['model_ready']:.2f} | "
                     f"{mk['first_step']:.2f} |")
    lines += ["", "Step phases, slowest rank, medians (ms): DDP step / no-comm step:", "",
              "| case | forward+loss | zero_grad | backward | optimizer |", "|---|---|---|---|---|"]
    for (lib, m, w), a in sorted(agg.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        pd, pl = a["phases_ms"]["phases_ddp"], a["phases_ms"]["phases_local"]
        lines.append(f"| {lib} {m.upper()} x{w} | " + " | ".join(
            f"{pd[p]:.2f} / {pl[p]:.2f}" for p in ("forward", "zero_grad", "backward",
                                                  "optimizer")) + " |")
    judged = [c for c in checks if c["pass"] is not None]
    lines += ["", f"{sum(c['pass'] for c in judged)} of {len(judged)} targets met."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one job per case, short segments")
    p.add_argument("--reps", type=int, default=None, help="jobs per library and case")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--no-torch", action="store_true", help="ddl only")
    p.add_argument("--out", default=str(C.RESULTS))
    p.add_argument("--update-docs", action="store_true",
                   help="rewrite the '## DDP (bench_ddp.py)' section of docs/benchmarks.md")
    # worker side / tuning
    p.add_argument("--worker", choices=["ddl", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--seg-time", type=float, default=None)
    p.add_argument("--pairs", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--phase-steps", type=int, default=None)
    args = p.parse_args()
    args.seg_time = args.seg_time or (0.2 if args.quick else 0.25)
    args.pairs = args.pairs or (3 if args.quick else 4)
    args.warmup = args.warmup or (3 if args.quick else 5)
    args.phase_steps = args.phase_steps or (5 if args.quick else 10)
    if args.worker:
        return worker(args)
    args.reps = args.reps or (1 if args.quick else 3)

    import ddl  # the parent's only library import: versions for the report

    tv = None if args.no_torch else C.package_version("torch")
    if not args.no_torch and tv is None:
        print("PyTorch is not installed: measuring ddl only (pip install torch==2.13.0)")
    have_torch = tv is not None
    libs = ["ddl", "torch"] if have_torch else ["ddl"]
    meta = {
        "date": C.now(),
        "cpu": C.cpu_name(), "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "ddl_version": ddl.__version__,
        "ddl_blas": ddl.blas_info()["corename"], "torch_version": tv,
        "quick": args.quick, "reps": args.reps, "pairs": args.pairs, "seg_time": args.seg_time,
        "warmup": args.warmup, "batch": BATCH, "lr": LR,
        "loadavg_before": os.getloadavg(), "cpu_pressure_before": C.cpu_pressure(),
        "env": {k: v for k, v in C.blas_env().items() if k in ("OPENBLAS_CORETYPE",
                                                               "OPENBLAS_L2_SIZE")},
    }
    print(f"bench_ddp: {meta['cpu']}, {meta['cpus']} CPUs; load average "
          f"{' '.join(f'{x:.2f}' for x in meta['loadavg_before'])}"
          + (f", CPU pressure {meta['cpu_pressure_before']:.0f}%"
             if meta["cpu_pressure_before"] is not None else "")
          + f"; ddl {ddl.__version__} ({meta['ddl_blas']}), PyTorch {tv or '-'}", flush=True)
    if meta["loadavg_before"][0] > meta["cpus"]:
        print(f"  note: the machine is busy (load {meta['loadavg_before'][0]:.1f} on "
              f"{meta['cpus']} CPUs): absolute figures are low and noisy; ratios of "
              "interleaved runs hold up better", flush=True)

    t_start = time.perf_counter()
    runs = {}
    shapes = {}
    order = 0
    for m in args.models:
        for w in args.ranks:
            for rep in range(args.reps):
                seq = libs if order % 2 == 0 else libs[::-1]
                order += 1
                for lib in seq:
                    ranks, wall = launch(lib, m, w, args)
                    s = summarize_run(ranks, wall)
                    runs.setdefault((lib, m, w), []).append(s)
                    shapes[(lib, m)] = [sh for _, sh in ranks[0]["params"]]
                    print(f"  {lib:5s} {m.upper()} x{w} rep {rep + 1}: {s['ddp_img_s']:8,.0f} img/s"
                          f"  step {s['ddp_step_ms']:6.2f} ms (no-comm {s['local_step_ms']:6.2f})"
                          f"  RSS {s['rss_mb']:5.0f} MB  first step {s['first_step_s']:.2f} s"
                          f"  (job {wall:.1f} s)", flush=True)
            if have_torch and shapes.get(("ddl", m)) != shapes.get(("torch", m)):
                raise SystemExit(f"{m}: the two libraries' models differ: "
                                 f"{shapes.get(('ddl', m))} vs {shapes.get(('torch', m))}")
    meta["elapsed_s"] = time.perf_counter() - t_start
    meta["loadavg_after"] = os.getloadavg()

    agg = aggregate(runs)
    rows = table_rows(runs, agg, have_torch)
    checks = judge(runs, agg, have_torch)
    print()
    print_table(rows)
    print()
    for c in checks:
        res = "n/a " if c["pass"] is None else ("pass" if c["pass"] else "MISS")
        print(f"  [{res}] {c['check']}: {check_cell(c)} (target {c['op']} {c['target']:.2f}x)"
              + (f"; {c['note']}" if c["note"] else ""))
    for key in sorted(agg):
        if "buckets" in agg[key] and key[2] > 1:
            b = agg[key]["buckets"]
            print(f"  {key[0]} {key[1].upper()} x{key[2]} buckets: {b['count']} "
                  f"(params {b['params_per_bucket']}), allreduce ms "
                  f"{[round(x, 2) for x in b['allreduce_ms']]}, started at ms "
                  f"{[round(x, 2) for x in b['start_in_backward_ms']]} of a "
                  f"{b['backward_ms']:.2f} ms backward")

    md = markdown(rows, checks, agg, meta)
    payload = {"meta": meta, "table": rows, "checks": checks,
               "aggregate": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in agg.items()},
               "jobs": {f"{k[0]}/{k[1]}/{k[2]}": v for k, v in runs.items()}}
    js, mdp = C.write_results(args.out, "bench_ddp", payload, md)
    if args.update_docs:
        C.update_docs_written_by(C.DOCS, DOCS_SECTION, "bench_ddp", md)
    judged = [c for c in checks if c["pass"] is not None]
    print(f"\n{sum(c['pass'] for c in judged)}/{len(judged)} targets met; "
          f"{meta['elapsed_s']:.0f} s; wrote {js} and {mdp}"
          + ("; updated docs/benchmarks.md" if args.update_docs else ""))


if __name__ == "__main__":
    main()
