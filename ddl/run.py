r"""ddl.run: the launcher. Starts one worker process per local rank with the environment that
`ddl.distributed.init_process_group("gloo")` reads (env://), streams each rank's output with a
rank prefix, and when a rank fails stops the others and exits non-zero, naming the rank.

    python -m ddl.run --nproc-per-node 4 train.py --epochs 3
    ddlrun --nproc-per-node 2 -m mypkg.train --lr 0.1
    # two machines (or two shells on one machine), 2 x 4 ranks:
    ddlrun --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 \
           --nproc-per-node 4 train.py
    ddlrun --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500 \
           --nproc-per-node 4 train.py
    # torchrun's command line: node ranks assigned on arrival, restarts across nodes
    python -m ddl.run --nnodes 2 --nproc-per-node 1 --rdzv-id job7 --rdzv-backend c10d \
           --rdzv-endpoint 10.0.0.1:29400 train.py

Standard library only (the flags: ddl/_run_cli.py), except the c10d rendezvous (ddl/distributed/rendezvous.py, imported
only when asked for). Workers die with the launcher (PR_SET_PDEATHSIG). See docs/launcher.md.
"""
import collections
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from ._run_cli import _usable_cores, parse  # the command line and its checks

_TAIL_LINES = 20           # stderr lines of a failed rank quoted in the summary
_MAX_PARTIAL = 64 * 1024   # a line longer than this is emitted in pieces
_POLL_S = 0.02
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DDL_NUM_THREADS")


def _log(msg):
    try:
        sys.stderr.write(f"ddlrun: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _free_port(addr):
    # Bind port 0 and hand the port to rank 0's store. Another process could take it between
    # our close and the store's bind; the store would then fail loudly, not hang.
    for host in (addr, "127.0.0.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                return s.getsockname()[1]
        except OSError:
            continue
    raise OSError(f"could not find a free port on {addr}")


def _describe(returncode):
    """'exited with code 3' / 'killed by SIGSEGV (signal 11)' for a Popen returncode."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name} (signal {sig})"
    return f"exited with code {returncode}"


def _exit_code(returncode):
    # a shell's convention: death by signal N reads as 128 + N
    return 128 - returncode if returncode < 0 else returncode


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid, sig=signal.SIGKILL):
    """Ask the kernel to send sig to this process when its parent dies (PR_SET_PDEATHSIG),
    then check the parent is still parent_pid: if it died before the call, exit at once.
    Returns False where prctl is unavailable (not Linux). Safe after fork, before exec:
    the setting survives exec."""
    prctl = _prctl()
    if prctl is None:
        return False
    prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)   # the parent is already gone: the kernel will not signal us
    return True


def tie_to_parent(parent_pid, pdeathsig=True, interval=0.1):
    """Make this process (started by parent_pid) die with SIGKILL when that process dies; for
    children started by ddl.multiprocessing and the DataLoader. pdeathsig=True: the kernel's
    PR_SET_PDEATHSIG, which fires when the *thread* that started the child ends, so the parent
    passes True only when it started the child from its main thread. Otherwise, without prctl,
    or for a child of a fork server (the 'forkserver' start method: the server, our real
    parent, lives on while its children do), a daemon thread checks parent_pid every interval
    s. Exits at once when parent_pid is already gone."""
    ppid = os.getppid()
    if ppid == parent_pid:
        if pdeathsig and die_with_parent(ppid):
            return "pdeathsig"

        def gone():
            return os.getppid() != ppid
    else:   # a fork server's child, or the parent died before we got here
        if not _alive(parent_pid):
            os._exit(1)

        def gone():
            return not _alive(parent_pid)

    def watch():
        while not gone():
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ddl-parent-watch", daemon=True).start()
    return "watch"


def _alive(pid):
    """Whether pid runs (a zombie, dead but not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_PRCTL = []


def _prctl():
    if not _PRCTL:
        try:
            fn = ctypes.CDLL(None, use_errno=True).prctl
            fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _PRCTL.append(fn)
    return _PRCTL[0]


def _job_token(args):
    """The store token of the job's workers. A DDL_STORE_TOKEN the user exported wins (set
    but empty: no token, the store open to anyone who reaches its port). Otherwise a job that
    runs on this one node gets a fresh random token, so that its store is authenticated by
    default. A job of several nodes needs the same token on every node: it cannot be drawn
    here, and it is not handed out through the c10d rendezvous store (that store would give it
    to any stranger who asks); without one the launcher says so and the store stays open."""
    if "DDL_STORE_TOKEN" in os.environ:
        return None   # inherited by the workers as it is
    if args.max_nodes == 1:
        return secrets.token_hex(32)
    _log("note: DDL_STORE_TOKEN is not set, so this job's stores accept any client that "
         "reaches their ports; export the same token on every node, e.g. "
         "DDL_STORE_TOKEN=$(openssl rand -hex 32) (docs/security.md)")
    return None


class _Output:
    """Serializes writes from the reader threads onto one stream, flushing each write."""

    def __init__(self, stream):
        self._stream = stream
        self._buffer = getattr(stream, "buffer", None)
        self._lock = threading.Lock()
        self._broken = False

    def write(self, data):
        if not data:
            return
        with self._lock:
            if self._broken:
                return
            try:
                if self._buffer is not None:
                    self._buffer.write(data)
                    self._buffer.flush()
                else:   # a text-only stream (an in-process caller swapped sys.stdout)
                    self._stream.write(data.decode("utf-8", errors="replace"))
                    self._stream.flush()
            except (OSError, ValueError):
                # stdout closed under us (`ddlrun ... | head`): keep draining the pipes so
                # workers never block on a full pipe, but stop writing
                self._broken = True


class _Worker:
    def __init__(self, local_rank, rank):
        self.local_rank = local_rank
        self.rank = rank
        self.proc = None
        self.group_alive = False   # False once killpg said the process group is gone
        self.readers = []
        self.stderr_tail = collections.deque(maxlen=_TAIL_LINES)
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid

    def signal_group(self, sig):
        """Send sig to the worker's whole process group (the worker and its children)."""
        if not self.group_alive:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            # Never signal this pgid again: its number could be reused by an unrelated group.
            self.group_alive = False
        except PermissionError:
            # nothing in the group would take the signal (a setuid child?): try the worker
            self.group_alive = False
            if self.proc.poll() is None and sig:
                self.proc.send_signal(sig)

    def group_exists(self):
        self.signal_group(0)
        return self.group_alive

    def poll(self):
        if self.returncode is None:
            self.returncode = self.proc.poll()
        return self.returncode


def _pump(fd, out, prefix, tail):
    """Copy a worker's pipe to out, line by line with prefix (raw when prefix is empty),
    keeping the last lines in tail (when given). Bytes are passed through undecoded."""
    partial = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        if not prefix:
            out.write(chunk)
        data = partial + chunk
        lines = data.split(b"\n")
        partial = lines.pop()
        if len(partial) > _MAX_PARTIAL:
            lines.append(partial)
            partial = b""
        if tail is not None:
            tail.extend(lines)
        if prefix and lines:
            out.write(b"".join(prefix + line + b"\n" for line in lines))
    if partial:
        if tail is not None:
            tail.append(partial)
        if prefix:
            out.write(prefix + partial + b"\n")
    try:
        os.close(fd)
    except OSError:
        pass


class _Launcher:
    def __init__(self, args, command):
        self.args = args
        self.command = command
        self.nproc = args.nproc_per_node
        self.world_size = args.nnodes * self.nproc
        self.restart_count = 0
        self.workers = []
        self.signals = []          # signals received, in order (set from the handler)
        self.stdout = _Output(sys.stdout)
        self.stderr = _Output(sys.stderr)
        self.port = args.master_port
        self.addr = args.master_addr
        self.node_rank = args.node_rank
        self.nnodes = args.nnodes
        self.rdzv = None           # the NodeRendezvous under --rdzv-backend c10d
        self.monitor = None        # its monitor's state while workers run
        self.token = _job_token(args)   # the workers' DDL_STORE_TOKEN, or None
        parent = os.getpid()
        self._preexec = lambda: die_with_parent(parent)
        _prctl()                   # load libc's prctl before any fork

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.signals.append(signum)

    def _install_handlers(self):
        old = {}
        if threading.current_thread() is not threading.main_thread():
            return old   # signal handlers can only be set from the main thread
        for sig in _FORWARDED:
            try:
                old[sig] = signal.signal(sig, self._on_signal)
            except (OSError, ValueError):
                pass
        return old

    # -- the worker group -----------------------------------------------------------------
    def _worker_env(self, w):
        env = os.environ.copy()
        env.update({
            "RANK": str(w.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(w.local_rank),
            "LOCAL_WORLD_SIZE": str(self.nproc),
            "GROUP_RANK": str(self.node_rank),
            "GROUP_WORLD_SIZE": str(self.nnodes),
            "ROLE_RANK": str(w.rank),
            "ROLE_WORLD_SIZE": str(self.world_size),
            "MASTER_ADDR": self.addr,
            "MASTER_PORT": str(self.port),
            "TORCHELASTIC_RUN_ID": self.args.rdzv_id,
            "TORCHELASTIC_RESTART_COUNT": str(self.restart_count),
            "TORCHELASTIC_MAX_RESTARTS": str(self.args.max_restarts),
            "DDL_RESTART_COUNT": str(self.restart_count),
            "DDL_MAX_RESTARTS": str(self.args.max_restarts),
        })
        # One BLAS/OpenMP pool per rank, sized so the ranks together fill the cores instead of
        # each rank starting a pool as large as the machine. A value the user set wins, and
        # also sizes the thread variables the user left unset.
        user = next((os.environ[v] for v in ("DDL_NUM_THREADS", "OMP_NUM_THREADS",
                                             "OPENBLAS_NUM_THREADS") if os.environ.get(v)), None)
        threads = user or str(max(1, _usable_cores() // self.nproc))
        for var in _THREAD_VARS:
            if not os.environ.get(var):
                env[var] = threads
        if self.token is not None:
            env["DDL_STORE_TOKEN"] = self.token
        # workers write into pipes; without this Python would hold output in 8 KiB blocks
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self):
        if self.rdzv is not None:
            self.node_rank, self.nnodes, self.addr, self.port = self.rdzv.join(
                self.restart_count, _free_port)
            self.world_size = self.nnodes * self.nproc
            if self.node_rank == 0 or self.restart_count == 0:
                _log(f"rendezvous {self.args.rdzv_id!r} round {self.restart_count}: node "
                     f"{self.node_rank} of {self.nnodes}, master {self.addr}:{self.port}")
        elif self.args.master_port is None:
            # single node: a fresh port per attempt, as the last one may still be held
            self.port = _free_port(self.args.master_addr)
        self.workers = []
        base = self.node_rank * self.nproc
        for lr in range(self.nproc):
            w = _Worker(lr, base + lr)
            w.proc = subprocess.Popen(
                self.command, env=self._worker_env(w), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,   # own process group: signals reach the whole tree
                # between fork and exec only prctl and getppid run (libc's prctl loaded
                # beforehand): no lock another thread could hold is taken
                preexec_fn=self._preexec)  # noqa: PLW1509
            w.group_alive = True
            self.workers.append(w)
            prefix = b"" if self.args.no_prefix else f"[rank{w.rank}]: ".encode()
            for pipe, out, tail in ((w.proc.stdout, self.stdout, None),
                                    (w.proc.stderr, self.stderr, w.stderr_tail)):
                # the reader owns the fd from here on; detach so the file object won't close it
                fd = os.dup(pipe.fileno())
                pipe.close()
                t = threading.Thread(target=_pump, args=(fd, out, prefix, tail),
                                     name=f"ddlrun-rank{w.rank}", daemon=True)
                t.start()
                w.readers.append(t)

    def _stop(self, sig, grace):
        """Send sig to every worker's process group, wait up to grace seconds for the workers
        and their children to exit, then SIGKILL what is left; reap every worker."""
        n_signals = len(self.signals)
        for w in self.workers:
            w.signal_group(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and len(self.signals) == n_signals:
            # a second Ctrl-C (a new signal) skips the rest of the grace period
            running = [w for w in self.workers if w.poll() is None]
            if not running and not any(w.group_exists() for w in self.workers):
                break
            time.sleep(_POLL_S)
        for w in self.workers:
            w.signal_group(signal.SIGKILL)
        for w in self.workers:
            w.returncode = w.proc.wait()
        for w in self.workers:
            for t in w.readers:
                # a grandchild that left the group (setsid) may still hold the pipe open
                t.join(timeout=2.0)

    def _wait(self):
        """Wait until every worker succeeded (returns []), a worker failed (returns the
        workers found failed in the same pass), or the launcher got a signal (returns None)."""
        while True:
            if self.signals:
                return None
            if self.monitor is not None and (self.monitor["failure"] or self.monitor["lost"]):
                return "remote"
            failed = []
            running = 0
            for w in self.workers:
                rc = w.poll()
                if rc is None:
                    running += 1
                elif rc != 0:
                    failed.append(w)
            if failed:
                return failed
            if not running:
                return []
            time.sleep(_POLL_S)

    def _report(self, failed, restarting):
        root = {id(w) for w in failed}
        for w in failed:
            _log(f"rank {w.rank} (node {self.node_rank}{self._host()}, local rank {w.local_rank}, "
                 f"pid {w.pid}) failed: {_describe(w.returncode)}")
        others = [w for w in self.workers if id(w) not in root and w.returncode != 0]
        if others:
            _log("stopped the other ranks: " + ", ".join(
                f"rank {w.rank} ({_describe(w.returncode)})" for w in others))
        if self.rdzv is not None:
            _log("the job's nodes: " + "; ".join(
                f"node {i}: ranks {i * self.nproc}-{(i + 1) * self.nproc - 1} on {where}"
                for i, where in sorted(self.rdzv.table.items())))
        if restarting:
            _log(f"restarting the worker group (restart {self.restart_count + 1} of "
                 f"{self.args.max_restarts})")
            return
        for w in failed:
            lines = [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in w.stderr_tail]
            if lines:
                what = "line" if len(lines) == 1 else f"{len(lines)} lines"
                _log(f"last {what} of rank {w.rank}'s stderr:")
                self.stderr.write("".join(f"    {ln}\n" for ln in lines).encode())
            else:
                _log(f"rank {w.rank} wrote nothing to stderr")
        used = f"{self.restart_count} of {self.args.max_restarts} restarts used"
        _log(f"exiting with code {_exit_code(failed[0].returncode)} ({used})")

    def _host(self):
        return f" on {socket.gethostname()}" if self.nnodes > 1 else ""

    def _remote(self):
        """Log why this node stops for another node; the exit code to use."""
        if self.monitor["failure"]:
            _log(f"another node failed ({self.monitor['failure']}); stopping this node's "
                 "workers")
            return 1
        _log(f"lost the rendezvous store at {self.rdzv.host}:{self.rdzv.port} (its node is "
             f"gone or unreachable: {self.monitor['lost']}); stopping this node's workers")
        return 1

    def _attempt(self):
        """One attempt: spawn, wait; (kind, failed) with kind in ok/signal/failed/remote."""
        self._spawn()
        if self.rdzv is not None:
            self.monitor = self.rdzv.start_monitor(self.args.monitor_interval)
        failed = self._wait()
        if failed is None:
            return "signal", None
        if failed == "remote":
            return "remote", None
        if failed and self.rdzv is not None:
            w = failed[0]
            self.rdzv.report_failure(f"rank {w.rank} on {socket.gethostname()} failed: "
                                     f"{_describe(w.returncode)}")
        return ("failed" if failed else "ok"), failed

    def run(self):
        old_handlers = self._install_handlers()
        try:
            if self.args.rdzv_backend == "c10d":
                from .distributed.rendezvous import NodeRendezvous, RendezvousError

                try:
                    self.rdzv = NodeRendezvous(
                        self.args.rdzv_host, self.args.rdzv_port, self.args.rdzv_id,
                        self.args.min_nodes, self.args.max_nodes, self.args.local_addr,
                        self.args.join_timeout, self.args.last_call)
                except RendezvousError as e:
                    _log(f"error: {e}")
                    return 1
            while True:
                if self.signals:
                    return 128 + self.signals[0]
                try:
                    kind, failed = self._attempt()
                except Exception as e:
                    if self.rdzv is None or not isinstance(e, (OSError, RuntimeError)):
                        raise
                    _log(f"error: {e}")   # the rendezvous failed (timeout, store gone)
                    return 1
                if self.rdzv is not None:
                    self.rdzv.stop_monitor()
                if kind == "signal":
                    sig = self.signals[0]
                    _log(f"received {signal.Signals(sig).name}; stopping the workers")
                    self._stop(sig, self.args.timeout)
                    if self.rdzv is not None:
                        self.rdzv.report_failure(f"its launcher got {signal.Signals(sig).name}")
                    return 128 + sig
                if kind == "ok":
                    # all ranks succeeded; clean up anything they left in their groups
                    self._stop(signal.SIGTERM, min(self.args.timeout, 1.0))
                    if self.rdzv is not None:
                        self.rdzv.finish()
                    return 0
                self._stop(signal.SIGTERM, self.args.timeout)
                restarting = self.restart_count < self.args.max_restarts and not self.signals
                if kind == "remote":
                    code = self._remote()
                    lost = bool(self.monitor["lost"])
                    if restarting and not lost:
                        _log(f"restarting the worker group (restart {self.restart_count + 1} "
                             f"of {self.args.max_restarts})")
                    else:
                        _log(f"exiting with code {code} ({self.restart_count} of "
                             f"{self.args.max_restarts} restarts used)")
                        if self.rdzv is not None and not lost:
                            self.rdzv.finish()
                        return code
                else:
                    self._report(failed, restarting)
                    if not restarting:
                        if self.rdzv is not None:
                            self.rdzv.finish()
                        return _exit_code(failed[0].returncode)
                self.restart_count += 1
        finally:
            # on any way out (an exception included), leave no worker group behind
            for w in self.workers:
                w.signal_group(signal.SIGKILL)
                if w.proc.poll() is None:
                    w.proc.wait()
            if self.rdzv is not None:
                self.rdzv.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)


def main(argv=None):
    """Entry point of `python -m ddl.run` and `ddlrun`; returns the exit code."""
    args = parse(sys.argv[1:] if argv is None else list(argv))
    if args.module:
        command = [sys.executable, "-m", args.script] + args.script_args
    elif args.no_python:
        command = [args.script] + args.script_args
    else:
        command = [sys.executable, args.script] + args.script_args
    try:
        return _Launcher(args, command).run()
    except OSError as e:   # e.g. the executable cannot be started
        _log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
