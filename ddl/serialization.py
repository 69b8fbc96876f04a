"""ddl.save / ddl.load: a data-only checkpoint format (no pickle: nothing executes on load).

A file holds one object tree of dicts, lists, tuples, tensors, NumPy arrays, numbers, strings,
bytes, booleans and None. It is written to a temporary file in the same folder, fsynced and
renamed over the target, so a crash leaves either the old file or the new one, never half of
one. A SHA-256 checksum over the whole file makes a truncated or corrupted file a clear
ValueError. The byte layout is specified in docs/checkpoint-format.md:

    magic     b"DDLCKPT1"
    u64 LE    header length H
    H bytes   UTF-8 JSON: {"version": 1, "root": <tree>, "blobs": [...]}
    padding   zeros to a multiple of 64
    blobs     the arrays' raw little-endian bytes, each at a 64-byte aligned offset
    trailer   b"DDLSUM01" + u64 LE length of everything before the trailer + 32-byte SHA-256
              of everything before the trailer
"""
import base64
import hashlib
import json
import math
import os
import struct
import tempfile

import numpy as np

from . import _C
from ._tensor import Tensor

MAGIC = b"DDLCKPT1"
TRAILER = b"DDLSUM01"
_TRAILER_SIZE = len(TRAILER) + 8 + 32
_ALIGN = 64
_NUMPY_KINDS = "biuf"  # bool, signed/unsigned ints, floats: plain numeric data only


def _align(n):
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class _Writer:
    def __init__(self):
        self.blobs = []  # (array, meta)
        self.offset = 0

    def blob(self, arr):
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d arrays 1-d)
            arr = arr.copy(order="C")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        meta = {"dtype": arr.dtype.str, "shape": list(arr.shape), "offset": self.offset,
                "nbytes": int(arr.nbytes)}
        self.blobs.append((arr, meta))
        self.offset = _align(self.offset + arr.nbytes)
        return len(self.blobs) - 1

    def encode(self, obj, where="root"):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            if not -(2**63) <= obj < 2**64:
                return {"__bigint__": str(obj)}
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {"__float__": repr(obj)}
        if isinstance(obj, Tensor):
            i = self.blob(obj.detach().contiguous().numpy())
            return {"__tensor__": i, "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in _NUMPY_KINDS:
                raise TypeError(f"ddl.save: {where}: arrays of dtype {obj.dtype} cannot be "
                                "saved (numeric and bool dtypes only)")
            return {"__ndarray__": self.blob(obj)}
        if isinstance(obj, np.generic):
            return self.encode(obj.item(), where)
        if isinstance(obj, bytes):
            return {"__bytes__": base64.b64encode(obj).decode("ascii")}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
                return {k: self.encode(v, f"{where}[{k!r}]") for k, v in obj.items()}
            return {"__dict__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")]
                                 for k, v in obj.items()]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        raise TypeError(f"ddl.save: {where}: objects of type {type(obj).__name__} cannot be "
                        "saved (tensors, arrays, numbers, strings, bytes, dicts, lists, tuples "
                        "and None only)")


def _to_bytes(obj):
    w = _Writer()
    root = w.encode(obj)
    header = json.dumps({"version": 1, "root": root, "blobs": [m for _, m in w.blobs]},
                        separators=(",", ":"), allow_nan=False).encode("utf-8")
    head = MAGIC + struct.pack("<Q", len(header)) + header
    head += b"\0" * (_align(len(head)) - len(head))
    return head, w.blobs


def save(obj, f, *args, **kwargs):
    """ddl.save(obj, path_or_fileobj): PyTorch's calling convention, ddl's data-only format.

    A path is written atomically (temp file, fsync, rename; see the module docstring); a
    writable binary file object (io.BytesIO, open(..., "wb")) gets the same bytes.
    PyTorch's pickle_module/pickle_protocol/_use_new_zipfile_serialization are accepted and
    ignored (nothing is pickled). Modules, optimizers and schedulers are refused with what to
    save instead: their state_dict().
    """
    _refuse_objects(obj, "obj")
    for k in kwargs:
        if k not in _TORCH_SAVE_KW:
            raise TypeError(f"ddl.save() got an unexpected keyword argument {k!r}")
    if len(args) > 2:
        raise TypeError("ddl.save(obj, f): too many positional arguments")
    if hasattr(f, "write") and not isinstance(f, (str, bytes, os.PathLike)):
        return _save_to_fileobj(obj, f)
    return _save_path(obj, f)


def _load_args(f, map_location, weights_only, kwargs):
    """Check load's PyTorch-convention arguments; every tensor loads on the CPU."""
    from ._device import check

    for k in kwargs:
        if k not in ("mmap", "pickle_module", "encoding"):
            raise TypeError(f"ddl.load() got an unexpected keyword argument {k!r}")
    if isinstance(map_location, dict):
        for d in map_location.values():
            check(d, "ddl.load(map_location=...)")
    elif map_location is not None and not callable(map_location):
        check(map_location, "ddl.load(map_location=...)")
    if weights_only not in (True, False, None):
        raise TypeError(f"ddl.load: weights_only must be a bool, got {weights_only!r}")


_TORCH_SAVE_KW = ("pickle_module", "pickle_protocol", "_use_new_zipfile_serialization",
                  "_disable_byteorder_record")


def _refuse_objects(obj, where, depth=0):
    """Whole modules, optimizers and schedulers are code, not data: say what to save instead."""
    if depth > 50:
        return
    cls = type(obj)
    names = {c.__module__ + "." + c.__name__ for c in cls.__mro__}
    if "ddl.nn.module.Module" in names:
        raise TypeError(
            f"ddl.save: {where} is a whole module ({cls.__name__}); ddl saves data, not code "
            "(no pickle). Save its weights instead: ddl.save(model.state_dict(), path), and "
            "restore with model.load_state_dict(ddl.load(path)) on a model built by your code")
    if "ddl.optim.optimizer.Optimizer" in names or any("lr_scheduler" in n for n in names):
        raise TypeError(
            f"ddl.save: {where} is a {cls.__name__} object; save its state instead: "
            f"ddl.save({{'optimizer': opt.state_dict(), ...}}, path), then "
            "opt.load_state_dict(ckpt['optimizer'])")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _refuse_objects(v, f"{where}[{k!r}]", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _refuse_objects(v, f"{where}[{i}]", depth + 1)


def _save_to_fileobj(obj, fileobj):
    # the bytes of a file save, written to the caller's stream
    folder = tempfile.mkdtemp(prefix="ddl-save-")
    try:
        path = os.path.join(folder, "ckpt")
        _save_path(obj, path)
        with open(path, "rb") as fh:
            fileobj.write(fh.read())
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


def _save_path(obj, f):
    path = os.fspath(f)
    head, blobs = _to_bytes(obj)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ddl-save-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            sha = hashlib.sha256()
            total = 0

            def write(b):
                nonlocal total
                out.write(b)
                sha.update(b)
                total += len(b)

            write(head)
            data_start = total
            for arr, meta in blobs:
                pad = data_start + meta["offset"] - total
                if pad:
                    write(b"\0" * pad)
                write(memoryview(arr).cast("B") if arr.nbytes else b"")
            out.write(TRAILER + struct.pack("<Q", total) + sha.digest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _corrupt(path, why):
    return ValueError(f"ddl.load: {path} is not a valid ddl checkpoint: {why}")


def load(f, map_location=None, weights_only=True, **kwargs):
    """ddl.load(path_or_fileobj, map_location=None, weights_only=True): PyTorch's convention.

    Reads an object written by ddl.save. Tensors come back as ddl tensors (with their
    requires_grad flag), arrays as NumPy arrays. Truncated or corrupted files raise ValueError
    naming the file; nothing in the file is executed, whatever weights_only says (the format
    holds data only). map_location may name the CPU (or cuda under DDL_CUDA_AS_CPU), map
    devices in a dict, or be a callable: every tensor loads on the CPU either way.
    """
    _load_args(f, map_location, weights_only, kwargs)
    if hasattr(f, "read") and not isinstance(f, (str, bytes, os.PathLike)):
        data = f.read()
        folder = tempfile.mkdtemp(prefix="ddl-load-")
        path = os.path.join(folder, "ckpt")
        try:
            with open(path, "wb") as out:
                out.write(data)
            return _load_path(path)
        finally:
            if os.path.exists(path):
                os.unlink(path)
            os.rmdir(folder)
    return _load_path(f)


def _load_path(f):
    path = os.fspath(f)
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < len(MAGIC) + 8 + _TRAILER_SIZE or data[: len(MAGIC)] != MAGIC:
        raise _corrupt(path, "bad magic number or too short")
    trailer = data[-_TRAILER_SIZE:]
    if trailer[: len(TRAILER)] != TRAILER:
        raise _corrupt(path, "the file is truncated (no trailer)")
    (length,) = struct.unpack("<Q", trailer[len(TRAILER): len(TRAILER) + 8])
    body = data[:-_TRAILER_SIZE]
    if length != len(body):
        raise _corrupt(path, f"the file is truncated ({len(body)} of {length} bytes)")
    if hashlib.sha256(body).digest() != trailer[-32:]:
        raise _corrupt(path, "checksum mismatch (the file is corrupted)")
    (hlen,) = struct.unpack("<Q", body[len(MAGIC): len(MAGIC) + 8])
    try:
        header = json.loads(body[len(MAGIC) + 8: len(MAGIC) + 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"unreadable header ({e})") from None
    if header.get("version") != 1:
        raise _corrupt(path, f"unsupported format version {header.get('version')!r}")
    data_start = _align(len(MAGIC) + 8 + hlen)
    blobs = header["blobs"]

    def array(i):
        m = blobs[i]
        dt = np.dtype(m["dtype"])
        if dt.kind not in _NUMPY_KINDS:
            raise _corrupt(path, f"blob {i} has dtype {dt}")
        start = data_start + m["offset"]
        end = start + m["nbytes"]
        if end > len(body) or m["nbytes"] != dt.itemsize * int(np.prod(m["shape"], dtype=np.int64)):
            raise _corrupt(path, f"blob {i} lies outside the file or has the wrong size")
        return np.frombuffer(body, dtype=dt, count=int(np.prod(m["shape"], dtype=np.int64)),
                             offset=start).reshape(m["shape"]).copy()

    def decode(x):
        if isinstance(x, list):
            return [decode(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            a = array(x["__tensor__"])
            t = _tensor_from(a)
            return t.requires_grad_() if x.get("requires_grad") else t
        if "__ndarray__" in x:
            return array(x["__ndarray__"])
        if "__tuple__" in x:
            return tuple(decode(v) for v in x["__tuple__"])
        if "__dict__" in x:
            return {_key(decode(k)): decode(v) for k, v in x["__dict__"]}
        if "__bytes__" in x:
            return base64.b64decode(x["__bytes__"])
        if "__float__" in x:
            return float(x["__float__"])
        if "__bigint__" in x:
            return int(x["__bigint__"])
        return {k: decode(v) for k, v in x.items()}

    return decode(header["root"])


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def _tensor_from(a):
    codes = {np.dtype(np.float32): _C.FLOAT32, np.dtype(np.float64): _C.FLOAT64,
             np.dtype(np.int64): _C.INT64, np.dtype(np.bool_): _C.BOOL}
    code = codes.get(a.dtype)
    if code is None:
        raise ValueError(f"ddl.load: a tensor of dtype {a.dtype} is not a ddl dtype")
    t = _C.full(a.shape, None, code)
    np.asarray(memoryview(t))[...] = a
    return t


__all__ = ["load", "save"]
