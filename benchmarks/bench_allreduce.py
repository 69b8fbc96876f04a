#!/usr/bin/env python3
"""bench_allreduce.py: float32 allreduce, ddl vs raw Gloo (C++) vs torch.distributed (gloo),
side by side and interleaved in one run, on this machine's loopback.

    python benchmarks/bench_allreduce.py            # ~2-4 minutes
    python benchmarks/bench_allreduce.py --quick    # ~30 s, fewer repeats (rougher figures)
    python benchmarks/bench_allreduce.py --ddl-variant before=/tmp/ddl-before   # add a column

Prints a table, writes benchmarks/results/bench_allreduce.json and .md, and (full runs, or
--docs) the section "## Allreduce (bench_allreduce.py)" of docs/benchmarks.md.

What runs, for 2 and 4 ranks (processes; on a 2-core machine 4 ranks oversubscribe the cores):
- gloo:  benchmarks/gloo_baseline.cc, compiled here with g++ -O3 against Debian's libgloo-dev:
         the caller thread runs new-style gloo::allreduce (RING, ddl's algorithm) on a float
         buffer with gloo::sum<float> compiled at -O3, as ddl does. FileStore rendezvous.
- gloo wire: the same process putting on the wire what ddl does in such a loop, without ddl's
         threads and Python: the mismatch check is a one-step alltoall of a 64-byte descriptor
         plus an eager payload, which carries an allreduce of <= 64 KiB whole (from the second
         call of a loop of equal sizes); above that, a 64 + 4096-byte check, then RING.
- gloo bcube: the allreduce with Gloo's BCUBE algorithm (would an algorithm switch pay?).
- ddl:   dist.all_reduce(t) on a ddl tensor (synchronous), env:// rendezvous through ddl's
         TCPStore.
- torch: torch.distributed.all_reduce on a CPU tensor, backend "gloo" (its own bundled Gloo).
- ddl: ddl.distributed's default transport (shared memory when the ranks share a host), and
  "ddl gloo": the same forced onto Gloo (DDL_COMM_TRANSPORT=gloo). memcpy of 64 MiB is
  measured before and after, as the physical reference for the shared-memory path.
- ddl[LABEL]: another ddl build (--ddl-variant LABEL=DIR, DIR holding a built `ddl` package),
         e.g. the tree before a change, measured in the same run.
- probes, raw Gloo, no data: ddl's old check (a 64-byte allgather) and its new one before a
         large allreduce (the alltoall of 4160-byte blocks).
All processes of all variants for one world size are started up front and stay idle (blocked
on their stdin) while another variant runs. Every variant runs the same sizes in turn, in a
shuffled order each round (seeded: the same every run), and rounds repeat, so drift and other
load on the machine fall on all of them alike. Calls per run adapt to a time budget (from the previous
round's median), within the plan's bounds.

How it measures: each call is timed on every rank (perf_counter / steady_clock around one
blocking allreduce, warm-up calls untimed); a call's time is the mean over the ranks, the
figure is the median over all timed calls of all rounds. busbw = 2(n-1)/n x bytes / time.
A ratio between two variants is the median over rounds of the ratio of their medians in that
round (measured seconds apart, so a burst of other load mostly hits both), as bench_ops.py.
Buffers hold zeros while timed (sums stay 0); the first call of each size checks a real sum.

Targets (from the issue): ddl >= 0.95x raw Gloo bus bandwidth from 1 MiB up; small-message
(< 1 MiB) latency <= 1.1x raw Gloo; ddl no slower than torch.distributed at any size.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C  # the standard library only: the driver never imports ddl

ROOT = C.ROOT
HERE = Path(__file__).resolve().parent
BASELINE_SRC = HERE / "gloo_baseline.cc"

KIB = 1024
MIB = KIB * KIB
SIZES = [4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB]
BW_TARGET = 0.95        # ddl busbw / gloo busbw, sizes >= 1 MiB
LAT_TARGET = 1.10       # ddl latency / gloo latency, sizes < 1 MiB
TORCH_TARGET = 1.00     # ddl time / torch time, every size
NOISE = 0.05            # a miss within this of the target is flagged as "within noise"

# per size: (warm-up calls in the first round, most timed calls, fewest timed calls) per variant
# per round; the count between is set so that one run lasts about BUDGET_S (from the previous
# round's median). Later rounds warm up with WARM_LATER calls up to 1 MiB (processes woken after
# idling start slow), 1 at 16 MiB, none at 64 MiB. Many short rounds rather than a few long ones: other
# load on the machine comes in bursts.
PLAN_FULL = {4 * KIB: (30, 120, 10), 64 * KIB: (30, 80, 8), MIB: (10, 24, 4), 16 * MIB: (1, 4, 1),
             64 * MIB: (1, 1, 1)}
PLAN_QUICK = {4 * KIB: (5, 40, 5), 64 * KIB: (5, 30, 4), MIB: (2, 8, 2), 16 * MIB: (1, 1, 1),
              64 * MIB: (1, 1, 1)}
BUDGET_S = {False: 0.12, True: 0.04}
ROUNDS_FULL, ROUNDS_QUICK = 12, 3
PROBE_ITERS_FULL, PROBE_ITERS_QUICK = 30, 15
WARM_LATER = 5
BCUBE_MAX = 16 * MIB  # BCUBE at 64 MiB is several times slower than RING here: not worth the time
# ddl's mismatch check (csrc/comm/agreement.cc): one alltoall of blocks of a 64-byte descriptor and
# an eager payload: 4096 bytes, or the previous allreduce's size up to EAGER bytes, so that a
# loop of equal allreduces of at most EAGER bytes travels inside it (from its second call)
CHECK_BLOCK, EAGER = 64 + 4096, 64 * KIB
PROBES = {"old check: 64-B allgather": "ag64", "new check: 4160-B alltoall": f"a2a{CHECK_BLOCK}"}
CMD_TIMEOUT_S = 180


def size_name(nbytes):
    if nbytes >= MIB:
        return f"{nbytes // MIB} MiB"
    return f"{nbytes // KIB} KiB" if nbytes >= KIB else f"{nbytes} B"


def busbw_gbs(nbytes, ranks, seconds):
    return 2 * (ranks - 1) / ranks * nbytes / seconds / 1e9


# ---- workers (ddl and torch): one process per rank, driven over stdin/stdout ----------------
# protocol (the C++ baseline speaks the same):  "run MODE NBYTES WARMUP ITERS" -> "ok <us> ...",
# "quit" -> exit. A worker prints "ready <json>" once its group is up.


def _worker(kind, ddl_path):
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if kind == "ddl":
        if ddl_path:
            sys.path.insert(0, ddl_path)
        else:
            C.use_source_tree()
        import numpy as np

        import ddl
        import ddl.distributed as dist
        dist.init_process_group("gloo")
        info = {"ddl": ddl.__file__, "gloo": ddl.gloo_version(), "version": ddl.__version__,
                "transport": dist.get_backend_info()["transport"]}

        def make(n):
            a = np.zeros(n, np.float32)
            return a, ddl.from_numpy(a)

        def call(t):
            dist.all_reduce(t)
    else:
        import numpy as np
        import torch
        import torch.distributed as dist
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=size)
        info = {"torch": torch.__version__}

        def make(n):
            t = torch.zeros(n, dtype=torch.float32)
            return t.numpy(), t

        def call(t):
            dist.all_reduce(t)

    bufs = {}
    clock = time.perf_counter
    print("ready " + json.dumps(info), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        _, _mode, nbytes, warmup, iters = parts
        n, warmup, iters = int(nbytes) // 4, int(warmup), int(iters)
        if n not in bufs:
            a, t = bufs[n] = make(n)
            a[:] = rank + 1
            call(t)
            want = size * (size + 1) / 2
            if not (a == want).all():
                print(f"err wrong sum: {a[:4]} (want {want})", flush=True)
                continue
            a[:] = 0
        t = bufs[n][1]
        for _ in range(warmup):
            call(t)
        times = []
        for _ in range(iters):
            t0 = clock()
            call(t)
            times.append((clock() - t0) * 1e6)
        print("ok " + " ".join(f"{x:.2f}" for x in times), flush=True)
    dist.destroy_process_group()


# ---- the driver ------------------------------------------------------------------------------


def _die_with_parent():
    """preexec_fn: a worker gets SIGKILL if the driver dies (Linux PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guard
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Group:
    """The processes of one implementation at one world size."""

    def __init__(self, name, cmds_envs, tmp):
        self.name = name
        self.procs, self.errs, self.bufs = [], [], []
        self.info = None
        for r, (cmd, env) in enumerate(cmds_envs):
            # the worker's stderr, read back when it fails; close() closes it
            path = Path(tmp) / f"{name.replace(' ', '_')}.{len(cmds_envs)}.{r}.err"
            err = open(path, "w+b")  # noqa: SIM115
            # preexec_fn is safe here: the driver starts no threads
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=err, preexec_fn=_die_with_parent,  # noqa: PLW1509
                                 cwd=str(ROOT))
            self.procs.append(p)
            self.errs.append(err)
            self.bufs.append(b"")

    def _lines(self, timeout):
        """One line from every process, or RuntimeError naming the rank that failed."""
        out = [None] * len(self.procs)
        deadline = time.monotonic() + timeout
        while any(x is None for x in out):
            for r, p in enumerate(self.procs):
                if out[r] is None and b"\n" in self.bufs[r]:
                    line, self.bufs[r] = self.bufs[r].split(b"\n", 1)
                    out[r] = line.decode()
            waiting = {p.stdout.fileno(): r for r, p in enumerate(self.procs) if out[r] is None}
            if not waiting:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: ranks {sorted(waiting.values())} did not answer "
                                   f"within {timeout} s{self._stderr(list(waiting.values()))}")
            ready, _, _ = select.select(list(waiting), [], [], min(left, 1.0))
            for fd in ready:
                r = waiting[fd]
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"{self.name}: rank {r} exited "
                                       f"(rc {self.procs[r].wait()}){self._stderr([r])}")
                self.bufs[r] += chunk
        for r, line in enumerate(out):
            if not line.startswith(("ok", "ready")):
                raise RuntimeError(f"{self.name}: rank {r}: {line}{self._stderr([r])}")
        return out

    def _stderr(self, ranks):
        text = ""
        for r in ranks:
            self.errs[r].seek(0)
            tail = self.errs[r].read()[-1500:].decode(errors="replace").strip()
            if tail:
                text += f"\n--- rank {r} stderr ---\n{tail}"
        return text

    def wait_ready(self, timeout=120):
        lines = self._lines(timeout)
        self.info = json.loads(lines[0][len("ready"):] or "{}")

    def run(self, mode, nbytes, warmup, iters):
        """Per-call times in seconds, each the mean over the ranks."""
        for p in self.procs:
            p.stdin.write(f"run {mode} {nbytes} {warmup} {iters}\n".encode())
            p.stdin.flush()
        per_rank = [[float(x) for x in line.split()[1:]] for line in self._lines(CMD_TIMEOUT_S)]
        return [statistics.fmean(c) / 1e6 for c in zip(*per_rank)]

    def close(self):
        for p in self.procs:
            try:
                if p.poll() is None:
                    p.stdin.write(b"quit\n")
                    p.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for e in self.errs:
            e.close()


def build_baseline(tmp):
    exe = Path(tmp) / "gloo_baseline"
    cmd = ["g++", "-std=c++17", "-O3", "-fno-math-errno", "-o", str(exe), str(BASELINE_SRC),
           "-lgloo", "-pthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"compiling the Gloo baseline failed ({' '.join(cmd)}):\n{r.stderr}\n"
                         "It needs g++ and Debian's libgloo-dev.")
    return exe, " ".join(cmd[:4] + ["-o", "gloo_baseline", "gloo_baseline.cc", "-lgloo",
                                    "-pthread"])


def torch_available():
    r = subprocess.run([sys.executable, "-c", ("import torch, torch.distributed as d; print("
                                               "torch.__version__, d.is_available() and "
                                               "d.is_gloo_available())")],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        return None, "torch is not installed (pip install torch==2.13.0 for a CPU build)"
    ver, ok = r.stdout.split()
    if ok != "True":
        return None, f"torch {ver} has no gloo backend"
    return ver, None


def start_groups(n, exe, tmp, with_torch, ddl_variants):
    base_env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                    DDL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    groups = {}
    store = Path(tmp) / f"filestore{n}"
    store.mkdir()
    groups["gloo"] = Group("gloo", [([str(exe), str(r), str(n), str(store)], base_env)
                                    for r in range(n)], tmp)
    # "ddl": the default transport (shared memory on one host); "ddl gloo": forced onto Gloo
    kinds = [("ddl", "ddl", ""), ("ddl gloo", "ddl", "")]
    kinds += [(f"ddl[{label}]", "ddl", path) for label, path in ddl_variants]
    if with_torch:
        kinds.append(("torch", "torch", ""))
    for name, kind, path in kinds:
        port = free_port()
        cmds = []
        for r in range(n):
            env = dict(base_env, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            if kind == "torch":
                env["GLOO_SOCKET_IFNAME"] = "lo"
            if name == "ddl gloo":
                env["DDL_COMM_TRANSPORT"] = "gloo"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
            if path:
                cmd += ["--ddl-path", path]
            cmds.append((cmd, env))
        groups[name] = Group(name, cmds, tmp)
    for g in groups.values():
        g.wait_ready()
    return groups


def measure(args, exe, tmp, with_torch):
    plan = PLAN_QUICK if args.quick else PLAN_FULL
    budget = BUDGET_S[args.quick]
    rounds = args.rounds or (ROUNDS_QUICK if args.quick else ROUNDS_FULL)
    probe_iters = PROBE_ITERS_QUICK if args.quick else PROBE_ITERS_FULL
    sizes = [s for s in SIZES if s in plan]
    results = {}
    infos = {}
    for n in args.ranks:
        # variant name -> (group, mode per size)
        variants = {"gloo": ("gloo", {s: "ring" for s in sizes})}
        variants["gloo wire"] = ("gloo", {s: f"a2a{64 + max(s, 4096)}" if s <= EAGER
                                          else f"a2a{CHECK_BLOCK}+ring" for s in sizes if s <= MIB})
        if not args.quick:
            variants["gloo bcube"] = ("gloo", {s: "bcube" for s in sizes if s <= BCUBE_MAX})
        variants["ddl"] = ("ddl", {s: "sync" for s in sizes})
        variants["ddl gloo"] = ("ddl gloo", {s: "sync" for s in sizes})
        for label, _ in args.ddl_variant:
            variants[f"ddl[{label}]"] = (f"ddl[{label}]", {s: "sync" for s in sizes})
        if with_torch:
            variants["torch"] = ("torch", {s: "sync" for s in sizes})
        t0 = time.monotonic()
        groups = start_groups(n, exe, tmp, with_torch, args.ddl_variant)
        try:
            infos[n] = {k: g.info for k, g in groups.items()}
            samples = {v: {s: [] for s in modes} for v, (_, modes) in variants.items()}
            per_round = {v: {s: [] for s in modes} for v, (_, modes) in variants.items()}
            probes = {p: [] for p in PROBES}
            names = list(variants)
            order = random.Random(n)  # the same order every run
            for rnd in range(rounds):
                for i, s in enumerate(sizes):
                    warm, most, fewest = plan[s]
                    if rnd:
                        warm = min(warm, WARM_LATER if s <= MIB else 1 if s < 64 * MIB else 0)
                    for v in order.sample(names, len(names)):
                        gname, modes = variants[v]
                        if s not in modes:
                            continue
                        prev = per_round[v][s]
                        iters = most if not prev else max(fewest, min(most, int(budget / prev[-1])))
                        xs = groups[gname].run(modes[s], s, warm, iters)
                        samples[v][s] += xs
                        prev.append(statistics.median(xs))
                for p, mode in PROBES.items():
                    probes[p] += groups["gloo"].run(mode, 0, 3, probe_iters)
                print(f"  {n} ranks: round {rnd + 1}/{rounds} done ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        finally:
            for g in groups.values():
                g.close()
        results[n] = {"samples": samples, "per_round": per_round, "probes": probes}
    return results, infos


# ---- analysis and report ---------------------------------------------------------------------


def memcpy_gbs(nbytes=64 * MIB, reps=5):
    """The physical reference: best of `reps` 64 MiB copies (NumPy copyto), GB/s."""
    import numpy as np

    a = np.ones(nbytes // 4, np.float32)
    b = np.ones_like(a)  # touched: no page faults in the timing
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9


def shm_targets(summary, memcpy):
    """Issue 10's targets for ddl (shared memory on one host): 2 ranks, time vs torch at 4 KiB
    (<= 0.25) and 1 MiB (<= 0.3), 64 MiB bus bandwidth vs memcpy (>= 0.5); printed, returned."""
    out = {}
    t = summary.get(2, {}).get("table", {})
    print(f"\nissue 10 targets (memcpy 64 MiB: {memcpy:.2f} GB/s in this run):")
    for s, limit in ((4 * 1024, 0.25), (MIB, 0.3)):
        if "torch" in t and s in t.get("ddl", {}) and s in t["torch"]:
            r = paired(t, "ddl", "torch", s)
            out[f"time_vs_torch_{s}"] = r
            print(f"  2 ranks {size_name(s):>7}  ddl/torch time {r:.2f}  target <= {limit} "
                  f"{'pass' if r <= limit else 'MISS'}")
    e = t.get("ddl", {}).get(64 * MIB)
    if e:
        r = e["busbw_gbs"] / memcpy
        out["busbw_vs_memcpy_64MiB"] = r
        print(f"  2 ranks  64 MiB  ddl busbw / memcpy {r:.2f}  target >= 0.5 "
              f"{'pass' if r >= 0.5 else 'MISS'}")
    return out


def summarize(results):
    """{n: {"table": {variant: {size: {...}}}, "probes": {name: median s}}}"""
    out = {}
    for n, res in results.items():
        table = {}
        for v, per_size in res["samples"].items():
            table[v] = {}
            for s, xs in per_size.items():
                if xs:
                    med = statistics.median(xs)
                    q = statistics.quantiles(xs, n=4) if len(xs) >= 4 else [min(xs), med, max(xs)]
                    p10 = statistics.quantiles(xs, n=10)[0] if len(xs) >= 10 else min(xs)
                    table[v][s] = {"median_s": med, "busbw_gbs": busbw_gbs(s, n, med),
                                   "p10_s": p10, "p25_s": q[0], "p75_s": q[-1], "calls": len(xs),
                                   "round_medians_s": res["per_round"][v][s]}
        out[n] = {"table": table,
                  "probes": {p: statistics.median(xs) for p, xs in res["probes"].items() if xs}}
    return out


def paired(t, a, b, s):
    """Median over rounds of (a's round median / b's round median) at size s."""
    ra, rb = t[a][s]["round_medians_s"], t[b][s]["round_medians_s"]
    if len(ra) == len(rb) and ra:
        return statistics.median(x / y for x, y in zip(ra, rb))
    return t[a][s]["median_s"] / t[b][s]["median_s"]


def p10_ratio(t, a, b, s):
    return t[a][s]["p10_s"] / t[b][s]["p10_s"]


def verdicts(summary):
    """One row per (ranks, size, comparison): ratio, target, pass/miss."""
    rows = []
    for n, sm in summary.items():
        t = sm["table"]
        for s in SIZES:
            g, d = t.get("gloo", {}).get(s), t.get("ddl", {}).get(s)
            if not (g and d):
                continue
            if s >= MIB:
                ratio = paired(t, "gloo", "ddl", s)  # = busbw ratio
                rows.append({"ranks": n, "size": s, "check": "busbw ddl/gloo", "ratio": ratio,
                             "ratio_p10": p10_ratio(t, "gloo", "ddl", s),
                             "target": f">= {BW_TARGET:.2f}", "pass": ratio >= BW_TARGET,
                             "noise": ratio >= BW_TARGET - NOISE})
            else:
                ratio = paired(t, "ddl", "gloo", s)
                rows.append({"ranks": n, "size": s, "check": "latency ddl/gloo", "ratio": ratio,
                             "ratio_p10": p10_ratio(t, "ddl", "gloo", s),
                             "target": f"<= {LAT_TARGET:.2f}", "pass": ratio <= LAT_TARGET,
                             "noise": ratio <= LAT_TARGET + NOISE})
            tr = t.get("torch", {}).get(s)
            if tr:
                ratio = paired(t, "ddl", "torch", s)
                rows.append({"ranks": n, "size": s, "check": "time ddl/torch", "ratio": ratio,
                             "ratio_p10": p10_ratio(t, "ddl", "torch", s),
                             "target": f"<= {TORCH_TARGET:.2f}", "pass": ratio <= TORCH_TARGET,
                             "noise": ratio <= TORCH_TARGET + NOISE})
    return rows


def fmt_ms(s):
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def variant_order(table):
    first = ["gloo", "gloo wire", "gloo bcube", "ddl"]
    rest = sorted(v for v in table if v not in first and v != "torch")
    return [v for v in first + rest + ["torch"] if v in table]


def result_word(r):
    return "pass" if r["pass"] else ("MISS (within noise)" if r["noise"] else "MISS")


def markdown(meta, summary, rows):
    L = []
    L.append(f"Measured {meta['date']} on {meta['cpu']} ({meta['cpus']} logical CPUs, "
             f"{meta['kernel']}), Python {meta['python']}, ddl {meta['ddl']} (Gloo headers "
             f"{meta['gloo']}, Debian libgloo-dev {meta['libgloo']}), torch {meta['torch'] or '-'}"
             f"{' (--quick)' if meta['quick'] else ''}. Load average (1/5/15 min) before: "
             f"{meta['load_before']}, after: {meta['load_after']}; wall time {meta['wall_s']:.0f} s.")
    L.append("")
    L.append(f"- Loopback, one process per rank, {meta['rounds']} interleaved rounds; figure = median "
             "over timed calls of the per-call time averaged over ranks; busbw = 2(n-1)/n x "
             "bytes / time. Cells: median latency ms / busbw GB/s.")
    L.append(f"- gloo: `{meta['baseline_cmd']}`, the caller thread runs gloo::allreduce (RING). "
             "gloo wire: the same process doing what ddl puts on the wire (its mismatch check, a "
             "one-step alltoall of descriptor + payload blocks that carries a loop's allreduces "
             f"of <= 64 KiB whole; above, a {CHECK_BLOCK}-byte-block check, then RING). "
             "ddl: `dist.all_reduce(t)`, mismatch check always on. Ratios: median over rounds "
             "of the per-round ratio.")
    if meta.get("torch_note"):
        L.append(f"- torch skipped: {meta['torch_note']}")
    for label, path in meta.get("ddl_variants", []):
        L.append(f"- ddl[{label}]: the ddl package in `{path}`.")
    for note in meta.get("notes", []):
        L.append(f"- {note}")
    L.append("")
    for n, sm in summary.items():
        t = sm["table"]
        vs = variant_order(t)
        extra = [v for v in vs if v.startswith("ddl[")]
        L.append(f"**{n} ranks**")
        L.append("")
        L.append("| size | " + " | ".join(vs) + " | ddl/gloo bw | ddl/torch time |"
                 + "".join(f" {v}/ddl time |" for v in extra))
        L.append("|---" * (len(vs) + 3 + len(extra)) + "|")
        for s in SIZES:
            if "gloo" not in t or s not in t["gloo"]:
                continue
            cells = []
            for v in vs:
                e = t[v].get(s)
                cells.append(f"{fmt_ms(e['median_s'])} / {e['busbw_gbs']:.2f}" if e else "")
            d, tr = t.get("ddl", {}).get(s), t.get("torch", {}).get(s)
            bw = f"{paired(t, 'gloo', 'ddl', s):.2f}x" if d else ""
            tt = f"{paired(t, 'ddl', 'torch', s):.2f}x" if d and tr else ""
            ex = "".join(f" {paired(t, v, 'ddl', s):.2f}x |" if d and s in t[v] else " |"
                         for v in extra)
            L.append(f"| {size_name(s)} | " + " | ".join(cells) + f" | {bw} | {tt} |" + ex)
        L.append("")
        L.append("10th-percentile latency, ms (what a call costs when the machine's other load "
                 "leaves it alone): " + "; ".join(
                     f"{size_name(s)}: " + ", ".join(f"{v} {fmt_ms(t[v][s]['p10_s'])}"
                                                     for v in vs if s in t[v])
                     for s in SIZES if s in t.get("gloo", {})) + ".")
        L.append("")
        if sm["probes"]:
            L.append("Mismatch check alone (raw Gloo, no data): " + "; ".join(
                f"{p} {x * 1e3:.3f} ms" for p, x in sm["probes"].items()) + ".")
        g4, d4, w4 = (t.get(v, {}).get(4 * KIB) for v in ("gloo", "ddl", "gloo wire"))
        if g4 and d4 and w4:
            L.append(f"At 4 KiB: ddl - gloo = {(d4['median_s'] - g4['median_s']) * 1e3:+.3f} ms, of "
                     f"which the wire protocol (gloo wire - gloo) "
                     f"{(w4['median_s'] - g4['median_s']) * 1e3:+.3f} ms and ddl's own layers "
                     f"(Python, C API, threads: ddl - gloo wire) "
                     f"{(d4['median_s'] - w4['median_s']) * 1e3:+.3f} ms.")
        g64, d64, w64 = (t.get(v, {}).get(64 * KIB) for v in ("gloo", "ddl", "gloo wire"))
        if g64 and d64 and w64:
            L.append(f"At 64 KiB: ddl - gloo = {(d64['median_s'] - g64['median_s']) * 1e3:+.3f} ms "
                     f"(wire {(w64['median_s'] - g64['median_s']) * 1e3:+.3f}, ddl's layers "
                     f"{(d64['median_s'] - w64['median_s']) * 1e3:+.3f}).")
        L.append("")
    L.append("| ranks | size | check | ratio (medians) | target | result | ratio of 10th "
             "percentiles |")
    L.append("|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(f"| {r['ranks']} | {size_name(r['size'])} | {r['check']} | {r['ratio']:.2f} | "
                 f"{r['target']} | {result_word(r)} | {r['ratio_p10']:.2f} |")
    L.append("")
    npass = sum(r["pass"] for r in rows)
    L.append(f"{npass} of {len(rows)} checks meet their target "
             f"({sum(r['noise'] and not r['pass'] for r in rows)} more within {NOISE:.0%} of it).")
    L.append("")
    L.append(WHY)
    return "\n".join(L) + "\n"


# What the figures mean, from profiling (strace, per-thread CPU time) on this kind of machine;
# it does not change from run to run.
WHY = """Where the time goes (found by strace and per-thread CPU time on this 2-core machine):

- Every blocking step of a collective (a rank waits for a peer, its thread sleeps and is woken)
  costs a wake-up. With the cores busy (4 ranks on 2 cores, or other work on the machine: see
  the load average) a woken thread waits for a CPU, often a whole scheduler tick (~4 ms), so
  medians come in multiples of ~4 ms and a collective costs about (sequential steps) x
  (wake-up delay). The 10th percentiles show the cost when the machine leaves the call alone.
- Debian's Gloo (2022 snapshot) has its TCP event-loop thread spin on epoll while data that has
  arrived waits for its receive to be posted (upstream pytorch/gloo#246): a 1 MiB RING
  allreduce burns ~2 ms of CPU in that thread, CPU that the rank's own thread needs on 2 cores.
  torch 2.13 bundles a newer Gloo whose loop thread used ~15x less CPU per 1 MiB call here, and
  its 2-rank latency stays near its undisturbed figure under the same load. That gap is in the
  transport, below ddl: ddl cannot beat torch at 2 ranks while it runs on Debian's libgloo.
- ddl's always-on mismatch check is one exchange step, every rank to every rank at once (an
  alltoall; the old allgather took n-1 steps). An allreduce of <= 4 KiB, and one of <= 64 KiB
  whose previous allreduce had the same size, travels inside that step (each rank reduces the
  blocks itself, in rank order): one step instead of RING's 2(n-1), so ddl is faster than raw
  RING there. Synchronous calls run on the caller's thread when nothing is queued (no handoff
  to the comm thread and back: two wake-ups fewer).
- Two ranks on two cores are bistable from 64 KiB with Debian's Gloo, for every variant built
  on it: a run of back-to-back calls settles either in a fast mode (near the undisturbed
  figure) or a slow one (one or two 4 ms ticks per call), and stays there; which one a run
  lands in is chance (the phase between the two ranks' spinning loop threads and their
  callers). The same 100 calls took 0.8 ms or 7.5 ms each in consecutive runs of one process
  pair, for ddl and raw Gloo alike. Medians over rounds then measure how often a variant hit
  the slow mode, so 2-rank ratios from 64 KiB swing widely between runs; the 10th percentiles
  compare the fast modes. torch's Gloo showed no slow mode.
- From 1 MiB the check is a step of its own before RING: cheap on a quiet machine (tens of
  microseconds), but one more wake-up when the cores are busy, enough to miss 0.95x at 1 MiB
  on a loaded machine. From 16 MiB it is lost in the noise, itself +-30% on this machine.
- BCUBE (not used by ddl): fewer steps than RING; in the runs behind this note it was ~2x
  faster than RING at 4 ranks up to 1 MiB, no better at 2 ranks, and slower from 16 MiB.
"""


def update_docs(path, body, meta):
    heading = "## Allreduce (bench_allreduce.py)"
    C.update_docs_section(path, heading, (
        f"{heading}\n\n`python benchmarks/bench_allreduce.py` (raw results: "
        f"`benchmarks/results/bench_allreduce.json`).\n\n{body}"))


def print_table(summary, rows):
    for n, sm in summary.items():
        t = sm["table"]
        vs = variant_order(t)
        print(f"\n{n} ranks: median latency ms / busbw GB/s")
        print(f"{'size':>7} " + "".join(f"{v:>17}" for v in vs))
        for s in SIZES:
            if s not in t.get("gloo", {}):
                continue
            cells = "".join(
                f"{fmt_ms(t[v][s]['median_s']) + ' / ' + format(t[v][s]['busbw_gbs'], '.2f'):>17}"
                if s in t[v] else f"{'':>17}" for v in vs)
            print(f"{size_name(s):>7} {cells}")
        for p, x in sm["probes"].items():
            print(f"  {p} (raw Gloo, no data): {x * 1e3:.3f} ms")
    print()
    for r in rows:
        print(f"{r['ranks']} ranks {size_name(r['size']):>7}  {r['check']:<17} "
              f"{r['ratio']:5.2f}  target {r['target']:<7} {result_word(r):<20} "
              f"(10th percentiles: {r['ratio_p10']:.2f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~30 s, fewer repeats")
    ap.add_argument("--ranks", default="2,4", help="world sizes, comma-separated (default 2,4)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 6, quick 3)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch.distributed")
    ap.add_argument("--ddl-variant", action="append", default=[], metavar="LABEL=DIR",
                    help="also run the ddl package found in DIR, labelled ddl[LABEL]")
    ap.add_argument("--note", action="append", default=[], help="a line for the report (repeatable)")
    ap.add_argument("--docs", action="store_true", help="update docs/benchmarks.md after --quick")
    ap.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder")
    ap.add_argument("--worker", choices=["ddl", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--ddl-path", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.ddl_path)

    args.ranks = [int(x) for x in args.ranks.split(",")]
    variants = []
    for v in args.ddl_variant:
        label, _, path = v.partition("=")
        if not path or not (Path(path) / "ddl" / "__init__.py").exists():
            raise SystemExit(f"--ddl-variant {v}: expected LABEL=DIR with DIR/ddl/__init__.py")
        variants.append((label, str(Path(path).resolve())))
    args.ddl_variant = variants

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    torch_ver, torch_note = (None, "--no-torch") if args.no_torch else torch_available()
    if torch_note:
        print(f"note: torch skipped: {torch_note}", file=sys.stderr)
    t_start = time.monotonic()
    memcpy_before = memcpy_gbs()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = tempfile.mkdtemp(prefix="bench_allreduce.")
    try:
        exe, baseline_cmd = build_baseline(tmp)
        results, infos = measure(args, exe, tmp, torch_ver is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    memcpy_after = memcpy_gbs()

    ddl_info = next(iter(infos.values()))["ddl"]  # from a worker: the driver never imports ddl
    cpu = C.cpu_info().get("model_name") or platform.processor() or platform.machine()
    try:
        libgloo = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libgloo-dev"],
                                 capture_output=True, text=True, check=False).stdout.strip() or "?"
    except OSError:
        libgloo = "?"
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(), "ddl": ddl_info["version"], "gloo": ddl_info["gloo"],
        "libgloo": libgloo, "torch": torch_ver, "torch_note": torch_note, "quick": args.quick,
        "rounds": args.rounds or (ROUNDS_QUICK if args.quick else ROUNDS_FULL),
        "baseline_cmd": baseline_cmd, "ddl_variants": args.ddl_variant,
        "load_before": load_before, "load_after": load_after, "notes": args.note,
        "wall_s": time.monotonic() - t_start, "workers": {str(k): v for k, v in infos.items()},
        "memcpy_64mib_gbs": [memcpy_before, memcpy_after],
    }
    summary = summarize(results)
    rows = verdicts(summary)
    print_table(summary, rows)
    meta["shm_targets"] = shm_targets(summary, max(memcpy_before, memcpy_after))

    body = markdown(meta, summary, rows)
    samples = {str(n): {"probes": r["probes"],
                        **{v: {str(s): xs for s, xs in per.items()}
                           for v, per in r["samples"].items()}}
               for n, r in results.items()}
    samples = json.loads(json.dumps(samples), parse_float=lambda x: round(float(x), 7))
    blob = {
        "meta": meta,
        "summary": {str(n): {"probes_median_s": sm["probes"],
                             "table": {v: {str(s): e for s, e in per.items()}
                                       for v, per in sm["table"].items()}}
                    for n, sm in summary.items()},
        "checks": rows,
        "samples_s": "@SAMPLES@",
    }
    # readable summary, compact samples (one line per variant and size)
    text = json.dumps(blob, indent=1).replace('"@SAMPLES@"', json.dumps(samples).replace(
        '], "', '],\n  "'))
    js, md = C.write_results(args.out, "bench_allreduce", blob, body, json_text=text + "\n")
    print(f"\nwrote {js} and {md}")
    if not args.no_docs and (not args.quick or args.docs):
        docs = C.DOCS
        update_docs(docs, body, meta)
        print(f"updated {docs}")
    print(f"wall time {meta['wall_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
