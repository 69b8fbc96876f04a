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

Standard library only: this module imports nothing else from ddl. See docs/launcher.md.
"""
import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time

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


def _usable_cores():
    # the CPUs this process may run on (taskset, cgroup cpusets), not the machine's total
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
            "GROUP_RANK": str(self.args.node_rank),
            "MASTER_ADDR": self.args.master_addr,
            "MASTER_PORT": str(self.port),
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
        # workers write into pipes; without this Python would hold output in 8 KiB blocks
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _spawn(self):
        if self.args.master_port is None:
            # single node: a fresh port per attempt, as the last one may still be held
            self.port = _free_port(self.args.master_addr)
        self.workers = []
        base = self.args.node_rank * self.nproc
        for lr in range(self.nproc):
            w = _Worker(lr, base + lr)
            w.proc = subprocess.Popen(
                self.command, env=self._worker_env(w), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)   # own process group: signals reach the whole tree
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
            _log(f"rank {w.rank} (node {self.args.node_rank}, local rank {w.local_rank}, "
                 f"pid {w.pid}) failed: {_describe(w.returncode)}")
        others = [w for w in self.workers if id(w) not in root and w.returncode != 0]
        if others:
            _log("stopped the other ranks: " + ", ".join(
                f"rank {w.rank} ({_describe(w.returncode)})" for w in others))
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

    def run(self):
        old_handlers = self._install_handlers()
        try:
            while True:
                if self.signals:
                    return 128 + self.signals[0]
                self._spawn()
                failed = self._wait()
                if failed is None:
                    sig = self.signals[0]
                    _log(f"received {signal.Signals(sig).name}; stopping the workers")
                    self._stop(sig, self.args.timeout)
                    return 128 + sig
                if not failed:
                    # all ranks succeeded; clean up anything they left in their groups
                    self._stop(signal.SIGTERM, min(self.args.timeout, 1.0))
                    return 0
                self._stop(signal.SIGTERM, self.args.timeout)
                restarting = self.restart_count < self.args.max_restarts and not self.signals
                self._report(failed, restarting)
                if not restarting:
                    return _exit_code(failed[0].returncode)
                self.restart_count += 1
        finally:
            # on any way out (an exception included), leave no worker group behind
            for w in self.workers:
                w.signal_group(signal.SIGKILL)
                if w.proc.poll() is None:
                    w.proc.wait()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)


def _typed(convert, expected):
    """An argparse type: convert(text), or a usage error saying what was expected."""
    def parse(text):
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


_int = _typed(int, "an integer")
_seconds = _typed(float, "seconds")
_nproc = _typed(lambda text: _usable_cores() if text == "auto" else int(text),
                "an integer or 'auto'")


def _parser():
    p = argparse.ArgumentParser(
        prog="ddlrun",
        description="Launch a ddl training script on one or more CPU worker processes per "
                    "node, with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and friends set "
                    "for ddl.distributed.init_process_group('gloo').",
        epilog="Everything after the script (or -m module) is passed to it unchanged.")
    p.add_argument("--nproc-per-node", "--nproc_per_node", type=_nproc, default=1,
                   metavar="N|auto",
                   help="worker processes on this node (default 1; auto = usable CPU cores)")
    p.add_argument("--nnodes", type=_int, default=1,
                   help="number of nodes (launcher invocations) in the job (default 1)")
    p.add_argument("--node-rank", "--node_rank", type=_int, default=0,
                   help="this node's index in [0, nnodes) (default 0)")
    p.add_argument("--master-addr", "--master_addr", default=None,
                   help="address of the node running rank 0 (default 127.0.0.1)")
    p.add_argument("--master-port", "--master_port", type=_int, default=None,
                   help="port of rank 0's store (default: a free port; required when "
                        "nnodes > 1)")
    p.add_argument("--standalone", action="store_true",
                   help="single node on 127.0.0.1 with a free port")
    p.add_argument("--max-restarts", "--max_restarts", type=_int, default=0,
                   help="restart the whole local worker group up to N times after a failure "
                        "(default 0)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="grace period between SIGTERM and SIGKILL when stopping workers "
                        "(default 10)")
    p.add_argument("--no-prefix", "--no_prefix", action="store_true",
                   help="pass worker output through without the [rankN]: prefix")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-m", "--module", action="store_true",
                      help="run the target as a module, like python -m")
    mode.add_argument("--no-python", "--no_python", action="store_true",
                      help="run the target as an executable instead of with Python")
    p.add_argument("script", nargs="?", metavar="script.py | -m module",
                   help="the training script (or module with -m)")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="args",
                   help="arguments for the script")
    return p


def _parse(argv):
    p = _parser()
    args = p.parse_args(argv)
    if args.script is None:
        p.error("missing the script to run (script.py args... or -m module args...)")
    if args.nproc_per_node < 1:
        p.error(f"--nproc-per-node must be at least 1, got {args.nproc_per_node}")
    if args.nnodes < 1:
        p.error(f"--nnodes must be at least 1, got {args.nnodes}")
    if not 0 <= args.node_rank < args.nnodes:
        p.error(f"--node-rank must be in [0, {args.nnodes}), got {args.node_rank}")
    if args.standalone and args.nnodes != 1:
        p.error("--standalone runs a single node; drop --nnodes or --standalone")
    if args.nnodes > 1 and args.master_port is None:
        p.error("--master-port is required when --nnodes > 1 (every node must agree on it)")
    if args.master_port is not None and not 1 <= args.master_port <= 65535:
        p.error(f"--master-port must be in [1, 65535], got {args.master_port}")
    if args.max_restarts < 0:
        p.error(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if args.timeout < 0:
        p.error(f"--timeout must be >= 0, got {args.timeout}")
    if args.master_addr is None:
        args.master_addr = "127.0.0.1"
    if not args.module and not args.no_python and not os.path.isfile(args.script):
        p.error(f"script not found: {args.script}")
    if args.script_args[:1] == ["--"]:
        args.script_args = args.script_args[1:]
    return args


def main(argv=None):
    """Entry point of `python -m ddl.run` and `ddlrun`; returns the exit code."""
    args = _parse(sys.argv[1:] if argv is None else list(argv))
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
