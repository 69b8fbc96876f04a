"""ddl.distributed.launch: run a function on N ranks from a notebook or a script.

    def train(lr):
        import ddl.distributed as dist
        ...
        return accuracy

    acc = ddl.distributed.launch(train, nprocs=2, args=(0.01,))

Workers are forked, so functions defined in a notebook cell work as they are (nothing needs to
be importable or picklable but the return value). Each worker gets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT, an initialized default process group and cores // nprocs BLAS
threads; launch returns rank 0's result, or raises DistributedError naming the rank that
failed with its traceback. A rank dies with the process that launched it (PR_SET_PDEATHSIG),
so killing a notebook kernel leaves no rank behind, and an interrupt (KeyboardInterrupt in
launch) stops the ranks at once (SIGTERM) before it propagates. The ranks' store takes only
them: a random per-job DDL_STORE_TOKEN unless one is exported (docs/security.md).
"""
import multiprocessing
import os
import secrets
import signal
import socket
import time
import traceback


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, nprocs, port, fn, args, kwargs, conn, timeout, parent, token):
    from ..run import die_with_parent

    die_with_parent(parent)   # the launching process dies: so does this rank
    if token is not None:
        os.environ["DDL_STORE_TOKEN"] = token   # read by rank 0's store and every client
    from .. import _C
    from . import DistributedError, destroy_process_group, init_process_group

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    _C.set_num_threads(max(1, cores // nprocs))
    try:
        init_process_group("gloo", timeout=timeout)
        try:
            result = fn(*args, **kwargs)
        finally:
            destroy_process_group()
        conn.send(("ok", result if rank == 0 else None))
    except BaseException as e:  # noqa: BLE001 (everything goes to the parent; exit 1)
        # a DistributedError is usually the echo of another rank's failure: said so, so that
        # launch can name the rank where the failure started
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}",
                   isinstance(e, DistributedError)))
        conn.close()
        os._exit(1)
    conn.close()
    os._exit(0)


def launch(fn, nprocs=2, args=(), kwargs=None, timeout=300.0):
    """Run fn(*args, **kwargs) on `nprocs` ranks (forked processes) and return rank 0's result.

    `timeout` (seconds) bounds the whole run and each collective; a rank that fails or dies
    stops the others and raises ddl.distributed.DistributedError naming it."""
    from . import DistributedError

    if not callable(fn):
        raise TypeError(f"launch: fn must be callable, got {type(fn).__name__}")
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"launch: nprocs must be a positive int, got {nprocs!r}")
    from . import is_initialized

    if is_initialized():
        raise RuntimeError("launch: call it from a process without a process group (the "
                           "workers make their own)")
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    # the job's store takes only the ranks: a random token unless the user exported one
    token = None if "DDL_STORE_TOKEN" in os.environ else secrets.token_hex(32)
    pipes, procs = [], []
    for rank in range(nprocs):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, name=f"ddl-rank{rank}",
                        args=(rank, nprocs, port, fn, tuple(args), dict(kwargs or {}), child,
                              timeout, os.getpid(), token))
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    deadline = time.monotonic() + timeout
    results = [None] * nprocs
    failure = None
    finished = False
    try:
        pending = set(range(nprocs))
        first_failure_at = None
        while pending:
            now = time.monotonic()
            if now > deadline:
                failure = f"launch: timed out after {timeout} s (ranks {sorted(pending)} running)"
                break
            if first_failure_at is not None and now > first_failure_at + _ROOT_CAUSE_GRACE:
                break
            for r in sorted(pending):
                if pipes[r].poll(0.05):
                    try:
                        results[r] = pipes[r].recv()
                    except EOFError:
                        results[r] = ("died", None, False)
                elif not procs[r].is_alive() and not pipes[r].poll(0):
                    results[r] = ("died", None, False)
                else:
                    continue
                pending.discard(r)
                if results[r][0] != "ok" and first_failure_at is None:
                    first_failure_at = time.monotonic()
        if failure is None and first_failure_at is not None:
            failure = _root_cause(results, procs)
        finished = True
    finally:
        for p in procs:
            # a failure, or an exception here (KeyboardInterrupt: a notebook's interrupt):
            # stop the ranks now rather than wait for them
            if p.is_alive() and (failure is not None or not finished):
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        for c in pipes:
            c.close()
    if failure is not None:
        raise DistributedError(failure)
    return results[0][1]


# After a first failure, how long the other ranks may take to report theirs: a rank that dies
# makes its peers raise within milliseconds, and the one that died must be the one named.
_ROOT_CAUSE_GRACE = 2.0


def _root_cause(results, procs):
    """The failure to report: a rank that died without a result, else one that raised an
    error of its own, else one that raised a DistributedError (the echo of a peer's failure)."""
    failed = [(r, res) for r, res in enumerate(results) if res is not None and res[0] != "ok"]
    failed.sort(key=lambda item: (item[1][0] != "died", bool(item[1][2]), item[0]))
    rank, result = failed[0]
    return _describe(rank, result, procs[rank])


def _describe(rank, result, proc):
    kind, detail, _ = result
    if kind == "error":
        return f"launch: rank {rank} failed: {detail}"
    proc.join(2)
    code = proc.exitcode
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code} without a result"
    return f"launch: rank {rank} {how}"
