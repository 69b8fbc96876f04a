"""ddl.run's per-job store token (issue 13): a job the launcher starts on one node gets a fresh
random DDL_STORE_TOKEN, so its rendezvous store refuses strangers; a token the user exported
wins (an empty one turns it off); a job of several nodes gets none drawn per node."""
import json
import socket
import struct
import subprocess
from datetime import timedelta

import pytest

from tests.test_run import _cmd, _env, _free_port, _script

# rank 0 publishes what it sees, then every rank waits for the test's "go" before leaving
JOB = """
import json, os, time
from datetime import timedelta
import ddl.distributed as dist
dist.init_process_group("gloo", timeout=timedelta(seconds=60))
tok = os.environ.get("DDL_STORE_TOKEN")
if dist.get_rank() == 0:
    with open("info.tmp", "w") as f:
        json.dump({"token": tok, "port": int(os.environ["MASTER_PORT"])}, f)
    os.replace("info.tmp", "info")
with open(f"tok{dist.get_rank()}", "w") as f:
    f.write(tok or "")
while not os.path.exists("go"):
    time.sleep(0.05)
dist.barrier()
dist.destroy_process_group()
"""

ENV_ONLY = """
import json, os
print(json.dumps({"token": os.environ.get("DDL_STORE_TOKEN")}))
"""


def _closed_by_server(sk, within=10):
    sk.settimeout(within)
    try:
        while sk.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _frame(op, *fields):
    body = bytes([op]) + b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return struct.pack(">I", len(body)) + body


def _wait_for(path, proc, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the job exited {proc.returncode}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"the job never wrote {path}"
        time.sleep(0.05)
    return json.loads(path.read_text())


@pytest.mark.timeout(120)
def test_a_job_under_ddl_run_has_a_token_and_its_store_refuses_strangers(tmp_path,
                                                                         monkeypatch):
    from ddl.distributed import DistributedError
    from ddl.distributed.store import TCPStore

    w = _script(tmp_path, "job.py", JOB)
    env = _env()
    env.pop("DDL_STORE_TOKEN", None)
    proc = subprocess.Popen(_cmd("--nproc-per-node", "2", w), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = _wait_for(tmp_path / "info", proc)
        token = info["token"]
        assert token and len(token) == 64 and int(token, 16) >= 0  # secrets.token_hex(32)
        assert (tmp_path / "tok1").read_text() == token   # one token for the whole job
        monkeypatch.delenv("DDL_STORE_TOKEN", raising=False)
        t = timedelta(seconds=10)
        with pytest.raises(DistributedError, match="requires a token"):
            TCPStore("127.0.0.1", info["port"], timeout=t).num_keys()
        monkeypatch.setenv("DDL_STORE_TOKEN", "0" * 64)
        with pytest.raises(DistributedError, match="wrong store token"):
            TCPStore("127.0.0.1", info["port"], timeout=t)
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=5) as sk:
            sk.sendall(_frame(1, b"evil", b"x"))   # a stranger's raw SET
            assert _closed_by_server(sk)
        monkeypatch.setenv("DDL_STORE_TOKEN", token)   # the job's token opens it
        s = TCPStore("127.0.0.1", info["port"], timeout=t)
        assert not s.check(["evil"])
        s.close()
        (tmp_path / "go").write_text("1")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # a second job draws another token
    env2 = _env()
    env2.pop("DDL_STORE_TOKEN", None)
    e = _script(tmp_path, "env.py", ENV_ONLY)
    r = subprocess.run(_cmd("--no-prefix", e), cwd=tmp_path, env=env2, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    other = json.loads(r.stdout)["token"]
    assert len(other) == 64 and other != token


@pytest.mark.timeout(60)
@pytest.mark.parametrize("given, seen", [("user-token-1", "user-token-1"), ("", "")])
def test_a_token_the_user_exported_wins(tmp_path, given, seen):
    e = _script(tmp_path, "env.py", ENV_ONLY)
    # (with prefixes: --no-prefix passes raw chunks, so two ranks' lines could merge)
    r = subprocess.run(_cmd("--nproc-per-node", "2", e), cwd=tmp_path,
                       env=_env(DDL_STORE_TOKEN=given), capture_output=True, text=True,
                       timeout=45, check=False)
    assert r.returncode == 0, r.stderr
    assert [json.loads(ln.partition("]: ")[2])["token"] for ln in r.stdout.splitlines()] == \
        [seen, seen]


@pytest.mark.timeout(60)
def test_several_nodes_get_no_token_drawn_per_node_and_are_told(tmp_path):
    e = _script(tmp_path, "env.py", ENV_ONLY)
    env = _env()
    env.pop("DDL_STORE_TOKEN", None)
    port = str(_free_port())
    procs = [subprocess.Popen(_cmd("--no-prefix", "--nnodes", "2", "--node-rank", str(n),
                                   "--master-port", port, e),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=45)
        assert p.returncode == 0, err
        assert json.loads(out)["token"] is None
        assert "DDL_STORE_TOKEN is not set" in err and "every node" in err
