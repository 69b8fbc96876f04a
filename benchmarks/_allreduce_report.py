"""_allreduce_report.py: the analysis and report of bench_allreduce.py: the sizes and targets,
per-size summaries, paired ratios and verdicts, the issue 10 shared-memory targets (memcpy as
the reference), the printed table, the Markdown section and its note on where the time goes.
The standard library only (NumPy for the memcpy reference): the driver never imports ddl."""
import statistics
import time

import _common as C

KIB = 1024
MIB = KIB * KIB
SIZES = [4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB]
BW_TARGET = 0.95        # ddl busbw / gloo busbw, sizes >= 1 MiB
LAT_TARGET = 1.10       # ddl latency / gloo latency, sizes < 1 MiB
TORCH_TARGET = 1.00     # ddl time / torch time, every size
NOISE = 0.05            # a miss within this of the target is flagged as "within noise"
# ddl's mismatch check (csrc/comm/agreement.cc): one alltoall of blocks of a 64-byte descriptor and
# an eager payload: 4096 bytes, or the previous allreduce's size up to EAGER bytes, so that a
# loop of equal allreduces of at most EAGER bytes travels inside it (from its second call)
CHECK_BLOCK, EAGER = 64 + 4096, 64 * KIB


def size_name(nbytes):
    if nbytes >= MIB:
        return f"{nbytes // MIB} MiB"
    return f"{nbytes // KIB} KiB" if nbytes >= KIB else f"{nbytes} B"


def busbw_gbs(nbytes, ranks, seconds):
    return 2 * (ranks - 1) / ranks * nbytes / seconds / 1e9


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
