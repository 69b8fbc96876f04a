"""ddl.run beyond one launcher: workers die with a SIGKILLed launcher (PR_SET_PDEATHSIG),
torchrun's c10d rendezvous on loopback (node ranks on arrival, a missing node named, restarts
across nodes), torchrun flag spellings and address / interface validation. The same across
network-namespace hosts: tests/test_cluster.py."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ddl import run
from tests.test_run import _cmd, _env, _gone, _script, _wait_for_files


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _c10d(port, *extra, nnodes="2", rdzv_id="t1"):
    return ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"127.0.0.1:{port}", "--rdzv-id", rdzv_id, *extra]


def _popen(tmp_path, args, env=None):
    return subprocess.Popen(_cmd(*args), cwd=tmp_path, env=env or _env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs, timeout=60):
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=timeout)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.mark.timeout(60)
def test_sigkill_of_launcher_takes_every_worker_within_2s(tmp_path):
    w = _script(tmp_path, "w.py", """
        import os, time
        open(f"pid{os.environ['RANK']}", "w").write(str(os.getpid()))
        time.sleep(60)
        """)
    proc = subprocess.Popen(_cmd("--nproc-per-node", "3", w), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = _wait_for_files([tmp_path / f"pid{r}" for r in range(3)])
        assert not any(_gone(p) for p in pids)
        proc.kill()
        t0 = time.monotonic()
        proc.wait(timeout=10)
        while not all(_gone(p) for p in pids) and time.monotonic() - t0 < 2.0:
            time.sleep(0.02)
        alive = [p for p in pids if not _gone(p)]
    finally:
        for p in pids if "pids" in locals() else []:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive, f"workers {alive} outlived their SIGKILLed launcher by 2 s"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_death_or_interrupt_of_launch_parent_takes_its_ranks(tmp_path, sig):
    # ddl.distributed.launch: the forked ranks die with the process that called launch
    parent = _script(tmp_path, "p.py", """
        import os, time
        import ddl.distributed as dist

        def f():
            open(f"pid{dist.get_rank()}", "w").write(str(os.getpid()))
            time.sleep(60)

        dist.launch(f, nprocs=2, timeout=120)
        """)
    # (SIGINT: a notebook's "interrupt kernel" reaches only the parent, not the ranks)
    proc = subprocess.Popen([sys.executable, parent], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = []
    try:
        pids = _wait_for_files([tmp_path / f"pid{r}" for r in range(2)], timeout=40)
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        while not all(_gone(p) for p in pids) and time.monotonic() - t0 < 3.0:
            time.sleep(0.02)
        alive = [p for p in pids if not _gone(p)]
    finally:
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive


ENV_WORKER = """
import json, os
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "GROUP_WORLD_SIZE", "MASTER_ADDR",
        "MASTER_PORT", "TORCHELASTIC_RUN_ID", "DDL_RESTART_COUNT"]
print(json.dumps({k: os.environ.get(k) for k in keys}))
"""


@pytest.mark.timeout(90)
def test_c10d_assigns_node_ranks_on_arrival(tmp_path):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    port = _free_port()
    # torchrun's underscore spellings on one launcher, dashes on the other; no --node-rank
    a = _popen(tmp_path, ["--nnodes=2", "--nproc_per_node=2", "--rdzv_backend=c10d",
                          f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=456",
                          "--monitor_interval=0.2", w])
    b = _popen(tmp_path, _c10d(port, "--nproc-per-node", "2", rdzv_id="456") + [w])
    results = _finish([a, b])
    recs = []
    for rc, out, err in results:
        assert rc == 0, err
        recs += [json.loads(line.partition("]: ")[2]) for line in out.splitlines()]
    assert sorted(int(r["RANK"]) for r in recs) == [0, 1, 2, 3]
    assert {r["WORLD_SIZE"] for r in recs} == {"4"}
    assert {r["GROUP_WORLD_SIZE"] for r in recs} == {"2"}
    assert {r["TORCHELASTIC_RUN_ID"] for r in recs} == {"456"}
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in recs}) == 1
    for r in recs:
        assert int(r["RANK"]) // 2 == int(r["GROUP_RANK"])
    assert recs[0]["MASTER_PORT"] != str(port)   # node 0 picked the workers' own port


@pytest.mark.timeout(60)
def test_c10d_missing_node_is_named_after_the_join_timeout(tmp_path):
    w = _script(tmp_path, "w.py", "print('never runs')\n")
    port = _free_port()
    t0 = time.monotonic()
    [(rc, out, err)] = _finish([_popen(tmp_path, _c10d(port, "--nnodes", "3", "--rdzv-conf",
                                                       "join_timeout=2") + [w])])
    assert rc == 1 and out == "", err
    assert 2 <= time.monotonic() - t0 < 30
    assert "timed out after 2 s: 1 of 3 nodes arrived" in err, err
    assert "missing node rank(s) 1, 2" in err


RESTART_WORKER = """
import os, sys, time
node, attempt = os.environ["GROUP_RANK"], int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt == 0:
    if node == "1":
        time.sleep(0.5)
        sys.exit(7)
    time.sleep(60)   # stopped by node 1's failure
print(f"ok node={node} attempt={attempt}")
"""


@pytest.mark.timeout(120)
def test_c10d_failure_on_one_node_restarts_every_node(tmp_path):
    w = _script(tmp_path, "w.py", RESTART_WORKER)
    port = _free_port()
    t0 = time.monotonic()
    procs = [_popen(tmp_path, _c10d(port, "--max-restarts", "1") + [w]) for _ in range(2)]
    results = _finish(procs, timeout=100)
    assert time.monotonic() - t0 < 60   # node 0's first attempt would have slept 60 s
    outs = "".join(o for _, o, _ in results)
    errs = "".join(e for _, _, e in results)
    assert [rc for rc, _, _ in results] == [0, 0], errs
    assert sorted(outs.splitlines()) == ["[rank0]: ok node=0 attempt=1",
                                         "[rank1]: ok node=1 attempt=1"]
    assert "exited with code 7" in errs and "another node failed" in errs
    assert errs.count("restarting the worker group (restart 1 of 1)") == 2


@pytest.mark.timeout(120)
def test_c10d_failure_without_restarts_stops_every_node(tmp_path):
    w = _script(tmp_path, "w.py", RESTART_WORKER)
    port = _free_port()
    procs = [_popen(tmp_path, _c10d(port) + [w]) for _ in range(2)]
    results = _finish(procs, timeout=100)
    codes = sorted(rc for rc, _, _ in results)
    errs = "".join(e for _, _, e in results)
    assert codes == [1, 7], errs
    assert "node 1: rank 1 on" in errs and "exited with code 7" in errs


@pytest.mark.parametrize("argv, message", [
    (["--rdzv-backend", "c10d", "w.py"], "needs --rdzv-endpoint"),
    (["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:99999", "w.py"],
     "the port must be in [1, 65535]"),
    (["--rdzv-backend", "c10d", "--rdzv-endpoint", "no-such-host.invalid:29400", "w.py"],
     "does not resolve"),
    (["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1", "--master-port", "5", "w.py"],
     "are for the static backend"),
    (["--nnodes", "1:4", "w.py"], "a range needs --rdzv-backend c10d"),
    (["--nnodes", "4:2", "w.py"], "MIN:MAX"),
    (["--nnodes", "2", "--master-addr", "no-such-host.invalid", "--master-port", "29500",
      "w.py"], "does not resolve"),
    (["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1", "--rdzv-conf",
      "join_timeout=soon", "w.py"], "join_timeout must be seconds"),
    (["--monitor-interval", "0", "w.py"], "--monitor-interval must be > 0"),
])
def test_bad_rdzv_flags(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.py").write_text("")
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_socket_ifname_is_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.py").write_text("")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ddlt-nosuch0")
    with pytest.raises(SystemExit):
        run.main(["w.py"])
    err = capsys.readouterr().err
    assert "GLOO_SOCKET_IFNAME: network interface 'ddlt-nosuch0' does not exist" in err
    assert "lo" in err   # the interfaces there are


def test_static_endpoint_is_the_master(tmp_path):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    port = _free_port()
    r = subprocess.run(_cmd("--rdzv-backend", "static", "--rdzv-endpoint", f"127.0.0.1:{port}",
                            "--start-method", "spawn", w), cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=45, check=False)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.partition("]: ")[2])
    assert (rec["MASTER_ADDR"], rec["MASTER_PORT"], rec["GROUP_RANK"]) == \
        ("127.0.0.1", str(port), "0")
