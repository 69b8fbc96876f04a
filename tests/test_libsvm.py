"""ddl.datasets.load_libsvm (the C parser, its errors, sharded reads) and the binary shard
format of ddl.data.save_shards / ShardedDataset."""
import os
import re
from pathlib import Path

import numpy as np
import pytest

import ddl
from ddl.data import ShardedDataset, save_shards
from ddl.datasets import load_libsvm
from ddl.datasets.libsvm import byte_ranges
from ddl.sparse import CSRMatrix, vstack


def write(tmp_path, text, name="data.svm"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def reference(text):
    """A plain Python parser of well-formed libsvm text: (rows of {col: value}, labels)."""
    rows, labels = [], []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        labels.append(float(parts[0]))
        rows.append({int(k) - 1: float(v) for k, v in
                     (p.split(":") for p in parts[1:] if not p.startswith("qid:"))})
    return rows, labels


def dense(rows, n_features):
    out = np.zeros((len(rows), n_features))
    for i, r in enumerate(rows):
        for c, v in r.items():
            out[i, c] = v
    return out


def random_text(rng, n_lines, n_features=50, crlf=False, trailing_newline=True, junk=True):
    lines = []
    for i in range(n_lines):
        if junk and rng.random() < 0.1:
            lines.append(rng.choice(["", "   ", "# a comment line", "\t# indented comment"]))
            continue
        k = int(rng.integers(0, 8))
        cols = np.sort(rng.choice(n_features, size=k, replace=False)) + 1
        vals = np.round(rng.normal(size=k), 4)
        label = rng.choice(["1", "-1", "0", "+1", "2.5"])
        feats = " ".join(f"{c}:{v:g}" for c, v in zip(cols, vals))
        tail = " # trailing comment" if junk and rng.random() < 0.1 else ""
        lines.append(f"{label} {feats}{tail}".rstrip())
    sep = "\r\n" if crlf else "\n"
    return sep.join(lines) + (sep if trailing_newline else "")


def check_against(X, y, text, n_features=None):
    rows, labels = reference(text)
    n = n_features if n_features is not None else X.shape[1]
    assert X.shape == (len(rows), n)
    np.testing.assert_allclose(X.toarray(), dense(rows, n), rtol=1e-6)
    np.testing.assert_array_equal(y, np.array(labels, dtype=np.float64))


# ---- whole files -----------------------------------------------------------------------------


def test_basic_parse(tmp_path):
    text = ("# header comment\n"
            "1 1:0.5 3:2.0 # tail\n"
            "\n"
            "-1 qid:7 2:1e-3 4:-7\n"
            "   \t\n"
            "0\n"
            "+1 10:3")
    X, y = load_libsvm(write(tmp_path, text))
    assert isinstance(X, CSRMatrix) and X.dtype == np.float32
    assert X.shape == (4, 10) and X.nnz == 5
    np.testing.assert_array_equal(y, [1, -1, 0, 1])
    assert y.dtype == np.float64
    want = np.zeros((4, 10), np.float32)
    want[0, 0], want[0, 2], want[1, 1], want[1, 3], want[3, 9] = 0.5, 2, 1e-3, -7, 3
    np.testing.assert_array_equal(X.toarray(), want)
    assert X.indices.dtype == np.int64 and X.indptr.tolist() == [0, 2, 4, 4, 5]


def test_dtype_and_n_features(tmp_path):
    path = write(tmp_path, "1 1:0.1 2:0.2\n0 3:1e-300\n")
    X, _ = load_libsvm(path, dtype=np.float64, n_features=8)
    assert X.dtype == np.float64 and X.shape == (2, 8)
    assert X.data.tolist() == [0.1, 0.2, 1e-300]  # correctly rounded, as float() gives
    X, _ = load_libsvm(path, dtype=ddl.float64)
    assert X.dtype == np.float64 and X.shape == (2, 3)
    with pytest.raises(TypeError):
        load_libsvm(path, dtype=np.int64)
    with pytest.raises(ValueError):
        load_libsvm(path, n_features=0)


def test_numbers_are_correctly_rounded(tmp_path):
    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.normal(size=200) * 10.0 ** rng.integers(-30, 30, size=200),
                           [1e22, 1e23, 123456789012345678901234567890.0, 5e-324, 0.1, 2.5]])
    toks = [repr(float(v)) for v in vals] + ["1.2345678901234567890123", "00012.5000", ".5",
                                              "5.", "-0", "1E5", "1e+05", "1e-05"]
    text = "".join(f"0 1:{t}\n" for t in toks)
    X, _ = load_libsvm(write(tmp_path, text), dtype=np.float64)
    np.testing.assert_array_equal(X.data, [float(t) for t in toks])  # zeros are kept as given


def test_random_files_match_reference(tmp_path):
    rng = np.random.default_rng(0)
    for crlf in (False, True):
        for trailing in (False, True):
            text = random_text(rng, 200, crlf=crlf, trailing_newline=trailing)
            X, y = load_libsvm(write(tmp_path, text), dtype=np.float64, n_features=50)
            check_against(X, y, text, 50)


def test_empty_and_comment_only_files(tmp_path):
    for text in ("", "\n\n", "# nothing\n# here", "\r\n"):
        X, y = load_libsvm(write(tmp_path, text))
        assert X.shape == (0, 0) and X.nnz == 0 and y.shape == (0,)
    X, y = load_libsvm(write(tmp_path, ""), n_features=5)
    assert X.shape == (0, 5) and X.toarray().shape == (0, 5)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_libsvm(str(tmp_path / "nope.svm"))
    with pytest.raises(FileNotFoundError):
        load_libsvm(str(tmp_path / "nope-*.svm"))


# ---- malformed lines: ValueError naming file and line -----------------------------------------

BAD = [
    (b"abc 1:2", "bad label 'abc'"),
    (b"nan 1:2", "bad label"),
    (b"1..0 1:2", "bad label"),
    (b"1 1:2 3", "bad feature '3'"),
    (b"1 1:", "bad value"),
    (b"1 1:abc", "bad value"),
    (b"1 1:inf", "bad value"),
    (b"1 1:1e999", "bad value"),
    (b"1 :2", "bad index"),
    (b"1 -1:2", "bad index"),
    (b"1 x:2", "bad index"),
    (b"1 1.5:2", "bad index"),
    (b"1 0:2", "index 0"),
    (b"1 3:1 2:1", "index 2 after index 3"),
    (b"1 3:1 3:1", "index 3 appears twice"),
    (b"1 1:2:3", "bad value"),
    (b"1 qid:x 1:2", "bad qid"),
    (b"1 1:2 \xff\xfe", "not UTF-8"),
    (b"\xc3\x28 1:2", "not UTF-8"),
    (b"1 1:2 # caf\xe9", "not UTF-8"),
    (b"1 1:2\x00", "NUL byte"),
    (b"1 99999999999999999999999:1", "bad index"),
]


@pytest.mark.parametrize("line,why", BAD)
def test_malformed_line_names_file_and_line(tmp_path, line, why):
    text = b"# comment\n1 1:1\n\n" + line + b"\n0 2:2\n"
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        load_libsvm(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:4: "), msg
    assert why in msg, msg


def test_index_above_n_features(tmp_path):
    path = write(tmp_path, "1 1:1\n1 5:1\r\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: index 5 is above n_features=4")):
        load_libsvm(path, n_features=4)
    assert load_libsvm(path, n_features=5)[0].shape == (2, 5)


def test_error_line_numbers_are_true_in_shards(tmp_path):
    # the bad line sits in the last rank's range; that rank reports the file's line number
    lines = [f"1 {i % 7 + 1}:1" for i in range(999)] + ["1 2:1 1:1"] + ["0 1:1"] * 20
    path = write(tmp_path, "\n".join(lines) + "\n")
    for w in (2, 3, 4):
        raised = 0
        for r in range(w):
            try:
                load_libsvm(path, rank=r, world_size=w)
            except ValueError as e:
                raised += 1
                assert str(e).startswith(f"{path}:1000: index 1 after index 2"), str(e)
        assert raised == 1


def test_long_line_error_after_buffer_growth(tmp_path):
    long_line = "1 " + " ".join(f"{i}:1" for i in range(1, 300_000))  # ~2.6 MB, > 1 MiB chunk
    path = write(tmp_path, "0 1:1\n" + long_line + " 5:1\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: index 5 after index 299999")):
        load_libsvm(path)


# ---- sharded reads ---------------------------------------------------------------------------


def union(path, w, **kw):
    parts = [load_libsvm(path, rank=r, world_size=w, **kw) for r in range(w)]
    return vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), parts


VARIANTS = {
    "plain": lambda rng: random_text(rng, 101),
    "no_trailing_newline": lambda rng: random_text(rng, 57, trailing_newline=False),
    "crlf": lambda rng: random_text(rng, 64, crlf=True),
    "crlf_no_trailing": lambda rng: random_text(rng, 31, crlf=True, trailing_newline=False),
    "long_lines": lambda rng: "\n".join(
        f"{i % 2} " + " ".join(f"{c}:{(c * i) % 97 / 10}" for c in range(1, 40_000, 1 + i))
        for i in range(5)) + "\n",
    "empty": lambda rng: "",
    "one_line": lambda rng: "1 1:1",
    "two_lines": lambda rng: "1 1:1\n0 2:2\n",
    "blank_lines_only": lambda rng: "\n\n\n",
    "comments": lambda rng: "# a\n# b\n1 3:1\n# c\n",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sharded_union_is_the_file(tmp_path, variant):
    text = VARIANTS[variant](np.random.default_rng(1))
    path = write(tmp_path, text)
    whole, wy = load_libsvm(path, n_features=40_000, dtype=np.float64)
    check_against(whole, wy, text, 40_000)
    for w in (1, 2, 3, 4, 7):
        X, y, _ = union(path, w, n_features=40_000, dtype=np.float64)
        assert X.shape == whole.shape
        np.testing.assert_array_equal(X.indptr, whole.indptr)
        np.testing.assert_array_equal(X.indices, whole.indices)
        np.testing.assert_array_equal(X.data, whole.data)
        np.testing.assert_array_equal(y, wy)


def test_every_cut_point(tmp_path):
    # two ranks, the cut at every byte of a small CRLF file with comments and blank lines
    text = "1 1:1\r\n\r\n# c\r\n0 2:2 # x\r\n-1 3:3\r\n2 4:4"
    path = write(tmp_path, text)
    from ddl import _C

    want = load_libsvm(path)[1].tolist()
    size = len(text.encode())
    for cut in range(size + 1):
        a = _C.libsvm_load(path, 0, cut, 0, 0)[3].numpy().tolist()
        b = _C.libsvm_load(path, cut, -1, 0, 0)[3].numpy().tolist()
        assert a + b == want, cut


def test_byte_ranges_split_evenly():
    sizes = [10, 0, 25, 7]
    for w in (1, 2, 3, 5, 60):
        seen = []
        for r in range(w):
            got = byte_ranges(sizes, r, w)
            share = sum(e - s for _, s, e in got)
            assert abs(share - sum(sizes) / w) <= 1
            seen += [(i, b) for i, s, e in got for b in range(s, e)]
        assert seen == [(i, b) for i, s in enumerate(sizes) for b in range(s)]


def test_list_and_glob_of_files(tmp_path):
    rng = np.random.default_rng(5)
    texts = [random_text(rng, n, n_features=30, trailing_newline=n % 2 == 0)
             for n in (40, 0, 3, 77)]
    paths = [write(tmp_path, t, f"part-{i:03d}.svm") for i, t in enumerate(texts)]
    full = "".join(t if t.endswith("\n") or not t else t + "\n" for t in texts)
    for spec in (paths, str(tmp_path / "part-*.svm")):
        X, y = load_libsvm(spec, n_features=30, dtype=np.float64)
        check_against(X, y, full, 30)
        for w in (2, 3, 4, 9):
            Xu, yu, _ = union(spec, w, n_features=30, dtype=np.float64)
            check_against(Xu, yu, full, 30)


def test_rank_arguments(tmp_path):
    path = write(tmp_path, "1 1:1\n")
    with pytest.raises(ValueError, match="both"):
        load_libsvm(path, rank=0)
    with pytest.raises(ValueError, match="outside"):
        load_libsvm(path, rank=2, world_size=2)
    # without a process group the defaults are the whole file
    assert load_libsvm(path)[0].shape == (1, 1)


def test_scipy_interop(tmp_path):
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(2)
    text = random_text(rng, 50, n_features=20)
    X, _ = load_libsvm(write(tmp_path, text), n_features=20)
    S = X.to_scipy()
    assert isinstance(S, sp.csr_matrix) and S.shape == X.shape and S.nnz == X.nnz
    np.testing.assert_array_equal(S.toarray(), X.toarray())
    back = CSRMatrix.from_scipy(S)
    np.testing.assert_array_equal(back.toarray(), X.toarray())
    np.testing.assert_allclose(X @ np.arange(20.0), S @ np.arange(20.0), rtol=1e-6)


def test_csr_rows_and_checks():
    a = np.array([[0, 1, 0], [2, 0, 3], [0, 0, 0], [4, 0, 0]], dtype=np.float32)
    X = CSRMatrix.from_dense(a)
    np.testing.assert_array_equal(X[1:3].toarray(), a[1:3])
    np.testing.assert_array_equal(X[[3, 0, 3]].toarray(), a[[3, 0, 3]])
    np.testing.assert_array_equal(X[np.array([True, False, True, True])].toarray(), a[[0, 2, 3]])
    np.testing.assert_array_equal(X[-1].toarray(), a[-1:])
    np.testing.assert_array_equal(X[::2].toarray(), a[::2])
    with pytest.raises(IndexError):
        X[4]
    with pytest.raises(ValueError, match="column indices"):
        CSRMatrix([1.0], [3], [0, 1], (1, 3))
    with pytest.raises(ValueError, match="indptr"):
        CSRMatrix([1.0], [0], [0, 2], (1, 3))
    assert "4x3" in repr(X)


# ---- binary shards ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense32", "dense64", "csr"])
def test_shards_round_trip(tmp_path, kind):
    rng = np.random.default_rng(9)
    a = rng.normal(size=(103, 7)) * (rng.random((103, 7)) < 0.3)
    y = rng.integers(0, 3, size=103)
    X = {"dense32": a.astype(np.float32), "dense64": a,
         "csr": CSRMatrix.from_dense(a.astype(np.float32))}[kind]
    d = str(tmp_path / "shards")
    manifest = save_shards(X, y, d, 5)
    assert [s["rows"] for s in manifest["shards"]] == [20, 21, 20, 21, 21]
    whole = a.astype(np.float32) if kind != "dense64" else a
    for w in (1, 2, 3, 4, 5, 6):
        xs, ys = [], []
        for r in range(w):
            ds = ShardedDataset(d, rank=r, world_size=w)
            Xr, yr = ds.load()
            assert len(ds) == Xr.shape[0] == len(yr)
            xs.append(Xr.toarray() if kind == "csr" else np.asarray(Xr))
            ys.append(yr)
        np.testing.assert_array_equal(np.concatenate(xs), whole)
        np.testing.assert_array_equal(np.concatenate(ys), y)
    ds = ShardedDataset(d, rank=1, world_size=5)  # one shard: the arrays are memory-mapped
    Xr, yr = ds.load()
    base = (Xr.data if kind == "csr" else Xr)
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    x0, y0 = ds[0]
    np.testing.assert_array_equal(x0, whole[20]) and y0 == y[20]
    assert ds.n_rows == 103 and ds.n_features == 7


def test_shards_without_y_and_overwrite(tmp_path):
    d = str(tmp_path / "s")
    save_shards(np.ones((10, 2)), None, d, 4)
    ds = ShardedDataset(d)
    X, y = ds.load()
    assert y is None and X.shape == (10, 2)
    m = save_shards(np.zeros((3, 2)), np.arange(3), d, 2)  # fewer shards: the old ones go
    assert sorted(os.listdir(d)) == sorted(["manifest.json"] + [s["file"] for s in m["shards"]])
    assert len(os.listdir(d)) == 3
    X, y = ShardedDataset(d).load()
    assert X.shape == (3, 2) and y.tolist() == [0, 1, 2]
    # 2 shards over 4 ranks: ranks 1 and 3 get one each, ranks 0 and 2 none
    assert [len(ShardedDataset(d, rank=r, world_size=4)) for r in range(4)] == [0, 1, 0, 2]
    X, y = ShardedDataset(d, rank=2, world_size=4).load()
    assert X.shape == (0, 2) and y.shape == (0,)


def test_shards_errors(tmp_path):
    rng = np.random.default_rng(1)
    d = str(tmp_path / "s")
    m = save_shards(rng.normal(size=(40, 3)), np.arange(40), d, 2)
    shard = os.path.join(d, m["shards"][1]["file"])
    good = Path(shard).read_bytes()

    def reopen(**kw):
        return ShardedDataset(d, rank=1, world_size=2, **kw)

    with open(shard, "wb") as f:  # truncated
        f.write(good[:-10])
    with pytest.raises(ValueError, match=re.escape(shard) + ".*truncated"):
        reopen()
    with open(shard, "wb") as f:  # cut inside the header
        f.write(good[:20])
    with pytest.raises(ValueError, match="truncated"):
        reopen()
    bad = bytearray(good)  # one flipped data byte
    bad[-100] ^= 0x40  # inside y (the last array: 160 bytes, then 32 of padding)
    with open(shard, "wb") as f:
        f.write(bad)
    with pytest.raises(ValueError, match=re.escape(shard) + ".*corrupted data.*CRC-32"):
        reopen()
    reopen(verify=False)  # sizes fine: only the CRC would have seen it
    bad = bytearray(good)  # a flipped header byte
    bad[40] ^= 0x01
    with open(shard, "wb") as f:
        f.write(bad)
    with pytest.raises(ValueError, match="corrupted shard header"):
        reopen(verify=False)
    with open(shard, "wb") as f:
        f.write(b"NOTASHRD" + good[8:])
    with pytest.raises(ValueError, match="bad magic"):
        reopen()
    os.remove(shard)
    with pytest.raises(FileNotFoundError, match="missing"):
        reopen()
    ShardedDataset(d, rank=0, world_size=2)  # the other rank never opens that file
    with open(os.path.join(d, "manifest.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="corrupt manifest"):
        ShardedDataset(d)
    with pytest.raises(FileNotFoundError, match="manifest"):
        ShardedDataset(str(tmp_path))
    with pytest.raises(ValueError):
        save_shards(np.ones((3, 2)), np.ones(4), d, 1)
    with pytest.raises(ValueError):
        save_shards(np.ones((3, 2)), None, d, 0)


def test_sharded_dataset_with_dataloader(tmp_path):
    d = str(tmp_path / "s")
    X = np.arange(24, dtype=np.float32).reshape(12, 2)
    save_shards(X, np.arange(12), d, 3)
    loader = ddl.data.DataLoader(ShardedDataset(d), batch_size=5)
    batches = list(loader)
    assert len(batches) == 3
    np.testing.assert_array_equal(np.concatenate([np.asarray(b[0]) for b in batches]), X)


# ---- the parser over bytes in memory (ddl._C.libsvm_parse: a URL's share, no temporary file) --


def parse_buffer(data, name="mem.svm", offset=0, first_line=1, n_features=0, dtype=np.float32):
    ip, ix, v, y, mc = ddl._C.libsvm_parse(data, name, offset, first_line, n_features,
                                           int(np.dtype(dtype) == np.float64))
    return ip.numpy(), ix.numpy(), v.numpy(), y.numpy(), mc


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_buffer_parse_equals_file_parse(tmp_path, rng, variant):
    text = VARIANTS[variant](rng)
    path = write(tmp_path, text)
    for dt, code in ((np.float32, 0), (np.float64, 1)):
        want = ddl._C.libsvm_load(path, 0, -1, 0, code)
        got = ddl._C.libsvm_parse(text.encode(), "m", 0, 1, 0, code)
        for a, b in zip(want[:4], got[:4]):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            assert a.numpy().dtype == b.numpy().dtype
        assert want[4] == got[4]
    # any bytes-like object, borrowed
    ip, ix, _v, _y, mc = parse_buffer(memoryview(bytearray(b"1 2:3\n0 1:1")))
    assert ip.tolist() == [0, 1, 2] and ix.tolist() == [1, 0] and mc == 2


@pytest.mark.parametrize("line,why", BAD)
def test_buffer_malformed_line_numbers(line, why):
    data = b"# comment\n1 1:1\n\n" + line + b"\n0 2:2\n"
    with pytest.raises(ValueError, match=re.escape(why)) as e:
        parse_buffer(data, "s3://b/k.svm", offset=0, first_line=1)
    assert str(e.value).startswith("s3://b/k.svm:4: "), str(e.value)
    with pytest.raises(ValueError) as e:  # the share starts at line 41 of its file
        parse_buffer(data, "s3://b/k.svm", offset=900, first_line=41)
    assert str(e.value).startswith("s3://b/k.svm:44: "), str(e.value)
    with pytest.raises(ValueError) as e:  # its line number unknown: say where it is instead
        parse_buffer(data, "s3://b/k.svm", offset=900, first_line=0)
    assert str(e.value).startswith(
        "s3://b/k.svm: line 4 of the byte range starting at offset 900: "), str(e.value)


def test_buffer_bounds(monkeypatch):
    with pytest.raises(ValueError, match="overflows float32"):
        parse_buffer(b"1 1:1e39\n")
    assert parse_buffer(b"1 1:1e39\n", dtype=np.float64)[2].tolist() == [1e39]
    with pytest.raises(ValueError, match="m:2: a NUL byte at column 6"):
        parse_buffer(b"1 1:1\n1 1:2\x00\x00\x00" + b"\x00" * 5000)
    with pytest.raises(ValueError, match="above n_features=3"):
        parse_buffer(b"1 4:1\n", n_features=3)
    monkeypatch.setenv("DDL_LIBSVM_MAX_LINE", str(1 << 20))
    long_line = b"1 " + b" ".join(b"%d:1" % i for i in range(1, 150_000))  # ~1.3 MB
    with pytest.raises(ValueError, match=r"^m: a line longer than 1048576 bytes near byte 106.*"
                                         "DDL_LIBSVM_MAX_LINE"):
        parse_buffer(b"0 1:1\n" + long_line + b"\n", "m", offset=100)
    monkeypatch.delenv("DDL_LIBSVM_MAX_LINE")
    assert parse_buffer(b"0 1:1\n" + long_line + b"\n")[0].tolist()[-1] == 150_000
    with pytest.raises(TypeError):
        parse_buffer("text, not bytes")
    with pytest.raises(ValueError, match="offset -1"):
        parse_buffer(b"", offset=-1)
