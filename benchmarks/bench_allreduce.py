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
- gloo+desc: the same process doing what ddl puts on the wire: a 64-byte allgather (ddl's
         mismatch check) and then the RING allreduce, with no thread handoff and no Python.
- gloo bcube: the same allreduce with Gloo's BCUBE algorithm (is an algorithm switch worth it?).
- ddl:   dist.all_reduce(t) on a ddl tensor (synchronous), env:// rendezvous through ddl's
         TCPStore; the collective runs on ddl's per-group comm thread.
- torch: torch.distributed.all_reduce on a CPU tensor, backend "gloo" (its own bundled Gloo).
- ddl[LABEL]: another ddl build (--ddl-variant LABEL=DIR, DIR holding a built `ddl` package),
         e.g. the tree before a change, measured in the same run.
All processes of all variants for one world size are started up front and stay idle (blocked
on their stdin) while another variant runs. Every variant runs the same sizes in turn; the
order of the variants rotates each round, and rounds repeat, so drift and other load on the
machine fall on all of them alike.

How it measures: each call is timed on every rank (perf_counter / steady_clock around one
blocking allreduce, warm-up calls untimed); a call's time is the mean over the ranks, the
figure is the median over all timed calls of all rounds. busbw = 2(n-1)/n x bytes / time.
Buffers hold zeros while timed (sums stay 0); the first call of each size checks a real sum.

Targets (from the issue): ddl >= 0.95x raw Gloo bus bandwidth from 1 MiB up; small-message
(< 1 MiB) latency <= 1.1x raw Gloo; ddl no slower than torch.distributed at any size.
"""
import argparse
import datetime
import json
import os
import platform
import re
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

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BASELINE_SRC = HERE / "gloo_baseline.cc"

KIB = 1024
MIB = KIB * KIB
SIZES = [4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB]
BW_TARGET = 0.95        # ddl busbw / gloo busbw, sizes >= 1 MiB
LAT_TARGET = 1.10       # ddl latency / gloo latency, sizes < 1 MiB
TORCH_TARGET = 1.00     # ddl time / torch time, every size
NOISE = 0.05            # a miss within this of the target is flagged as "within noise"

# (warm-up, timed calls) per variant per round, and the number of rounds
PLAN_FULL = {4 * KIB: (5, 150), 64 * KIB: (5, 80), MIB: (2, 24), 16 * MIB: (1, 5), 64 * MIB: (1, 2)}
PLAN_QUICK = {4 * KIB: (3, 60), 64 * KIB: (3, 30), MIB: (1, 8), 16 * MIB: (1, 2), 64 * MIB: (0, 1)}
ROUNDS_FULL, ROUNDS_QUICK = 6, 3
DESC_ITERS_FULL, DESC_ITERS_QUICK = 150, 60
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
        elif (ROOT / "ddl" / "__init__.py").exists():
            sys.path.insert(0, str(ROOT))  # benchmark the source tree (an in-place build)
        import numpy as np
        import ddl
        import ddl.distributed as dist
        dist.init_process_group("gloo")
        info = {"ddl": ddl.__file__, "gloo": ddl.gloo_version(), "version": ddl.__version__}

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
        _, mode, nbytes, warmup, iters = parts
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
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:
        pass


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
            err = open(Path(tmp) / f"{name.replace(' ', '_')}.{len(cmds_envs)}.{r}.err", "w+b")
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=err, preexec_fn=_die_with_parent, cwd=str(ROOT))
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
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"compiling the Gloo baseline failed ({' '.join(cmd)}):\n{r.stderr}\n"
                         "It needs g++ and Debian's libgloo-dev.")
    return exe, " ".join(cmd[:-3] + ["gloo_baseline.cc", "-lgloo", "-pthread"])


def torch_available():
    r = subprocess.run([sys.executable, "-c", "import torch, torch.distributed as d; "
                        "print(torch.__version__, d.is_available() and d.is_gloo_available())"],
                       capture_output=True, text=True)
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
    kinds = [("ddl", "ddl", "")] + [(f"ddl[{label}]", "ddl", path) for label, path in ddl_variants]
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
    rounds = args.rounds or (ROUNDS_QUICK if args.quick else ROUNDS_FULL)
    desc_iters = DESC_ITERS_QUICK if args.quick else DESC_ITERS_FULL
    sizes = [s for s in SIZES if s in plan]
    results = {}
    infos = {}
    for n in args.ranks:
        # variant name -> (group, mode, sizes it runs)
        variants = {"gloo": ("gloo", "ring", sizes)}
        variants["gloo+desc"] = ("gloo", "desc+ring", [s for s in sizes if s <= MIB])
        if not args.quick:
            variants["gloo bcube"] = ("gloo", "bcube", sizes)
        variants["ddl"] = ("ddl", "sync", sizes)
        for label, _ in args.ddl_variant:
            variants[f"ddl[{label}]"] = (f"ddl[{label}]", "sync", sizes)
        if with_torch:
            variants["torch"] = ("torch", "sync", sizes)
        t0 = time.monotonic()
        groups = start_groups(n, exe, tmp, with_torch, args.ddl_variant)
        try:
            infos[n] = {k: g.info for k, g in groups.items()}
            samples = {v: {s: [] for s in vs} for v, (_, _, vs) in variants.items()}
            desc = []
            names = list(variants)
            for rnd in range(rounds):
                for i, s in enumerate(sizes):
                    warm, iters = plan[s]
                    k = (rnd + i) % len(names)
                    for v in names[k:] + names[:k]:
                        gname, mode, vs = variants[v]
                        if s in vs:
                            samples[v][s] += groups[gname].run(mode, s, warm, iters)
                desc += groups["gloo"].run("desc", 64, 5, desc_iters)
                print(f"  {n} ranks: round {rnd + 1}/{rounds} done ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        finally:
            for g in groups.values():
                g.close()
        results[n] = {"samples": samples, "desc": desc}
    return results, infos


# ---- analysis and report ---------------------------------------------------------------------


def summarize(results):
    """{n: {variant: {size: {"median_s", "busbw", "count"}}}, desc per n}"""
    out = {}
    for n, res in results.items():
        table = {}
        for v, per_size in res["samples"].items():
            table[v] = {}
            for s, xs in per_size.items():
                if xs:
                    med = statistics.median(xs)
                    q = statistics.quantiles(xs, n=4) if len(xs) >= 4 else [min(xs), med, max(xs)]
                    table[v][s] = {"median_s": med, "busbw_gbs": busbw_gbs(s, n, med),
                                   "p25_s": q[0], "p75_s": q[-1], "calls": len(xs)}
        d = res["desc"]
        out[n] = {"table": table, "desc_median_s": statistics.median(d) if d else None}
    return out


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
                ratio = g["median_s"] / d["median_s"]  # = busbw ratio
                rows.append({"ranks": n, "size": s, "check": "busbw ddl/gloo", "ratio": ratio,
                             "target": f">= {BW_TARGET:.2f}", "pass": ratio >= BW_TARGET,
                             "noise": ratio >= BW_TARGET - NOISE})
            else:
                ratio = d["median_s"] / g["median_s"]
                rows.append({"ranks": n, "size": s, "check": "latency ddl/gloo", "ratio": ratio,
                             "target": f"<= {LAT_TARGET:.2f}", "pass": ratio <= LAT_TARGET,
                             "noise": ratio <= LAT_TARGET + NOISE})
            tr = t.get("torch", {}).get(s)
            if tr:
                ratio = d["median_s"] / tr["median_s"]
                rows.append({"ranks": n, "size": s, "check": "time ddl/torch", "ratio": ratio,
                             "target": f"<= {TORCH_TARGET:.2f}", "pass": ratio <= TORCH_TARGET,
                             "noise": ratio <= TORCH_TARGET + NOISE})
    return rows


def fmt_ms(s):
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def variant_order(table):
    first = ["gloo", "gloo+desc", "gloo bcube", "ddl"]
    rest = sorted(v for v in table if v not in first and v != "torch")
    return [v for v in first + rest + ["torch"] if v in table]


def markdown(meta, summary, rows):
    L = []
    L.append(f"Measured {meta['date']} on {meta['cpu']} ({meta['cpus']} logical CPUs, "
             f"{meta['kernel']}), Python {meta['python']}, ddl {meta['ddl']} (Gloo headers "
             f"{meta['gloo']}, Debian libgloo-dev {meta['libgloo']}), torch {meta['torch'] or '-'}"
             f"{' (--quick)' if meta['quick'] else ''}. Load average before/after: "
             f"{meta['load_before']} / {meta['load_after']}; wall time {meta['wall_s']:.0f} s.")
    L.append("")
    L.append(f"- Loopback, one process per rank, {meta['rounds']} interleaved rounds; figure = median "
             "over timed calls of the per-call time averaged over ranks; busbw = 2(n-1)/n x "
             "bytes / time.")
    L.append(f"- gloo: `{meta['baseline_cmd']}`, caller thread runs gloo::allreduce (RING). "
             "gloo+desc: the same plus ddl's 64-byte descriptor allgather first. "
             "ddl: `dist.all_reduce(t)` (comm thread, mismatch check on).")
    if meta.get("torch_note"):
        L.append(f"- torch skipped: {meta['torch_note']}")
    for label, path in meta.get("ddl_variants", []):
        L.append(f"- ddl[{label}]: the ddl package in `{path}`.")
    L.append("")
    for n, sm in summary.items():
        t = sm["table"]
        vs = variant_order(t)
        L.append(f"**{n} ranks** — median latency ms / busbw GB/s")
        L.append("")
        L.append("| size | " + " | ".join(vs) + " | ddl/gloo bw | ddl/torch time |")
        L.append("|---" * (len(vs) + 3) + "|")
        for s in SIZES:
            if "gloo" not in t or s not in t["gloo"]:
                continue
            cells = []
            for v in vs:
                e = t[v].get(s)
                cells.append(f"{fmt_ms(e['median_s'])} / {e['busbw_gbs']:.2f}" if e else "")
            g, d, tr = t["gloo"][s], t.get("ddl", {}).get(s), t.get("torch", {}).get(s)
            bw = f"{g['median_s'] / d['median_s']:.2f}x" if d else ""
            tt = f"{d['median_s'] / tr['median_s']:.2f}x" if d and tr else ""
            L.append(f"| {size_name(s)} | " + " | ".join(cells) + f" | {bw} | {tt} |")
        if sm["desc_median_s"]:
            L.append("")
            L.append(f"64-byte allgather alone (ddl's descriptor exchange, raw Gloo): "
                     f"{sm['desc_median_s'] * 1e3:.3f} ms.")
        g4, d4 = t.get("gloo", {}).get(4 * KIB), t.get("ddl", {}).get(4 * KIB)
        gd4 = t.get("gloo+desc", {}).get(4 * KIB)
        if g4 and d4 and gd4:
            L.append(f"Cost of the always-on mismatch check at 4 KiB: ddl - gloo = "
                     f"{(d4['median_s'] - g4['median_s']) * 1e3:+.3f} ms, of which the descriptor "
                     f"round on the wire (gloo+desc - gloo) {(gd4['median_s'] - g4['median_s']) * 1e3:+.3f} ms "
                     f"and the comm-thread handoff + Python (ddl - gloo+desc) "
                     f"{(d4['median_s'] - gd4['median_s']) * 1e3:+.3f} ms.")
        L.append("")
    L.append("| ranks | size | check | ratio | target | result |")
    L.append("|---|---|---|---|---|---|")
    for r in rows:
        res = "pass" if r["pass"] else ("MISS (within noise)" if r["noise"] else "MISS")
        L.append(f"| {r['ranks']} | {size_name(r['size'])} | {r['check']} | {r['ratio']:.2f} | "
                 f"{r['target']} | {res} |")
    L.append("")
    npass = sum(r["pass"] for r in rows)
    L.append(f"{npass} of {len(rows)} checks meet their target.")
    return "\n".join(L) + "\n"


def update_docs(path, body, meta):
    heading = "## Allreduce (bench_allreduce.py)"
    section = (f"{heading}\n\n`python benchmarks/bench_allreduce.py` (raw results: "
               f"`benchmarks/results/bench_allreduce.json`).\n\n{body}")
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if heading in text:
        start = text.index(heading)
        nxt = re.search(r"^## ", text[start + len(heading):], re.M)
        end = start + len(heading) + nxt.start() if nxt else len(text)
        text = text[:start] + section + ("\n" if nxt else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


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
        if sm["desc_median_s"]:
            print(f"  64-byte allgather (descriptor exchange, raw Gloo): "
                  f"{sm['desc_median_s'] * 1e3:.3f} ms")
    print()
    for r in rows:
        res = "pass" if r["pass"] else ("MISS (within noise)" if r["noise"] else "MISS")
        print(f"{r['ranks']} ranks {size_name(r['size']):>7}  {r['check']:<17} "
              f"{r['ratio']:5.2f}  target {r['target']:<7} {res}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~30 s, fewer repeats")
    ap.add_argument("--ranks", default="2,4", help="world sizes, comma-separated (default 2,4)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 6, quick 3)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch.distributed")
    ap.add_argument("--ddl-variant", action="append", default=[], metavar="LABEL=DIR",
                    help="also run the ddl package found in DIR, labelled ddl[LABEL]")
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
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = tempfile.mkdtemp(prefix="bench_allreduce.")
    try:
        exe, baseline_cmd = build_baseline(tmp)
        results, infos = measure(args, exe, tmp, torch_ver is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())

    sys.path.insert(0, str(ROOT))
    import ddl
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    try:
        libgloo = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libgloo-dev"],
                                 capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        libgloo = "?"
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(), "ddl": ddl.__version__, "gloo": ddl.gloo_version(),
        "libgloo": libgloo, "torch": torch_ver, "torch_note": torch_note, "quick": args.quick,
        "rounds": args.rounds or (ROUNDS_QUICK if args.quick else ROUNDS_FULL),
        "baseline_cmd": baseline_cmd, "ddl_variants": args.ddl_variant,
        "load_before": load_before, "load_after": load_after,
        "wall_s": time.monotonic() - t_start, "workers": {str(k): v for k, v in infos.items()},
    }
    summary = summarize(results)
    rows = verdicts(summary)
    print_table(summary, rows)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    body = markdown(meta, summary, rows)
    (out / "bench_allreduce.md").write_text(body)
    blob = {
        "meta": meta,
        "summary": {str(n): {"desc_median_s": sm["desc_median_s"],
                             "table": {v: {str(s): e for s, e in per.items()}
                                       for v, per in sm["table"].items()}}
                    for n, sm in summary.items()},
        "checks": rows,
        "samples_s": {str(n): {"desc": r["desc"],
                               **{v: {str(s): xs for s, xs in per.items()}
                                  for v, per in r["samples"].items()}}
                      for n, r in results.items()},
    }
    (out / "bench_allreduce.json").write_text(json.dumps(blob, indent=1))
    print(f"\nwrote {out / 'bench_allreduce.json'} and {out / 'bench_allreduce.md'}")
    if not args.no_docs and (not args.quick or args.docs):
        docs = ROOT / "docs" / "benchmarks.md"
        update_docs(docs, body, meta)
        print(f"updated {docs}")
    print(f"wall time {meta['wall_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
