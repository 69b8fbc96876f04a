#!/usr/bin/env python3
"""bench_allreduce.py: float32 allreduce, ddl vs raw Gloo (C++) vs torch.distributed (gloo),
side by side and interleaved in one run, on this machine's loopback.

    python benchmarks/bench_allreduce.py            # ~2-4 minutes
    python benchmarks/bench_allreduce.py --quick    # ~30 s, fewer repeats (rougher figures)
    python benchmarks/bench_allreduce.py --ddl-variant before=/tmp/ddl-before   # add a column
    python benchmarks/bench_allreduce.py --quick --ranks 2 --sizes 4K,1M,64M --out /tmp/r

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
from _allreduce_report import (
    CHECK_BLOCK,
    EAGER,
    KIB,
    MIB,
    SIZES,
    markdown,
    memcpy_gbs,
    print_table,
    shm_targets,
    summarize,
    update_docs,
    verdicts,
)

ROOT = C.ROOT
HERE = Path(__file__).resolve().parent
BASELINE_SRC = HERE / "gloo_baseline.cc"

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
PROBES = {"old check: 64-B allgather": "ag64", "new check: 4160-B alltoall": f"a2a{CHECK_BLOCK}"}
CMD_TIMEOUT_S = 180


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
    sizes = [s for s in SIZES if s in plan and (not args.sizes or s in args.sizes)]
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


def parse_size(text):
    """'4K', '1M', '64M' or bytes -> bytes; one of SIZES (the plans are per size)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": KIB, "M": MIB}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise SystemExit(f"--sizes: {text!r} is not a size like 4K, 1M or 64M") from None
    if n not in SIZES:
        raise SystemExit(f"--sizes: {text!r} is not one of 4K, 64K, 1M, 16M, 64M")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~30 s, fewer repeats")
    ap.add_argument("--sizes", default="", help="only these sizes, e.g. 4K,1M,64M (from 4K, 64K, "
                    "1M, 16M, 64M; default all)")
    ap.add_argument("--ranks", default="2,4", help="world sizes, comma-separated (default 2,4)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 12, quick 3)")
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
    args.sizes = [parse_size(x) for x in args.sizes.split(",") if x.strip()]
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
