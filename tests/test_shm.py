"""The shared-memory transport (csrc/comm/shm/), end to end: real processes on this host.

Every collective, dtype and op against NumPy's rank-order reduction and against the Gloo path
(tests/dist_workers/shm_worker.py check) for 1-4 ranks; the transport choice (mixed hosts
forced through DDL_HOST_ID, subgroups deciding for themselves, forcing shm across hosts is an
error); a peer SIGKILLed or SIGSTOPped during small and 64 MiB all_reduces is named on every
survivor and leaves nothing in /dev/shm; DDP equivalence and no_sync forced onto shm.
"""
import json
import os
import re
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_ddp as _ddp  # the DDP scenarios, rerun here on shared memory
import test_distributed as _dist  # World: processes killed however a test ends

WORKER = os.path.join(HERE, "dist_workers", "shm_worker.py")


@pytest.fixture
def world(tmp_path):
    with _dist.World(tmp_path) as w:
        yield w


def _ok(res, n, dump):
    oks = [k for k, (rc, out, _) in res.items() if rc == 0 and "OK rank" in out]
    assert len(oks) == n, dump


def _segments_of(pids):
    """Names in /dev/shm of segments the given processes created (/ddl-<pid>-...)."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    return [x for x in names if any(x.startswith(f"ddl-{p}-") for p in pids)]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_collective_matches_numpy_and_gloo(world, n):
    port = _dist._free_port()
    for r in range(n):
        world.rank(r, n, port, WORKER, "check")
    res = world.wait(140)
    dump = world.dump()
    _ok(res, n, dump)
    for _, out, _ in res.values():
        assert "TRANSPORT shm 1" in out, dump  # auto picked shared memory on one host
    assert not _segments_of([p.pid for _, p, _, _ in world.procs]), os.listdir("/dev/shm")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("hosts", ["aab", "aabb"])
def test_every_collective_across_forced_hosts(world, hosts):
    # DDL_HOST_ID stands in for separate machines: all_reduce goes hierarchical (shared memory
    # inside a "host", Gloo among the hosts' leaders), the rest over Gloo
    n = len(hosts)
    port = _dist._free_port()
    for r in range(n):
        world.rank(r, n, port, WORKER, "check", DDL_HOST_ID=hosts[r])
    res = world.wait(140)
    dump = world.dump()
    _ok(res, n, dump)
    for _, out, _ in res.values():
        assert "TRANSPORT hierarchical 2" in out, dump


@pytest.mark.timeout(60)
def test_mixed_hosts_go_hierarchical_and_same_host_subgroups_use_shm(world):
    port = _dist._free_port()
    for r in range(4):  # ranks 0, 1 on "host a"; 2, 3 on "host b"
        world.rank(r, 4, port, WORKER, "info", DDL_HOST_ID="a" if r < 2 else "b")
    res = world.wait(50)
    dump = world.dump()
    _ok(res, 4, dump)
    for r in range(4):
        out = res[f"rank{r}"][1]
        info = json.loads(re.search(r"^INFO (.*)$", out, re.MULTILINE)[1])
        assert info == {"backend": "gloo", "transport": "hierarchical", "requested": "auto",
                        "hosts": 2}, info
        if r < 2:
            sub = json.loads(re.search(r"^SUB (.*)$", out, re.MULTILINE)[1])
            assert sub["transport"] == "shm" and sub["hosts"] == 1, sub


@pytest.mark.timeout(60)
def test_forcing_shm_across_hosts_fails_on_every_rank(world):
    port = _dist._free_port()
    for r in range(2):
        world.rank(r, 2, port, WORKER, "info", DDL_HOST_ID=f"h{r}", DDL_COMM_TRANSPORT="shm")
    res = world.wait(50)
    for r in range(2):
        rc, _, err = res[f"rank{r}"]
        assert rc == 1 and "transport 'shm' needs every rank on one host" in err, world.dump()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("floats", [1024, 16 << 20], ids=["4KiB", "64MiB"])
def test_peer_killed_or_stopped_is_named_on_every_survivor(world, how, floats):
    n, victim, timeout = 3, 1, 6
    port = _dist._free_port()
    for r in range(n):
        world.rank(r, n, port, WORKER, "victim", "--victim", victim, "--how", how,
                   "--floats", floats, "--timeout", timeout, DDL_COMM_TRANSPORT="shm")
    procs = {name: p for name, p, _, _ in world.procs}
    survivors = [f"rank{r}" for r in range(n) if r != victim]
    deadline = time.monotonic() + 45
    while any(procs[s].poll() is None for s in survivors) and time.monotonic() < deadline:
        time.sleep(0.05)
    dump = world.dump()
    outs = {name: out.read_text() for name, _, out, _ in world.procs}
    died = float(re.search(r"^DYING (\S+)$", outs[f"rank{victim}"], re.MULTILINE)[1])
    for s in survivors:
        assert procs[s].poll() == 1, dump
        m = re.search(r"^CAUGHT (\S+) (\S+) (\S+) (.*)$", outs[s], re.MULTILINE)
        assert m, dump
        t, kind, is_timeout, msg = float(m[1]), m[2], m[3] == "True", m[4]
        fields = json.loads(re.search(r"^FIELDS (\S+)$", outs[s], re.MULTILINE)[1])
        assert fields["ranks"] == [victim] and fields["op"] == "allreduce", (fields, dump)
        if how == "kill":  # found through the peer's pidfd, then the report grace (1 s)
            assert kind == "DistributedError" and not is_timeout, dump
            assert f"rank(s) {victim} died" in msg, msg
            assert t - died < 4.0, f"{s} took {t - died:.2f} s:\n{dump}"
        else:  # alive but silent: the timeout, then the arrival grace (1.5 s)
            assert kind == "DistributedTimeoutError" and is_timeout, dump
            assert f"rank(s) {victim} never arrived" in msg, msg
            assert t - died < timeout + 6.0, f"{s} took {t - died:.2f} s:\n{dump}"
    world.kill_all()
    assert not _segments_of([p.pid for p in procs.values()]), os.listdir("/dev/shm")


@pytest.mark.ddl_world(2, timeout=60)
def test_ddp_equivalence_on_shm(rank, world_size):
    # one host: auto picks shm, so test_ddp's ddl_world tests run on it; this one says so
    import ddl.distributed as dist

    assert dist.get_backend_info()["transport"] == "shm", dist.get_backend_info()
    _ddp.test_equivalent_to_one_process("mlp", rank, world_size)


@pytest.mark.timeout(90)
def test_ddp_no_sync_on_shm(tmp_path, monkeypatch):
    monkeypatch.setenv("DDL_COMM_TRANSPORT", "shm")  # forced: fails rather than falls back
    _ddp.test_no_sync_accumulation_equals_one_large_batch(tmp_path)


def test_bad_transport_names_are_value_errors(monkeypatch):
    import ddl.distributed as dist

    with pytest.raises(ValueError, match="transport='tcp'"):
        dist.init_process_group(transport="tcp")
    monkeypatch.setenv("DDL_COMM_TRANSPORT", "infiniband")
    with pytest.raises(ValueError, match="DDL_COMM_TRANSPORT='infiniband'"):
        dist.init_process_group()
    assert not dist.is_initialized()
