"""redis:// rendezvous through Gloo's RedisStore, against a real redis-server started here."""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (scripts/setup.sh installs "
                                       "Debian's redis-server)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_port(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(30)
def test_redis_store_set_get_wait(redis_port):
    from ddl.distributed import RedisStore

    s = RedisStore("127.0.0.1", redis_port)
    s.set("a", b"1\x002")
    assert s.get("a") == b"1\x002"
    assert s.check(["a"]) and not s.check(["missing"])
    with pytest.raises(ValueError, match="add"):
        s.add("n", 1)


@pytest.mark.timeout(30)
def test_redis_wait_timeout_is_a_timeout_with_fields(redis_port):
    import ddl.distributed as dist

    s = dist.RedisStore("127.0.0.1", redis_port)
    t0 = time.monotonic()
    with pytest.raises(dist.DistributedTimeoutError, match="timed out after 300 ms") as e:
        s.wait(["never"], timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 5
    assert isinstance(e.value, TimeoutError) and "never" in str(e.value)
    assert e.value.op == "wait" and e.value.peer == f"127.0.0.1:{redis_port}"
    assert e.value.ranks == () and e.value.rank is None and e.value.seq is None


@pytest.mark.timeout(30)
def test_redis_unreachable_is_a_clear_error():
    import ddl.distributed as dist

    port = _free_port()
    with pytest.raises(dist.DistributedError, match="cannot connect") as e:
        dist.RedisStore("127.0.0.1", port)
    assert e.value.op == "connect" and e.value.peer == f"127.0.0.1:{port}", vars(e.value)
    assert e.value.ranks == () and e.value.errno is None


@pytest.mark.timeout(60)
def test_three_ranks_rendezvous_over_redis(redis_port, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, ddl, ddl.distributed as dist
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group("gloo", init_method="redis://127.0.0.1:{redis_port}",
                                rank=rank, world_size=world, timeout=20, group_name="t3")
        t = ddl.ones(4) * (rank + 1)
        dist.all_reduce(t)
        assert t.tolist() == [6.0] * 4, t.tolist()
        dist.destroy_process_group()
        print("ok", rank)
    """))
    procs = [subprocess.Popen([sys.executable, str(script)],
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="3"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(3)]
    try:
        outs = [p.communicate(timeout=50)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, out
        assert f"ok {r}" in out
