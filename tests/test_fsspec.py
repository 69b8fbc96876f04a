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
    real = _fsspec.line_range

    def spy(fs, path, start, end, total):
        out = real(fs, path, start, end, total)
        reads.append((start, end, len(out)))
        return out

    monkeypatch.setattr(_fsspec, "line_range", spy)
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
