"""Binary shards: save_shards(X, y, dir, n) writes rows as n files; ShardedDataset(dir) opens
this rank's files memory-mapped, so a data set larger than memory is never read whole and each
rank touches only its part.

    save_shards(X, y, "data/train", 8)           # once, anywhere
    ds = ShardedDataset("data/train")            # under ddl.run: this rank's shards only
    X, y = ds.load()                             # this rank's rows (views when one shard)

The format (version 1) is specified in docs/ml.md ("Shard format"); in short, a directory with
manifest.json and shard-NNNNN.ddlshard files, each a 32-byte preamble (magic b"DDLSHARD",
version, header length, header CRC-32), a JSON header, then 64-byte-aligned little-endian
arrays, each with its CRC-32 in the header. A truncated or corrupted shard raises ValueError
naming the file and what is wrong.
"""
import json
import os
import struct
import zlib

import numpy as np

from ..sparse import CSRMatrix, issparse, vstack

MAGIC = b"DDLSHARD"
VERSION = 1
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


def _write_shard(path, rows, cols, kind, arrays):
    """arrays: [(name, ndarray)] written in order; returns the file size."""
    arrays = [(name, np.ascontiguousarray(a, dtype=_le(a.dtype))) for name, a in arrays]
    specs, off = {}, 0
    for name, a in arrays:  # offsets count from the start of the data section
        specs[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": off,
                       "nbytes": a.nbytes, "crc32": zlib.crc32(a.reshape(-1).view(np.uint8))}
        off += a.nbytes + _pad(a.nbytes)
    raw = json.dumps({"rows": rows, "cols": cols, "kind": kind, "arrays": specs},
                     sort_keys=True).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_PREAMBLE.pack(MAGIC, VERSION, len(raw), zlib.crc32(raw)))
        f.write(raw)
        f.write(b"\0" * (_data_start(len(raw)) - _PREAMBLE.size - len(raw)))
        for _, a in arrays:
            f.write(a.reshape(-1).view(np.uint8).data)
            f.write(b"\0" * _pad(a.nbytes))
        size = f.tell()
    os.replace(tmp, path)
    return size


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
    old = _read_manifest(dir, missing_ok=True)
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
        name = f"shard-{i:05d}.ddlshard"
        size = _write_shard(os.path.join(dir, name), hi - lo, cols,
                            "csr" if sparse else "dense", arrays)
        shards.append({"file": name, "rows": hi - lo, "row_start": lo, "bytes": size})
    manifest = {"format": "ddl-shards", "version": VERSION, "kind": "csr" if sparse else "dense",
                "n_rows": rows, "n_cols": cols,
                "x_dtype": (X.dtype if sparse else _le(X.dtype)).str,
                "y_dtype": None if y is None else _le(y.dtype).str, "shards": shards}
    tmp = os.path.join(dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(dir, MANIFEST))
    if old:  # shards of an earlier save that this one did not overwrite
        keep = {s["file"] for s in shards}
        for s in old.get("shards", []):
            name = str(s.get("file", ""))
            if name not in keep and os.path.basename(name) == name and name.endswith(".ddlshard"):
                try:
                    os.remove(os.path.join(dir, name))
                except FileNotFoundError:
                    pass
    return manifest


def _read_manifest(dir, missing_ok=False):
    path = os.path.join(dir, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path}: no shard manifest (write shards with "
                                "ddl.data.save_shards)") from None
    try:
        m = json.loads(raw.decode())
        if m.get("format") != "ddl-shards":
            raise ValueError("not a ddl-shards manifest")
        if m.get("version") != VERSION:
            raise ValueError(f"format version {m.get('version')} (this ddl reads {VERSION})")
        for s in m["shards"]:
            int(s["rows"]), int(s["bytes"]), str(s["file"])
        int(m["n_rows"]), int(m["n_cols"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt manifest ({e})") from None
    return m


def _open_shard(path, expect_rows, expect_cols, expect_bytes, kind, verify):
    """(X, y or None) memory-mapped from one shard file, checked."""
    size = os.path.getsize(path)
    if size < _PREAMBLE.size:
        raise ValueError(f"{path}: truncated shard ({size} bytes, not even a header)")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    magic, version, hlen, hcrc = _PREAMBLE.unpack(bytes(mm[:_PREAMBLE.size]))
    if magic != MAGIC:
        raise ValueError(f"{path}: not a ddl shard (bad magic {magic!r})")
    if version != VERSION:
        raise ValueError(f"{path}: shard format version {version} (this ddl reads {VERSION})")
    if _PREAMBLE.size + hlen > size:
        raise ValueError(f"{path}: truncated shard (header of {hlen} bytes in {size})")
    raw = bytes(mm[_PREAMBLE.size:_PREAMBLE.size + hlen])
    if zlib.crc32(raw) != hcrc:
        raise ValueError(f"{path}: corrupted shard header (CRC-32 mismatch)")
    try:
        header = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupted shard header ({e})") from None
    base = _data_start(hlen)
    if size != expect_bytes:
        raise ValueError(f"{path}: {'truncated' if size < expect_bytes else 'oversized'} shard: "
                         f"{size} bytes, the manifest says {expect_bytes}")
    if (header.get("rows"), header.get("cols"), header.get("kind")) != (expect_rows, expect_cols, kind):
        raise ValueError(f"{path}: the shard holds {header['rows']}x{header['cols']} "
                         f"{header['kind']} rows; the manifest says {expect_rows}x{expect_cols} "
                         f"{kind}")
    arrays = {}
    for name, s in header["arrays"].items():
        dt = np.dtype(s["dtype"])
        shape = tuple(int(v) for v in s["shape"])
        off, nbytes = base + int(s["offset"]), int(s["nbytes"])
        if off % _ALIGN or off + nbytes > size or nbytes != dt.itemsize * int(np.prod(shape)):
            raise ValueError(f"{path}: array {name!r} does not fit the file (truncated?)")
        view = mm[off:off + nbytes]
        if verify and zlib.crc32(view) != s["crc32"]:
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
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: corrupt shard ({e})") from None
    return X, arrays.get("y")


def _my_shards(n_shards, rank, world_size):
    return range(n_shards * rank // world_size, n_shards * (rank + 1) // world_size)


class ShardedDataset:
    """This rank's shards of a save_shards directory, memory-mapped.

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
        m = _read_manifest(dir)
        self.dir, self.manifest = dir, m
        self.kind, self.n_rows, self.n_features = m["kind"], int(m["n_rows"]), int(m["n_cols"])
        self.shard_ids = list(_my_shards(len(m["shards"]), rank, world_size))
        self.parts = []
        for i in self.shard_ids:
            s = m["shards"][i]
            name = str(s["file"])
            if os.path.basename(name) != name:
                raise ValueError(f"{os.path.join(dir, MANIFEST)}: corrupt manifest (shard file "
                                 f"{name!r})")
            path = os.path.join(dir, name)
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: shard {i} is missing")
            self.parts.append(_open_shard(path, int(s["rows"]), self.n_features,
                                          int(s["bytes"]), self.kind, verify))
        sizes = [x.shape[0] for x, _ in self.parts]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

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
