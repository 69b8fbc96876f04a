"""ddl.multiprocessing: spawn(fn, args, nprocs, join=True), PyTorch's semantics, and the
standard library's multiprocessing names (Process, Queue, get_context, ...) for the rest.

spawn starts `nprocs` processes (the 'spawn' start method by default, so `fn` must be
picklable: a module-level function) each running fn(rank, *args). With join=True it waits
for all of them; the first failure terminates the others and raises in the parent: a
ProcessRaisedException carrying the child's traceback and naming its rank, or a
ProcessExitedException with its exit code (or signal). fn itself calls
ddl.distributed.init_process_group, as in PyTorch's DDP tutorial. Unlike PyTorch, the
children die with the parent (SIGKILL when it is killed: PR_SET_PDEATHSIG, or a watch thread
when spawn is called from another thread than the main one), so none is ever orphaned.
"""
import multiprocessing as _mp
import multiprocessing.connection as _conn
import os as _os
import signal
import threading as _threading
import traceback
from multiprocessing import *


class ProcessException(Exception):
    def __init__(self, msg, error_index, pid):
        super().__init__(msg)
        self.msg, self.error_index, self.pid = msg, error_index, pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised; the message holds its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process exited with a non-zero code or was killed by a signal."""

    def __init__(self, msg, error_index, pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, pid)
        self.exit_code, self.signal_name = exit_code, signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.exit_code,
                            self.signal_name)


def _wrap(fn, i, args, error_queue, parent=None, from_main_thread=True):
    if parent is not None:
        from ..run import tie_to_parent

        tie_to_parent(parent, from_main_thread)   # the parent dies (kill -9): so do we
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass  # the parent is tearing down
    except BaseException:  # noqa: BLE001 (reported to the parent, which raises)
        error_queue.put((i, traceback.format_exc()))
        raise SystemExit(1) from None


class ProcessContext:
    """The spawned processes; join(timeout) returns True when all finished successfully."""

    def __init__(self, processes, error_queue):
        self.processes, self.error_queue = processes, error_queue
        self._sentinels = {p.sentinel: i for i, p in enumerate(processes)}

    def pids(self):
        return [p.pid for p in self.processes]

    def join(self, timeout=None):
        if not self._sentinels:
            return True
        ready = _conn.wait(list(self._sentinels), timeout=timeout)
        failed = None
        for s in ready:
            i = self._sentinels.pop(s)
            p = self.processes[i]
            p.join()
            if p.exitcode != 0 and failed is None:
                failed = i
        if failed is None:
            return not self._sentinels
        for p in self.processes:  # the first failure stops the others
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        self._sentinels.clear()
        errors = {}
        while not self.error_queue.empty():
            i, tb = self.error_queue.get()
            errors[i] = tb
        p = self.processes[failed]
        if failed in errors:
            raise ProcessRaisedException(
                f"\n\n-- Process {failed} terminated with the following error:\n"
                f"{errors[failed]}", failed, p.pid)
        code = p.exitcode
        if code < 0:
            name = signal.Signals(-code).name
            raise ProcessExitedException(f"process {failed} terminated with signal {name}",
                                         failed, p.pid, code, name)
        raise ProcessExitedException(f"process {failed} terminated with exit code {code}",
                                     failed, p.pid, code)


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"spawn: nprocs must be a positive int, got {nprocs!r}")
    ctx = _mp.get_context(start_method)
    error_queue = ctx.SimpleQueue()
    procs = []
    main = _threading.current_thread() is _threading.main_thread()
    for i in range(nprocs):
        p = ctx.Process(target=_wrap, args=(fn, i, tuple(args), error_queue, _os.getpid(), main),
                        daemon=daemon, name=f"ddl-spawn-{i}")
        p.start()
        procs.append(p)
    pc = ProcessContext(procs, error_queue)
    if not join:
        return pc
    while not pc.join():
        pass
    return None


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Run fn(rank, *args) in `nprocs` new processes (see the module docstring)."""
    return start_processes(fn, args, nprocs, join, daemon, start_method)


__all__ = [*_mp.__all__, "ProcessContext", "ProcessExitedException",  # noqa: PLE0604
           "ProcessRaisedException", "spawn", "start_processes"]
