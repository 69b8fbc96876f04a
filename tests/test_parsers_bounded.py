"""Bounded parsers (issue 13): IDX and libsvm check lengths against the file's real size
before allocating, refuse special files, and never turn an overflow into inf silently."""
import gzip
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import ddl
from ddl import _C
from ddl.datasets import load_libsvm


def _idx(shape, payload=b""):
    return bytes([0, 0, 8, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape) \
        + payload


def _peak_rss_mb_of(code):
    """Run code in a child; its peak RSS in MiB (so one test's allocation is measured alone).
    VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec."""
    out = subprocess.run([sys.executable, "-c", code + "\nfor ln in open('/proc/self/status'):\n"
                          "    if ln.startswith('VmHWM'):\n        print('RSS', ln.split()[1])\n"],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RSS"))
    return int(line.split()[1]) / 1024, out.stdout


def test_a_small_gzip_with_a_lying_header_is_refused_without_a_big_allocation(tmp_path):
    # 1 GiB of zeros after a header that promises 10 bytes: compresses to ~1 MB
    p = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(p, "wb", compresslevel=9) as f:
        f.write(_idx([10]))
        chunk = b"\0" * (1 << 24)
        for _ in range(64):
            f.write(chunk)
    assert p.stat().st_size < 3 << 20
    rss, out = _peak_rss_mb_of(
        "from ddl import _C\n"
        f"try:\n    _C.idx_load({str(p)!r})\nexcept ValueError as e:\n    print('ERR', e)\n")
    assert "ERR" in out and "oversized" in out
    assert rss < 400, f"peak RSS {rss:.0f} MiB for a 1 MB file"


def test_a_gzip_header_promising_more_than_deflate_can_give_is_refused(tmp_path):
    p = tmp_path / "big-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx([60000, 2800, 2800])))
    with pytest.raises(ValueError, match="impossible IDX data.*can expand to at most"):
        _C.idx_load(str(p))
    p.write_bytes(gzip.compress(_idx([0xFFFFFFFF] * 4)))  # overflows 64 bits
    with pytest.raises(ValueError, match="more than"):
        _C.idx_load(str(p))


def test_a_raw_idx_header_is_checked_against_the_file_size(tmp_path):
    p = tmp_path / "raw-idx1-ubyte"
    p.write_bytes(_idx([1 << 31], b"\x01\x02"))
    with pytest.raises(ValueError, match="truncated IDX data"):
        _C.idx_load(str(p))
    p.write_bytes(_idx([3], b"\x01\x02\x03"))
    assert _C.idx_load(str(p)).tolist() == [1, 2, 3]


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "/dev/urandom", "fifo", "dir"])
def test_special_files_are_refused_at_once(tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # nobody writes it: a blocking open or read would hang
    elif special == "dir":
        special = str(tmp_path)
    elif not os.path.exists(special):
        pytest.skip(f"{special} does not exist here")
    t = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file"):
        _C.idx_load(special)
    with pytest.raises(ValueError, match="not a regular file"):
        load_libsvm(special)
    with pytest.raises(ValueError, match="not a regular file"):
        ddl.load(special)
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("line, where", [
    (b"1 1:1e39 2:3.5e38\n", "1:1e39"), (b"0 3:-3.5e38\n", "3:-3.5e38"),
])
def test_libsvm_float32_overflow_is_a_value_error_naming_file_and_line(tmp_path, line, where):
    p = tmp_path / "big.svm"
    p.write_bytes(b"1 1:2\n" + line)
    with pytest.raises(ValueError, match=rf"{p}:2: value in '{where}' overflows float32"):
        load_libsvm(str(p))
    X, _ = load_libsvm(str(p), dtype=np.float64)  # kept when asked for
    assert np.isfinite(X.data).all() and abs(X.data).max() > 3.4e38


def test_libsvm_largest_float32_still_loads(tmp_path):
    p = tmp_path / "ok.svm"
    p.write_bytes(b"1 1:3.4028234e38 2:-3.4028234e38 3:1e-50\n")
    X, _ = load_libsvm(str(p))
    assert np.isfinite(X.data).all()


def test_libsvm_a_file_of_zeros_fails_at_once_without_reading_it_whole(tmp_path):
    p = tmp_path / "zeros.svm"
    with open(p, "wb") as f:
        f.truncate(512 << 20)  # sparse: 512 MiB of NULs, no newline
    rss, out = _peak_rss_mb_of(
        "from ddl.datasets import load_libsvm\n"
        f"try:\n    load_libsvm({str(p)!r})\nexcept ValueError as e:\n    print('ERR', e)\n")
    assert "ERR" in out and "NUL byte at column 1" in out
    assert rss < 300, f"peak RSS {rss:.0f} MiB"


def test_libsvm_line_cap(tmp_path, monkeypatch):
    p = tmp_path / "long.svm"
    p.write_bytes(b"1 " + b" ".join(b"%d:1" % i for i in range(1, 600000)) + b"\n")
    assert p.stat().st_size > 4 << 20
    monkeypatch.setenv("DDL_LIBSVM_MAX_LINE", str(2 << 20))
    with pytest.raises(ValueError, match="a line longer than 2097152 bytes.*DDL_LIBSVM_MAX_LINE"):
        load_libsvm(str(p))
    monkeypatch.delenv("DDL_LIBSVM_MAX_LINE")
    X, _ = load_libsvm(str(p))
    assert X.nnz == 599999

