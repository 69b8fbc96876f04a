"""Fuzz targets for ddl's parsers (issue 13): each takes the fuzzer's bytes, feeds one parser,
and lets only the documented exceptions through; anything else (another exception type, a
crash, a hang past the harness's limit, a store server that stops answering) is a finding.

    libsvm       ddl.datasets.load_libsvm on the bytes as a file (float32, then float64)
    checkpoint   ddl.load on the bytes as a file, and on the bytes as a header inside a
                 file with a valid checksum (so the fuzzer gets past the SHA-256)
    shard        ShardedDataset over a data set whose shard file or manifest is the bytes
                 (the manifest's checksum and sizes refitted, so the checks go deep)
    idx          ddl._C.idx_load on the bytes as a raw file and gzip-compressed
    store_frame  the bytes sent raw to a TCP store server; a real client must still work
"""
import atexit
import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import zlib

import numpy as np

import ddl
from ddl import _C
from ddl import serialization as ser
from ddl.data import ShardedDataset, save_shards
from ddl.data import shards as shards_mod
from ddl.datasets import load_libsvm

_TMP = tempfile.mkdtemp(prefix="ddl-fuzz-")
atexit.register(shutil.rmtree, _TMP, True)


def _file(name, data):
    p = os.path.join(_TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def libsvm(data):
    p = _file("in.svm", data)
    for dt in (np.float32, np.float64):
        try:
            X, y = load_libsvm(p, dtype=dt)
        except ValueError:
            continue
        assert X.shape[0] == len(y)
        assert np.isfinite(X.data).all() and np.isfinite(y).all(), "a non-finite value loaded"


def _forge(header):
    head = ser.MAGIC + struct.pack("<Q", len(header)) + header
    head += b"\0" * (-len(head) % 64)
    return head + ser.TRAILER + struct.pack("<Q", len(head)) + hashlib.sha256(head).digest()


def checkpoint(data):
    for blob in (data, _forge(data)):
        try:
            ddl.load(_file("in.ddl", blob))
        except ValueError:
            pass


_SHARD_DIR = os.path.join(_TMP, "shards")


def _shard_base():
    if not os.path.exists(os.path.join(_SHARD_DIR, "manifest.json")):
        save_shards(np.arange(12.0).reshape(6, 2), np.arange(6), _SHARD_DIR, 2)
    with open(os.path.join(_SHARD_DIR, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(m):
    if isinstance(m, dict):
        m["sha256"] = shards_mod._manifest_sum(m)
    with open(os.path.join(_SHARD_DIR, "manifest.json"), "w") as f:
        json.dump(m, f)


def shard(data):
    base = _shard_base()
    shard_path = os.path.join(_SHARD_DIR, base["shards"][0]["file"])
    with open(shard_path, "rb") as f:
        good = f.read()
    try:
        if data[:1] == b"M":  # the manifest is the bytes (refitted when it parses)
            try:
                m = json.loads(data[1:])
            except (ValueError, RecursionError):
                m = None
            if m is None:
                with open(os.path.join(_SHARD_DIR, "manifest.json"), "wb") as f:
                    f.write(data[1:])
            else:
                _write_manifest(m)
        else:  # the first shard file is the bytes; the manifest made to agree with it
            with open(shard_path, "wb") as f:
                f.write(data)
            m = json.loads(json.dumps(base))
            m["shards"][0]["bytes"] = len(data)
            if len(data) >= 32:
                hlen = struct.unpack("<I", data[12:16])[0]
                m["shards"][0]["header_crc32"] = zlib.crc32(data[32:32 + hlen])
            _write_manifest(m)
        for verify in (True, False):
            try:
                ds = ShardedDataset(_SHARD_DIR, rank=0, world_size=1, verify=verify)
                ds.load()
                for i in range(len(ds)):
                    ds[i]
            except (ValueError, FileNotFoundError):
                pass
    finally:
        with open(shard_path, "wb") as f:
            f.write(good)
        _write_manifest(base)


def idx(data):
    for blob in (data, gzip.compress(data, compresslevel=1)):
        try:
            _C.idx_load(_file("in-idx", blob))
        except ValueError:
            pass


_STORE = {}


def store_frame(data):
    from ddl.distributed.store import TCPStore

    if "srv" not in _STORE:
        os.environ.pop("DDL_STORE_TOKEN", None)
        _STORE["srv"] = TCPStore("127.0.0.1", 0, is_master=True, timeout=10)
    srv = _STORE["srv"]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sk:
        try:
            sk.sendall(data)
            sk.settimeout(0.05)
            sk.recv(1 << 16)
        except OSError:
            pass
    srv.set("fuzz/alive", b"yes")  # the server survived and answers
    assert srv.get("fuzz/alive") == b"yes"


TARGETS = {"libsvm": libsvm, "checkpoint": checkpoint, "shard": shard, "idx": idx,
           "store_frame": store_frame}
