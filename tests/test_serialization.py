"""ddl.save / ddl.load: round trips, atomic writes, and corruption detection."""
import os

import numpy as np
import pytest

import ddl


def test_round_trip_of_a_nested_tree(tmp_path):
    ddl.manual_seed(0)
    obj = {
        "weights": ddl.randn(3, 4),
        "ints": ddl.arange(5),
        "mask": ddl.tensor([True, False]),
        "f64": ddl.randn(2, dtype=ddl.float64),
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "scalars": [1, -2.5, float("inf"), float("nan"), "text", None, True, b"\x00\xff"],
        "tuple": (1, (2, 3)),
        "int_keys": {0: "a", 7: {"nested": np.float32(1.5)}},
        "big": 2**70,
        "__dunder": 1,
        "leaf": ddl.ones(2).requires_grad_(),
        "view": ddl.arange(12.0).reshape(3, 4).T,
    }
    path = tmp_path / "ckpt.ddl"
    ddl.save(obj, path)
    back = ddl.load(path)
    for k in ("weights", "ints", "mask", "f64", "view"):
        assert isinstance(back[k], ddl.Tensor)
        assert back[k].dtype is obj[k].dtype
        np.testing.assert_array_equal(back[k].numpy(), obj[k].numpy())
    np.testing.assert_array_equal(back["array"], obj["array"])
    assert back["array"].dtype == np.int32
    s = back["scalars"]
    assert s[:3] == [1, -2.5, float("inf")] and np.isnan(s[3]) and s[4:] == obj["scalars"][4:]
    assert back["tuple"] == (1, (2, 3))
    assert back["int_keys"][0] == "a" and back["int_keys"][7]["nested"] == 1.5
    assert back["big"] == 2**70 and back["__dunder"] == 1
    assert back["leaf"].requires_grad


def test_model_and_optimizer_state_round_trip(tmp_path):
    ddl.manual_seed(1)
    model = ddl.nn.Sequential(ddl.nn.Linear(4, 3), ddl.nn.BatchNorm1d(3))
    opt = ddl.optim.Adam(model.parameters(), lr=0.01)
    loss = model(ddl.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    ddl.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "s.ddl")
    state = ddl.load(tmp_path / "s.ddl")
    model2 = ddl.nn.Sequential(ddl.nn.Linear(4, 3), ddl.nn.BatchNorm1d(3))
    model2.load_state_dict(state["model"])
    opt2 = ddl.optim.Adam(model2.parameters(), lr=0.01)
    opt2.load_state_dict(state["opt"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("damage", ["truncate_end", "truncate_half", "flip_header",
                                    "flip_data", "flip_trailer", "empty", "garbage"])
def test_corruption_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "c.ddl"
    ddl.save({"w": ddl.randn(64, 64), "step": 3}, path)
    data = bytearray(path.read_bytes())
    if damage == "truncate_end":
        data = data[:-1]
    elif damage == "truncate_half":
        data = data[: len(data) // 2]
    elif damage == "flip_header":
        data[20] ^= 0x40
    elif damage == "flip_data":
        data[len(data) // 2] ^= 1
    elif damage == "flip_trailer":
        data[-5] ^= 1
    elif damage == "empty":
        data = b""
    else:
        data = b"import os; os.system('echo pwned')\n" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=str(path)):
        ddl.load(path)


def test_unsupported_objects_are_refused_before_writing(tmp_path):
    path = tmp_path / "x.ddl"
    with pytest.raises(TypeError, match=r"root\['f'\].*function"):
        ddl.save({"f": lambda: 1}, path)
    with pytest.raises(TypeError, match="object"):
        ddl.save(np.array([object()]), path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "a.ddl"
    ddl.save({"v": 1}, path)
    ddl.save({"v": 2}, path)
    assert ddl.load(path) == {"v": 2}
    assert os.listdir(tmp_path) == ["a.ddl"]


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ddl.load(tmp_path / "nope.ddl")


# ---- hardening (issue 13): big ints, hand-made headers, no temporaries after a crash ----------
def _forge(path, header_bytes):
    """A checkpoint file with a valid checksum around arbitrary header bytes (an attacker's
    file, or a bug's): load must still answer ValueError."""
    import hashlib
    import struct

    from ddl import serialization as ser

    head = ser.MAGIC + struct.pack("<Q", len(header_bytes)) + header_bytes
    head += b"\0" * (-len(head) % 64)
    path.write_bytes(head + ser.TRAILER + struct.pack("<Q", len(head)) +
                     hashlib.sha256(head).digest())


def test_ints_of_any_size_round_trip(tmp_path):
    for v in (10**5000, -(10**5000), 2**64, -(2**63) - 1, 2**64 - 1):
        ddl.save({"v": v, "l": [v]}, tmp_path / "big.ddl")
        back = ddl.load(tmp_path / "big.ddl")
        assert back["v"] == v and back["l"] == [v]


def test_nesting_deeper_than_the_limit_is_a_value_error_both_ways(tmp_path):
    from ddl.serialization import MAX_DEPTH

    deep = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        ddl.save(deep, tmp_path / "d.ddl")
    ok = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    ddl.save(ok, tmp_path / "d.ddl")
    assert ddl.load(tmp_path / "d.ddl") == ok


@pytest.mark.parametrize("header", [
    b"[]", b"null", b'"text"', b"{}", b'{"version": 1}', b'{"version": 1, "root": 1}',
    b'{"version": 1, "root": {"__tensor__": 0}, "blobs": []}',
    b'{"version": 1, "root": {"__tensor__": "0"}, "blobs": [{}]}',
    b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [[1]]}',
    b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [{"dtype": "<f4"}]}',
    (b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [{"dtype": "O", "shape": [], '
     b'"offset": 0, "nbytes": 8}]}'),
    (b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [{"dtype": "<f4", "shape": [-1], '
     b'"offset": 0, "nbytes": 4}]}'),
    (b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [{"dtype": "<f4", "shape": [9], '
     b'"offset": -64, "nbytes": 36}]}'),
    (b'{"version": 1, "root": {"__ndarray__": 0}, "blobs": [{"dtype": "nonsense", '
     b'"shape": [], "offset": 0, "nbytes": 4}]}'),
    b'{"version": 1, "root": {"__tuple__": 5}, "blobs": []}',
    b'{"version": 1, "root": {"__dict__": [[1]]}, "blobs": []}',
    b'{"version": 1, "root": {"__dict__": [[{"a": 1}, 2]]}, "blobs": []}',
    b'{"version": 1, "root": {"__dict__": 3}, "blobs": []}',
    b'{"version": 1, "root": {"__bytes__": "!!!"}, "blobs": []}',
    b'{"version": 1, "root": {"__bytes__": 7}, "blobs": []}',
    b'{"version": 1, "root": {"__float__": "x"}, "blobs": []}',
    b'{"version": 1, "root": {"__float__": []}, "blobs": []}',
    b'{"version": 1, "root": {"__bigint__": "0xzz"}, "blobs": []}',
    b'{"version": 1, "root": {"__bigint__": null}, "blobs": []}',
    b"[" * 100000 + b"]" * 100000,
    b'{"version": 1, "root": ' + b"[" * 5000 + b"]" * 5000 + b', "blobs": []}',
    b"\xff\xfe",
], ids=lambda h: h[:40].decode("latin-1"))
def test_a_hand_made_header_raises_value_error(tmp_path, header):
    _forge(tmp_path / "bad.ddl", header)
    with pytest.raises(ValueError, match="not a valid ddl checkpoint"):
        ddl.load(tmp_path / "bad.ddl")


def test_a_header_length_beyond_the_file_is_a_value_error(tmp_path):
    import hashlib
    import struct

    from ddl import serialization as ser

    head = ser.MAGIC + struct.pack("<Q", 2**62) + b"{}" + b"\0" * 54
    (tmp_path / "h.ddl").write_bytes(head + ser.TRAILER + struct.pack("<Q", len(head)) +
                                     hashlib.sha256(head).digest())
    with pytest.raises(ValueError, match="header length"):
        ddl.load(tmp_path / "h.ddl")


def test_stale_named_temporaries_of_dead_writers_are_swept(tmp_path):
    import socket
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    dead = int(p.stdout)
    host = socket.gethostname()
    stale = tmp_path / f".ddl-save-{host}-{dead}-deadbeef.tmp"
    alive = tmp_path / f".ddl-save-{host}-{os.getpid()}-cafebabe.tmp"  # a live writer's
    other = tmp_path / f".ddl-save-otherhost-{dead}-01234567.tmp"  # another host's: unknown
    for f in (stale, alive, other):
        f.write_bytes(b"x" * 100)
    ddl.save({"a": 1}, tmp_path / "c.ddl")
    left = sorted(os.listdir(tmp_path))
    assert stale.name not in left and alive.name in left and other.name in left
    assert "c.ddl" in left


def test_save_without_o_tmpfile_still_leaves_nothing(tmp_path, monkeypatch):
    from ddl import serialization as ser

    monkeypatch.setattr(ser, "_anonymous_ok", [False])
    ddl.save({"a": ddl.ones(3)}, tmp_path / "c.ddl")
    assert os.listdir(tmp_path) == ["c.ddl"]


def test_kill_9_mid_save_leaves_old_or_new_and_no_temporary(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "ck.ddl"
    code = ("import ddl, numpy as np, sys\n"
            "i = 0\n"
            "while True:\n"
            "    i += 1\n"
            "    ddl.save({'i': i, 'w': np.full(4_000_000, i, np.int32)}, sys.argv[1])\n"
            "    print(i, flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for k in range(4):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], env=env,
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one save done
        time.sleep(0.05 + 0.07 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        back = ddl.load(target)
        assert (back["w"] == back["i"]).all()
        assert os.listdir(tmp_path) == ["ck.ddl"], os.listdir(tmp_path)
