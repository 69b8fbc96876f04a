"""Rendezvous: from init_process_group's init_method URL (or environment) to a store.

    env://                 RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; rank 0 serves a TCPStore
    tcp://host:port        rank 0 serves a TCPStore there
    file:///path           a FileStore in a directory every rank sees
    redis://host[:port]    a RedisStore (keys prefixed by the job: group_name, DDL_JOB_ID or
                           MASTER_PORT)

`rendezvous` checks the rank and world size it ends with and makes the store; the process
group then joins through it (ddl/distributed/__init__.py). Under env:// without RANK (a job
not started by ddl.run or torchrun), the variables of the launcher that did start it are read:
Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH/Hydra (PMI_RANK, PMI_SIZE) or Slurm's srun
(SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST's first host as master, a port from the job id);
see `launcher_env`. The launcher's node rendezvous (ddl.run --rdzv-backend c10d) is
`NodeRendezvous` at the end.
"""
import os
import socket
import urllib.parse
import zlib
from datetime import timedelta

from .store import FileStore, PrefixStore, RedisStore, TCPStore

_SCHEMES = "env://, tcp://host:port, file:///path or redis://host:port"


def _env_int(name):
    v = os.environ.get(name)
    if v is None:
        raise ValueError(f"init_process_group(env://): environment variable {name} is not set "
                         "(launch with `python -m ddl.run`, or pass rank= and world_size=)")
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"init_process_group: {name}={v!r} is not an integer") from None


def expand_first_host(nodelist):
    """The first host of a Slurm node list: 'n[07-09,12],m1' -> 'n07', 'a,b' -> 'a'."""
    nodelist = nodelist.strip()
    head, depth = "", 0
    for c in nodelist:   # the first entry: up to a comma outside brackets
        if c == "," and depth == 0:
            break
        depth += (c == "[") - (c == "]")
        head += c
    if "[" not in head:
        return head
    prefix, _, rest = head.partition("[")
    first = rest.split("]", 1)[0].split(",")[0].split("-")[0]
    suffix = rest.split("]", 1)[1] if "]" in rest else ""
    if not first or not prefix + first:
        raise ValueError(f"init_process_group: cannot read Slurm's node list {nodelist!r}")
    return prefix + first + (expand_first_host(suffix) if suffix else "")


def _job_port(job_id):
    """A port in [20000, 40000) derived from the launcher's job id (the same on every rank)."""
    return 20000 + zlib.crc32(job_id.encode()) % 20000


def launcher_env(environ=None):
    """What the launcher that started this process says about it, or None.

    A dict with source ('mpi' for Open MPI's mpirun, 'pmi' for MPICH/Hydra, 'slurm' for srun),
    rank, world_size, local_rank, local_world_size, master_addr (None when the launcher does
    not say: Open MPI and Hydra on several hosts need MASTER_ADDR) and master_port (derived
    from the job id unless MASTER_PORT is set). Open MPI wins over Slurm: mpirun inside an
    allocation inherits the batch step's SLURM_PROCID=0."""
    env = os.environ if environ is None else environ

    def num(name):
        v = env.get(name)
        try:
            return None if v is None else int(v)
        except ValueError:
            raise ValueError(f"init_process_group: {name}={v!r} is not an integer") from None

    if "OMPI_COMM_WORLD_RANK" in env:
        source, rank, size = "mpi", num("OMPI_COMM_WORLD_RANK"), num("OMPI_COMM_WORLD_SIZE")
        local, local_size = num("OMPI_COMM_WORLD_LOCAL_RANK"), num("OMPI_COMM_WORLD_LOCAL_SIZE")
        job = next((env[k] for k in ("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid",
                                     "OMPI_MCA_orte_ess_jobid") if env.get(k)), "ompi")
        master = "127.0.0.1" if local_size is not None and local_size == size else None
    elif "PMI_RANK" in env:
        source, rank, size = "pmi", num("PMI_RANK"), num("PMI_SIZE")
        local, local_size = num("MPI_LOCALRANKID"), num("MPI_LOCALNRANKS")
        job = env.get("PMI_KVSNAME") or env.get("PMI_JOBID") or "pmi"
        master = "127.0.0.1" if local_size is not None and local_size == size else None
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        source, rank, size = "slurm", num("SLURM_PROCID"), num("SLURM_NTASKS")
        local = num("SLURM_LOCALID")
        local_size = None
        per_node = env.get("SLURM_TASKS_PER_NODE", "")
        if per_node[:1].isdigit():
            local_size = int(per_node.split("(")[0].split(",")[0])
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "slurm"
        job += "." + env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", "0"))
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") \
            or env.get("SLURM_NODELIST")
        master = expand_first_host(nodes) if nodes else None
    else:
        return None
    if size is None:
        raise ValueError(f"init_process_group: the {source} launcher set a rank but no world "
                         "size")
    if env.get("MASTER_ADDR"):
        master = env["MASTER_ADDR"]
    port = num("MASTER_PORT") if env.get("MASTER_PORT") else _job_port(job)
    return {"source": source, "rank": rank, "world_size": size,
            "local_rank": 0 if local is None else local,
            "local_world_size": 1 if local_size is None else local_size,
            "master_addr": master, "master_port": port}


def _from_launcher(rank, world_size):
    """env:// without RANK: rank, world size and master from mpirun / Hydra / srun; the
    torchrun-style variables are set in os.environ so that the script can read them."""
    info = launcher_env()
    if info is None:
        return None
    if info["master_addr"] is None:
        raise ValueError(
            f"init_process_group(env://): started by {info['source']} across several hosts, "
            "which does not say where rank 0 runs: set MASTER_ADDR (e.g. mpirun -x "
            "MASTER_ADDR=<rank 0's host>)")
    for key, value in (("RANK", info["rank"]), ("WORLD_SIZE", info["world_size"]),
                       ("LOCAL_RANK", info["local_rank"]),
                       ("LOCAL_WORLD_SIZE", info["local_world_size"]),
                       ("MASTER_ADDR", info["master_addr"]),
                       ("MASTER_PORT", info["master_port"])):
        os.environ.setdefault(key, str(value))
    return (info["rank"] if rank < 0 else rank,
            info["world_size"] if world_size < 0 else world_size,
            info["master_addr"], info["master_port"])


def _parse(init_method, rank, world_size, master_addr):
    """(url, rank, world_size, master_addr, master_port) from init_method and the environment."""
    master_port = None
    url = urllib.parse.urlparse(init_method)
    found = None
    if url.scheme == "env" and "RANK" not in os.environ and (rank < 0 or world_size < 0):
        found = _from_launcher(rank, world_size)
    if found is not None:
        rank, world_size, master_addr, master_port = found
    elif url.scheme == "env":
        if rank < 0:
            rank = _env_int("RANK")
        if world_size < 0:
            world_size = _env_int("WORLD_SIZE")
        if "MASTER_ADDR" not in os.environ:
            raise ValueError("init_process_group(env://): MASTER_ADDR is not set")
        master_port = _env_int("MASTER_PORT")
    elif url.scheme == "tcp":
        if not url.hostname or not url.port:
            raise ValueError(f"init_process_group: {init_method!r} needs tcp://host:port")
        master_addr, master_port = url.hostname, url.port
    elif url.scheme == "redis":
        if not url.hostname:
            raise ValueError(f"init_process_group: {init_method!r} needs redis://host[:port]")
        master_addr, master_port = url.hostname, url.port or 6379
    elif url.scheme != "file":
        raise ValueError(f"init_process_group: unknown init_method scheme {url.scheme!r} in "
                         f"{init_method!r} (use {_SCHEMES})")
    if world_size < 0 or rank < 0:
        raise ValueError("init_process_group: rank and world_size are needed with "
                         f"{url.scheme}:// (got rank={rank}, world_size={world_size})")
    return url, rank, world_size, master_addr, master_port


def check_rank(rank, world_size):
    if world_size < 1:
        raise ValueError(f"init_process_group: world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank {rank} is outside [0, {world_size})")


def _store(url, rank, world_size, master_addr, master_port, secs, group_name):
    if url.scheme == "file":
        return FileStore(url.path, world_size)
    if url.scheme == "redis":
        # keys of separate jobs on one Redis server must not collide: group_name (or the
        # DDL_JOB_ID / MASTER_PORT environment) names the job
        job = group_name or os.environ.get("DDL_JOB_ID") or os.environ.get("MASTER_PORT", "0")
        return PrefixStore(f"ddl-job-{job}", RedisStore(master_addr, master_port,
                                                        timedelta(seconds=secs)))
    if not 1 <= master_port <= 65535:
        raise ValueError(f"init_process_group: master port {master_port} is out of range")
    # no wait_for_workers: the process group's own join names the ranks that never come and
    # catches ranks started with different world sizes (the store's count would only say
    # "2 of 3 connected", or be satisfied by the wrong ranks)
    try:
        return TCPStore(master_addr, master_port, world_size, is_master=(rank == 0),
                        timeout=timedelta(seconds=secs), wait_for_workers=False)
    except TimeoutError as e:
        from . import DistributedTimeoutError

        # only a client times out here: nothing listens where rank 0 should serve
        raise DistributedTimeoutError(
            f"init_process_group: rank 0 never came up: nothing served the rendezvous "
            f"store at {master_addr}:{master_port} within {secs:g} s ({e})") from None


def rendezvous(init_method, rank, world_size, secs, group_name):
    """(store, rank, world_size, master_addr, master_port) for init_process_group without a
    store: init_method parsed (None = env://), rank and world size checked, store made."""
    master_addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    url, rank, world_size, master_addr, master_port = _parse(init_method or "env://", rank,
                                                             world_size, master_addr)
    check_rank(rank, world_size)
    check_interface()
    store = _store(url, rank, world_size, master_addr, master_port, secs, group_name)
    return store, rank, world_size, master_addr, master_port


def check_interface():
    """DDL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, when set, must name an interface of this host:
    a ValueError naming it and the interfaces there are, before Gloo sees it."""
    for var in ("DDL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        name = os.environ.get(var)
        if not name:
            continue
        try:
            socket.if_nametoindex(name)
        except OSError:
            have = ", ".join(n for _, n in socket.if_nameindex())
            raise ValueError(f"init_process_group: {var}={name!r} is not a network interface "
                             f"of this host (it has: {have})") from None
        return name
    return None


def local_address_towards(host, port, what="init_process_group: master address"):
    """The address of this machine's interface on the route to host (for Gloo's device, and
    the launcher's --local-addr default); ValueError naming `what` when host does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ValueError(f"{what}: cannot resolve {host!r}: {e}") from None
    addr = infos[0][4][0]
    if addr.startswith("127."):
        return addr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((addr, port or 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


# -- the launcher's node rendezvous (torchrun's c10d backend) --------------------------------

class RendezvousError(RuntimeError):
    """The launchers of a job could not agree on who is in it (ddl.run --rdzv-backend c10d)."""


class RendezvousTimeoutError(RendezvousError, TimeoutError):
    """Not enough nodes arrived within the join timeout; the message names who came."""


class NodeRendezvous:
    """The nodes' meeting point for `ddl.run --rdzv-backend c10d --rdzv-endpoint host:port`.

    The launcher on the endpoint's host serves a TCPStore there (the first one that can bind
    it); every launcher connects to it. Each round (one per attempt: round r = restart r) a
    launcher takes a ticket on arrival (its node rank), publishes its address, and waits until
    the round closes: at max_nodes nodes, or, with a range min:max, once min_nodes are there
    and no one else came for last_call seconds. Node 0 picks the workers' MASTER_ADDR:PORT.
    While the workers run, a failure anywhere is posted to the round so that every launcher
    stops its workers (and, with restarts left, all meet again in the next round)."""

    def __init__(self, endpoint_host, endpoint_port, run_id, min_nodes, max_nodes, local_addr,
                 join_timeout=600.0, last_call=30.0, store_timeout=30.0):
        from datetime import timedelta

        self.host, self.port, self.run_id = endpoint_host, endpoint_port, run_id
        self.min_nodes, self.max_nodes = min_nodes, max_nodes
        self.local_addr = local_addr
        self.join_timeout, self.last_call = join_timeout, last_call
        self.round = None
        self.node_rank = self.nnodes = None
        self.table = {}
        td = timedelta(seconds=store_timeout)
        self.is_host = False
        self._store = None
        if _is_local_address(endpoint_host):
            try:   # the first launcher on the endpoint's host serves the store
                self._store = TCPStore(endpoint_host, endpoint_port, is_master=True, timeout=td)
                self.is_host = True
            except (OSError, RuntimeError):
                self._store = None   # taken: another launcher on this host serves it
        if self._store is None:
            try:
                self._store = TCPStore(endpoint_host, endpoint_port,
                                       timeout=timedelta(seconds=join_timeout))
            except (OSError, RuntimeError) as e:   # TimeoutError is an OSError
                raise RendezvousTimeoutError(
                    f"rendezvous {run_id!r}: nothing served the rendezvous store at "
                    f"{endpoint_host}:{endpoint_port} within {join_timeout:g} s (is the "
                    f"launcher on that host started, and the port open?) ({e})") from None
            self._store.set_timeout(td)
        self._td = td
        self._monitor = None

    def _key(self, name, rnd=None):
        return f"ddl-rdzv/{self.run_id}/{self.round if rnd is None else rnd}/{name}"

    def join(self, rnd, free_port):
        """Join round rnd; returns (node_rank, nnodes, master_addr, master_port)."""
        import json
        import time

        self.round = rnd
        s = self._store
        ticket = s.add(self._key("arrived"), 1)
        s.set(self._key(f"node/{ticket - 1}"),
              json.dumps({"addr": self.local_addr, "host": socket.gethostname(),
                          "pid": os.getpid()}))
        start = time.monotonic()
        seen, seen_at = 0, start
        while True:
            if s.check([self._key("size")]):
                size = int(s.get(self._key("size")))
                break
            n = s.add(self._key("arrived"), 0)
            now = time.monotonic()
            if n != seen:
                seen, seen_at = n, now
            if n >= self.max_nodes:
                s.compare_set(self._key("size"), "", str(self.max_nodes))
            elif n >= self.min_nodes and now - seen_at >= self.last_call:
                s.compare_set(self._key("size"), "", str(n))
            elif now - start > self.join_timeout:
                raise RendezvousTimeoutError(self._missing(n, now - start))
            else:
                time.sleep(0.05)
        if ticket > size:
            raise RendezvousError(
                f"rendezvous {self.run_id!r} round {rnd} closed with {size} nodes before this "
                f"node arrived (it came as node {ticket}); the job runs without it")
        self.node_rank, self.nnodes = ticket - 1, size
        self.table = self.nodes()   # who is where, kept for error messages
        if self.node_rank == 0:
            s.set(self._key("master"), f"{self.local_addr}:{free_port(self.local_addr)}")
        s.set_timeout(timedelta_seconds(max(self.join_timeout, 1.0)))
        try:
            addr, _, port = s.get(self._key("master")).decode().rpartition(":")
        finally:
            s.set_timeout(self._td)
        return self.node_rank, size, addr, int(port)

    def _missing(self, n, waited):
        import json

        came = []
        for i in range(n):
            try:
                info = json.loads(self._store.get(self._key(f"node/{i}")))
                came.append(f"node {i}: {info['host']} {info['addr']}")
            except Exception:  # noqa: BLE001 (the description is best effort)
                came.append(f"node {i}")
        want = self.max_nodes if self.min_nodes == self.max_nodes else self.min_nodes
        missing = ", ".join(str(i) for i in range(n, want))
        return (f"rendezvous {self.run_id!r} at {self.host}:{self.port} timed out after "
                f"{waited:.0f} s: {n} of {want} nodes arrived ({'; '.join(came) or 'none'}); "
                f"missing node rank(s) {missing} (never started, wrong --rdzv-id or "
                f"--rdzv-endpoint, or a firewall between the hosts)")

    def nodes(self):
        """{node_rank: 'host addr'} of this round (best effort)."""
        import json

        out = {}
        for i in range(self.nnodes or 0):
            try:
                info = json.loads(self._store.get(self._key(f"node/{i}")))
                out[i] = f"{info['host']} ({info['addr']})"
            except Exception:  # noqa: BLE001
                out[i] = "?"
        return out

    # -- while the workers run --------------------------------------------------------------
    def report_failure(self, text, wait=5.0):
        """Post this node's failure to the round (the first report wins); never raises, and
        waits at most `wait` s (the store's host may be unreachable: a link down)."""
        key, value = self._key("failed"), f"node {self.node_rank}: {text}"
        return _bounded(lambda: self._store.compare_set(key, "", value), wait)

    def start_monitor(self, interval):
        """A thread that polls the round every interval s; .failure() and .lost() read it."""
        import threading

        state = {"failure": None, "lost": None, "stop": threading.Event()}
        key = self._key("failed")

        def poll():
            try:
                s = TCPStore(self.host, self.port, timeout=self._td)
            except Exception as e:  # noqa: BLE001
                state["lost"] = str(e)
                return
            while not state["stop"].wait(interval):
                try:
                    if s.check([key]):
                        state["failure"] = s.get(key).decode(errors="replace")
                        return
                except Exception as e:  # noqa: BLE001 (store host gone or unreachable)
                    if not state["stop"].is_set():
                        state["lost"] = str(e)
                    return

        t = threading.Thread(target=poll, name="ddlrun-rdzv-monitor", daemon=True)
        t.start()
        self._monitor = (t, state)
        return state

    def stop_monitor(self):
        if self._monitor is not None:
            t, state = self._monitor
            state["stop"].set()
            t.join(timeout=2.0)
            self._monitor = None

    def finish(self, grace_after_failure=10.0):
        """This node is done with the round. The launcher serving the store keeps serving
        until every node of the round said so (or, after a failure, for at most
        grace_after_failure s), so that no node loses the store while its workers run."""
        import time

        key = self._key("finished")
        if not _bounded(lambda: self._store.add(key, 1), 5.0):
            return
        if not self.is_host:
            return
        failed_at = None
        while True:
            try:
                if self._store.add(self._key("finished"), 0) >= (self.nnodes or 0):
                    return
                if failed_at is None and self._store.check([self._key("failed")]):
                    failed_at = time.monotonic()
            except Exception:  # noqa: BLE001
                return
            if failed_at is not None and time.monotonic() - failed_at > grace_after_failure:
                return
            time.sleep(0.1)

    def close(self):
        self.stop_monitor()
        if self._store is not None:
            self._store.close()
            self._store = None


def _bounded(fn, secs):
    """Run fn() in a thread for at most secs; whether it returned without an exception."""
    import threading

    done = []

    def call():
        try:
            fn()
            done.append(True)
        except Exception:  # noqa: BLE001 (best effort: the store may be gone)
            done.append(False)

    t = threading.Thread(target=call, name="ddlrun-rdzv-call", daemon=True)
    t.start()
    t.join(secs)
    return bool(done and done[0])


def timedelta_seconds(secs):
    from datetime import timedelta

    return timedelta(seconds=secs)


def _is_local_address(host):
    """Whether host names an address of this machine (a socket can bind it)."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for info in infos:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((info[4][0], 0))
                return True
            except OSError:
                continue
    return False
