"""load_libsvm on fsspec URLs (file:// and memory://): the same rows as the local path, whole
and per rank for 1..4 ranks, each rank reading only its byte range; globs; errors name the URL."""
import os

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec", reason="fsspec is not installed (pip install fsspec)")

from ddl import _fsspec
from ddl.datasets import load_libsvm

LINES = ["1 1:0.5 3:2", "0 2:1.25", "# a comment", "", "1 1:1 2:2 3:3 4:4",
         "0 4:7.5  # trailing", "1 2:0.125", "0 1:3"]


@pytest.fixture
def files(tmp_path):
    text = "\n".join(LINES * 7) + "\n"
    local = tmp_path / "a.svm"
    local.write_text(text)
    (tmp_path / "b.svm").write_text("1 5:1\r\n0 1:2")  # CRLF, no final newline
    mem = fsspec.filesystem("memory")
    mem.pipe("/ddltest/a.svm", text.encode())
    mem.pipe("/ddltest/b.svm", b"1 5:1\r\n0 1:2")
    yield local, tmp_path
    mem.rm("/ddltest", recursive=True)


def same(a, b):
    (Xa, ya), (Xb, yb) = a, b
    assert Xa.shape == Xb.shape
    np.testing.assert_array_equal(Xa.toarray(), Xb.toarray())
    np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_url_shards_equal_local_shards(files, world):
    local, _tmp = files
    for url in (f"file://{local}", "memory://ddltest/a.svm"):
        for r in range(world):
            same(load_libsvm(url, n_features=5, rank=r, world_size=world),
                 load_libsvm(str(local), n_features=5, rank=r, world_size=world))


def test_url_globs_and_lists(files):
    _local, tmp = files
    want = load_libsvm([str(tmp / "a.svm"), str(tmp / "b.svm")], n_features=5)
    same(load_libsvm("memory://ddltest/*.svm", n_features=5), want)
    same(load_libsvm([f"file://{tmp}/a.svm", "memory://ddltest/b.svm"], n_features=5), want)
    for r in range(3):
        same(load_libsvm("memory://ddltest/*.svm", n_features=5, rank=r, world_size=3),
             load_libsvm(str(tmp / "*.svm"), n_features=5, rank=r, world_size=3))


def test_each_rank_reads_only_its_range(files, monkeypatch):
    local, _ = files
    size = os.path.getsize(local)
    reads = []
    real = _fsspec.line_span

    def spy(fs, path, start, end, total, cap=None):
        first, out = real(fs, path, start, end, total, cap)
        reads.append((start, end, len(out)))
        return first, out

    monkeypatch.setattr(_fsspec, "line_span", spy)
    load_libsvm("memory://ddltest/a.svm", rank=1, world_size=4, n_features=5)
    (start, end, n), = reads
    assert (start, end) == (size // 4, size // 2)
    assert n < size // 4 + 40  # its quarter, plus at most the rest of one line


def test_url_errors(files):
    fs = fsspec.filesystem("memory")
    fs.pipe("/ddltest/bad.svm", b"1 1:1\n1 2:x\n")
    with pytest.raises(ValueError, match=r"memory://ddltest/bad.svm:2: "):
        load_libsvm("memory://ddltest/bad.svm")
    with pytest.raises(FileNotFoundError, match="no file 'memory://ddltest/none.svm'"):
        load_libsvm("memory://ddltest/none.svm")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        load_libsvm("memory://ddltest/*.nope")


def test_helpers_for_other_readers(files):
    """The pieces a byte-range reader (such as ShardedDataset on a URL) needs."""
    fs, path = _fsspec.filesystem("memory://ddltest/a.svm")
    total = _fsspec.size(fs, path)
    data = _fsspec.read_file("memory://ddltest/a.svm")
    assert len(data) == total
    assert _fsspec.read_range(fs, path, 5, 17) == data[5:17]
    # the lines starting in each quarter tile the file
    cuts = [total * r // 4 for r in range(5)]
    parts = [_fsspec.line_range(fs, path, a, b, total) for a, b in zip(cuts, cuts[1:])]
    assert b"".join(parts) == data
    assert _fsspec.is_url("s3://b/k") and not _fsspec.is_url("/tmp/x") and not _fsspec.is_url(3)


# ---- ShardedDataset on URLs: memory:// and file://, only this rank's shards read ----

from ddl.data import ShardedDataset, save_shards
from ddl.data import shards as _shards
from ddl.sparse import CSRMatrix


def _upload(local_dir, root):
    """Copy a local shard directory into fsspec's memory filesystem under root."""
    mem = fsspec.filesystem("memory")
    for name in os.listdir(local_dir):
        with open(os.path.join(local_dir, name), "rb") as f:
            mem.pipe(f"{root}/{name}", f.read())
    return mem


@pytest.fixture
def shard_dirs(tmp_path, rng):
    X = rng.standard_normal((23, 4))
    y = rng.integers(0, 3, 23).astype(np.float64)
    dense = str(tmp_path / "dense")
    save_shards(X, y, dense, 5)
    Xs = X * (rng.random((23, 4)) < 0.4)
    sparse = str(tmp_path / "csr")
    save_shards(CSRMatrix.from_dense(Xs), y, sparse, 4)
    mem = _upload(dense, "/ddlshards/dense")
    _upload(sparse, "/ddlshards/csr")
    yield {"dense": dense, "csr": sparse}
    mem.rm("/ddlshards", recursive=True)


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


@pytest.mark.parametrize("kind", ["dense", "csr"])
@pytest.mark.parametrize("world", [1, 2, 3, 6])
def test_sharded_dataset_on_urls_equals_local(shard_dirs, kind, world):
    local = shard_dirs[kind]
    for url in (f"memory://ddlshards/{kind}", f"file://{local}"):
        for r in range(world):
            want = ShardedDataset(local, rank=r, world_size=world)
            got = ShardedDataset(url, rank=r, world_size=world)
            assert got.shard_ids == want.shard_ids and len(got) == len(want)
            (Xg, yg), (Xw, yw) = got.load(), want.load()
            np.testing.assert_array_equal(_dense(Xg), _dense(Xw))
            np.testing.assert_array_equal(yg, yw)
            if len(want):
                np.testing.assert_array_equal(got[len(got) - 1][0], want[len(want) - 1][0])


def test_sharded_url_reads_only_this_ranks_shards(shard_dirs, monkeypatch):
    opened, reads = [], []
    real_init, real_read = _shards._Ranged.__init__, _shards._Ranged.read

    def init(self, url):
        opened.append(url)
        real_init(self, url)

    def read(self, a, b):
        reads.append(b - a)
        return real_read(self, a, b)

    monkeypatch.setattr(_shards._Ranged, "__init__", init)
    monkeypatch.setattr(_shards._Ranged, "read", read)
    ds = ShardedDataset("memory://ddlshards/dense", rank=1, world_size=5)
    m = ds.manifest
    assert opened == [f"memory://ddlshards/dense/{m['shards'][1]['file']}"]
    assert sum(reads) <= m["shards"][1]["bytes"]  # ranged reads of one shard, nothing else


def test_sharded_url_errors(shard_dirs):
    mem = fsspec.filesystem("memory")
    raw = mem.cat_file("/ddlshards/dense/manifest.json")
    mem.pipe("/ddlshards/dense/manifest.json", raw.replace(b'"n_rows": 23', b'"n_rows": 24'))
    with pytest.raises(ValueError, match="memory://ddlshards/dense/manifest.json: corrupt "
                                         "manifest.*checksum"):
        ShardedDataset("memory://ddlshards/dense")
    mem.pipe("/ddlshards/dense/manifest.json", b"{not json")
    with pytest.raises(ValueError, match="corrupt manifest"):
        ShardedDataset("memory://ddlshards/dense")
    with pytest.raises(FileNotFoundError, match="no shard manifest"):
        ShardedDataset("memory://ddlshards/none")
    # a missing and a corrupted shard over memory://
    m = ShardedDataset("memory://ddlshards/csr").manifest
    first = f"/ddlshards/csr/{m['shards'][0]['file']}"
    blob = bytearray(mem.cat_file(first))
    hlen = _shards._PREAMBLE.unpack(bytes(blob[:32]))[2]
    blob[_shards._data_start(hlen)] ^= 0xFF  # the first byte of the first array
    mem.pipe(first, bytes(blob))
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        ShardedDataset("memory://ddlshards/csr", rank=0, world_size=4)
    ShardedDataset("memory://ddlshards/csr", rank=1, world_size=4)  # others never read it
    mem.pipe(first, bytes(blob[:100]))
    with pytest.raises(ValueError, match="truncated shard"):
        ShardedDataset("memory://ddlshards/csr", rank=0, world_size=4)
    mem.rm(first)
    with pytest.raises(FileNotFoundError, match="shard 0 is missing"):
        ShardedDataset("memory://ddlshards/csr", rank=0, world_size=4)


# ---- a URL's share is parsed from memory, errors numbered in the whole file ----


def test_url_share_parsed_in_memory_with_true_line_numbers(monkeypatch):
    import tempfile

    def no_temp(*a, **k):
        raise AssertionError("a temporary file was made")

    monkeypatch.setattr(tempfile, "mkstemp", no_temp)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temp)
    lines = [f"1 {i % 7 + 1}:1" for i in range(999)] + ["1 2:1 1:1"] + ["0 1:1"] * 20
    mem = fsspec.filesystem("memory")
    mem.pipe("/ddlnum/a.svm", ("\n".join(lines) + "\n").encode())
    try:
        for w in (1, 2, 3, 4):
            raised = 0
            for r in range(w):
                try:
                    load_libsvm("memory://ddlnum/a.svm", rank=r, world_size=w)
                except ValueError as e:
                    raised += 1
                    assert str(e).startswith("memory://ddlnum/a.svm:1000: index 1 after index 2"), e
            assert raised == 1
        # the bytes before the share cannot be re-read: the message says where the line is
        fs, path = _fsspec.filesystem("memory://ddlnum/a.svm")
        first, data = _fsspec.line_span(fs, path, fs.size(path) // 2, fs.size(path),
                                        fs.size(path))
        n = data[:data.index(b"1 2:1 1:1")].count(b"\n") + 1

        def broken(*a):
            raise OSError("the store went away")

        monkeypatch.setattr(_fsspec, "count_lines", broken)
        with pytest.raises(ValueError, match=f"^memory://ddlnum/a.svm: line {n} of the byte "
                                             f"range starting at offset {first}: index 1 after"):
            load_libsvm("memory://ddlnum/a.svm", rank=1, world_size=2)
        ok = load_libsvm("memory://ddlnum/a.svm", rank=0, world_size=2)[0]
        assert ok.shape[0] == mem.cat_file("/ddlnum/a.svm")[:first].count(b"\n")
    finally:
        mem.rm("/ddlnum", recursive=True)


def test_url_line_cap_bounds_the_fetch(monkeypatch):
    monkeypatch.setenv("DDL_LIBSVM_MAX_LINE", str(1 << 20))
    mem = fsspec.filesystem("memory")
    mem.pipe("/ddlcap/a.svm", b"1 1:1\n" + b"9" * (3 << 20))  # no newline: one 3 MB line
    try:
        for r, w in ((0, 1), (0, 2), (1, 2)):
            with pytest.raises(ValueError, match="memory://ddlcap/a.svm: a line longer than "
                                                 "1048576 bytes.*DDL_LIBSVM_MAX_LINE"):
                load_libsvm("memory://ddlcap/a.svm", rank=r, world_size=w)
    finally:
        mem.rm("/ddlcap", recursive=True)
