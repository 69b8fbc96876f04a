"""The launcher (ddl.run): environment per rank, output prefixes, failure handling, signals,
restarts and multi-node worlds. Workers are tiny scripts written into tmp_path; they do not
import ddl, so these tests exercise only the launcher."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ddl import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DDL_NUM_THREADS")

# a worker that prints its launcher-set environment as one JSON line
ENV_WORKER = """
import json, os, sys
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
        "MASTER_PORT", "DDL_RESTART_COUNT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "DDL_NUM_THREADS"]
print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "argv": sys.argv[1:]}))
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _cmd(*args):
    return [sys.executable, "-m", "ddl.run", *args]


def _launch(tmp_path, *args, env=None, timeout=45):
    return subprocess.run(_cmd(*args), cwd=tmp_path, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _records(stdout):
    """{rank: record} from '[rankN]: {json}' lines, checking each prefix matches its RANK."""
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("[rank"), line
        prefix, _, payload = line.partition("]: ")
        rec = json.loads(payload)
        rank = int(prefix[len("[rank"):])
        assert rec["env"]["RANK"] == str(rank)
        out[rank] = rec
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(pid):
    """True when pid no longer runs (gone, or a zombie left for init to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_for_files(paths, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.exists() and p.read_text().strip() for p in paths):
            return [int(p.read_text()) for p in paths]
        time.sleep(0.05)
    raise AssertionError(f"workers never wrote {paths}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_env_per_rank(tmp_path, nproc):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    r = _launch(tmp_path, "--nproc-per-node", str(nproc), w)
    assert r.returncode == 0, r.stderr
    recs = _records(r.stdout)
    assert sorted(recs) == list(range(nproc))
    threads = str(max(1, len(os.sched_getaffinity(0)) // nproc))
    ports = set()
    for rank, rec in recs.items():
        env = rec["env"]
        assert env["WORLD_SIZE"] == str(nproc)
        assert env["LOCAL_RANK"] == str(rank)
        assert env["LOCAL_WORLD_SIZE"] == str(nproc)
        assert env["GROUP_RANK"] == "0"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["DDL_RESTART_COUNT"] == "0"
        assert all(env[v] == threads for v in THREAD_VARS), env
        ports.add(env["MASTER_PORT"])
    assert len(ports) == 1 and 0 < int(ports.pop()) < 65536


@pytest.mark.timeout(60)
def test_user_thread_setting_is_kept(tmp_path):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    r = _launch(tmp_path, "--nproc-per-node", "2", w, env=_env(OMP_NUM_THREADS="7"))
    assert r.returncode == 0, r.stderr
    for rec in _records(r.stdout).values():
        # the user's OMP_NUM_THREADS stays, and sizes the thread variables left unset
        assert [rec["env"][v] for v in THREAD_VARS] == ["7", "7", "7"]


@pytest.mark.timeout(60)
def test_module_mode_and_args_pass_through(tmp_path):
    _script(tmp_path, "envmod.py", ENV_WORKER)
    args = ["--nproc-per-node", "5", "-m", "x", "--", "--help", "a b"]
    r = _launch(tmp_path, "--nproc-per-node", "2", "-m", "envmod", *args)
    assert r.returncode == 0, r.stderr
    recs = _records(r.stdout)
    assert sorted(recs) == [0, 1]
    assert all(rec["argv"] == args for rec in recs.values())

    w = _script(tmp_path, "w.py", ENV_WORKER)
    r = _launch(tmp_path, "--master-port", str(_free_port()), w, "--lr", "0.1", "-m")
    assert r.returncode == 0, r.stderr
    assert _records(r.stdout)[0]["argv"] == ["--lr", "0.1", "-m"]


@pytest.mark.timeout(60)
def test_raw_bytes_partial_lines_and_no_prefix(tmp_path):
    w = _script(tmp_path, "w.py", """
        import os, sys
        sys.stdout.buffer.write(b"junk \\xff\\xfe\\x00 end\\nfirst half, ")
        sys.stdout.flush()
        sys.stdout.write("second half\\nno newline at exit")
        sys.stderr.write("to stderr\\n")
        """)
    r = subprocess.run(_cmd(w), cwd=tmp_path, env=_env(), capture_output=True, timeout=45,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (b"[rank0]: junk \xff\xfe\x00 end\n[rank0]: first half, second half\n"
                        b"[rank0]: no newline at exit\n")
    assert r.stderr == b"[rank0]: to stderr\n"

    r = subprocess.run(_cmd("--no-prefix", w), cwd=tmp_path, env=_env(), capture_output=True,
                       timeout=45, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"junk \xff\xfe\x00 end\nfirst half, second half\nno newline at exit"
    assert r.stderr == b"to stderr\n"


@pytest.mark.timeout(60)
def test_failure_stops_others_and_reports(tmp_path):
    w = _script(tmp_path, "w.py", """
        import os, sys, time
        rank = os.environ["RANK"]
        open(f"pid{rank}", "w").write(str(os.getpid()))
        if rank == "1":
            time.sleep(0.3)
            for i in range(30):
                print(f"complaint {i}", file=sys.stderr)
            sys.exit(3)
        time.sleep(30)
        """)
    t0 = time.monotonic()
    r = _launch(tmp_path, "--nproc-per-node", "2", w)
    elapsed = time.monotonic() - t0
    assert r.returncode == 3, r.stderr
    assert elapsed < 10, elapsed   # rank 0 would have slept 30 s
    assert "rank 1 (node 0, local rank 1" in r.stderr
    assert "exited with code 3" in r.stderr
    summary = r.stderr[r.stderr.index("last 20 lines of rank 1's stderr"):]
    assert "    complaint 10\n" in summary and "    complaint 29\n" in summary
    assert "complaint 9\n" not in summary
    assert "rank 0 (killed by SIGTERM" in r.stderr
    assert "[rank1]: complaint 0" in r.stderr   # streamed as it came, with its prefix
    assert _gone(int((tmp_path / "pid0").read_text()))


@pytest.mark.timeout(60)
def test_signal_death_is_named(tmp_path):
    w = _script(tmp_path, "w.py", """
        import os, signal, time
        if os.environ["RANK"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(30)
        """)
    t0 = time.monotonic()
    r = _launch(tmp_path, "--nproc-per-node", "2", w)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    assert "rank 0 (node 0, local rank 0" in r.stderr and "SIGKILL" in r.stderr
    assert "rank 0 wrote nothing to stderr" in r.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_launcher_stops_everything(tmp_path, sig):
    # each worker starts a child of its own, which must go too
    w = _script(tmp_path, "w.py", """
        import os, subprocess, sys, time
        rank = os.environ["RANK"]
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(f"child{rank}", "w").write(str(child.pid))
        open(f"pid{rank}", "w").write(str(os.getpid()))
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(1)
        """)
    proc = subprocess.Popen(_cmd("--nproc-per-node", "2", "--timeout", "5", w), cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        paths = [tmp_path / f"{kind}{r}" for kind in ("pid", "child") for r in (0, 1)]
        pids = _wait_for_files(paths)
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 4   # nobody waited out the grace period
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert f"received {signal.Signals(sig).name}" in err
    if sig == signal.SIGINT:   # forwarded as SIGINT: Python workers see KeyboardInterrupt
        assert sorted(out.splitlines()) == ["[rank0]: interrupted", "[rank1]: interrupted"]
    for pid in pids[:2]:   # the workers were the launcher's children: reaped, not zombies
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids[2:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids[2:])


RESTART_WORKER = """
import os, sys, time
rank, attempt = os.environ["RANK"], int(os.environ["DDL_RESTART_COUNT"])
if attempt < {fail_until}:
    if rank == "1":
        sys.exit(5)
    time.sleep(30)
print(f"ok attempt={{attempt}} max={{os.environ['DDL_MAX_RESTARTS']}}")
"""


@pytest.mark.timeout(60)
def test_restart_then_succeed(tmp_path):
    w = _script(tmp_path, "w.py", RESTART_WORKER.format(fail_until=1))
    r = _launch(tmp_path, "--nproc-per-node", "2", "--max-restarts", "1", w)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[rank0]: ok attempt=1 max=1",
                                             "[rank1]: ok attempt=1 max=1"]
    assert "rank 1 (node 0, local rank 1" in r.stderr and "exited with code 5" in r.stderr
    assert "restarting the worker group (restart 1 of 1)" in r.stderr


@pytest.mark.timeout(60)
def test_restarts_run_out(tmp_path):
    w = _script(tmp_path, "w.py", RESTART_WORKER.format(fail_until=99))
    r = _launch(tmp_path, "--nproc-per-node", "2", "--max-restarts", "2", w)
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("exited with code 5") == 3
    assert "1 of 2" in r.stderr and "2 of 2" in r.stderr
    assert "exiting with code 5 (2 of 2 restarts used)" in r.stderr


@pytest.mark.timeout(60)
def test_two_nodes_form_one_world(tmp_path):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    port = str(_free_port())
    procs = [subprocess.Popen(_cmd("--nnodes", "2", "--node-rank", str(node), "--nproc-per-node",
                                   "2", "--master-addr", "127.0.0.1", "--master-port", port, w),
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=45)
        assert p.returncode == 0, err
        outs.append(out)
    recs = {**_records(outs[0]), **_records(outs[1])}
    assert sorted(_records(outs[0])) == [0, 1] and sorted(_records(outs[1])) == [2, 3]
    for rank, rec in recs.items():
        env = rec["env"]
        assert env["WORLD_SIZE"] == "4" and env["LOCAL_WORLD_SIZE"] == "2"
        assert env["LOCAL_RANK"] == str(rank % 2) and env["GROUP_RANK"] == str(rank // 2)
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == port


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv, message", [
    (["--nproc-per-node", "0", "w.py"], "--nproc-per-node must be at least 1"),
    (["--nproc-per-node", "many", "w.py"], "expected an integer or 'auto'"),
    (["--nnodes", "2", "w.py"], "--master-port is required"),
    (["--nnodes", "2", "--node-rank", "2", "--master-port", "29500", "w.py"],
     "--node-rank must be in [0, 2)"),
    (["--node-rank", "-1", "w.py"], "--node-rank must be in [0, 1)"),
    (["--standalone", "--nnodes", "2", "--master-port", "29500", "w.py"], "single node"),
    (["--master-port", "70000", "w.py"], "--master-port must be in"),
    (["--nproc-per-node", "2"], "missing the script"),
    (["no_such_script.py"], "script not found"),
])
def test_bad_flags(tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "w.py").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_bad_flag_exit_code_from_command_line(tmp_path):
    r = _launch(tmp_path, "--nnodes", "2", "w.py")
    assert r.returncode == 2 and "--master-port is required" in r.stderr


@pytest.mark.timeout(60)
def test_nproc_auto(tmp_path):
    w = _script(tmp_path, "w.py", ENV_WORKER)
    r = _launch(tmp_path, "--standalone", "--nproc-per-node", "auto", w)
    assert r.returncode == 0, r.stderr
    n = len(os.sched_getaffinity(0))
    recs = _records(r.stdout)
    assert sorted(recs) == list(range(n))
    assert all(rec["env"]["OMP_NUM_THREADS"] == "1" for rec in recs.values())
