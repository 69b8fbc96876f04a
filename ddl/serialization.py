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
import re
import secrets
import socket
import struct

import numpy as np

from . import _C
from ._tensor import Tensor

MAGIC = b"DDLCKPT1"
TRAILER = b"DDLSUM01"
_TRAILER_SIZE = len(TRAILER) + 8 + 32
_ALIGN = 64
_NUMPY_KINDS = "biuf"  # bool, signed/unsigned ints, floats: plain numeric data only
MAX_DEPTH = 100  # nesting of dicts/lists/tuples a file may hold (deeper: ValueError both ways)
_TMP_PREFIX = ".ddl-save-"


_DTYPE_STR = re.compile(r"[<>|=]?[biuf][1-9][0-9]?")


def safe_dtype(v):
    """np.dtype of a file's dtype string, or None: only plain numeric codes ("<f4", "|b1") are
    parsed (np.dtype on arbitrary text can raise SyntaxError, or build structured dtypes)."""
    if not isinstance(v, str) or not _DTYPE_STR.fullmatch(v):
        return None
    try:
        return np.dtype(v)
    except TypeError:
        return None


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

    def encode(self, obj, where="root", depth=0):
        if depth > MAX_DEPTH:
            raise ValueError(f"ddl.save: {where}: nested deeper than {MAX_DEPTH} levels")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            if not -(2**63) <= obj < 2**64:
                # hex: not subject to Python's 4300-digit limit on int <-> decimal str
                return {"__bigint__": ("-0x" if obj < 0 else "0x") + format(abs(obj), "x")}
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {"__float__": repr(obj)}
        if isinstance(obj, Tensor):
            # bfloat16 has no NumPy twin: saved as float32 (exact), tagged to load back
            i = self.blob(obj.detach().contiguous().numpy())
            node = {"__tensor__": i, "requires_grad": bool(obj.requires_grad)}
            if obj.dtype.name == "bfloat16":
                node["dtype"] = "bfloat16"
            return node
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind not in _NUMPY_KINDS:
                raise TypeError(f"ddl.save: {where}: arrays of dtype {obj.dtype} cannot be "
                                "saved (numeric and bool dtypes only)")
            return {"__ndarray__": self.blob(obj)}
        if isinstance(obj, np.generic):
            return self.encode(obj.item(), where, depth)
        if isinstance(obj, bytes):
            return {"__bytes__": base64.b64encode(obj).decode("ascii")}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
                return {k: self.encode(v, f"{where}[{k!r}]", depth + 1)
                        for k, v in obj.items()}
            return {"__dict__": [[self.encode(k, where, depth + 1),
                                  self.encode(v, f"{where}[{k!r}]", depth + 1)]
                                 for k, v in obj.items()]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]}
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
    # the bytes of a file save, written straight to the caller's stream
    _body(*_to_bytes(obj))(fileobj)


def _tmp_name(folder):
    """A temporary name that says who made it: host and pid, so a later save can tell its
    own stale temporaries (a process killed mid-save) from another live writer's."""
    return os.path.join(folder, f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
                                f"{secrets.token_hex(4)}.tmp")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_temps(folder):
    """Remove .ddl-save-* temporaries of dead processes on this host (left by a kill -9
    where O_TMPFILE is not available, or between link and rename)."""
    host = socket.gethostname()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(_TMP_PREFIX) or not name.endswith(".tmp"):
            continue
        h, _, rest = name[len(_TMP_PREFIX):-4].rpartition("-")[0].rpartition("-")
        try:
            pid = int(rest)
        except ValueError:
            continue
        if h == host and pid != os.getpid() and not _pid_alive(pid):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _open_tmp(folder, anonymous):
    """(fd, None) for an anonymous O_TMPFILE (nothing to leak on a crash), or (fd, name) of a
    named temporary where the filesystem does not support O_TMPFILE."""
    flag = getattr(os, "O_TMPFILE", 0)
    if anonymous and flag:
        try:
            return os.open(folder, flag | os.O_WRONLY | os.O_CLOEXEC, 0o644), None
        except OSError:
            pass  # EOPNOTSUPP / EISDIR / EINVAL: a filesystem without O_TMPFILE
    name = _tmp_name(folder)
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), name


def _link_fd(fd, name):
    """linkat(AT_FDCWD, /proc/self/fd/N, AT_FDCWD, name, AT_SYMLINK_FOLLOW): os.link does not
    follow the /proc symlink on Linux (it calls link(2)), so go through libc."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    if libc.linkat(at_fdcwd, f"/proc/self/fd/{fd}".encode(), at_fdcwd, os.fsencode(name),
                   at_symlink_follow) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


_anonymous_ok = [True]  # cleared once linkat of an O_TMPFILE fails (no /proc, old kernel)


def _write_atomic(path, write_body):
    """Write a file through write_body(out) so that a crash at any point leaves the old file
    or the new one, and no temporary: O_TMPFILE, fsync, linkat to a temporary name, rename
    over the target, fsync of the folder. A named temporary (the fallback) of a process that
    died is swept by the next save into the same folder."""
    folder = os.path.dirname(os.path.abspath(path))
    _sweep_stale_temps(folder)
    while True:
        fd, tmp = _open_tmp(folder, _anonymous_ok[0])
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                write_body(out)
                out.flush()
                os.fsync(out.fileno())
            if tmp is None:  # give the anonymous file a name only now that it is complete
                name = _tmp_name(folder)
                try:
                    _link_fd(fd, name)
                except OSError:
                    _anonymous_ok[0] = False
                    continue  # write it again through a named temporary
                tmp = name
            os.replace(tmp, path)
            tmp = None
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return
        finally:
            os.close(fd)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def _save_path(obj, f):
    _write_atomic(os.fspath(f), _body(*_to_bytes(obj)))


def _body(head, blobs):
    """The writer of a checkpoint's bytes: header, aligned blobs, trailer with the SHA-256."""

    def body(out):
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

    return body


def read_regular(path, who):
    """The bytes of a regular file; a device, FIFO or folder is a ValueError at once (reading
    /dev/zero whole would never end, a FIFO could block forever)."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{who}: {path} is not a regular file (devices, FIFOs and folders "
                             "are refused)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


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
        return _decode_file(f.read(), getattr(f, "name", "<file object>"))
    return _load_path(f)


def _load_path(f):
    path = os.fspath(f)
    return _decode_file(read_regular(path, "ddl.load"), path)


def _decode_file(data, path):
    """The object tree of a whole checkpoint file's bytes; any defect is a ValueError."""
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
    # below: a file with a valid checksum can still be hand-made; check every field
    (hlen,) = struct.unpack("<Q", body[len(MAGIC): len(MAGIC) + 8])
    if hlen > len(body) - len(MAGIC) - 8:
        raise _corrupt(path, f"header length {hlen} exceeds the file")
    try:
        header = json.loads(body[len(MAGIC) + 8: len(MAGIC) + 8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, f"unreadable header ({e})") from None
    except RecursionError:
        raise _corrupt(path, "header nested too deeply") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"the header is a {type(header).__name__}, not an object")
    if header.get("version") != 1:
        raise _corrupt(path, f"unsupported format version {header.get('version')!r}")
    if "root" not in header or not isinstance(header.get("blobs"), list):
        raise _corrupt(path, "the header lacks 'root' or a 'blobs' list")
    data_start = _align(len(MAGIC) + 8 + hlen)
    blobs = header["blobs"]

    def array(i):
        if type(i) is not int or not 0 <= i < len(blobs) or not isinstance(blobs[i], dict):
            raise _corrupt(path, f"blob reference {i!r} is not one of {len(blobs)} blobs")
        m = blobs[i]
        try:
            dt = safe_dtype(m["dtype"])
            if dt is None:
                raise ValueError(f"dtype {m['dtype']!r}")
            shape = [int(d) for d in m["shape"]]
            offset, nbytes = m["offset"], m["nbytes"]
        except (KeyError, TypeError, ValueError) as e:
            raise _corrupt(path, f"blob {i} has a bad description ({e!r})") from None
        if dt.kind not in _NUMPY_KINDS or dt.fields is not None or dt.shape:
            raise _corrupt(path, f"blob {i} has dtype {dt}")
        if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0 \
                or any(d < 0 for d in shape) or len(shape) > 64:
            raise _corrupt(path, f"blob {i} has a bad offset, size or shape")
        count = math.prod(shape)
        start = data_start + offset
        if start + nbytes > len(body) or nbytes != dt.itemsize * count:
            raise _corrupt(path, f"blob {i} lies outside the file or has the wrong size")
        return np.frombuffer(body, dtype=dt, count=count, offset=start).reshape(shape).copy()

    def decode(x, depth):
        if depth > 3 * MAX_DEPTH + 8:
            raise _corrupt(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(x, list):
            return [decode(v, depth + 1) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            t = _tensor_from(array(x["__tensor__"]), x.get("dtype"))
            return t.requires_grad_() if x.get("requires_grad") else t
        if "__ndarray__" in x:
            return array(x["__ndarray__"])
        if "__tuple__" in x:
            return tuple(decode(_expect(x, "__tuple__", list), depth + 1))
        if "__dict__" in x:
            pairs = _expect(x, "__dict__", list)
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise _corrupt(path, "a __dict__ entry is not a [key, value] pair")
            out = {}
            for k, v in pairs:
                k = _key(decode(k, depth + 1))
                try:
                    out[k] = decode(v, depth + 1)
                except TypeError:
                    raise _corrupt(path, f"unhashable dict key {k!r}") from None
            return out
        if "__bytes__" in x:
            return base64.b64decode(_expect(x, "__bytes__", str), validate=True)
        if "__float__" in x:
            return float(_expect(x, "__float__", str))
        if "__bigint__" in x:
            v = _expect(x, "__bigint__", str)
            return int(v, 16) if v.lstrip("-").startswith("0x") else int(v)
        return {k: decode(v, depth + 1) for k, v in x.items()}

    def _expect(x, key, kind):
        if not isinstance(x[key], kind):
            raise _corrupt(path, f"{key} holds a {type(x[key]).__name__}, not a {kind.__name__}")
        return x[key]

    try:
        return decode(header["root"], 0)
    except ValueError as e:  # also binascii.Error and int()/float() of bad strings
        if str(e).startswith("ddl.load:"):
            raise
        raise _corrupt(path, str(e)) from None
    except (TypeError, RecursionError, OverflowError, MemoryError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None


def _key(k):
    return tuple(k) if isinstance(k, list) else k


# the dtype table: a blob's NumPy dtype -> the tensor's dtype code
_CODES = {np.dtype(np.float32): _C.FLOAT32, np.dtype(np.float64): _C.FLOAT64,
          np.dtype(np.int64): _C.INT64, np.dtype(np.bool_): _C.BOOL,
          np.dtype(np.int32): _C.INT32, np.dtype(np.int16): _C.INT16,
          np.dtype(np.int8): _C.INT8, np.dtype(np.uint8): _C.UINT8,
          np.dtype(np.float16): _C.FLOAT16}


def _tensor_from(a, tag=None):
    if tag is not None:
        if tag != "bfloat16" or a.dtype != np.float32:
            raise ValueError(f"ddl.load: a tensor tagged {tag!r} has a blob of dtype {a.dtype}")
        return _C.copy("to", _tensor_from(a), _C.BFLOAT16)
    code = _CODES.get(a.dtype)
    if code is None:
        raise ValueError(f"ddl.load: a tensor of dtype {a.dtype} is not a ddl dtype")
    t = _C.full(a.shape, None, code)
    np.asarray(memoryview(t))[...] = a
    return t


__all__ = ["load", "save"]
