"""save_shards / ShardedDataset under crashes and hand-made files (issue 13): a save is one
atomic commit, a reader never sees two saves mixed, and every defect is a ValueError."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ddl.data import ShardedDataset, save_shards

_WRITER = """
import sys, numpy as np
from ddl.data import save_shards
v = 0
while True:
    v += 1
    save_shards(np.full((4000, 16), v, np.float32), np.full(4000, v), sys.argv[1], 8)
    print(v, flush=True)
"""


def _consistent(d):
    X, y = ShardedDataset(d, rank=0, world_size=1, verify=True).load()
    v = y[0]
    assert X.shape == (4000, 16) and (X == v).all() and (y == v).all(), "rows of two saves"
    return v


def test_kill_9_mid_save_shards_leaves_the_old_or_the_new_data_set(tmp_path):
    d = str(tmp_path / "ds")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    seen = set()
    for k in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, d], env=env,
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        time.sleep(0.02 + 0.05 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        seen.add(_consistent(d))
    # orphans of the killed saves go with the next save; only manifest + 8 shards remain
    m = save_shards(np.ones((10, 2)), None, d, 2)
    assert sorted(os.listdir(d)) == sorted(["manifest.json"] + [s["file"] for s in m["shards"]])


def test_a_reader_during_saves_sees_one_whole_generation(tmp_path):
    d = str(tmp_path / "ds")
    save_shards(np.zeros((4000, 16), np.float32), np.zeros(4000), d, 8)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, d], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        deadline = time.monotonic() + 3
        reads = 0
        while time.monotonic() < deadline:
            _consistent(d)
            reads += 1
        assert reads > 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_a_shard_of_another_save_is_refused(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ma = save_shards(np.ones((20, 3)), np.arange(20), a, 2)
    mb = save_shards(np.zeros((20, 3)), np.arange(20), b, 2)
    # the old per-shard CRCs alone would pass this: a file of another save under the name
    shutil.copy(os.path.join(b, mb["shards"][1]["file"]), os.path.join(a, ma["shards"][1]["file"]))
    with pytest.raises(ValueError, match="not the one the manifest names"):
        ShardedDataset(a)


def _rewrite_manifest(d, edit, fix_sum=False):
    from ddl.data.shards import _manifest_sum

    p = os.path.join(d, "manifest.json")
    with open(p) as f:
        m = json.load(f)
    m = edit(m)
    if fix_sum and isinstance(m, dict):
        m["sha256"] = _manifest_sum(m)
    with open(p, "w") as f:
        f.write(m if isinstance(m, str) else json.dumps(m))


def test_an_edited_manifest_fails_its_checksum(tmp_path):
    d = str(tmp_path / "s")
    save_shards(np.ones((20, 3)), None, d, 2)
    _rewrite_manifest(d, lambda m: {**m, "n_rows": 21})
    with pytest.raises(ValueError, match="corrupt manifest.*checksum"):
        ShardedDataset(d)


@pytest.mark.parametrize("edit", [
    lambda m: [m], lambda m: None, lambda m: "[" * 100000,
    lambda m: {k: v for k, v in m.items() if k != "shards"},
    lambda m: {k: v for k, v in m.items() if k != "n_rows"},
    lambda m: {**m, "shards": [1, 2]},
    lambda m: {**m, "shards": [{**s, "rows": "x"} for s in m["shards"]]},
    lambda m: {**m, "shards": [{**s, "file": "../../etc/passwd"} for s in m["shards"]]},
    lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "file"} for s in m["shards"]]},
    lambda m: {**m, "shards": m["shards"][:1]},
    lambda m: {**m, "kind": "sparse"}, lambda m: {**m, "x_dtype": "O"},
    lambda m: {**m, "x_dtype": 7}, lambda m: {**m, "version": 99},
    lambda m: {**m, "generation": 5},
])
def test_a_hand_made_manifest_is_a_value_error(tmp_path, edit):
    d = str(tmp_path / "s")
    save_shards(np.ones((20, 3)), None, d, 2)
    _rewrite_manifest(d, edit, fix_sum=True)
    with pytest.raises(ValueError, match="corrupt manifest"):
        ShardedDataset(d)


@pytest.mark.parametrize("field, value", [
    ("arrays", []), ("arrays", {"X": 1}), ("arrays", {"X": {"dtype": "<f8"}}),
    ("arrays", {"X": {"dtype": "O", "shape": [10, 3], "offset": 0, "nbytes": 240, "crc32": 0}}),
    ("arrays", {"X": {"dtype": "<f8", "shape": [-10, 3], "offset": 0, "nbytes": 240,
                      "crc32": 0}}),
    ("arrays", {"Y": {"dtype": "<f8", "shape": [10, 3], "offset": 0, "nbytes": 240,
                      "crc32": 0}}),
    ("generation", "0" * 16), ("rows", "10"),
])
def test_a_hand_made_shard_header_is_a_value_error(tmp_path, field, value):
    import zlib

    from ddl.data.shards import _PREAMBLE

    d = str(tmp_path / "s")
    m = save_shards(np.ones((20, 3)), None, d, 2)
    path = os.path.join(d, m["shards"][0]["file"])
    with open(path, "rb") as f:
        raw = f.read()
    _, ver, hlen, _ = _PREAMBLE.unpack(raw[:32])
    header = json.loads(raw[32:32 + hlen])
    header[field] = value
    new = json.dumps(header).encode()
    new += b" " * max(0, hlen - len(new))  # keep the data section where it was when possible
    body = _PREAMBLE.pack(b"DDLSHARD", ver, len(new), zlib.crc32(new)) + new
    body += b"\0" * (-len(body) % 64)
    with open(path, "wb") as f:
        f.write(body + raw[len(body):] if len(body) <= len(raw) else body)

    def vouch(m):  # the manifest's header CRC would catch all of these: make it agree
        m["shards"][0]["header_crc32"] = zlib.crc32(new)
        return m

    _rewrite_manifest(d, vouch, fix_sum=True)
    with pytest.raises(ValueError, match=r"s[/\\]shard-00000"):
        ShardedDataset(d, rank=0, world_size=2, verify=False)


def test_a_version_1_data_set_still_reads(tmp_path):
    d = str(tmp_path / "s")
    save_shards(np.arange(40.0).reshape(20, 2), np.arange(20), d, 2)

    def v1(m):
        m = {k: v for k, v in m.items() if k not in ("sha256", "generation")}
        m["version"] = 1
        m["shards"] = [{k: v for k, v in s.items() if k != "header_crc32"} for s in m["shards"]]
        return m

    _rewrite_manifest(d, v1)
    X, y = ShardedDataset(d).load()
    assert X.shape == (20, 2) and y.tolist() == list(range(20))


def test_a_manifest_that_is_a_fifo_is_refused_at_once(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    os.mkfifo(d / "manifest.json")  # nobody writes it: reading it would block forever
    with pytest.raises(ValueError, match="not a regular file"):
        ShardedDataset(str(d))
