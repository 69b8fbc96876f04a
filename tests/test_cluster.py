"""Two "hosts" in network namespaces (scripts/cluster.sh, tests/_cluster.py) on a 1 Gbit/s
switch: PyTorch's DDP tutorial multinode script (its GPU original under DDL_CUDA_AS_CPU, and a
CPU version) with torchrun's command line, a host's link going down mid-training, a host's
launcher killed, --max-restarts across hosts, and mpirun across the hosts. Marked `cluster` (and `mpi`); skipped without root."""
import os
import re
import shutil
import signal
import sys
import time

import pytest

from tests._cluster import ROOT, SCRIPT, cluster_factory

pytestmark = pytest.mark.cluster
WORKERS = os.path.join(ROOT, "tests", "cluster_workers")
PORT = 29611


@pytest.fixture
def make_cluster():
    yield from cluster_factory()


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _torchrun_args(c, nproc=1, *extra):
    return [sys.executable, "-m", "ddl.run", "--nnodes", "2", "--nproc-per-node", str(nproc),
            "--rdzv-id", "456", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{c.addr(0)}:{PORT}", *extra]


def _communicate(procs, timeout):
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("nproc", [1, 2])
def test_tutorial_multinode_script_with_torchruns_command_line(make_cluster, tmp_path, nproc):
    c = make_cluster(2)
    procs = []
    for i in range(2):
        d = tmp_path / f"h{i}"   # each host's working directory (its own snapshot.pt)
        shutil.copytree(WORKERS, d)
        procs.append(c.popen(i, _torchrun_args(c, nproc) + ["multinode.py", "3", "1"],
                             cwd=d, env=_env()))
    results = _communicate(procs, timeout=200)
    for rc, _, err in results:
        assert rc == 0, err
    out = "".join(o for _, o, _ in results)
    finals = dict(re.findall(r"final (\d+) (\S+)", out))
    assert sorted(finals) == [str(r) for r in range(2 * nproc)], out
    assert len(set(finals.values())) == 1, finals   # every rank ends with the same weights
    assert out.count("Epoch 2 | Training snapshot saved") == 2   # local rank 0 of each host
    err0 = results[0][2] + results[1][2]
    assert f"master {c.addr(0)}:" in err0 or f"master {c.addr(1)}:" in err0


COMPAT = os.path.join(ROOT, "tests", "compat")


@pytest.mark.timeout(240)
def test_tutorial_gpu_multinode_script_unchanged_under_cuda_as_cpu(make_cluster, tmp_path):
    """pytorch/examples' multinode.py as written for GPUs (tests/compat/ddp_series_multinode.py,
    `torch` -> ddl by the compat shim), torchrun's command line, DDL_CUDA_AS_CPU=1."""
    c = make_cluster(2)
    env = _env(DDL_CUDA_AS_CPU="1")
    env["PYTHONPATH"] = os.pathsep.join((os.path.join(COMPAT, "shim"), ROOT))
    procs = []
    for i in range(2):
        d = tmp_path / f"h{i}"   # each host's working directory: its own snapshot.pt
        d.mkdir()
        for f in ("ddp_series_multinode.py", "datautils.py"):
            shutil.copy(os.path.join(COMPAT, f), d)
        procs.append(c.popen(i, _torchrun_args(c) + ["ddp_series_multinode.py", "3", "1"],
                             cwd=d, env=env))
    results = _communicate(procs, timeout=200)
    for rc, out, err in results:
        assert rc == 0, out + err
    out = "".join(o for _, o, _ in results)
    for rank in (0, 1):   # both ranks trained every epoch on their half of the 2048 samples
        for epoch in range(3):
            assert f"[GPU{rank}] Epoch {epoch} | Batchsize: 32 | Steps: 32" in out, out
    assert out.count("Training snapshot saved at snapshot.pt") == 3, out   # global rank 0
    snaps = [d / "snapshot.pt" for d in (tmp_path / "h0", tmp_path / "h1")
             if (d / "snapshot.pt").exists()]
    assert len(snaps) == 1, snaps   # written on the host that got global rank 0
    import ddl

    snap = ddl.load(str(snaps[0]))
    assert snap["EPOCHS_RUN"] == 2
    model = ddl.nn.Linear(20, 1)
    model.load_state_dict(snap["MODEL_STATE"])
    assert model.weight.shape == (1, 20) and bool(ddl.isfinite(model.weight).all())
    err = results[0][2] + results[1][2]
    assert "rendezvous '456' round 0: node 0 of 2" in err and "node 1 of 2" in err, err


def _start_steps(c, tmp_path, extra=(), **env):
    return [c.popen(i, _torchrun_args(c, 1, *extra) + ["steps.py"], cwd=WORKERS,
                    env=_env(**env)) for i in range(2)]


def _wait_for_step(logs, procs, n, timeout=90):
    deadline = time.monotonic() + timeout
    while f"step {n} " not in "".join(log.read_text() for log in logs):
        assert time.monotonic() < deadline, f"the job never reached step {n}"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.1)


def _popen_logged(c, i, argv, log, env):
    f = open(log, "w")  # noqa: SIM115 (closed below, after the process)
    p = c.popen(i, argv, cwd=WORKERS, env=env, stdout=f)
    p.log_file = f
    return p


@pytest.mark.timeout(180)
def test_link_down_mid_training_is_named_and_every_launcher_fails(make_cluster, tmp_path):
    c = make_cluster(2)
    logs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [_popen_logged(c, i, _torchrun_args(c) + ["steps.py"], logs[i],
                           _env(TIMEOUT="6", STEPS="100000")) for i in range(2)]
    try:
        _wait_for_step(logs, procs, 5)
        # node ranks are handed out on arrival: cut the host that is not rank 0's (rank 0
        # prints the steps), so that the survivor keeps the workers' store
        survivor = 0 if "step 5 " in logs[0].read_text() else 1
        victim = 1 - survivor
        t0 = time.monotonic()
        c.link(victim, "down")
        errs = []
        for p in procs:
            _, e = p.communicate(timeout=120)
            errs.append(e)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.log_file.close()
    assert all(p.returncode != 0 for p in procs), errs
    assert elapsed < 6 * 3 + 30, elapsed   # the collective timeout, the report, the stops
    both = "\n".join(errs)
    # the survivor names the peer it lost, and its launcher the host that rank was on
    assert re.search(r"rank\(s\) 1 never arrived|rank\(s\) 1 died", errs[survivor]), both
    assert f"node 1: ranks 1-1 on {c.hostname(victim)} ({c.addr(victim)})" in errs[survivor], both
    assert "rank 1 (node 1" in errs[victim] and "timed out" in errs[victim], both
    c.link(victim, "up")
    assert c.wait_empty(10), c.pids()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victim", [0, 1])   # 0 serves the rendezvous store
def test_killed_launcher_on_one_host_stops_the_other_hosts_workers(make_cluster, tmp_path,
                                                                    victim):
    c = make_cluster(2)
    logs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [_popen_logged(c, i, _torchrun_args(c) + ["steps.py"], logs[i],
                           _env(TIMEOUT="20", STEPS="100000")) for i in range(2)]
    try:
        _wait_for_step(logs, procs, 5)
        t0 = time.monotonic()
        os.kill(procs[victim].pid, signal.SIGKILL)
        other = procs[1 - victim]
        _, err = other.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        procs[victim].communicate(timeout=10)
    finally:
        for p in procs:
            p.log_file.close()
    assert other.returncode != 0, err
    assert elapsed < 15, (elapsed, err)   # seconds, not the 20 s collective timeout
    assert c.wait_empty(5), c.pids()      # the victim's workers died with their launcher


@pytest.mark.timeout(240)
def test_max_restarts_recovers_a_crash_on_one_host(make_cluster, tmp_path):
    c = make_cluster(2)
    procs = [c.popen(i, _torchrun_args(c, 1, "--max-restarts", "1") + ["steps.py"],
                     cwd=WORKERS, env=_env(STEPS="30", CRASH_NODE="1", CRASH_STEP="5"))
             for i in range(2)]
    results = _communicate(procs, timeout=200)
    errs = "".join(e for _, _, e in results)
    assert [rc for rc, _, _ in results] == [0, 0], errs
    out = "".join(o for _, o, _ in results)
    assert "done rank 0 attempt 1" in out and "done rank 1 attempt 1" in out, out
    assert "exited with code 9" in errs
    assert errs.count("restarting the worker group (restart 1 of 1)") == 2, errs


AGENT = """#!/bin/sh
# Open MPI's rsh agent for the namespace cluster: "agent HOST CMD..." runs CMD on HOST
host=$1
shift
exec {script} exec {tag} $(( ${{host##*.}} - 1 )) sh -c "$*"
"""


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("mpirun") is None,
                    reason="mpirun not installed (Debian: apt-get install openmpi-bin)")
def test_mpirun_4_ranks_across_2_hosts(make_cluster, tmp_path):
    from tests.test_cluster_env import WORKER, read_outs

    c = make_cluster(2)
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT.format(script=SCRIPT, tag=c.tag))
    agent.chmod(0o755)
    w = tmp_path / "w.py"
    w.write_text(WORKER)
    env = _env()
    for k in list(env):
        if k.startswith(("OMPI_", "PMIX_", "SLURM_", "PMI_")):
            del env[k]
    argv = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "4",
            "--host", f"{c.addr(0)}:2,{c.addr(1)}:2", "--mca", "plm_rsh_agent", str(agent),
            "--mca", "btl", "self,tcp", "--mca", "oob_tcp_if_include", "10.213.0.0/24",
            "--mca", "btl_tcp_if_include", "10.213.0.0/24",
            "-x", f"MASTER_ADDR={c.addr(0)}", "-x", "PYTHONPATH", sys.executable, str(w)]
    p = c.popen(0, argv, cwd=tmp_path, env=env)
    out, err = p.communicate(timeout=150)
    assert p.returncode == 0, out + err
    recs = read_outs(tmp_path, 4)
    assert [r[:2] for r in recs] == [[str(i), "4"] for i in range(4)], out
    assert sorted(r[2] for r in recs) == ["0", "0", "1", "1"]   # 2 local ranks per host
    assert {r[3] for r in recs} == {"[10.0, 10.0]"}


SINK = """
import socket, sys, time
s = socket.socket()
s.bind(("10.213.0.2", 5001))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
n, t = 0, None
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    t = t or time.monotonic()
    n += len(b)
print(n / (time.monotonic() - t) / 1e6, flush=True)
"""
SOURCE = """
import socket
s = socket.create_connection(("10.213.0.2", 5001))
b = b"x" * (1 << 20)
for _ in range(40):
    s.sendall(b)
s.close()
"""


@pytest.mark.timeout(120)
def test_links_are_rate_limited(make_cluster):
    c = make_cluster(2, "1gbit")
    sink = c.popen(1, [sys.executable, "-c", SINK])
    assert sink.stdout.readline().strip() == "ready"
    src = c.popen(0, [sys.executable, "-c", SOURCE])
    src.communicate(timeout=60)
    out, _ = sink.communicate(timeout=60)
    mb_s = float(out)
    assert 5 < mb_s < 135, mb_s   # 1 Gbit/s is 125 MB/s; unshaped veth moves GB/s


@pytest.mark.timeout(120)
def test_run_tears_down_and_sweep_removes_dead_owners():
    import subprocess

    from tests._cluster import unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)

    def ours(prefix):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True).stdout
        return [ln for ln in out.splitlines() if ln.startswith(prefix)]

    r = subprocess.run([SCRIPT, "run", "2", "none", "--", "sh", "-c",
                        'echo "$DDLT_TAG"; exit 3'], capture_output=True, text=True,
                       check=False, timeout=60)
    assert r.returncode == 3, r.stderr
    assert not ours(f"ddlt-{r.stdout.strip()}-")
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{dead.pid}x7"
    subprocess.run([SCRIPT, "up", tag, "2", "none"], capture_output=True, check=True,
                   timeout=60)
    try:
        assert len(ours(f"ddlt-{tag}-")) == 3
        subprocess.run([SCRIPT, "sweep"], check=True, timeout=60)
        assert not ours(f"ddlt-{tag}-")
    finally:
        subprocess.run([SCRIPT, "down", tag], capture_output=True, check=False, timeout=60)
