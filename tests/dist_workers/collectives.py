"""Every collective and dtype against NumPy, in one process group.

Run as one rank of a world (any size >= 1), either by tests/test_distributed.py directly
(RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in the environment) or through `python -m ddl.run`.

    python collectives.py [--init-method URL] [--quick]

Each rank computes every rank's inputs itself (a seeded generator per rank), so it knows the
expected result of every collective. The first mismatch prints diagnostics and exits 1; a
pass prints "OK rank R of N (<count> checks)" and exits 0. --quick runs a few all_reduces
only (for the init-method and multi-node tests).
"""
import argparse
import os
import sys
import time
import traceback

import numpy as np

import ddl
import ddl.distributed as dist
from ddl.distributed import ReduceOp

DTYPES = [(ddl.float32, np.float32), (ddl.float64, np.float64), (ddl.int64, np.int64)]
OPS = [("SUM", ReduceOp.SUM), ("AVG", ReduceOp.AVG), ("MIN", ReduceOp.MIN),
       ("MAX", ReduceOp.MAX), ("PRODUCT", ReduceOp.PRODUCT)]
NP_OPS = {
    "SUM": lambda a: a.sum(0),
    "AVG": lambda a: a.sum(0) / a.shape[0],
    "MIN": lambda a: a.min(0),
    "MAX": lambda a: a.max(0),
    "PRODUCT": lambda a: a.prod(0),
}

RANK = WORLD = 0
CHECKS = 0
STEP = 0


class Mismatch(AssertionError):
    pass


def data(rank, shape, np_dtype, salt):
    """Rank `rank`'s input for check `salt`: small integers (and halves for floats), so sums
    and products are exact in every dtype and only AVG rounds."""
    rng = np.random.default_rng([rank, salt, 12345])
    v = rng.integers(-3, 4, size=shape)
    if np_dtype != np.int64:
        v = v + 0.5 * rng.integers(0, 2, size=shape)
    return np.asarray(v, dtype=np_dtype)


def everyone(shape, np_dtype, salt):
    return np.stack([data(r, shape, np_dtype, salt) for r in range(WORLD)])


def check(what, got, want):
    global CHECKS
    CHECKS += 1
    got = got.numpy() if isinstance(got, ddl.Tensor) else np.asarray(got)
    want = np.asarray(want)
    ok = got.shape == want.shape
    if ok:
        if got.dtype.kind == "f":
            ok = np.allclose(got, want, rtol=1e-6 if got.dtype == np.float32 else 1e-12, atol=0)
        else:
            ok = np.array_equal(got, want)
    if not ok:
        raise Mismatch(f"rank {RANK} of {WORLD}: {what}:\n  got  {got!r}\n  want {want!r}")


def raises(what, exc, fn, *needles):
    global CHECKS
    CHECKS += 1
    try:
        fn()
    except exc as e:
        for n in needles:
            if n not in str(e):
                raise Mismatch(f"rank {RANK}: {what}: {type(e).__name__} {e!r} lacks {n!r}")
        return e
    except Exception as e:
        raise Mismatch(f"rank {RANK}: {what}: expected {exc.__name__}, got "
                       f"{type(e).__name__}: {e}") from e
    raise Mismatch(f"rank {RANK}: {what}: expected {exc.__name__}, nothing raised")


def salt():
    global STEP
    STEP += 1
    return STEP


# ---- the checks -----------------------------------------------------------------------------


def check_all_reduce():
    for ddt, npt in DTYPES:
        for shape in [(7,), (2, 3, 2), ()]:
            for name, op in OPS:
                s = salt()
                if name == "AVG" and npt == np.int64:
                    t = ddl.tensor(data(RANK, shape, npt, s))
                    raises("all_reduce AVG int64", TypeError, lambda t=t, op=op: dist.all_reduce(t, op),
                           "AVG")
                    continue
                t = ddl.tensor(data(RANK, shape, npt, s))
                dist.all_reduce(t, op=op)
                assert t.dtype is ddt and t.shape == shape
                check(f"all_reduce {name} {ddt} {shape}", t, NP_OPS[name](everyone(shape, npt, s)))
    # op given as a string, as in PyTorch's "sum"
    s = salt()
    t = ddl.tensor(data(RANK, (3,), np.float64, s))
    dist.all_reduce(t, op="max")
    check("all_reduce op='max'", t, everyone((3,), np.float64, s).max(0))
    # bool is not supported by any collective
    raises("all_reduce bool", TypeError, lambda: dist.all_reduce(ddl.zeros(3) > 0), "bool")
    raises("all_reduce bad op", ValueError, lambda: dist.all_reduce(ddl.zeros(3), op=9))


def check_broadcast():
    for ddt, npt in DTYPES:
        for root in range(WORLD):
            s = salt()
            t = ddl.tensor(data(RANK, (3, 4), npt, s))
            dist.broadcast(t, src=root)
            check(f"broadcast {ddt} from {root}", t, data(root, (3, 4), npt, s))


def check_all_gather():
    for ddt, npt in DTYPES:
        s = salt()
        mine = ddl.tensor(data(RANK, (2, 3), npt, s))
        outs = [ddl.zeros(2, 3, dtype=ddt) for _ in range(WORLD)]
        dist.all_gather(outs, mine)
        for r in range(WORLD):
            check(f"all_gather list {ddt} [{r}]", outs[r], data(r, (2, 3), npt, s))
        out = ddl.zeros(WORLD * 2, 3, dtype=ddt)
        dist.all_gather_into_tensor(out, mine)
        check(f"all_gather_into_tensor {ddt}", out, everyone((2, 3), npt, s).reshape(-1, 3))
    raises("all_gather wrong list length", ValueError,
           lambda: dist.all_gather([ddl.zeros(2)] * (WORLD + 1), ddl.zeros(2)))
    raises("all_gather_into_tensor wrong size", ValueError,
           lambda: dist.all_gather_into_tensor(ddl.zeros(WORLD * 2 + 1), ddl.zeros(2)))


def check_reduce_scatter():
    for ddt, npt in DTYPES:
        for name, op in OPS:
            if name == "AVG" and npt == np.int64:
                raises("reduce_scatter AVG int64", TypeError,
                       lambda ddt=ddt, op=op: dist.reduce_scatter_tensor(
                           ddl.zeros(2, dtype=ddt), ddl.zeros(2 * WORLD, dtype=ddt), op=op))
                continue
            s = salt()
            full = data(RANK, (WORLD, 5), npt, s)
            allr = everyone((WORLD, 5), npt, s)  # [src rank, chunk, 5]
            want = NP_OPS[name](allr[:, RANK])
            out = ddl.zeros(5, dtype=ddt)
            dist.reduce_scatter(out, [ddl.tensor(full[j]) for j in range(WORLD)], op=op)
            check(f"reduce_scatter list {name} {ddt}", out, want)
            out = ddl.zeros(5, dtype=ddt)
            dist.reduce_scatter_tensor(out, ddl.tensor(full.reshape(-1)), op=op)
            check(f"reduce_scatter_tensor {name} {ddt}", out, want)


def check_reduce():
    for ddt, npt in DTYPES:
        for root in range(WORLD):
            for name, op in OPS:
                if name == "AVG" and npt == np.int64:
                    continue
                if name in ("MIN", "PRODUCT") and root != WORLD - 1:
                    continue  # every op to one root, SUM/AVG/MAX to every root
                s = salt()
                mine = data(RANK, (6,), npt, s)
                t = ddl.tensor(mine)
                dist.reduce(t, dst=root, op=op)
                if RANK == root:
                    check(f"reduce {name} {ddt} to {root}", t, NP_OPS[name](everyone((6,), npt, s)))
                else:
                    check(f"reduce {name} {ddt} to {root}: non-root unchanged", t, mine)


def check_gather_scatter():
    for ddt, npt in DTYPES:
        for root in range(WORLD):
            s = salt()
            mine = ddl.tensor(data(RANK, (4,), npt, s))
            if RANK == root:
                outs = [ddl.zeros(4, dtype=ddt) for _ in range(WORLD)]
                dist.gather(mine, outs, dst=root)
                for r in range(WORLD):
                    check(f"gather {ddt} to {root} [{r}]", outs[r], data(r, (4,), npt, s))
            else:
                dist.gather(mine, dst=root)
            s = salt()
            out = ddl.zeros(2, 2, dtype=ddt)
            if RANK == root:
                src = data(RANK, (WORLD, 2, 2), npt, s)
                dist.scatter(out, [ddl.tensor(src[j]) for j in range(WORLD)], src=root)
            else:
                dist.scatter(out, src=root)
            check(f"scatter {ddt} from {root}", out, data(root, (WORLD, 2, 2), npt, s)[RANK])
    if RANK == 0:
        raises("gather without gather_list on the root", ValueError,
               lambda: dist.gather(ddl.zeros(2), None, dst=0))


def check_all_to_all():
    for ddt, npt in DTYPES:
        s = salt()
        mine = data(RANK, (WORLD, 3), npt, s)      # chunk j goes to rank j
        want = everyone((WORLD, 3), npt, s)[:, RANK]  # chunk from rank j
        out = ddl.zeros(WORLD * 3, dtype=ddt)
        dist.all_to_all_single(out, ddl.tensor(mine.reshape(-1)))
        check(f"all_to_all_single {ddt}", out, want.reshape(-1))
        outs = [ddl.zeros(3, dtype=ddt) for _ in range(WORLD)]
        dist.all_to_all(outs, [ddl.tensor(mine[j]) for j in range(WORLD)])
        for j in range(WORLD):
            check(f"all_to_all {ddt} [{j}]", outs[j], want[j])
    if WORLD > 1:
        raises("all_to_all_single indivisible", ValueError,
               lambda: dist.all_to_all_single(ddl.zeros(WORLD + 1), ddl.zeros(WORLD + 1)))


def check_empty():
    for ddt, npt in DTYPES:
        t = ddl.zeros(0, dtype=ddt)
        dist.all_reduce(t)
        check(f"all_reduce empty {ddt}", t, np.zeros(0, npt))
        dist.broadcast(t, src=WORLD - 1)
        out = ddl.zeros(0, dtype=ddt)
        dist.all_gather_into_tensor(out, t)
        dist.reduce_scatter_tensor(ddl.zeros(0, dtype=ddt), ddl.zeros(0, dtype=ddt))
        dist.reduce(t, dst=0)
        dist.all_to_all_single(ddl.zeros(0, dtype=ddt), ddl.zeros(0, dtype=ddt))
        outs = [ddl.zeros(0, dtype=ddt) for _ in range(WORLD)]
        dist.all_gather(outs, t)
        check(f"all_gather empty {ddt}", outs[-1], np.zeros(0, npt))
    # the group is still in step after all the empty ones
    s = salt()
    t = ddl.tensor(data(RANK, (2,), np.float64, s))
    dist.all_reduce(t)
    check("all_reduce after empties", t, everyone((2,), np.float64, s).sum(0))


def check_numpy():
    for ddt, npt in DTYPES:
        s = salt()
        a = data(RANK, (3, 2), npt, s)
        before = a.__array_interface__["data"][0]
        dist.all_reduce(a, op=ReduceOp.MAX)
        assert a.__array_interface__["data"][0] == before
        check(f"numpy all_reduce {npt.__name__} in place", a, everyone((3, 2), npt, s).max(0))
        s = salt()
        b = data(RANK, (5,), npt, s)
        dist.broadcast(b, src=WORLD - 1)
        check(f"numpy broadcast {npt.__name__}", b, data(WORLD - 1, (5,), npt, s))
        s = salt()
        outs = [np.zeros(2, npt) for _ in range(WORLD)]
        dist.all_gather(outs, data(RANK, (2,), npt, s))
        check(f"numpy all_gather {npt.__name__}", np.stack(outs), everyone((2,), npt, s))
        s = salt()
        out = np.zeros(4, npt)
        dist.reduce_scatter_tensor(out, data(RANK, (WORLD * 4,), npt, s))
        check(f"numpy reduce_scatter_tensor {npt.__name__}", out,
              everyone((WORLD, 4), npt, s)[:, RANK].sum(0))
        s = salt()
        out = np.zeros(WORLD * 2, npt)
        dist.all_to_all_single(out, data(RANK, (WORLD * 2,), npt, s))
        check(f"numpy all_to_all_single {npt.__name__}", out,
              everyone((WORLD, 2), npt, s)[:, RANK].reshape(-1))
    # a NumPy array in place inside a larger one (a contiguous row)
    s = salt()
    big = np.zeros((3, 4), np.float32)
    big[1] = data(RANK, (4,), np.float32, s)
    dist.all_reduce(big[1])
    check("numpy row in place", big, np.stack([np.zeros(4), everyone((4,), np.float32, s).sum(0),
                                               np.zeros(4)]))


def check_bad_buffers():
    m = ddl.zeros(3, 4)
    raises("all_reduce transposed", ValueError, lambda: dist.all_reduce(m.t()), "contiguous")
    raises("all_reduce stepped", ValueError, lambda: dist.all_reduce(ddl.zeros(8)[::2]),
           "contiguous")
    raises("broadcast transposed", ValueError, lambda: dist.broadcast(m.t(), 0), "contiguous")
    raises("all_gather_into_tensor stepped", ValueError,
           lambda: dist.all_gather_into_tensor(ddl.zeros(2 * WORLD, 2)[:, 0], ddl.zeros(WORLD)),
           "contiguous")
    raises("numpy column", ValueError, lambda: dist.all_reduce(np.zeros((3, 3))[:, 1]),
           "contiguous")
    ro = np.zeros(3)
    ro.flags.writeable = False
    raises("numpy read-only", ValueError, lambda: dist.all_reduce(ro), "writable")
    raises("numpy int32", TypeError, lambda: dist.all_reduce(np.zeros(3, np.int32)))
    raises("a list", TypeError, lambda: dist.all_reduce([1.0, 2.0]))
    raises("broadcast src outside", ValueError, lambda: dist.broadcast(ddl.zeros(2), WORLD))
    # none of the above reached the network: the group is still in step
    s = salt()
    t = ddl.tensor(data(RANK, (3,), np.float32, s))
    dist.all_reduce(t)
    check("all_reduce after local errors", t, everyone((3,), np.float32, s).sum(0))


def check_async():
    n = 6
    ts, works, wants = [], [], []
    for i in range(n):
        s = salt()
        ts.append(ddl.tensor(data(RANK, (1000,), np.float64, s)))
        wants.append(everyone((1000,), np.float64, s).sum(0))
        works.append(dist.all_reduce(ts[-1], async_op=True))
    assert all(isinstance(w, dist.Work) for w in works)
    # waiting on the last one first: the earlier ones are done too (FIFO on the comm thread)
    assert works[-1].wait() is True
    for i, w in enumerate(works):
        if not w.is_completed():
            raise Mismatch(f"rank {RANK}: async work {i} not completed after the last one")
    for i, (w, t, want) in enumerate(zip(works, ts, wants)):
        w.wait()
        check(f"async all_reduce {i}", t, want)
    times = [w.times_us() for w in works]
    for i in range(n):
        if not 0 < times[i][0] <= times[i][1]:
            raise Mismatch(f"rank {RANK}: work {i} times {times[i]}")
        if i and times[i][0] < times[i - 1][1]:
            raise Mismatch(f"rank {RANK}: work {i} started before work {i - 1} ended: {times}")
    # an async list collective fills its outputs on wait()
    s = salt()
    outs = [ddl.zeros(3) for _ in range(WORLD)]
    w = dist.all_gather(outs, ddl.tensor(data(RANK, (3,), np.float32, s)), async_op=True)
    w2 = dist.broadcast(ddl.zeros(2), src=0, async_op=True)
    w3 = dist.barrier(async_op=True)
    w.wait(timeout=30)
    w2.wait()
    w3.wait()
    for r in range(WORLD):
        check(f"async all_gather [{r}]", outs[r], data(r, (3,), np.float32, s))
    # a timeout on wait() alone does not fail the collective: on a 1-rank world it is instant
    assert dist.barrier(async_op=True).wait(timeout=30)
    # many small ones in flight at once, waited in issue order
    ws = []
    arrs = []
    for i in range(50):
        a = np.full(4, float(RANK + i))
        arrs.append(a)
        ws.append(dist.all_reduce(a, op=ReduceOp.MIN, async_op=True))
    for i, (w, a) in enumerate(zip(ws, arrs)):
        w.wait()
        check(f"async small {i}", a, np.full(4, float(i)))


def check_subgroups():
    world = dist.GroupMember.WORLD
    assert dist.get_world_size() == WORLD and dist.get_rank() == RANK
    if WORLD == 4:
        layout = [[0, 2], [1, 3]]
    elif WORLD == 3:
        layout = [[0, 2], [1]]
    elif WORLD == 2:
        layout = [[1], [0, 1]]
    else:
        layout = [[0]]
    groups = [dist.new_group(ranks) for ranks in layout]  # every rank, same order
    everybody = dist.new_group()  # all ranks
    for gi, (ranks, g) in enumerate(zip(layout, groups)):
        base = 100000 + 100 * gi  # salts that do not depend on which groups this rank is in
        if RANK not in ranks:
            if g is not dist.GroupMember.NON_GROUP_MEMBER:
                raise Mismatch(f"rank {RANK}: new_group({ranks}) gave {g!r} to a non-member")
            assert dist.get_rank(g) == -1 and dist.get_world_size(g) == -1
            t = ddl.ones(3)
            assert dist.all_reduce(t, group=g) is None
            check("non-member all_reduce is a no-op", t, np.ones(3))
            assert dist.broadcast(t, src=ranks[0], group=g) is None
            assert dist.barrier(group=g) is None
            w = dist.all_reduce(t, group=g, async_op=True)
            assert w.is_completed() and w.wait()
            check("non-member async all_reduce is a no-op", t, np.ones(3))
            continue
        me = ranks.index(RANK)
        assert dist.get_rank(g) == me and dist.get_world_size(g) == len(ranks), (
            dist.get_rank(g), dist.get_world_size(g))
        for k, (ddt, npt) in enumerate(DTYPES):
            s = base + k
            t = ddl.tensor(data(RANK, (5,), npt, s))
            dist.all_reduce(t, group=g)
            want = np.stack([data(r, (5,), npt, s) for r in ranks]).sum(0)
            check(f"subgroup {ranks} all_reduce {ddt}", t, want)
        s = base + 10
        t = ddl.tensor(data(RANK, (4,), np.float32, s))
        src = ranks[-1]  # a global rank
        dist.broadcast(t, src=src, group=g)
        check(f"subgroup {ranks} broadcast from global {src}", t, data(src, (4,), np.float32, s))
        s = base + 11
        outs = [ddl.zeros(2) for _ in ranks]
        dist.all_gather(outs, ddl.tensor(data(RANK, (2,), np.float32, s)), group=g)
        for i, r in enumerate(ranks):
            check(f"subgroup {ranks} all_gather [{i}]", outs[i], data(r, (2,), np.float32, s))
        w = dist.all_reduce(ddl.ones(2), group=g, async_op=True)
        w.wait()
        dist.barrier(group=g)
        if len(ranks) < WORLD:
            outside = next(r for r in range(WORLD) if r not in ranks)
            raises("broadcast from a rank outside the group", ValueError,
                   lambda o=outside, g=g: dist.broadcast(ddl.zeros(1), src=o, group=g), "not in")
    # the world and the full subgroup interleave with the others
    s = salt()
    t = ddl.tensor(data(RANK, (3,), np.float64, s))
    dist.all_reduce(t, group=everybody)
    check("new_group() all_reduce", t, everyone((3,), np.float64, s).sum(0))
    s = salt()
    t = ddl.tensor(data(RANK, (3,), np.float64, s))
    dist.all_reduce(t, group=world)
    check("WORLD all_reduce", t, everyone((3,), np.float64, s).sum(0))
    for g in groups + [everybody]:
        if g is not dist.GroupMember.NON_GROUP_MEMBER:
            dist.destroy_process_group(g)


ALL = [check_all_reduce, check_broadcast, check_all_gather, check_reduce_scatter, check_reduce,
       check_gather_scatter, check_all_to_all, check_empty, check_numpy, check_bad_buffers,
       check_async, check_subgroups]


def quick():
    for i in range(3):
        s = salt()
        t = ddl.tensor(data(RANK, (16,), np.float32, s))
        dist.all_reduce(t)
        check(f"quick all_reduce {i}", t, everyone((16,), np.float32, s).sum(0))
    s = salt()
    t = ddl.tensor(data(RANK, (3,), np.int64, s))
    dist.broadcast(t, src=WORLD - 1)
    check("quick broadcast", t, data(WORLD - 1, (3,), np.int64, s))


def main():
    global RANK, WORLD
    p = argparse.ArgumentParser()
    p.add_argument("--init-method", default=None)
    p.add_argument("--rank", type=int, default=-1)
    p.add_argument("--world-size", type=int, default=-1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--expect-world", type=int, default=None)
    a = p.parse_args()
    piddir = os.environ.get("DDL_TEST_PIDDIR")
    if piddir:  # lets the test kill this rank's process group whatever happens
        open(os.path.join(piddir, str(os.getpid())), "w").close()
    t0 = time.perf_counter()
    dist.init_process_group("gloo", init_method=a.init_method, rank=a.rank,
                            world_size=a.world_size, timeout=30)
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    if a.expect_world is not None and WORLD != a.expect_world:
        raise Mismatch(f"world size {WORLD}, expected {a.expect_world}")
    if "RANK" in os.environ and a.rank < 0 and int(os.environ["RANK"]) != RANK:
        raise Mismatch(f"rank {RANK} but RANK={os.environ['RANK']}")
    for fn in ([quick] if a.quick else ALL):
        fn()
    dist.barrier()
    dist.destroy_process_group()
    assert not dist.is_initialized()
    print(f"OK rank {RANK} of {WORLD} ({CHECKS} checks, {time.perf_counter() - t0:.2f} s)",
          flush=True)


if __name__ == "__main__":
    try:
        main()
    except Mismatch as e:
        print(f"MISMATCH {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        sys.exit(1)
