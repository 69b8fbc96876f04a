"""Running one call on N forked ranks, each in a ddl process group: the engine under the
`ddl_world` pytest marker (ddl/testing/pytest_plugin.py holds the pytest side).

Rank 0 serves the rendezvous TCPStore on port 0 (the kernel picks a free port, so two tests or
two xdist workers never race for one) and tells the parent the port, which then forks the
other ranks; each rank sends its result on its own pipe: ("passed" | "failed" | "skipped",
...), and then waits for the parent's word before it tears its group down: a rank that
finished must not close its connections under a peer still inside a collective (that would
turn a hang into an unrelated "connection closed" error). When every rank passed, the parent
releases them; when one failed, the others get a short grace to report theirs; on the timeout
(or after the grace) the ranks still running dump their stacks through faulthandler (SIGUSR1)
into a per-rank file, and then every rank is SIGKILLed and reaped. The store lives in rank 0,
so no process and no port outlives the call. The parent starts no thread of its own: forking
from a single-threaded pytest process is the safest fork there is (and what ThreadSanitizer,
which runs tests/test_ddp.py, accepts).

Why fork, not spawn: the test's fixtures and parametrized arguments are already set up in the
pytest process; a forked rank gets them as they are (no pickling, no re-import of the test
module by node id, no rebuilding of pytest's configuration, conftests, plugins and sys.path),
and starts in milliseconds instead of the ~1 s a fresh interpreter needs to import ddl and the
test module. The risk of fork is threads alive in the parent: only the forking thread exists in
the child, and a lock another thread held stays locked there. What runs threads in a pytest
process: OpenBLAS's pool (OpenBLAS registers a pthread_atfork handler that stops its pool
before fork, so the child starts a fresh one) and Python threads of plugins (xdist's execnet, pytest-timeout's thread method),
which the child never calls into: a rank runs only the test and ddl, then leaves by os._exit
without running atexit handlers or finalizers. CPython warns about fork with threads alive;
that warning is silenced here for this fork only, and a rank's own faulthandler watchdog turns
a deadlock in the child into a stack dump and an exit, never a hang.
"""
import contextlib
import ctypes
import faulthandler
import multiprocessing.connection as mpc
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from datetime import timedelta

__all__ = ["Outcome", "run_world"]

# After a first failure, how long the other ranks may take to report theirs: a rank's
# exception usually makes its peers raise within milliseconds or leaves them blocked forever.
GRACE = 2.0
# How long released ranks may take to destroy their process group and exit.
EXIT_GRACE = 10.0


class Outcome:
    """kind: "passed", "failed" or "skipped"; text: the report (failure) or the reason."""

    def __init__(self, kind, text=""):
        self.kind, self.text = kind, text

    def __repr__(self):
        return f"Outcome({self.kind!r}, {self.text[:60]!r})"


class _Rank:
    def __init__(self, rank, pid, conn, down, stack_path):
        self.rank, self.pid, self.conn, self.down, self.stack_path = (rank, pid, conn, down,
                                                                      stack_path)
        self.result = None  # the message the rank sent, or ("died", how)
        self.status = None  # waitpid status once reaped


def _set_parent_death_signal():
    """Linux: the kernel SIGKILLs this rank if the pytest process dies (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def _child(rank, world_size, port, timeout, call, repr_failure, up, down, stack_file):
    """The body of a forked rank; never returns (os._exit). Rank 0 gets port None: it serves
    the store and sends ("port", p) first."""
    code = 1
    try:
        _set_parent_death_signal()
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
        # backstop if the parent is stopped (not killed) or never answers
        faulthandler.dump_traceback_later(timeout + 60, exit=True, file=stack_file)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                          LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
        up.send(_run_rank(rank, world_size, port, timeout, call, repr_failure, up))
        # wait for the parent's word before tearing the group down (see the module docstring)
        with contextlib.suppress(EOFError, OSError):
            down.recv()
        from ..distributed import destroy_process_group, is_initialized

        if is_initialized():
            destroy_process_group()
        code = 0
    except BaseException:  # noqa: BLE001 (a rank reports and exits; nothing may escape)
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_rank(rank, world_size, port, timeout, call, repr_failure, up):
    from .. import _C
    from ..distributed import DistributedError, init_process_group
    from ..distributed.store import TCPStore

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    _C.set_num_threads(max(1, cores // world_size))
    try:
        # the group's own timeout outlasts the test's, so a hang is caught (with stacks) by
        # the parent rather than by a collective's timeout on one rank
        secs = timeout + 30
        if port is None:
            store = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=secs))
            up.send(("port", store.port))
        else:
            store = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=secs))
        os.environ["MASTER_PORT"] = str(store.port)
        init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                           timeout=timedelta(seconds=secs))
        call(rank)
        return ("passed",)
    except BaseException as e:  # noqa: BLE001 (everything is reported to the parent)
        import pytest

        if isinstance(e, pytest.skip.Exception):
            return ("skipped", str(e.msg if hasattr(e, "msg") else e))
        try:
            text = repr_failure(sys.exc_info())
        except Exception:  # noqa: BLE001 (the plain traceback is the fallback)
            text = "".join(traceback.format_exception(*sys.exc_info()))
        return ("failed", text, isinstance(e, DistributedError))


def _fork_ranks(world_size, timeout, call, repr_failure, tmpdir):
    """Fork rank 0, learn the store's port from it, fork the others. Returns the ranks
    forked: only rank 0 when it failed before serving the store (its result is set)."""
    ranks, parent_fds, port = [], [], None
    for r in range(world_size):
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        stack_path = os.path.join(tmpdir, f"rank{r}.stack")
        stack_file = open(stack_path, "w")  # noqa: SIM115 (closed right after the fork)
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            # CPython >= 3.12 warns on fork with threads alive; the module docstring says why
            # this fork is safe enough
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=r".*fork\(\) may lead to deadlocks.*")
            pid = os.fork()
        if pid == 0:
            try:
                for fd in (*parent_fds, up_r, down_w):
                    os.close(fd)
                up = mpc.Connection(up_w, readable=False)
                down = mpc.Connection(down_r, writable=False)
            except BaseException:  # noqa: BLE001
                os._exit(1)
            _child(r, world_size, port, timeout, call, repr_failure, up, down, stack_file)
        stack_file.close()
        os.close(up_w)
        os.close(down_r)
        parent_fds += [up_r, down_w]
        ranks.append(_Rank(r, pid, mpc.Connection(up_r, writable=False),
                           mpc.Connection(down_w, readable=False), stack_path))
        if r == 0:
            port = _port_from_rank0(ranks[0], timeout)
            if port is None:
                break
    return ranks


def _port_from_rank0(rank0, timeout):
    if rank0.conn.poll(timeout):
        try:
            msg = rank0.conn.recv()
        except (EOFError, OSError):
            msg = ("died", _how_it_died(rank0))
    else:
        msg = ("failed", f"rank 0 did not serve the rendezvous store within {timeout:g} s",
               False)
    if msg[0] == "port":
        return msg[1]
    rank0.result = msg
    return None


def _reap(rank, wait_s):
    """waitpid the rank for up to wait_s seconds; True once reaped."""
    if rank.status is not None:
        return True
    end = time.monotonic() + wait_s
    while True:
        try:
            pid, status = os.waitpid(rank.pid, os.WNOHANG)
        except ChildProcessError:
            rank.status = 0
            return True
        if pid:
            rank.status = status
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def _how_it_died(rank):
    _reap(rank, 2.0)
    st = rank.status
    if st is None:
        return "closed its pipe without a result"
    if os.WIFSIGNALED(st):
        return f"was killed by {signal.Signals(os.WTERMSIG(st)).name} before reporting"
    return f"exited with code {os.WEXITSTATUS(st)} before reporting a result"


def _collect(ranks, timeout):
    """Wait for the ranks' results until all arrived, the deadline, or GRACE after a failure.
    Returns True on the deadline (a timeout)."""
    deadline = time.monotonic() + timeout
    first_failure = None
    by_conn = {r.conn: r for r in ranks}
    while True:
        pending = [r.conn for r in ranks if r.result is None]
        if not pending:
            return False
        now = time.monotonic()
        limit = deadline if first_failure is None else min(deadline, first_failure + GRACE)
        if now >= limit:
            return first_failure is None
        for conn in mpc.wait(pending, timeout=limit - now):
            rank = by_conn[conn]
            try:
                rank.result = conn.recv()
            except (EOFError, OSError):
                rank.result = ("died", _how_it_died(rank))
            if rank.result[0] in ("failed", "died") and first_failure is None:
                first_failure = time.monotonic()


def _dump_stacks(ranks):
    """SIGUSR1 to each given rank (faulthandler writes its stacks); {rank: text}."""
    sent = []
    for r in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGUSR1)
            sent.append(r)
    # faulthandler writes from its signal handler at once; wait until the files stop growing
    sizes, end = None, time.monotonic() + 3.0
    while time.monotonic() < end:
        time.sleep(0.15)
        now = [os.path.getsize(r.stack_path) for r in sent]
        if now == sizes and all(now):
            break
        sizes = now
    out = {}
    for r in sent:
        with open(r.stack_path, errors="replace") as f:
            out[r.rank] = _trim_stack(f.read().strip()) or "(no stack was written)"
    return out


def _trim_stack(text):
    """A faulthandler dump without the frames of pytest and of this module under the test:
    each thread's frames (most recent call first) end at the first frame of this file."""
    here = os.path.basename(__file__)
    out, skipping = [], False
    for line in text.splitlines():
        if not line.startswith(" "):  # "Current thread 0x... (most recent call first):"
            skipping = False
            out.append(line)
        elif not skipping:
            if f"{os.sep}{here}\"" in line:
                fn = line.rsplit(" in ", 1)[-1]
                out.append(f"  (ddl_world: {_WHERE.get(fn, 'the rank runner')}; pytest's frames "
                           "below omitted)")
                skipping = True
            else:
                out.append(line)
    return "\n".join(out)


_WHERE = {"_child": "the rank finished its test and waits for the other ranks",
          "_run_rank": "the test function above was called by the rank runner"}


def _kill_all(ranks):
    for r in ranks:
        if r.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    for r in ranks:
        _reap(r, 10.0)
        r.conn.close()
        r.down.close()


def _release(ranks):
    """Every rank passed: let them destroy their groups and exit. Returns the ranks that did
    not exit within EXIT_GRACE (then killed)."""
    for r in ranks:
        with contextlib.suppress(OSError):
            r.down.send("exit")
    stuck = [r.rank for r in ranks if not _reap(r, EXIT_GRACE)]
    _kill_all(ranks)
    return stuck


def _root_order(rank):
    """Report first the ranks whose failure is their own: a died rank or one that raised
    something other than a DistributedError (usually the echo of a peer's failure)."""
    kind = rank.result[0]
    return (0 if kind == "died" or (kind == "failed" and not rank.result[2]) else 1, rank.rank)


def _failure_text(label, ranks, world_size, timed_out, timeout, stacks):
    failed = sorted((r for r in ranks if r.result and r.result[0] in ("failed", "died")),
                    key=_root_order)
    running = [r.rank for r in ranks if r.result is None]
    passed = [r.rank for r in ranks if r.result and r.result[0] == "passed"]
    n = world_size
    if timed_out:
        head = f"{label}: timed out after {timeout:g} s; rank(s) {running} of {n} still running"
        if passed:
            head += (f"; rank(s) {passed} passed and were waiting for the others (do the ranks "
                     "call the same collectives in the same order?)")
    else:
        head = f"{label}: rank {failed[0].rank} of {n} failed"
        others = [r.rank for r in failed[1:]]
        if others:
            head += f" (then rank(s) {others})"
        if running:
            head += f"; rank(s) {running} still running {GRACE:g} s later were stopped"
    parts = [head]
    for r in failed:
        body = r.result[1] if r.result[0] == "failed" else f"the rank {r.result[1]}"
        parts.append(f"{'=' * 20} rank {r.rank} {'=' * 20}\n{body}")
    for rank, text in sorted(stacks.items()):
        parts.append(f"{'=' * 20} rank {rank}: its stack (faulthandler) {'=' * 20}\n{text}")
    return "\n\n".join(parts)


def run_world(call, world_size, timeout, *, repr_failure=None, label="ddl_world"):
    """Run call(rank) on `world_size` forked ranks, each with an initialised default process
    group (Gloo, 127.0.0.1), and return an Outcome. repr_failure(exc_info) -> str renders a
    rank's exception (default: the plain traceback)."""
    if not hasattr(os, "fork"):
        return Outcome("failed", f"{label}: needs os.fork (POSIX); not available here")
    from ..distributed import is_initialized

    if is_initialized():
        return Outcome("failed", f"{label}: this process already has a default process group; "
                                 "the ranks make their own (destroy it first)")
    repr_failure = repr_failure or (lambda ei: "".join(traceback.format_exception(*ei)))
    ranks = []
    with tempfile.TemporaryDirectory(prefix="ddl-world-") as tmpdir:
        try:
            ranks = _fork_ranks(world_size, timeout, call, repr_failure, tmpdir)
            timed_out = _collect(ranks, timeout)
            results = [r.result for r in ranks]
            if len(ranks) == world_size and all(res and res[0] in ("passed", "skipped") for res in results):
                stuck = _release(ranks)
                if stuck:
                    return Outcome("failed", f"{label}: every rank passed, but rank(s) {stuck} "
                                             f"did not exit within {EXIT_GRACE:g} s after "
                                             "(destroy_process_group hung?); killed")
                skipped = [res for res in results if res[0] == "skipped"]
                if skipped:
                    return Outcome("skipped", skipped[0][1])
                return Outcome("passed")
            alive = [r for r in ranks if r.result is None or (timed_out and r.result[0] in
                                                               ("passed", "skipped"))]
            stacks = _dump_stacks(alive)
            return Outcome("failed", _failure_text(label, ranks, world_size, timed_out, timeout,
                                                   stacks))
        finally:
            _kill_all(ranks)
