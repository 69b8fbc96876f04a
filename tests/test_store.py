"""Rendezvous stores (csrc/store/, ddl/distributed/store.py): TCPStore, FileStore, PrefixStore.

Every test has a hard time limit; servers bind 127.0.0.1 on free ports; every thread, server
and process a test starts is stopped before it ends.
"""
import glob
import importlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest

import ddl
from ddl.distributed.store import FileStore, PrefixStore, Store, TCPStore

# DDL_E_COMM raises ddl.distributed.DistributedError once ddl.distributed registers it
CommError = getattr(importlib.import_module("ddl.distributed"), "DistributedError", RuntimeError)

HOST = "127.0.0.1"
T = timedelta(seconds=10)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(ddl.__file__)))


def ntasks(expect=None):
    """Threads of this process; with expect, allow a just-joined thread a moment to exit."""
    deadline = time.monotonic() + 2
    while True:
        n = len(os.listdir("/proc/self/task"))
        if expect is None or n == expect or time.monotonic() > deadline:
            return n
        time.sleep(0.01)


@pytest.fixture
def master():
    s = TCPStore(HOST, 0, is_master=True, timeout=T)
    yield s
    s.close()


@pytest.fixture(params=["tcp", "file"])
def stores(request, tmp_path):
    """(store, make_client): a store and a function returning another handle to it."""
    if request.param == "tcp":
        s = TCPStore(HOST, 0, is_master=True, timeout=T)
        yield s, lambda: TCPStore(HOST, s.port, timeout=T)
        s.close()
    else:
        d = tmp_path / "store"
        yield FileStore(str(d)), lambda: FileStore(str(d))


def run_workers(code, args_list, timeout=20):
    """Run `python -c code *args` for each args; all must exit 0 within timeout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, a)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for a in args_list]
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            assert p.returncode == 0, out.decode(errors="replace")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# ---- the operations, on both kinds -------------------------------------------------------------

@pytest.mark.timeout(30)
def test_set_get_add_compare_set(stores):
    s, client = stores
    c = client()
    n0 = s.num_keys()
    s.set("a", "hello")
    assert c.get("a") == b"hello"
    c.set("a", b"bytes \x00 with \x00 NULs\x00")
    assert s.get("a") == b"bytes \x00 with \x00 NULs\x00"
    s.set("empty", b"")
    assert c.get("empty") == b""
    s.set("unicode/ключ", "значение")
    assert c.get("unicode/ключ") == "значение".encode()
    assert s.add("n", 5) == 5 and c.add("n", -7) == -2 and s.get("n") == b"-2"
    assert s.add("n", 0) == -2
    s.set("n2", "40")  # a counter set as text, as PyTorch's
    assert c.add("n2", 2) == 42
    # compare_set, PyTorch's semantics
    assert s.compare_set("cs", "", "first") == b"first"  # missing + empty expected: created
    assert s.compare_set("cs", "first", "second") == b"second"  # matches: swapped
    assert s.compare_set("cs", "nope", "third") == b"second"  # differs: current value back
    assert s.compare_set("missing", "x", "y") == b"x"  # missing + non-empty: expected back
    assert not s.check(["missing"])
    assert s.num_keys() == n0 + 6
    # check / wait / delete
    assert c.check(["a", "n"]) and not c.check(["a", "nope"])
    c.wait(["a", "n"])
    c.wait(["a"], timedelta(seconds=0))  # present: no waiting needed even with timeout 0
    assert s.delete_key("a") is True and s.delete_key("a") is False
    assert not c.check(["a"])
    assert s.num_keys() == n0 + 5


@pytest.mark.timeout(30)
def test_get_waits_for_a_key_set_later(stores):
    s, client = stores
    got = []
    t = threading.Thread(target=lambda: got.append(client().get("late")))
    t.start()
    time.sleep(0.2)
    s.set("late", "finally")
    t.join(10)
    assert got == [b"finally"]
    w = threading.Thread(target=lambda: got.append(client().wait(["w1", "w2"]) or "waited"))
    w.start()
    s.set("w1", "x")
    time.sleep(0.1)
    assert w.is_alive()  # still waiting for w2
    s.add("w2", 1)
    w.join(10)
    assert got[-1] == "waited"


@pytest.mark.timeout(30)
def test_missing_key_times_out_naming_it(stores):
    s, _ = stores
    s.set_timeout(timedelta(seconds=0.5))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no_such_key"):
        s.get("no_such_key")
    assert 0.4 < time.monotonic() - t0 < 3
    s.set("here", "1")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="absent_one"):
        s.wait(["here", "absent_one"], timedelta(seconds=0.3))
    assert 0.25 < time.monotonic() - t0 < 3
    s.get("here")  # the handle still works after a timeout


@pytest.mark.timeout(30)
def test_validation_errors(stores):
    s, _ = stores
    with pytest.raises(TypeError, match="key must be str"):
        s.set(1, "x")
    with pytest.raises(TypeError, match="value must be str or bytes"):
        s.set("k", 5)
    with pytest.raises(ValueError, match="at most 4096"):
        s.set("k" * 5000, "x")
    with pytest.raises(ValueError, match="NUL"):
        s.get("a\0b")
    with pytest.raises(TypeError, match="list of str"):
        s.wait("k")
    with pytest.raises(ValueError, match="empty"):
        s.check([])
    with pytest.raises(TypeError, match="amount must be int"):
        s.add("k", 1.5)
    with pytest.raises(ValueError, match="int64"):
        s.add("k", 2**63)
    with pytest.raises(TypeError, match="timedelta"):
        s.set_timeout("soon")
    with pytest.raises(ValueError, match=">= 0"):
        s.wait(["k"], timedelta(seconds=-1))
    s.set("text", "not a number")
    with pytest.raises(ValueError, match="not a decimal integer"):
        s.add("text", 1)
    s.set("big", str(2**63 - 1))
    with pytest.raises(ValueError, match="overflows"):
        s.add("big", 1)
    assert s.get("big") == str(2**63 - 1).encode()  # unchanged


@pytest.mark.timeout(30)
def test_prefix_store(stores):
    s, client = stores
    p = PrefixStore("job1", s)
    q = PrefixStore("inner", PrefixStore("job1", client()))
    p.set("k", "v")
    assert s.get("job1/k") == b"v" and not s.check(["k"])
    assert p.add("cnt", 3) == 3 and s.get("job1/cnt") == b"3"
    q.set("x", "y")
    assert p.get("inner/x") == b"y"
    assert p.check(["k", "cnt"]) and p.delete_key("k") and not s.check(["job1/k"])
    assert p.compare_set("cnt", "3", "4") == b"4"
    p.set_timeout(timedelta(seconds=0.2))
    with pytest.raises(TimeoutError, match="job1/nothing"):
        p.get("nothing")
    with pytest.raises(TypeError, match="ddl Store"):
        PrefixStore("x", object())
    assert isinstance(p, Store)


# ---- concurrency ---------------------------------------------------------------------------------

ADD_WORKER = """
import sys
from datetime import timedelta
from ddl.distributed.store import FileStore, TCPStore
kind, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = TCPStore("127.0.0.1", int(where), timeout=timedelta(seconds=20)) if kind == "tcp" \\
    else FileStore(where)
for _ in range(n):
    s.add("counter", 1)
"""


@pytest.mark.timeout(60)
def test_concurrent_adds_are_exact(stores, tmp_path):
    s, client = stores
    tcp = isinstance(s, TCPStore)
    n_threads, n_adds = 8, 100 if tcp else 40
    shared = client()  # two threads share this handle: handles are thread-safe

    def work(store):
        for _ in range(n_adds):
            store.add("counter", 1)

    handles = [client() for _ in range(n_threads - 2)] + [shared, shared]
    threads = [threading.Thread(target=work, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    where = s.port if tcp else s.path
    n_procs = 2
    try:
        run_workers(ADD_WORKER, [("tcp" if tcp else "file", where, n_adds)] * n_procs)
    finally:
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert int(s.get("counter")) == (n_threads + n_procs) * n_adds


@pytest.mark.timeout(30)
def test_many_clients_and_parked_gets(master):
    clients = [TCPStore(HOST, master.port, timeout=T) for _ in range(32)]
    results = [None] * len(clients)

    def waiter(i):
        results[i] = clients[i].get("go")

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    master.set("go", "now")
    for t in threads:
        t.join(10)
    assert results == [b"now"] * len(clients)


# ---- TCP specifics ------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sk:
        sk.bind((HOST, 0))
        return sk.getsockname()[1]


@pytest.mark.timeout(30)
def test_client_may_start_before_the_server():
    port = free_port()
    got, errors = [], []

    def client():
        try:
            c = TCPStore(HOST, port, timeout=timedelta(seconds=10))
            got.append(c.get("hello"))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(0.5)  # the client is retrying by now
    server = TCPStore(HOST, port, is_master=True, timeout=T)
    try:
        server.set("hello", "world")
        t.join(10)
        assert not errors and got == [b"world"]
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_server_binds_only_the_given_host(master):
    # /proc/net/tcp lists the listener as 0100007F:<port> (127.0.0.1), not 00000000 (any)
    with open("/proc/net/tcp") as f:
        rows = [ln.split() for ln in f.readlines()[1:]]
    listening = [r[1] for r in rows if r[3] == "0A" and int(r[1].split(":")[1], 16) == master.port]
    assert listening == [f"0100007F:{master.port:04X}"]
    # another loopback address of this machine is not served
    with socket.socket() as sk:
        sk.settimeout(2)
        with pytest.raises(OSError):
            sk.connect(("127.0.0.2", master.port))


def frame(op, *fields):
    body = bytes([op]) + b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return struct.pack(">I", len(body)) + body


def assert_dropped(sk):
    sk.settimeout(5)
    try:
        assert sk.recv(100) == b""
    except ConnectionResetError:
        pass


BAD_FRAMES = {
    "garbage": b"\x00\x00\x00\x0bhello world" + os.urandom(64),
    "unknown_opcode": frame(0xEE, b"key"),
    "huge_length": b"\xff\xff\xff\xff" + b"x" * 100,
    "zero_length": b"\x00\x00\x00\x00",
    "field_past_frame": struct.pack(">IBI", 5, 1, 1000),
    "wrong_field_count": frame(1, b"only-a-key"),
    "key_too_long": frame(1, b"k" * 5000, b"v"),
    "nul_in_key": frame(1, b"a\x00b", b"v"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frame_drops_only_that_connection(master, name):
    other = TCPStore(HOST, master.port, timeout=T)
    with socket.create_connection((HOST, master.port), timeout=5) as sk:
        sk.sendall(BAD_FRAMES[name])
        assert_dropped(sk)
    other.set("still", "serving")
    assert master.get("still") == b"serving" and master.add("c", 1) == 1


@pytest.mark.timeout(30)
def test_half_sent_frame_does_not_block_the_server(master):
    with socket.create_connection((HOST, master.port), timeout=5) as sk:
        whole = frame(1, b"half", b"x" * 1000)
        sk.sendall(whole[:300])  # the rest never comes
        time.sleep(0.1)
        master.set("k", "v")  # the server keeps serving everyone else meanwhile
        assert TCPStore(HOST, master.port, timeout=T).get("k") == b"v"
        sk.shutdown(socket.SHUT_WR)  # the peer gives up mid-frame: dropped
        assert_dropped(sk)
    assert not master.check(["half"])
    # a parked raw GET whose client disappears is forgotten
    with socket.create_connection((HOST, master.port), timeout=5) as sk:
        sk.sendall(frame(2, struct.pack(">q", -1), b"never"))
    master.set("never", "now")
    assert master.get("never") == b"now"


@pytest.mark.timeout(30)
def test_raw_protocol_matches_the_docs(master):
    with socket.create_connection((HOST, master.port), timeout=5) as sk:
        sk.sendall(frame(1, b"raw", b"value"))  # SET
        assert sk.recv(100) == b"\x00\x00\x00\x01\x00"
        sk.sendall(frame(3, b"cnt", struct.pack(">q", 7)))  # ADD
        assert sk.recv(100) == b"\x00\x00\x00\x0d\x00" + struct.pack(">I", 8) + struct.pack(">q", 7)
        sk.sendall(frame(2, struct.pack(">q", 0), b"nope"))  # GET, timeout 0: answered code 6
        resp = sk.recv(100)
        assert resp[4] == 6 and b"timed out" in resp
    assert master.get("raw") == b"value" and master.get("cnt") == b"7"


@pytest.mark.timeout(30)
def test_large_values(master):
    big = os.urandom(8 << 20)
    master.set("big", big)
    assert TCPStore(HOST, master.port, timeout=T).get("big") == big
    with pytest.raises(ValueError, match="frame limit"):
        master.set("huge", b"\0" * ((64 << 20) + 1))
    assert master.get("big")[:16] == big[:16]


@pytest.mark.timeout(30)
def test_server_stops_cleanly():
    before = ntasks()
    master = TCPStore(HOST, 0, is_master=True, timeout=T)
    assert ntasks(before + 1) == before + 1  # the server thread
    client = TCPStore(HOST, master.port, timeout=T)
    client.set("k", "v")
    errors = []

    def parked():
        try:
            TCPStore(HOST, master.port, timeout=T).get("never-set")
        except Exception as e:  # noqa: BLE001 (checked below)
            errors.append(e)

    t = threading.Thread(target=parked)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    master.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 3
    assert len(errors) == 1 and isinstance(errors[0], CommError), errors
    assert "closed the connection" in str(errors[0])
    with pytest.raises(CommError):
        client.get("k")
    master.close()  # twice is fine
    assert ntasks(before) == before


@pytest.mark.timeout(30)
def test_connect_errors():
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="cannot resolve host"):
        TCPStore("no-such-host.invalid", 1234, timeout=timedelta(seconds=5))
    with pytest.raises(ValueError, match="cannot resolve host"):
        TCPStore("no-such-host.invalid", 0, is_master=True)
    assert time.monotonic() - t0 < 20
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=f"{port}"):
        TCPStore(HOST, port, timeout=timedelta(seconds=0.5))
    assert time.monotonic() - t0 < 3
    with pytest.raises(ValueError, match="port"):
        TCPStore(HOST, 0)  # port 0 is for the master
    with pytest.raises(ValueError, match="port"):
        TCPStore(HOST, 70000, is_master=True)
    with pytest.raises(TypeError, match="host_name"):
        TCPStore(None, 1)
    m = TCPStore(HOST, 0, is_master=True, timeout=T)
    try:
        with pytest.raises(CommError, match="Address already in use"):
            TCPStore(HOST, m.port, is_master=True)
    finally:
        m.close()


@pytest.mark.timeout(30)
def test_silent_server_times_out():
    with socket.socket() as lsk:  # accepts connections (backlog) but never answers
        lsk.bind((HOST, 0))
        lsk.listen()
        s = TCPStore(HOST, lsk.getsockname()[1], timeout=timedelta(seconds=0.5))
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no answer"):
            s.set("k", "v")
        with pytest.raises(TimeoutError, match="no answer"):
            s.get("k")
        assert time.monotonic() - t0 < 4


@pytest.mark.timeout(30)
def test_wait_for_workers():
    port = free_port()
    done = []
    t = threading.Thread(target=lambda: done.append(
        TCPStore(HOST, port, world_size=3, is_master=True, timeout=T)))
    t.start()
    workers = [TCPStore(HOST, port, world_size=3, timeout=T) for _ in range(2)]
    t.join(10)
    assert len(done) == 1 and workers[0].get("__ddl/tcpstore/ready") == b"1"
    done[0].close()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 2 workers"):
        TCPStore(HOST, 0, world_size=2, is_master=True, timeout=timedelta(seconds=0.5))
    assert time.monotonic() - t0 < 3


# ---- file store specifics ----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_file_store_reused_directory(tmp_path):
    d = tmp_path / "reused"
    first = FileStore(str(d))
    first.set("rank_0", "addr-of-the-first-job")
    first.add("counter", 5)
    (d / ".tmp-999-leftover").write_bytes(b"half-written by a crashed writer")
    (d / "notes.txt").write_text("not a key")
    del first
    second = FileStore(d)  # a new job on the same directory (PathLike accepted)
    assert second.num_keys() == 2  # the leftovers are not keys
    second.set("rank_0", "addr-of-the-second-job")  # overwriting works (Gloo's FileStore fails)
    assert second.get("rank_0") == b"addr-of-the-second-job"
    assert second.add("counter", 1) == 6
    long_key = "x" * 3000  # longer than a file name can hold: stored under a hash
    second.set(long_key, "long")
    assert FileStore(d).get(long_key) == b"long"
    assert second.delete_key(long_key)
    with pytest.raises(ValueError, match="not a directory"):
        FileStore(d / "notes.txt")


@pytest.mark.timeout(30)
def test_file_store_last_rank_cleans_up(tmp_path):
    d = tmp_path / "job"
    a, b = FileStore(str(d), world_size=2), FileStore(str(d), world_size=2)
    a.set("k", "v")
    a.close()
    assert b.get("k") == b"v"  # one rank done: the store stays
    b.close()
    assert not d.exists()
    c = FileStore(str(d))  # the next job starts empty
    assert c.num_keys() == 0
    with pytest.raises(RuntimeError, match="closed"):
        a.get("k")


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler")
def test_c_error_detail(tmp_path):
    """Failures at a system call or a peer fill the structured record (op, peer, errno): the C
    harness tests/c/test_store_errors.c, built with ASan + UBSan against the store sources."""
    csrc = os.path.join(REPO, "csrc")
    exe = tmp_path / "test_store_errors"
    sources = sorted(glob.glob(os.path.join(csrc, "store", "*.c")))
    cmd = ["gcc", "-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-I", os.path.join(csrc, "include"), "-I", csrc,
           os.path.join(REPO, "tests", "c", "test_store_errors.c"),
           os.path.join(csrc, "core", "error.c"), *sources, "-lpthread", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # the sanitizer run preloads libasan for Python; not needed here
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = subprocess.run([str(exe), str(scratch)], capture_output=True, text=True, env=env,
                         timeout=90, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout
