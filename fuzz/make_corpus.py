"""Write the seed corpus under fuzz/corpus/<target>/ (small valid and near-valid inputs of
each format); rerun after a format change. The files are checked in."""
import gzip
import json
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np

import ddl
from ddl.data import save_shards


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    put("libsvm", "basic", b"1 1:0.5 3:2\n-1 2:1e-3 # c\n\n0 qid:3 4:7\r\n")
    put("libsvm", "edge", b"+1 1:3.4028234e38 2:-0 10:1e-45\n2.5e2 5:.5")
    idx1 = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(range(5))
    idx3 = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 3, 2)) + bytes(12)
    put("idx", "labels", idx1)
    put("idx", "images", idx3)
    put("idx", "labels.gz", gzip.compress(idx1))
    with tempfile.TemporaryDirectory() as t:
        p = os.path.join(t, "c.ddl")
        ddl.save({"w": ddl.ones(2, 3), "l": [1, (2, 3), {4: b"x"}], "big": 2**80,
                  "a": np.arange(3, dtype=np.int16), "f": float("nan")}, p)
        with open(p, "rb") as f:
            data = f.read()
        put("checkpoint", "whole", data)
        hlen = struct.unpack("<Q", data[8:16])[0]
        put("checkpoint", "header", data[16:16 + hlen])
        d = os.path.join(t, "s")
        m = save_shards(np.arange(12.0).reshape(6, 2), np.arange(6), d, 2)
        with open(os.path.join(d, m["shards"][0]["file"]), "rb") as f:
            put("shard", "dense-shard", f.read())
        put("shard", "manifest", b"M" + json.dumps(m).encode())
    frame = lambda op, *fs: struct.pack(">I", 1 + sum(4 + len(x) for x in fs)) + bytes([op]) + \
        b"".join(struct.pack(">I", len(x)) + x for x in fs)
    put("store_frame", "set_get", frame(1, b"k", b"v") + frame(2, struct.pack(">q", 0), b"k"))
    put("store_frame", "wait_check", frame(5, struct.pack(">q", 10), b"a", b"b") +
        frame(6, b"a") + frame(8))
    put("store_frame", "hello_auth", frame(9) + frame(10, b"\0" * 32))
    put("store_frame", "add_cas_del", frame(3, b"n", struct.pack(">q", 5)) +
        frame(4, b"n", b"5", b"6") + frame(7, b"n"))


if __name__ == "__main__":
    main()
