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

Standard library only, except the c10d rendezvous (ddl/distributed/rendezvous.py, imported
only when asked for). Workers die with the launcher (PR_SET_PDEATHSIG). See docs/launcher.md.
"""
import argparse
import collections
import ctypes
import fcntl
import ipaddress
import os
import signal
import socket
import struct
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


def _interface_address(name):
    """The IPv4 address of network interface name (SIOCGIFADDR); ValueError naming the
    interfaces there are when it does not exist or has no IPv4 address."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        have = ", ".join(n for _, n in socket.if_nameindex())
        raise ValueError(f"network interface {name!r} does not exist (this host has: {have})") \
            from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise ValueError(f"network interface {name!r} has no IPv4 address") from None
    return socket.inet_ntoa(raw[20:24])


def _address_towards(host, port):
    """This machine's address on the route to host (no packet is sent)."""
    addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
    if addr.startswith("127."):
        return addr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, port or 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _check_host(text, what):
    """text if it is an IPv4 address or a name that resolves; ValueError otherwise."""
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} is not a host name or address")
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    try:
        socket.getaddrinfo(text, None, socket.AF_INET)
    except socket.gaierror as e:
        raise ValueError(f"{what} {text!r} does not resolve ({e.strerror})") from None
    return text


def _endpoint(text, default_port):
    """(host, port) from 'host[:port]'."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--rdzv-endpoint {text!r}: the port must be in [1, 65535]")
    return _check_host(host, "--rdzv-endpoint host"), int(port)


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


def _parse_nnodes(text):
    lo, sep, hi = text.partition(":")
    lo, hi = int(lo), int(hi if sep else lo)
    if lo < 1 or hi < lo:
        raise ValueError(text)
    return lo, hi


_nnodes = _typed(_parse_nnodes, "N or MIN:MAX with 1 <= MIN <= MAX")
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
    p.add_argument("--nnodes", type=_nnodes, default=(1, 1), metavar="N|MIN:MAX",
                   help="number of nodes (launcher invocations) in the job (default 1); "
                        "MIN:MAX under c10d: start with the nodes there once MIN came and "
                        "no one else for last_call_timeout s (the size then stays fixed)")
    p.add_argument("--node-rank", "--node_rank", type=_int, default=None,
                   help="this node's index in [0, nnodes) (default 0; under c10d assigned "
                        "on arrival and this flag is ignored)")
    p.add_argument("--master-addr", "--master_addr", default=None,
                   help="address of the node running rank 0 (default 127.0.0.1; static only)")
    p.add_argument("--master-port", "--master_port", type=_int, default=None,
                   help="port of rank 0's store (default: a free port; required when "
                        "nnodes > 1; static only)")
    p.add_argument("--rdzv-backend", "--rdzv_backend", choices=("static", "c10d"),
                   default="static",
                   help="static: fixed node ranks and MASTER_ADDR:PORT (default); c10d: the "
                        "launchers meet at --rdzv-endpoint, node ranks assigned on arrival, "
                        "a failure anywhere restarts (or stops) every node's workers")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default=None, metavar="HOST[:PORT]",
                   help="c10d: where the launchers meet (the launcher on HOST serves it; "
                        "port 29400 by default); static: MASTER_ADDR:MASTER_PORT")
    p.add_argument("--rdzv-id", "--rdzv_id", default="none", metavar="ID",
                   help="job id: launchers with the same id form one job (default 'none')")
    p.add_argument("--rdzv-conf", "--rdzv_conf", default="", metavar="K=V,...",
                   help="join_timeout (s, default 600), last_call_timeout (s, default 30); "
                        "other keys are accepted and ignored")
    p.add_argument("--local-addr", "--local_addr", default=None, metavar="ADDR",
                   help="this node's address for the other nodes (default: the address of "
                        "DDL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, else the one on the route to "
                        "the endpoint)")
    p.add_argument("--monitor-interval", "--monitor_interval", type=_seconds, default=0.1,
                   metavar="SECONDS",
                   help="how often other nodes' failures are polled under c10d (default 0.1)")
    p.add_argument("--start-method", "--start_method", default="spawn",
                   choices=("spawn", "fork", "forkserver"),
                   help="accepted for torchrun compatibility; workers are always new processes")
    p.add_argument("--standalone", action="store_true",
                   help="single node on 127.0.0.1 with a free port")
    p.add_argument("--max-restarts", "--max_restarts", type=_int, default=0,
                   help="restart the worker group up to N times after a failure (default 0; "
                        "under c10d every node's group, together)")
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
    args.min_nodes, args.max_nodes = args.nnodes
    if args.rdzv_backend == "c10d":
        _parse_c10d(p, args)
    else:
        if args.min_nodes != args.max_nodes:
            p.error(f"--nnodes {args.min_nodes}:{args.max_nodes}: a range needs "
                    "--rdzv-backend c10d")
        args.nnodes = args.max_nodes
        if args.rdzv_endpoint is not None:   # torchrun's static backend: the master
            if args.master_addr is not None or args.master_port is not None:
                p.error("give either --rdzv-endpoint or --master-addr/--master-port")
            try:
                args.master_addr, args.master_port = _endpoint(args.rdzv_endpoint, 29500)
            except ValueError as e:
                p.error(str(e))
        if args.node_rank is None:
            args.node_rank = 0
        if not 0 <= args.node_rank < args.nnodes:
            p.error(f"--node-rank must be in [0, {args.nnodes}), got {args.node_rank}")
        if args.standalone and args.nnodes != 1:
            p.error("--standalone runs a single node; drop --nnodes or --standalone")
        if args.nnodes > 1 and args.master_port is None:
            p.error("--master-port is required when --nnodes > 1 (every node must agree on "
                    "it), or use --rdzv-backend c10d --rdzv-endpoint HOST:PORT")
        if args.master_port is not None and not 1 <= args.master_port <= 65535:
            p.error(f"--master-port must be in [1, 65535], got {args.master_port}")
        if args.master_addr is not None:
            try:
                _check_host(args.master_addr, "--master-addr")
            except ValueError as e:
                p.error(str(e))
    if args.monitor_interval <= 0:
        p.error(f"--monitor-interval must be > 0, got {args.monitor_interval}")
    try:
        _check_ifname()
    except ValueError as e:
        p.error(str(e))
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


def _check_ifname():
    for var in ("DDL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        name = os.environ.get(var)
        if name:
            try:
                return _interface_address(name)
            except ValueError as e:
                raise ValueError(f"{var}: {e}") from None
    return None


def _rdzv_conf(p, text):
    conf = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--rdzv-conf: expected key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    out = {}
    for key, default in (("join_timeout", 600.0), ("last_call_timeout", 30.0)):
        try:
            out[key] = float(conf.get(key, default))
        except ValueError:
            p.error(f"--rdzv-conf: {key} must be seconds, got {conf[key]!r}")
        if out[key] < 0:
            p.error(f"--rdzv-conf: {key} must be >= 0, got {out[key]}")
    return out


def _parse_c10d(p, args):
    if args.rdzv_endpoint is None:
        p.error("--rdzv-backend c10d needs --rdzv-endpoint HOST[:PORT] (where the launchers "
                "meet)")
    if args.master_addr is not None or args.master_port is not None or args.standalone:
        p.error("--master-addr/--master-port/--standalone are for the static backend; under "
                "c10d node 0's launcher picks the workers' master address and port")
    try:
        args.rdzv_host, args.rdzv_port = _endpoint(args.rdzv_endpoint, 29400)
    except ValueError as e:
        p.error(str(e))
    conf = _rdzv_conf(p, args.rdzv_conf)
    args.join_timeout, args.last_call = conf["join_timeout"], conf["last_call_timeout"]
    args.nnodes = args.max_nodes    # until the rendezvous says how many came
    args.node_rank = 0
    try:
        if args.local_addr is not None:
            _check_host(args.local_addr, "--local-addr")
        else:
            args.local_addr = _check_ifname() or _address_towards(args.rdzv_host,
                                                                  args.rdzv_port)
    except ValueError as e:
        p.error(str(e))


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
