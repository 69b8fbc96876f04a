"""Binary shards: save_shards(X, y, dir, n) writes rows as n files; ShardedDataset(dir) opens
this rank's files memory-mapped, so a data set larger than memory is never read whole and each
rank touches only its part.

    save_shards(X, y, "data/train", 8)           # once, anywhere
    ds = ShardedDataset("data/train")            # under ddl.run: this rank's shards only
    X, y = ds.load()                             # this rank's rows (views when one shard)

The format is specified in docs/ml.md ("Shard format"); in short, a directory with
manifest.json and shard-NNNNN-GEN.ddlshard files, each a 32-byte preamble (magic b"DDLSHARD",
version, header length, header CRC-32), a JSON header, then 64-byte-aligned little-endian
arrays, each with its CRC-32 in the header. A truncated or corrupted shard raises ValueError
naming the file and what is wrong.

A save is atomic: the shards of a new generation GEN are written under new names and fsynced,
then one atomic rename installs a manifest that names the generation and holds every shard's
header CRC-32 (which covers its arrays' CRCs) and a SHA-256 of itself; only then are the old
generation's files removed. A reader sees the old data set or the new one, never a mix; a
crash mid-save leaves the old one (and orphan files that the next save removes).
"""
import hashlib
import json
import os
import re
import secrets
import struct
import zlib

import numpy as np

from .. import _fsspec
from ..serialization import _write_atomic, read_regular, safe_dtype
from ..sparse import CSRMatrix, issparse, vstack

MAGIC = b"DDLSHARD"
VERSION = 2  # of the manifest; 1 (no generation, no checksums) is still read
SHARD_VERSION = 1  # of a shard file's preamble
MANIFEST = "manifest.json"
_PREAMBLE = struct.Struct("<8sIII12x")  # magic, version, header length, header crc32: 32 bytes
_ALIGN = 64


def _pad(n):
    return -n % _ALIGN


def _le(dtype):
    """The little-endian twin of a numeric NumPy dtype (the format stores only those)."""
    d = np.dtype(dtype)
    if d.kind not in "biuf":
        raise TypeError(f"save_shards: arrays must be numeric, not {d}")
    return d.newbyteorder("<") if d.itemsize > 1 else d


def _data_start(header_len):
    """Where the data section begins: the first multiple of 64 after the header."""
    n = _PREAMBLE.size + header_len
    return n + _pad(n)


def _write_shard(path, rows, cols, kind, arrays, generation):
    """arrays: [(name, ndarray)] written in order, to a new file, fsynced; returns
    (file size, CRC-32 of the header)."""
    arrays = [(name, np.ascontiguousarray(a, dtype=_le(a.dtype))) for name, a in arrays]
    specs, off = {}, 0
    for name, a in arrays:  # offsets count from the start of the data section
        specs[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": off,
                       "nbytes": a.nbytes, "crc32": zlib.crc32(a.reshape(-1).view(np.uint8))}
        off += a.nbytes + _pad(a.nbytes)
    raw = json.dumps({"rows": rows, "cols": cols, "kind": kind, "arrays": specs,
                      "generation": generation}, sort_keys=True).encode()
    with open(path, "xb") as f:
        f.write(_PREAMBLE.pack(MAGIC, SHARD_VERSION, len(raw), zlib.crc32(raw)))
        f.write(raw)
        f.write(b"\0" * (_data_start(len(raw)) - _PREAMBLE.size - len(raw)))
        for _, a in arrays:
            f.write(a.reshape(-1).view(np.uint8).data)
            f.write(b"\0" * _pad(a.nbytes))
        size = f.tell()
        f.flush()
        os.fsync(f.fileno())
    return size, zlib.crc32(raw)


_SHARD_FILE = re.compile(r"shard-\d{5}(-[0-9a-f]{16})?\.ddlshard(\.tmp)?")


def _manifest_sum(m):
    """SHA-256 of the manifest's canonical JSON without its own "sha256" key."""
    body = {k: v for k, v in m.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def _remove_unreferenced(dir, keep):
    """Delete shard files of other generations (an older save, or a crashed one)."""
    for name in os.listdir(dir):
        if _SHARD_FILE.fullmatch(name) and name not in keep:
            try:
                os.remove(os.path.join(dir, name))
            except FileNotFoundError:
                pass


def save_shards(X, y, dir, n):
    """Write rows of X (a dense 2-D array, a CSRMatrix or a SciPy sparse matrix) and y (a 1-D
    numeric array of the same length, or None) as n shard files of consecutive rows (sizes
    differ by at most one) under `dir`, replacing shards saved there before. Returns the
    manifest (a dict)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"save_shards: n must be >= 1, got {n}")
    sparse = isinstance(X, CSRMatrix) or issparse(X)
    if sparse:
        X = X if isinstance(X, CSRMatrix) else CSRMatrix.from_scipy(X)
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"save_shards: X must be 2-D, got shape {X.shape}")
    rows, cols = X.shape
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != rows:
            raise ValueError(f"save_shards: y has shape {y.shape}, expected ({rows},)")
        _le(y.dtype)
    os.makedirs(dir, exist_ok=True)
    try:
        old = _read_manifest(dir, missing_ok=True)
    except ValueError:
        old = None  # a corrupt manifest is replaced like any other
    keep = {str(sh.get("file")) for sh in (old or {}).get("shards", []) if isinstance(sh, dict)}
    _remove_unreferenced(dir, keep)  # orphans of a crashed save
    generation = secrets.token_hex(8)
    shards = []
    for i in range(n):
        lo, hi = rows * i // n, rows * (i + 1) // n
        if sparse:
            part = X[lo:hi]
            arrays = [("indptr", part.indptr), ("indices", part.indices), ("data", part.data)]
        else:
            arrays = [("X", X[lo:hi])]
        if y is not None:
            arrays.append(("y", y[lo:hi]))
        name = f"shard-{i:05d}-{generation}.ddlshard"
        size, hcrc = _write_shard(os.path.join(dir, name), hi - lo, cols,
                                  "csr" if sparse else "dense", arrays, generation)
        shards.append({"file": name, "rows": hi - lo, "row_start": lo, "bytes": size,
                       "header_crc32": hcrc})
    manifest = {"format": "ddl-shards", "version": VERSION, "generation": generation,
                "kind": "csr" if sparse else "dense", "n_rows": rows, "n_cols": cols,
                "x_dtype": (X.dtype if sparse else _le(X.dtype)).str,
                "y_dtype": None if y is None else _le(y.dtype).str, "shards": shards}
    manifest["sha256"] = _manifest_sum(manifest)
    raw = json.dumps(manifest, indent=1).encode()
    _write_atomic(os.path.join(dir, MANIFEST), lambda f: f.write(raw))  # the commit point
    _remove_unreferenced(dir, {s["file"] for s in shards})
    return manifest


def _join(dir, name):
    if _fsspec.is_url(dir):
        return dir.rstrip("/") + "/" + name
    return os.path.join(dir, name)


_MANIFEST_CAP = 64 << 20  # a manifest is ~100 bytes a shard: more is not a manifest


def _read_url(url):
    fs, p = _fsspec.filesystem(url)
    if not fs.exists(p):
        raise FileNotFoundError(url)
    if fs.isdir(p):
        raise ValueError(f"ShardedDataset: {url} is a folder, not a manifest")
    if _fsspec.size(fs, p) > _MANIFEST_CAP:
        raise ValueError(f"ShardedDataset: {url} is larger than {_MANIFEST_CAP} bytes: not a "
                         "shard manifest")
    return _fsspec.read_file(url)


def _read_manifest(dir, missing_ok=False):
    path = _join(dir, MANIFEST)
    try:
        raw = _read_url(path) if _fsspec.is_url(path) else read_regular(path, "ShardedDataset")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path}: no shard manifest (write shards with "
                                "ddl.data.save_shards)") from None
    try:
        m = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt manifest (not JSON: {e})") from None
    why = _manifest_problem(m)
    if why:
        raise ValueError(f"{path}: corrupt manifest ({why})")
    return m


def _is_int(v):
    return type(v) is int and v >= 0


def _manifest_problem(m):
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(m, dict):
        return f"a {type(m).__name__}, not an object"
    if m.get("format") != "ddl-shards":
        return "not a ddl-shards manifest"
    version = m.get("version")
    if version not in (1, 2) or type(version) is not int:
        return f"format version {version!r} (this ddl reads 1 and {VERSION})"
    if version >= 2:
        if m.get("sha256") != _manifest_sum(m):
            return "checksum mismatch (the manifest is corrupted)"
        if not isinstance(m.get("generation"), str):
            return "no generation id"
    if m.get("kind") not in ("dense", "csr"):
        return f"kind {m.get('kind')!r}"
    if not _is_int(m.get("n_rows")) or not _is_int(m.get("n_cols")):
        return "n_rows / n_cols are not counts"
    for key in ("x_dtype", "y_dtype"):
        v = m.get(key)
        if v is None and key == "y_dtype":
            continue
        if safe_dtype(v) is None:
            return f"{key} {v!r} is not a numeric dtype"
    shards = m.get("shards")
    if not isinstance(shards, list):
        return "no shard list"
    total = 0
    for i, sh in enumerate(shards):
        if not isinstance(sh, dict) or not isinstance(sh.get("file"), str) or \
                not _is_int(sh.get("rows")) or not _is_int(sh.get("bytes")):
            return f"shard entry {i} lacks file / rows / bytes"
        if os.path.basename(sh["file"]) != sh["file"] or not sh["file"]:
            return f"shard file {sh['file']!r}"
        if version >= 2 and not _is_int(sh.get("header_crc32")):
            return f"shard entry {i} has no header checksum"
        total += sh["rows"]
    if total != m["n_rows"]:
        return f"the shards hold {total} rows, n_rows says {m['n_rows']}"
    return None


class _Mapped:
    """A local shard: byte ranges are views of one read-only memory map."""

    def __init__(self, path):
        self.size = os.path.getsize(path)
        self._mm = np.memmap(path, dtype=np.uint8, mode="r") if self.size else None

    def read(self, a, b):
        return self._mm[a:b]

    def close(self):
        pass


class _Ranged:
    """A shard behind an fsspec URL: each byte range is one seek + read of that range only."""

    def __init__(self, url):
        fs, p = _fsspec.filesystem(url)
        self.size = _fsspec.size(fs, p)
        self._f = fs.open(p, "rb")

    def read(self, a, b):
        self._f.seek(a)
        raw = self._f.read(b - a)
        if len(raw) != b - a:
            raise ValueError(f"short read ({len(raw)} of {b - a} bytes at offset {a})")
        return np.frombuffer(raw, dtype=np.uint8)

    def close(self):
        self._f.close()


def _open_shard(path, entry, expect_cols, kind, verify, generation):
    """(X, y or None) from one shard file (memory-mapped; read into memory for a URL), checked
    against its manifest entry (rows, bytes, and for a version-2 manifest the header CRC-32 and
    the generation)."""
    src = _Ranged(path) if _fsspec.is_url(path) else _Mapped(path)
    try:
        return _check_shard(path, src, entry, expect_cols, kind, verify, generation)
    finally:
        src.close()


def _check_shard(path, src, entry, expect_cols, kind, verify, generation):
    expect_rows, expect_bytes = entry["rows"], entry["bytes"]
    size = src.size
    if size < _PREAMBLE.size:
        raise ValueError(f"{path}: truncated shard ({size} bytes, not even a header)")
    magic, version, hlen, hcrc = _PREAMBLE.unpack(bytes(src.read(0, _PREAMBLE.size)))
    if magic != MAGIC:
        raise ValueError(f"{path}: not a ddl shard (bad magic {magic!r})")
    if version != SHARD_VERSION:
        raise ValueError(f"{path}: shard format version {version} (this ddl reads "
                         f"{SHARD_VERSION})")
    if _PREAMBLE.size + hlen > size:
        raise ValueError(f"{path}: truncated shard (header of {hlen} bytes in {size})")
    raw = bytes(src.read(_PREAMBLE.size, _PREAMBLE.size + hlen))
    if zlib.crc32(raw) != hcrc:
        raise ValueError(f"{path}: corrupted shard header (CRC-32 mismatch)")
    if "header_crc32" in entry and entry["header_crc32"] != hcrc:
        raise ValueError(f"{path}: the shard is not the one the manifest names (header "
                         "CRC-32 differs: a file of another save?)")
    try:
        header = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupted shard header ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), dict):
        raise ValueError(f"{path}: corrupted shard header (no array table)")  # noqa: TRY004
    if generation is not None and header.get("generation") != generation:
        raise ValueError(f"{path}: shard of generation {header.get('generation')!r}, the "
                         f"manifest's is {generation!r} (a mix of two saves)")
    base = _data_start(hlen)
    if size != expect_bytes:
        raise ValueError(f"{path}: {'truncated' if size < expect_bytes else 'oversized'} shard: "
                         f"{size} bytes, the manifest says {expect_bytes}")
    got = (header.get("rows"), header.get("cols"), header.get("kind"))
    if got != (expect_rows, expect_cols, kind):
        raise ValueError(f"{path}: the shard holds {got[0]}x{got[1]} {got[2]} rows; the "
                         f"manifest says {expect_rows}x{expect_cols} {kind}")
    arrays = {}
    for name, s in header["arrays"].items():
        try:
            dt = safe_dtype(s["dtype"])
            if dt is None:
                raise ValueError(f"dtype {s['dtype']!r}")
            shape = tuple(int(v) for v in s["shape"])
            off, nbytes, crc = base + int(s["offset"]), int(s["nbytes"]), s["crc32"]
            if dt.kind not in "biuf" or dt.fields is not None or any(v < 0 for v in shape):
                raise ValueError(f"dtype {dt} / shape {shape}")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: corrupted shard header (array {name!r}: {e!r})") from None
        if off % _ALIGN or off < base or nbytes < 0 or off + nbytes > size or \
                nbytes != dt.itemsize * int(np.prod(shape, dtype=object)):
            raise ValueError(f"{path}: array {name!r} does not fit the file (truncated?)")
        view = src.read(off, off + nbytes)
        if verify and zlib.crc32(view) != crc:
            raise ValueError(f"{path}: corrupted data in array {name!r} (CRC-32 mismatch)")
        arrays[name] = view.view(dt).reshape(shape)
    try:
        if kind == "csr":
            X = CSRMatrix(arrays["data"], arrays["indices"], arrays["indptr"],
                          (expect_rows, expect_cols), check=verify)
        else:
            X = arrays["X"]
            if X.shape != (expect_rows, expect_cols):
                raise ValueError(f"X has shape {X.shape}")
        y = arrays.get("y")
        if y is not None and y.shape != (expect_rows,):
            raise ValueError(f"y has shape {y.shape}")
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: corrupt shard ({e!r})") from None
    return X, y


def _exists(path):
    if _fsspec.is_url(path):
        fs, p = _fsspec.filesystem(path)
        return fs.exists(p)
    return os.path.exists(path)


def _my_shards(n_shards, rank, world_size):
    return range(n_shards * rank // world_size, n_shards * (rank + 1) // world_size)


_OPEN_ATTEMPTS = 20  # see ShardedDataset.__init__


class ShardedDataset:
    """This rank's shards of a save_shards directory, memory-mapped (or an fsspec URL of one:
    only this rank's shards are fetched, with ranged reads).

    rank/world_size default to the process group (or 0/1): rank r opens shards
    [r*n/w, (r+1)*n/w) of the n, consecutive rows in file order, so the ranks together cover
    every row once (save at least as many shards as there will be ranks, or some get none).
    verify=True checks every opened array's CRC-32 (reading each shard once); False checks
    only the header and the sizes.

    len(ds) and ds[i] cover this rank's rows: ds[i] is (x_i, y_i) with x_i a dense 1-D array
    (a CSR row densified), so a ddl.data.DataLoader can batch it. ds.load() gives (X, y) of
    all this rank's rows; ds.parts holds each opened shard's (X, y).
    """

    def __init__(self, dir, rank=None, world_size=None, verify=True):
        if (rank is None) != (world_size is None):
            raise ValueError("ShardedDataset: pass both rank and world_size, or neither")
        if rank is None:
            from .. import distributed as dist

            rank, world_size = (dist.get_rank(), dist.get_world_size()) if \
                dist.is_initialized() else (0, 1)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"ShardedDataset: rank {rank} is outside [0, {world_size})")
        for attempt in range(_OPEN_ATTEMPTS):
            m = _read_manifest(dir)
            try:
                self._open(dir, m, rank, world_size, verify)
                break
            except FileNotFoundError:
                # a save committed a new generation (and removed the old files) between our
                # reading the manifest and opening the shards: read the new one. Only a moving
                # generation retries (a writer making progress), so a damaged data set fails at
                # once; a reader racing a tight loop of saves gets several tries.
                if attempt == _OPEN_ATTEMPTS - 1 or \
                        _read_manifest(dir).get("generation") == m.get("generation"):
                    raise
        sizes = [x.shape[0] for x, _ in self.parts]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def _open(self, dir, m, rank, world_size, verify):
        self.dir, self.manifest = dir, m
        self.kind, self.n_rows, self.n_features = m["kind"], int(m["n_rows"]), int(m["n_cols"])
        self.shard_ids = list(_my_shards(len(m["shards"]), rank, world_size))
        self.parts = []
        for i in self.shard_ids:
            s = m["shards"][i]
            path = _join(dir, s["file"])
            if not _exists(path):
                raise FileNotFoundError(f"{path}: shard {i} is missing")
            self.parts.append(_open_shard(path, s, self.n_features, self.kind, verify,
                                          m.get("generation")))

    def __len__(self):
        return int(self._starts[-1])

    def __getitem__(self, i):
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"ShardedDataset: index {i} is out of range for {n} rows")
        i %= n
        p = int(np.searchsorted(self._starts, i, side="right")) - 1
        X, y = self.parts[p]
        r = i - int(self._starts[p])
        x = X[r].toarray()[0] if self.kind == "csr" else np.asarray(X[r])
        return (x, None if y is None else y[r])

    def load(self):
        """(X, y) of this rank's rows: the memory-mapped arrays themselves for one shard, a
        concatenated copy for several."""
        if len(self.parts) == 1:
            return self.parts[0]
        if not self.parts:  # more ranks than shards: an empty share of the right types
            dt, ydt = np.dtype(self.manifest["x_dtype"]), self.manifest.get("y_dtype")
            X = CSRMatrix(np.zeros(0, dt), np.zeros(0, np.int64), np.zeros(1, np.int64),
                          (0, self.n_features)) if self.kind == "csr" else \
                np.zeros((0, self.n_features), dt)
            return X, None if ydt is None else np.zeros(0, np.dtype(ydt))
        ys = [y for _, y in self.parts]
        y = None if ys[0] is None else np.concatenate(ys)
        if self.kind == "csr":
            return vstack([x for x, _ in self.parts]), y
        return np.concatenate([x for x, _ in self.parts]), y


__all__ = ["ShardedDataset", "save_shards"]
