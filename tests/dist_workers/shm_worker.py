"""Shared-memory transport scenarios for tests/test_shm.py: one rank of a world, from the
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; DDL_COMM_TRANSPORT for the world).

    shm_worker.py check
        Every collective, dtype and reduce op at sizes 0, 1, 7 and odd ones across the small /
        large boundaries, on the world (shared memory) and on a Gloo group of the same ranks:
        shared memory must equal the rank-order NumPy reduction bit for bit; Gloo equals it
        bit for bit for 1-2 ranks, ints, min and max, and within rounding otherwise. Also
        non-contiguous and offset views, subgroups, repeatability. Prints "TRANSPORT <name>
        <hosts>" and "OK rank R".
    shm_worker.py info
        Prints "INFO <json of get_backend_info()>" for the world and "SUB <json>" for a
        subgroup of ranks 0 and 1, then "OK rank R".
    shm_worker.py victim --victim R --how kill|stop --floats N
        All ranks loop over all_reduces of N float32; the victim prints "DYING <time>" after a
        few and SIGKILLs or SIGSTOPs itself while its next all_reduce is under way. Survivors
        print "CAUGHT <time> <type> <is timeout> <message>" and "FIELDS <json>".
"""
import argparse
import json
import os
import signal
import sys
import time

import numpy as np

import ddl
import ddl.distributed as dist

FIELDS = ("rank", "ranks", "op", "seq", "peer", "errno")
DTYPES = [np.float32, np.float64, np.int64]
OPS = ["sum", "avg", "min", "max", "product"]
# around the transport's small (64 KiB; 1 MiB on 2 ranks) and large-round (2 MiB) buffers and
# its large all_reduce's 256 KiB chunks (262_145 float32: 1 MiB + 4 bytes, a last chunk of one
# element), in elements
SIZES = [0, 1, 7, 1023, 16385, 70001, 262_145, 600_001]


def say(*parts):
    print(*parts, flush=True)


def data(rank, n, dtype, seed):
    rng = np.random.default_rng(1000 * seed + rank)
    if dtype == np.int64:
        return rng.integers(-3, 4, n).astype(np.int64)
    return rng.uniform(0.5, 1.5, n).astype(dtype)


def reduce_ref(blocks, op, dtype):
    """Rank-order reduction in dtype: ((b0 op b1) op b2) ...; AVG as SUM / n."""
    acc = blocks[0].copy()
    for b in blocks[1:]:
        if op in ("sum", "avg"):
            acc = acc + b
        elif op == "min":
            acc = np.minimum(acc, b)
        elif op == "max":
            acc = np.maximum(acc, b)
        else:
            acc = acc * b
    if op == "avg":
        acc = acc / dtype(len(blocks))
    return acc.astype(dtype)


def same(got, ref, exact, what):
    if exact:
        if not np.array_equal(got, ref):
            bad = np.flatnonzero(got != ref)[:5]
            raise AssertionError(f"{what}: differs at {bad}: {got[bad]} vs {ref[bad]}")
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5 if got.dtype == np.float32 else 1e-12,
                                   err_msg=what)


def check_group(g, transport_exact, tag):
    me, n = g.rank(), g.size()
    seed = 0
    for dtype in DTYPES:
        for size in SIZES:
            seed += 1
            blocks = [data(r, size, dtype, seed) for r in range(n)]
            for op in OPS:
                if op == "avg" and dtype == np.int64:
                    continue
                t = blocks[me].copy()
                dist.all_reduce(t, op=op, group=g)
                exact = transport_exact or dtype == np.int64 or op in ("min", "max")
                same(t, reduce_ref(blocks, op, dtype), exact, f"{tag} all_reduce {dtype} {size} {op}")
            # broadcast from the last rank
            t = blocks[me].copy()
            dist.broadcast(t, src=g.ranks[n - 1], group=g)
            same(t, blocks[n - 1], True, f"{tag} broadcast {size}")
            # all_gather
            out = np.zeros(n * size, dtype)
            dist.all_gather_into_tensor(out, blocks[me], group=g)
            same(out, np.concatenate(blocks), True, f"{tag} all_gather {size}")
            # reduce_scatter: input n * size per rank
            ins = [data(r, n * size, dtype, seed + 7) for r in range(n)]
            out = np.zeros(size, dtype)
            dist.reduce_scatter_tensor(out, ins[me], op="sum", group=g)
            parts = [x[me * size:(me + 1) * size] for x in ins]
            exact = transport_exact or dtype == np.int64
            same(out, reduce_ref(parts, "sum", dtype), exact, f"{tag} reduce_scatter {size}")
            # reduce to rank 0, others unchanged
            t = blocks[me].copy()
            dist.reduce(t, dst=g.ranks[0], op="max", group=g)
            same(t, reduce_ref(blocks, "max", dtype) if me == 0 else blocks[me], True,
                 f"{tag} reduce {size}")
            # gather / scatter at rank 0
            if me == 0:
                lst = [np.zeros(size, dtype) for _ in range(n)]
                dist.gather(blocks[me], lst, dst=g.ranks[0], group=g)
                for r in range(n):
                    same(lst[r], blocks[r], True, f"{tag} gather {size}")
                dist.scatter(t := np.zeros(size, dtype), [b.copy() for b in blocks],
                             src=g.ranks[0], group=g)
            else:
                dist.gather(blocks[me], None, dst=g.ranks[0], group=g)
                dist.scatter(t := np.zeros(size, dtype), None, src=g.ranks[0], group=g)
            same(t, blocks[me], True, f"{tag} scatter {size}")
            # all_to_all_single
            if size % n == 0 or True:
                chunk = size // max(n, 1)
                ins = [data(r, n * chunk, dtype, seed + 11) for r in range(n)]
                out = np.zeros(n * chunk, dtype)
                dist.all_to_all_single(out, ins[me], group=g)
                ref = np.concatenate([ins[r][me * chunk:(me + 1) * chunk] for r in range(n)])
                same(out, ref, True, f"{tag} all_to_all {size}")
    dist.barrier(group=g)


def check(a):
    dist.init_process_group("gloo", timeout=60)
    me, n = dist.get_rank(), dist.get_world_size()
    info = dist.get_backend_info()
    say("TRANSPORT", info["transport"], info["hosts"])
    check_group(dist.GroupMember.WORLD, info["transport"] == "shm", "world")
    gloo = dist.new_group(transport="gloo")
    assert dist.get_backend_info(gloo)["transport"] == "gloo"
    # Gloo's large all_reduce associates differently from 3 ranks up: exact only for 1-2
    check_group(gloo, n <= 2, "gloo")
    # the same bits on both transports for 2 ranks, and run to run on shared memory
    x = data(me, 300_001, np.float32, 99)
    y, z = x.copy(), x.copy()
    dist.all_reduce(y)
    dist.all_reduce(z, group=gloo)
    if n <= 2:
        same(y, z, True, "shm vs gloo")
    w = x.copy()
    dist.all_reduce(w)
    same(w, y, True, "repeatable")
    # non-contiguous inputs (copied; in-place tensors must be contiguous, as in PyTorch) and
    # offset views
    vals = np.arange(24, dtype=np.float32).reshape(4, 6) * (me + 1)
    tt = ddl.tensor(np.ascontiguousarray(vals.T)).t()  # vals, transposed storage
    assert not tt.is_contiguous()
    out = np.zeros((n * 4, 6), np.float32)
    dist.all_gather_into_tensor(out, tt)
    same(out, np.concatenate([vals / (me + 1) * (r + 1) for r in range(n)]), True, "transposed")
    rs_in = ddl.tensor(np.ascontiguousarray(np.ones((n * 3, 2), np.float64).T)).t()
    rs_out = np.zeros((3, 2), np.float64)
    dist.reduce_scatter_tensor(rs_out, rs_in)
    same(rs_out, np.full((3, 2), float(n)), True, "transposed reduce_scatter input")
    buf = ddl.tensor(np.ones(10, dtype=np.float64))
    view = buf[3:8]
    dist.all_reduce(view)
    same(buf.numpy(), np.array([1, 1, 1] + [n] * 5 + [1, 1], np.float64), True, "offset view")
    # subgroups: the odd and even ranks, each deciding for itself
    evens = dist.new_group([r for r in range(n) if r % 2 == 0])
    odds = dist.new_group([r for r in range(n) if r % 2 == 1]) if n > 1 else None
    mine = evens if me % 2 == 0 else odds
    t = np.full(5, me + 1, np.int64)
    dist.all_reduce(t, group=mine)
    exp = sum(r + 1 for r in range(n) if r % 2 == me % 2)
    same(t, np.full(5, exp, np.int64), True, "subgroup")
    say("SUBGROUP", dist.get_backend_info(mine)["transport"])
    # a mismatch in a large call (the descriptor rides with the first round) and between a
    # large and a small one: every rank raises, naming the odd rank
    for odd_count in (300_001, 10):
        if n == 1:
            break
        g2 = dist.new_group()
        try:
            dist.all_reduce(np.ones(odd_count if me == n - 1 else 300_000, np.float32), group=g2)
            raise AssertionError("mismatch not detected")
        except dist.DistributedError as e:
            assert "mismatched collectives" in str(e) and e.ranks, (str(e), e.ranks)
            assert (n - 1 in e.ranks) if me != n - 1 else (0 in e.ranks), e.ranks
        dist.destroy_process_group(g2)
    dist.barrier()  # rank 0 serves the store: it leaves last
    dist.destroy_process_group()
    say("OK rank", me)


def info(a):
    dist.init_process_group("gloo", timeout=60)
    me = dist.get_rank()
    say("INFO", json.dumps(dist.get_backend_info()))
    sub = dist.new_group([0, 1])
    if me in (0, 1):
        say("SUB", json.dumps(dist.get_backend_info(sub)))
        t = np.full(3, me + 1.0, np.float32)
        dist.all_reduce(t, group=sub)
        assert (t == 3).all(), t
    t = np.full(70001, me + 1.0, np.float64)
    dist.all_reduce(t)
    assert (t == sum(range(1, dist.get_world_size() + 1))).all()
    dist.barrier()
    dist.destroy_process_group()
    say("OK rank", me)


def victim(a):
    dist.init_process_group("gloo", timeout=a.timeout)
    me = dist.get_rank()
    t = np.ones(a.floats, np.float32)
    i = 0
    try:
        while True:
            i += 1
            if me == a.victim and i == 4:
                dist.all_reduce(t, async_op=True)
                time.sleep(0.002)
                say("DYING", repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL if a.how == "kill" else signal.SIGSTOP)
                time.sleep(600)
            dist.all_reduce(t)
            if i > 100000:
                sys.exit(6)
    except dist.DistributedError as e:
        now = time.time()
        say("CAUGHT", repr(now), type(e).__name__, isinstance(e, TimeoutError),
            str(e).replace("\n", " "))
        say("FIELDS", json.dumps({k: getattr(e, k, None) for k in FIELDS},
                                 separators=(",", ":")))
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["check", "info", "victim"])
    p.add_argument("--victim", type=int, default=1)
    p.add_argument("--how", default="kill")
    p.add_argument("--floats", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    {"check": check, "info": info, "victim": victim}[a.what](a)


if __name__ == "__main__":
    main()
