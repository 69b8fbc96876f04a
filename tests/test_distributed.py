"""ddl.distributed end to end: real processes, real sockets (127.0.0.1 only, free ports).

Every collective and dtype is checked against NumPy by tests/dist_workers/collectives.py, one
process per rank running all checks in one process group, for world sizes 1-4, spawned
directly (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) and through the launcher (`python -m
ddl.run`, one node and two nodes on loopback); tcp:// and file:// init methods. Failures come
from tests/dist_workers/faults.py: a rank killed mid-all_reduce, a rank that never joins, a
rank that stops calling collectives, mismatched collectives, different world sizes, a store
sent garbage. Every test has a hard time limit, and every process a test starts is killed
(its whole process group) when the test ends, however it ends.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest

import ddl.distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "tests", "dist_workers")
COLLECTIVES = os.path.join(WORKERS, "collectives.py")
FAULTS = os.path.join(WORKERS, "faults.py")
HOST = "127.0.0.1"
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
              "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME", "DDL_SOCKET_IFNAME")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class World:
    """Processes of one test: each started in its own session (process group), output to
    files, all killed (SIGKILL to their groups, and to every worker a launcher started, found
    through the pid files the workers write) when the test leaves the `with` block."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.piddir = tmp_path / "pids"
        self.piddir.mkdir(exist_ok=True)
        self.procs = []  # (name, Popen, out path, err path)

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
        env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", DDL_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1", DDL_TEST_PIDDIR=str(self.piddir))
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, name, argv, env):
        out, err = self.tmp / f"{name}.out", self.tmp / f"{name}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            p = subprocess.Popen(argv, env=env, cwd=str(self.tmp), stdin=subprocess.DEVNULL,
                                 stdout=fo, stderr=fe, start_new_session=True)
        self.procs.append((name, p, out, err))
        return p

    def rank(self, rank, world, port, script, *args, **env):
        return self.start(f"rank{rank}", [sys.executable, script, *map(str, args)],
                          self.env(RANK=rank, WORLD_SIZE=world, MASTER_ADDR=HOST,
                                   MASTER_PORT=port, **env))

    def launcher(self, name, launcher_args, script, *args, **env):
        return self.start(name, [sys.executable, "-m", "ddl.run", *map(str, launcher_args),
                                 script, *map(str, args)], self.env(**env))

    def wait(self, timeout):
        """Wait for every process (up to timeout s in all); {name: (rc, stdout, stderr)}.
        A process still running at the deadline fails the test (after the kill-all)."""
        deadline = time.monotonic() + timeout
        results = {}
        for name, p, out, err in self.procs:
            try:
                rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_all()
                pytest.fail(f"{name} still running after {timeout} s:\n{self.dump()}")
            results[name] = (rc, out.read_text(errors="replace"), err.read_text(errors="replace"))
        return results

    def dump(self):
        parts = []
        for name, p, out, err in self.procs:
            parts.append(f"--- {name} rc={p.poll()}\n{out.read_text(errors='replace')}"
                         f"{err.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def kill_all(self):
        for _, p, _, _ in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for f in self.piddir.iterdir():  # workers started by a launcher (own sessions)
            pid = int(f.name)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as c:
                    mine = WORKERS.encode() in c.read()
            except OSError:
                continue
            if mine:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for _, p, _, _ in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_all()


@pytest.fixture
def world(tmp_path):
    with World(tmp_path) as w:
        yield w


def _assert_ok(results, n_ok, dump):
    oks = [name for name, (rc, out, _) in results.items() if rc == 0 and "OK rank" in out]
    assert len(oks) == n_ok, f"{len(oks)} of {n_ok} ranks passed:\n{dump}"


# ---- every collective and dtype against NumPy ------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["auto", "gloo"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_collectives_direct(world, n, transport):
    # auto: shared memory (every rank on this host); gloo: TCP loopback
    port = _free_port()
    for r in range(n):
        world.rank(r, n, port, COLLECTIVES, "--expect-world", n, DDL_COMM_TRANSPORT=transport)
    res = world.wait(45)
    _assert_ok(res, n, world.dump())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_collectives_through_the_launcher(world, n):
    world.launcher("ddlrun", ["--nproc-per-node", n], COLLECTIVES, "--expect-world", n)
    rc, out, _ = world.wait(45)["ddlrun"]
    assert rc == 0, world.dump()
    for r in range(n):
        assert re.search(rf"^\[rank{r}\]: OK rank {r} of {n} ", out, re.MULTILINE), world.dump()


@pytest.mark.timeout(60)
def test_two_launchers_on_loopback_form_one_world_of_4(world):
    # two nodes of 2 ranks each, as two shells on one machine would run them
    port = _free_port()
    for node in (0, 1):
        world.launcher(f"node{node}", ["--nnodes", 2, "--node-rank", node, "--master-addr", HOST,
                                       "--master-port", port, "--nproc-per-node", 2],
                       COLLECTIVES, "--expect-world", 4)
    res = world.wait(45)
    for node in (0, 1):
        rc, out, _ = res[f"node{node}"]
        assert rc == 0, world.dump()
        for r in (2 * node, 2 * node + 1):
            assert re.search(rf"^\[rank{r}\]: OK rank {r} of 4 ", out, re.MULTILINE), world.dump()


@pytest.mark.timeout(30)
def test_tcp_init_method(world):
    port = _free_port()
    for r in range(2):
        world.start(f"rank{r}", [sys.executable, COLLECTIVES, "--quick", "--init-method",
                                 f"tcp://{HOST}:{port}", "--rank", str(r), "--world-size", "2"],
                    world.env())
    _assert_ok(world.wait(20), 2, world.dump())


@pytest.mark.timeout(30)
def test_file_init_method(world, tmp_path):
    path = tmp_path / "rendezvous"
    for r in range(3):
        world.start(f"rank{r}", [sys.executable, COLLECTIVES, "--quick", "--init-method",
                                 f"file://{path}", "--rank", str(r), "--world-size", "3"],
                    world.env())
    _assert_ok(world.wait(20), 3, world.dump())


# ---- a rank dies mid-all_reduce -------------------------------------------------------------


def _caught(out):
    """(time, seconds since the last success, type, is a TimeoutError, message) of a
    survivor's CAUGHT line."""
    m = re.search(r"^CAUGHT (\S+) (\S+) (\S+) (\S+) (.*)$", out, re.MULTILINE)
    assert m, out
    return float(m[1]), float(m[2]), m[3], m[4] == "TimeoutError", m[5]


def _fields(out, tag="FIELDS", name=None):
    """The structured fields (rank, ranks, op, seq, peer, errno) a worker printed for its
    exception: a FIELDS line (FIELDS <name> for the mismatch scenarios), JSON."""
    prefix = f"{tag} {name} " if name else f"{tag} "
    m = re.search(rf"^{re.escape(prefix)}(\S+)$", out, re.MULTILINE)
    assert m, out
    return json.loads(m[1])


@pytest.mark.timeout(40)
@pytest.mark.parametrize("transport", ["shm", "gloo"])
@pytest.mark.parametrize("n,victim,how", [(3, 1, "exit"), (4, 2, "kill"), (3, 0, "kill")],
                         ids=["exit-rank1-of-3", "sigkill-rank2-of-4", "sigkill-rank0-of-3"])
def test_rank_killed_mid_all_reduce(world, n, victim, how, transport):
    port = _free_port()
    for r in range(n):
        world.rank(r, n, port, FAULTS, "loop", "--victim", victim, "--how", how,
                   DDL_COMM_TRANSPORT=transport)
    res = world.wait(30)
    dump = world.dump()
    rc, out, _ = res[f"rank{victim}"]
    assert rc == (17 if how == "exit" else -signal.SIGKILL), dump
    died = float(re.search(r"^DYING (\S+)$", out, re.MULTILINE)[1])
    for r in range(n):
        if r == victim:
            continue
        rc, out, err = res[f"rank{r}"]
        t, _, kind, is_timeout, msg = _caught(out)
        assert kind == "DistributedError" and not is_timeout, dump
        assert t - died < 5.0, f"rank {r} took {t - died:.2f} s to notice:\n{dump}"
        assert msg.startswith(f"rank {r}: all_reduce #"), dump
        if victim == 0:
            # rank 0 served the store: the survivors name whom they saw close, and the store
            assert "rendezvous store is unreachable" in msg or f"rank(s) {victim} died" in msg, dump
            assert re.search(r"rank\(s\) 0\b|rank 0's process", msg), dump
        else:
            assert f"rank(s) {victim} died or stopped responding" in msg, dump
        # the same as fields on the exception, from where the failure was found (not parsed)
        f = _fields(out)
        assert f["rank"] == r and f["op"] == "allreduce" and f["seq"] >= 4, (f, dump)
        assert f["errno"] is None or f["errno"] > 0, f
        if victim != 0:
            assert f["ranks"] == [victim], (f, dump)
            # Gloo: the peer's end of the socket; shared memory: the peer's process
            peer = r"shm:pid=\d+" if transport == "shm" else r"127\.0\.0\.1:\d+"
            assert re.fullmatch(peer, f["peer"]), f
        else:
            assert all(0 <= q < n and q != r for q in f["ranks"]), f
        # later collectives fail at once, with the same error and fields
        m = re.search(r"^AGAIN (\S+) (\S+)$", out, re.MULTILINE)
        assert m and float(m[1]) < 0.5 and m[2] == "True", dump
        assert _fields(out, "AGAIN-FIELDS") == f, dump
        # the survivor exits with the exception (not an abort), its message on stderr
        assert rc == 1 and "ddl.distributed.DistributedError: " + msg in err, dump


@pytest.mark.timeout(40)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_rank0_killed_with_a_redis_rendezvous_is_named(world):
    # the store outlives every rank here, so even rank 0's death is named exactly (and the
    # survivors' polling of each other's reports must not park in Redis forever)
    rport = _free_port()
    world.start("redis", ["redis-server", "--port", str(rport), "--bind", HOST, "--save", "",
                          "--appendonly", "no", "--dir", str(world.tmp)], world.env())
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, rport), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, world.dump()
            time.sleep(0.05)
    port = _free_port()  # only names the job's keys in Redis (DDL_JOB_ID unset)
    for r in range(3):
        world.rank(r, 3, port, FAULTS, "loop", "--victim", 0, "--how", "kill", "--timeout", 20,
                   "--init-method", f"redis://{HOST}:{rport}")
    procs = [p for name, p, _, _ in world.procs if name != "redis"]
    deadline = time.monotonic() + 30
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    outs = {name: out.read_text() for name, _, out, _ in world.procs}
    died = float(re.search(r"^DYING (\S+)$", outs["rank0"], re.MULTILINE)[1])
    for r in (1, 2):
        assert procs[r].poll() == 1, world.dump()
        t, _, kind, _, msg = _caught(outs[f"rank{r}"])
        assert kind == "DistributedError" and "rank(s) 0 died or stopped responding" in msg, msg
        f = _fields(outs[f"rank{r}"])
        assert f["ranks"] == [0] and f["op"] == "allreduce" and f["rank"] == r, f
        assert t - died < 5.0, world.dump()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("delay", [0.03, 0.04])
def test_peer_killed_mid_transfer_is_named_quickly(world, delay):
    # rank 1 stops (SIGSTOP) in the middle of a 32 MiB-per-peer all_to_all and is then
    # SIGKILLed: rank 0 has a transfer under way on a dead connection, which Gloo sometimes
    # leaves waiting for the whole timeout (30 s here); the watchdog must end it
    port = _free_port()
    for r in range(2):
        world.rank(r, 2, port, FAULTS, "stall", "--timeout", 30, DDL_STALL_DELAY=delay,
                   DDL_STALL_FLOATS=16 << 20)
    victim = world.procs[1][1]
    deadline = time.monotonic() + 20
    while True:
        try:
            with open(f"/proc/{victim.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
        except OSError:
            pass
        assert victim.poll() is None and time.monotonic() < deadline, world.dump()
        time.sleep(0.005)
    time.sleep(0.2)
    killed = time.time()
    os.killpg(victim.pid, signal.SIGKILL)
    rc, out, _ = world.wait(25)["rank0"]
    t, _, kind, _, msg = _caught(out)
    assert rc == 1 and kind == "DistributedError", world.dump()
    assert "rank(s) 1 died or stopped responding" in msg, msg
    f = _fields(out)
    assert f["ranks"] == [1] and f["op"] == "alltoall" and f["rank"] == 0, f
    assert t - killed < 3.0, world.dump()


@pytest.mark.timeout(40)
def test_launcher_names_the_killed_rank(world):
    world.launcher("ddlrun", ["--nproc-per-node", 3, "--timeout", 5], FAULTS, "loop",
                   "--victim", 1, "--how", "exit")
    t0 = time.monotonic()
    rc, _, err = world.wait(30)["ddlrun"]
    assert rc != 0, world.dump()
    assert time.monotonic() - t0 < 20, world.dump()
    # the launcher names the rank that died (or, if a survivor's exit was seen in the same
    # instant, that survivor too, whose quoted stderr names rank 1)
    assert re.search(r"^ddlrun: rank 1 \(node 0, local rank 1, pid \d+\) failed: exited with "
                     r"code 17$", err, re.MULTILINE) or "rank(s) 1 died" in err, world.dump()
    assert re.search(r"^ddlrun: exiting with code \d+", err, re.MULTILINE), world.dump()


# ---- ranks that never come, or stop coming --------------------------------------------------


@pytest.mark.timeout(30)
def test_rank_that_never_joins_is_named(world):
    port = _free_port()
    for r in (0, 1):  # a world of 3 where rank 2 never starts
        world.rank(r, 3, port, FAULTS, "join", "--timeout", 2)
    res = world.wait(20)
    for r in (0, 1):
        rc, out, _ = res[f"rank{r}"]
        assert rc == 3, world.dump()
        m = re.search(r"^JOINFAIL (\S+) (\S+) (\S+) (.*)$", out, re.MULTILINE)
        assert m, world.dump()
        assert m[2] == "DistributedTimeoutError" and "TimeoutError" in m[3].split(","), out
        assert "rank(s) 2 of 3 never joined within 2000 ms" in m[4], out
        f = _fields(out)
        assert f["ranks"] == [2] and f["op"] == "join" and f["rank"] == r, f
        assert f["seq"] is None and f["peer"] is None, f
        assert float(m[1]) < 2 + 5.5, out  # the timeout, then at most 5 s for the others


@pytest.mark.timeout(30)
def test_missing_rank_0_is_named(world):
    world.rank(1, 2, _free_port(), FAULTS, "join", "--timeout", 1.5)
    rc, out, _ = world.wait(20)["rank1"]
    assert rc == 3, world.dump()
    assert "DistributedTimeoutError" in out and "rank 0 never came up" in out, out


@pytest.mark.timeout(40)
def test_rank_that_stops_calling_collectives_times_out_named(world):
    port = _free_port()
    timeout = 2.0
    for r in range(3):
        world.rank(r, 3, port, FAULTS, "loop", "--victim", 2, "--how", "sleep",
                   "--timeout", timeout)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the survivors end; the sleeper is killed at the end
        if all(p.poll() is not None for name, p, _, _ in world.procs if name != "rank2"):
            break
        time.sleep(0.1)
    for r in (0, 1):
        _, p, out_path, _ = world.procs[r]
        assert p.poll() == 1, world.dump()
        out = out_path.read_text()
        _, waited, kind, is_timeout, msg = _caught(out)
        assert kind == "DistributedTimeoutError" and is_timeout, out
        assert f"timed out after {int(timeout * 1000)} ms; rank(s) 2 never arrived" in msg, out
        f = _fields(out)
        assert f["ranks"] == [2] and f["op"] == "allreduce" and f["rank"] == r, f
        assert _fields(out, "AGAIN-FIELDS") == f, out
        assert timeout * 0.9 < waited < timeout + 3.5, out


# ---- ranks that disagree ---------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_mismatched_collectives_fail_on_every_rank_naming_both_sides(world):
    n = 3
    port = _free_port()
    for r in range(n):
        world.rank(r, n, port, FAULTS, "mismatch")
    res = world.wait(30)
    dump = world.dump()
    normal_and_odd = {
        "size": ("all_reduce(float32, 4 elements, SUM)", "all_reduce(float32, 5 elements, SUM)"),
        "dtype": ("all_reduce(float32, 4 elements, SUM)", "all_reduce(float64, 4 elements, SUM)"),
        "op": ("all_reduce(float32, 4 elements, SUM)", "all_reduce(float32, 4 elements, MAX)"),
        "kind": ("all_reduce(float32, 4 elements, SUM)", "broadcast(float32, 4 elements, root 0)"),
        "root": ("broadcast(float32, 4 elements, root 0)",
                 "broadcast(float32, 4 elements, root 1)"),
        "count": ("all_reduce(float32, 2 elements, SUM)", "barrier()"),
    }
    odd = n - 1
    for r in range(n):
        rc, out, err = res[f"rank{r}"]
        for name, (normal, other) in normal_and_odd.items():
            m = re.search(rf"^MISMATCH {name} (\S+) (.*)$", out, re.MULTILINE)
            assert m and m[1] == "DistributedError", dump
            mine, theirs = (other, normal) if r == odd else (normal, other)
            assert f"rank {r} called {mine} but rank " in m[2], dump
            assert f" called {theirs}" in m[2], dump
            assert "mismatched collectives at sequence number 0" in m[2], dump
            # the ranks that called something else, as seen from this rank
            f = _fields(out, name=name)
            assert f["ranks"] == ([q for q in range(n) if q != odd] if r == odd else [odd]), f
            assert f["rank"] == r and f["seq"] == 0, f
            local = "broadcast" if name == "root" or (name == "kind" and r == odd) else (
                "barrier" if name == "count" and r == odd else "allreduce")
            assert f["op"] == local, f
            m = re.search(rf"^FAILFAST {name} (\S+) (\S+)$", out, re.MULTILINE)
            assert m and float(m[1]) < 0.5 and m[2] == "True", dump
        assert "WORLD-OK" in out and "NOT REACHED" not in out, dump
        # the last mismatch is left uncaught: a Python exception's exit, not an abort (134)
        assert rc == 1, dump
        assert "ddl.distributed.DistributedError: rank" in err and "6 elements" in err, dump


@pytest.mark.timeout(30)
def test_ranks_with_different_world_sizes_fail_naming_both(world):
    port = _free_port()
    world.rank(0, 2, port, FAULTS, "join", "--timeout", 10)
    world.rank(1, 3, port, FAULTS, "join", "--timeout", 10)
    res = world.wait(20)
    for r, mine, theirs in ((0, 2, 3), (1, 3, 2)):
        rc, out, _ = res[f"rank{r}"]
        assert rc == 3, world.dump()
        m = re.search(r"^JOINFAIL (\S+) (\S+) \S+ (.*)$", out, re.MULTILINE)
        assert m and m[2] == "ValueError", world.dump()
        assert float(m[1]) < 5, out  # at once, not after the 10 s timeout
        assert f"was started with world size {theirs} but rank {r} with {mine}" in m[3], out


@pytest.mark.timeout(40)
def test_rank_dying_in_ddp_backward_is_named_with_fields(world):
    port = _free_port()
    for r in range(3):
        world.rank(r, 3, port, FAULTS, "ddp", "--victim", 2, "--timeout", 20)
    res = world.wait(35)
    assert res["rank2"][0] == 17, world.dump()
    for r in (0, 1):
        rc, out, _ = res[f"rank{r}"]
        assert rc == 1, world.dump()
        _, _, kind, _, msg = _caught(out)
        assert kind == "DistributedError" and "rank(s) 2 died" in msg, world.dump()
        f = _fields(out)  # the reducer's wait keeps what the comm layer recorded
        assert f["ranks"] == [2] and f["op"] == "allreduce" and f["rank"] == r, f


@pytest.mark.timeout(30)
def test_new_group_in_different_orders_times_out_naming_ranks(world):
    port = _free_port()
    for r in range(4):
        world.rank(r, 4, port, FAULTS, "swap", "--timeout", 2)
    res = world.wait(20)
    for r in range(4):
        rc, out, _ = res[f"rank{r}"]
        assert rc == 0, world.dump()
        m = re.search(r"^SWAP (\S+) (.*)$", out, re.MULTILINE)
        assert m and m[1] == "DistributedTimeoutError", world.dump()
        first = [0, 2] if r % 2 == 0 else [1, 3]  # the group this rank waits in
        missing = 1 - first.index(r)
        assert f"rank(s) {missing} of 2 never joined within 2000 ms" in m[2], out
        assert f"[in the group of global ranks {first}, group rank i is global rank " in m[2], out
        f = json.loads(re.search(r"^FIELDS (.*)$", out, re.MULTILINE)[1])
        assert f["ranks"] == [first[missing]], out  # the fields name global ranks too
        assert f["rank"] == r and f["op"] == "join", out


# ---- bad arguments: ValueError before any networking -----------------------------------------


@pytest.mark.timeout(20)
def test_bad_arguments_raise_value_error_at_once(monkeypatch):
    for v in _DIST_VARS:
        monkeypatch.delenv(v, raising=False)
    dead_port = _free_port()  # nothing listens: any networking would hang until the timeout

    def fails(exc, needle, **kw):
        t0 = time.monotonic()
        with pytest.raises(exc) as e:
            kw.setdefault("timeout", timedelta(seconds=20))
            dist.init_process_group(kw.pop("backend", "gloo"), **kw)
        assert needle in str(e.value), str(e.value)
        assert time.monotonic() - t0 < 1.0
        assert not dist.is_initialized()

    fails(ValueError, "RANK")  # env:// with nothing set
    monkeypatch.setenv("RANK", "0")
    fails(ValueError, "WORLD_SIZE")
    monkeypatch.setenv("WORLD_SIZE", "2")
    fails(ValueError, "MASTER_ADDR")
    monkeypatch.setenv("MASTER_ADDR", HOST)
    fails(ValueError, "MASTER_PORT")
    monkeypatch.setenv("MASTER_PORT", "not-a-port")
    fails(ValueError, "MASTER_PORT")
    monkeypatch.setenv("MASTER_PORT", str(dead_port))
    monkeypatch.setenv("RANK", "2")
    fails(ValueError, "rank 2 is outside [0, 2)")
    monkeypatch.setenv("RANK", "0")
    fails(ValueError, "rank 5 is outside [0, 2)", rank=5)
    fails(ValueError, "world_size must be >= 1", world_size=0, rank=0,
          init_method=f"tcp://{HOST}:{dead_port}")
    monkeypatch.setenv("WORLD_SIZE", "x")
    fails(ValueError, "WORLD_SIZE='x'")
    fails(ValueError, "unknown init_method scheme 'foo'", init_method="foo://x")
    fails(ValueError, "needs tcp://host:port", init_method=f"tcp://{HOST}", rank=0, world_size=2)
    fails(ValueError, "rank and world_size are needed", init_method=f"tcp://{HOST}:{dead_port}")
    fails(ValueError, "backend", backend="nccl")
    fails(ValueError, "timeout", timeout=-1)
    with pytest.raises(RuntimeError, match="not initialized"):
        dist.all_reduce(ddl_ones())


def ddl_ones():
    import ddl

    return ddl.ones(2)


# ---- the store survives garbage --------------------------------------------------------------


@pytest.mark.timeout(30)
def test_store_sent_garbage_still_serves_the_rendezvous(world):
    port = _free_port()
    world.rank(0, 2, port, FAULTS, "join", "--timeout", 15)
    deadline = time.monotonic() + 10
    while True:  # wait for rank 0's store to listen
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, world.dump()
            time.sleep(0.05)
    garbage = [
        os.urandom(4096),
        b"\x00\x00\x00\x00",                       # a frame of length 0
        b"\xff\xff\xff\xff" + b"x" * 100,          # a frame far over the size limit
        b"\x00\x00\x00\x05\x63abcd",               # an unknown opcode
        b"\x00\x00\x00\x0a\x02\x00\x00\x00\x07ab", # a field running past its frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for g in garbage:
        with socket.create_connection((HOST, port), timeout=5) as s:
            try:
                s.sendall(g)
                s.settimeout(2)
                s.recv(100)  # the server closes this connection (or answers an error)
            except OSError:
                pass
    half = socket.create_connection((HOST, port), timeout=5)  # and one left half-sent
    try:
        half.sendall(b"\x00\x00\x10\x00\x01")
        world.rank(1, 2, port, FAULTS, "join", "--timeout", 15)
        res = world.wait(20)
    finally:
        half.close()
    for r in (0, 1):
        rc, out, _ = res[f"rank{r}"]
        assert rc == 0 and "JOINED" in out, world.dump()
