"""Failure scenarios for tests/test_distributed.py: one rank of a world, from the environment
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as spawned directly or by `python -m ddl.run`.

    faults.py loop --victim R --how exit|kill|sleep [--timeout S] [--init-method URL]
        All ranks loop over all_reduces of a 4 MiB tensor. After a few iterations the victim
        starts one more all_reduce (async, so it is mid-flight) and then os._exit(17)s
        (exit), SIGKILLs itself (kill), or stops calling collectives and sleeps (sleep).
        The victim prints "DYING <time.time()>" first. Every survivor prints
        "CAUGHT <time.time()> <elapsed since its last success> <type> <message>" and
        "FIELDS <json>" (the exception's rank, ranks, op, seq, peer, errno), checks that a
        later all_reduce fails at once with the same error ("AGAIN <seconds> <same>",
        "AGAIN-FIELDS <json>"), and then re-raises, so it exits non-zero with the message on
        stderr.
    faults.py mismatch
        Scenarios of ranks disagreeing at the same step, each on a fresh group of all ranks:
        prints "MISMATCH <name> <type> <message>" and "FIELDS <name> <json>" per scenario and
        "FAILFAST <name> <same>"
        for the call after it, then a final mismatch on the world group left uncaught (exit
        status 1 from Python, not an abort).
    faults.py stall [--timeout S]
        World of 2: rank 1 stops itself (SIGSTOP) 20 ms into a 64 MiB all_to_all, for the test to
        SIGKILL it while rank 0 is mid-transfer (see stall()).
    faults.py swap [--timeout S]
        new_group called in different orders on different ranks: prints "SWAP <type> <message>"
        (the subgroup join times out naming the missing group ranks and their global ranks).
    faults.py join [--timeout S]
        init_process_group, one all_reduce checked against the expected sum, "JOINED" or
        "JOINFAIL <elapsed> <type> <mro names> <message>" and "FIELDS <json>" (exit 3).
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


def say(*parts):
    print(*parts, flush=True)


FIELDS = ("rank", "ranks", "op", "seq", "peer", "errno")


def fields(e):
    """The structured fields a DistributedError carries, as one JSON word."""
    return json.dumps({k: getattr(e, k, "MISSING") for k in FIELDS}, separators=(",", ":"))


def _init(a):
    if a.init_method:  # rank and world size from the environment all the same
        dist.init_process_group("gloo", init_method=a.init_method, timeout=a.timeout,
                                rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    else:
        dist.init_process_group("gloo", timeout=a.timeout)


def loop(a):
    _init(a)
    rank, world = dist.get_rank(), dist.get_world_size()
    big = np.ones(1 << 20, np.float32)
    last_ok = time.time()
    i = 0
    try:
        while True:
            i += 1
            if rank == a.victim and i == 5:
                if a.how == "sleep":
                    say("DYING", repr(time.time()))
                    time.sleep(120)
                big[:] = 1  # (the others may still complete this one: the right sum)
                dist.all_reduce(big, async_op=True)  # in flight while this rank dies
                time.sleep(0.002)
                say("DYING", repr(time.time()))
                if a.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(17)
            big[:] = 1
            dist.all_reduce(big)
            if big[0] != world:
                say("WRONG", big[0])
                sys.exit(5)
            last_ok = time.time()
            if i > 10000:
                say("NEVER FAILED")
                sys.exit(6)
    except dist.DistributedError as e:
        now = time.time()
        say("CAUGHT", repr(now), f"{now - last_ok:.3f}", type(e).__name__,
            "TimeoutError" if isinstance(e, TimeoutError) else "-", str(e).replace("\n", " "))
        say("FIELDS", fields(e))
        t0 = time.perf_counter()
        try:
            dist.all_reduce(np.ones(1, np.float32))
            say("AGAIN no error")
        except dist.DistributedError as e2:
            say("AGAIN", f"{time.perf_counter() - t0:.4f}", str(e2) == str(e))
            say("AGAIN-FIELDS", fields(e2))
        raise


def mismatch(a):
    dist.init_process_group("gloo", timeout=20)
    rank, world = dist.get_rank(), dist.get_world_size()
    odd = world - 1   # the rank that disagrees
    f32 = lambda n: ddl.ones(n)
    scenarios = {
        "size": lambda g: dist.all_reduce(f32(5 if rank == odd else 4), group=g),
        "dtype": lambda g: dist.all_reduce(ddl.ones(4, dtype=ddl.float64 if rank == odd
                                                    else ddl.float32), group=g),
        "op": lambda g: dist.all_reduce(f32(4), op="max" if rank == odd else "sum", group=g),
        "kind": lambda g: (dist.broadcast(f32(4), src=0, group=g) if rank == odd
                           else dist.all_reduce(f32(4), group=g)),
        "root": lambda g: dist.broadcast(f32(4), src=1 if rank == odd else 0, group=g),
        "count": lambda g: (dist.barrier(group=g) if rank == odd else None,
                            dist.all_reduce(f32(2), group=g)),
    }
    for name, fn in scenarios.items():
        g = dist.new_group()
        try:
            fn(g)
            say("MISMATCH", name, "no error")
            continue
        except dist.DistributedError as e:
            say("MISMATCH", name, type(e).__name__, str(e).replace("\n", " "))
            say("FIELDS", name, fields(e))
            err = str(e)
        t0 = time.perf_counter()
        try:
            dist.all_reduce(f32(4), group=g)
            say("FAILFAST", name, "no error")
        except dist.DistributedError as e:
            say("FAILFAST", name, f"{time.perf_counter() - t0:.4f}", str(e) == err)
        # the world group is not affected by a broken subgroup
        t = f32(3)
        dist.all_reduce(t)
        assert t.numpy().tolist() == [world] * 3, t
    say("WORLD-OK")
    dist.all_reduce(f32(7 if rank == odd else 6))  # uncaught: the process exits with 1
    say("NOT REACHED")


def stall(a):
    """World of 2: both all_to_all_single 64 MiB; 20 ms in, rank 1 stops itself (SIGSTOP) in the
    middle of the transfer, and the test then SIGKILLs it. Rank 0 prints "STALLED <time>" before the
    call and CAUGHT ... (as in loop) after."""
    _init(a)
    big = np.ones(int(os.environ.get("DDL_STALL_FLOATS", str(32 << 20))), np.float32)
    out = np.empty_like(big)
    dist.all_reduce(np.ones(4, np.float32))  # connected and in step
    if dist.get_rank() == 1:
        import threading

        delay = float(os.environ.get("DDL_STALL_DELAY", "0.02"))
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGSTOP)).start()
    say("STALLED", repr(time.time()))
    try:
        # one 32 MiB message each way: far more than the sockets buffer, so it is mid-transfer
        dist.all_to_all_single(out, big)
        say("NO ERROR")
    except dist.DistributedError as e:
        now = time.time()
        say("CAUGHT", repr(now), "0", type(e).__name__, "-", str(e).replace("\n", " "))
        say("FIELDS", fields(e))
        sys.exit(1)


def swap(a):
    """Ranks 0 and 1 create groups [0, 2] then [1, 3]; ranks 2 and 3 the other way round."""
    dist.init_process_group("gloo", timeout=a.timeout)
    r = dist.get_rank()
    order = [[0, 2], [1, 3]] if r < 2 else [[1, 3], [0, 2]]
    try:
        for ranks in order:
            dist.new_group(ranks)
        say("SWAP no error")
    except dist.DistributedError as e:
        say("SWAP", type(e).__name__, str(e).replace("\n", " "))
        say("FIELDS", fields(e))


def join(a):
    t0 = time.time()
    try:
        dist.init_process_group("gloo", timeout=a.timeout)
    except Exception as e:  # noqa: BLE001
        say("JOINFAIL", f"{time.time() - t0:.3f}", type(e).__name__,
            ",".join(c.__name__ for c in type(e).__mro__), str(e).replace("\n", " "))
        say("FIELDS", fields(e))
        sys.exit(3)
    t = ddl.ones(8) * (dist.get_rank() + 1)
    dist.all_reduce(t)
    n = dist.get_world_size()
    assert t.numpy().tolist() == [n * (n + 1) / 2] * 8, t
    dist.destroy_process_group()
    say("JOINED")


def ddp(a):
    """DDP training where the victim exits before its 5th backward: the survivors' backward
    raises, and the reducer passes on the comm layer's fields (ranks, op) with the message."""
    import ddl
    from ddl.nn.parallel import DistributedDataParallel as DDP

    _init(a)
    rank = dist.get_rank()
    ddl.manual_seed(0)
    model = DDP(ddl.nn.Sequential(ddl.nn.Linear(64, 256), ddl.nn.ReLU(), ddl.nn.Linear(256, 4)))
    x = ddl.randn(32, 64)
    try:
        for i in range(1, 10000):
            if rank == a.victim and i == 5:
                say("DYING", repr(time.time()))
                os._exit(17)
            model(x).sum().backward()
        say("NEVER FAILED")
        sys.exit(6)
    except dist.DistributedError as e:
        say("CAUGHT", repr(time.time()), "0", type(e).__name__, "-", str(e).replace("\n", " "))
        say("FIELDS", fields(e))
        sys.exit(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["loop", "mismatch", "join", "swap", "stall", "ddp"])
    p.add_argument("--victim", type=int, default=1)
    p.add_argument("--how", choices=["exit", "kill", "sleep"], default="exit")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--init-method", default=None)
    a = p.parse_args()
    pidfile = os.environ.get("DDL_TEST_PIDDIR")
    if pidfile:  # lets the test kill this rank's process group whatever happens
        open(os.path.join(pidfile, str(os.getpid())), "w").close()
    {"loop": loop, "mismatch": mismatch, "join": join, "swap": swap, "stall": stall,
     "ddp": ddp}[a.mode](a)


if __name__ == "__main__":
    main()
