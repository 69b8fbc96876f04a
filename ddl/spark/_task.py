"""What runs inside one Spark barrier task of ddl.spark.Distributor: this partition's rows to
arrays, the ddl rank as a child process of the task (the driver's interpreter when it exists on
the executor), the rendezvous through BarrierTaskContext.allGather, the child's output streamed
to the driver with its rank, rank 0's result back as the task's value.

Standard library and NumPy only, and shipped by value (cloudpickle): the executors' Python
workers need not have ddl installed, only the interpreter the ranks run in.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

FAILED = "DDL_RANK_FAILED"


def _parts(v, col):
    if hasattr(v, "indices") and hasattr(v, "size"):  # pyspark.ml.linalg.SparseVector
        return int(v.size), np.asarray(v.indices, dtype=np.int64), np.asarray(v.values, float)
    if hasattr(v, "toArray"):  # DenseVector
        a = np.asarray(v.toArray(), dtype=np.float64)
        return a.size, None, a
    if isinstance(v, (list, tuple, np.ndarray)):
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 1:
            return a.size, None, a
    raise TypeError(f"DataFrame column {col!r} holds {type(v).__name__}, not a Spark ML vector "
                    "(pyspark.ml.linalg) or a 1-D array of numbers")


def rows_to_arrays(rows, features="features", label="label", weight=None, others=()):
    """Rows (pyspark Rows or dicts) -> {name: ndarray}: X (dense (n, d)) or X_indptr/X_indices/
    X_data/X_shape (CSR, when any cell is sparse), y, w and col_<name> for the others."""
    rows = list(rows)

    def col(name):
        try:
            return [r[name] for r in rows]
        except (KeyError, ValueError):
            raise KeyError(f"DataFrame has no column {name!r}") from None

    out = {}
    if features:
        parts = [_parts(v, features) for v in col(features)]
        sizes = {p[0] for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"DataFrame column {features!r}: vectors of different sizes "
                             f"{sorted(sizes)}")
        d = sizes.pop() if sizes else 0
        if all(p[1] is None for p in parts):
            out["X"] = np.array([p[2] for p in parts], dtype=np.float64).reshape(len(parts), d)
        else:
            indptr = np.zeros(len(parts) + 1, dtype=np.int64)
            idx, vals = [], []
            for i, (_, ix, v) in enumerate(parts):
                if ix is None:
                    ix = np.flatnonzero(v).astype(np.int64)
                    v = v[ix]
                idx.append(ix)
                vals.append(v)
                indptr[i + 1] = indptr[i] + len(ix)
            out.update(X_indptr=indptr,
                       X_indices=np.concatenate(idx) if idx else np.zeros(0, np.int64),
                       X_data=np.concatenate(vals) if vals else np.zeros(0),
                       X_shape=np.array([len(parts), d], dtype=np.int64))
    if label:
        out["y"] = np.asarray(col(label), dtype=np.float64)
    if weight:
        out["w"] = np.asarray(col(weight), dtype=np.float64)
    for name in others:
        out["col_" + name] = np.asarray(col(name))
    return out


class _Lines:
    """The child's output, each line sent to the driver's log server with the rank."""

    def __init__(self, proc, rank, addr):
        self.sock = None
        if addr:
            try:
                self.sock = socket.create_connection(addr, timeout=10)
            except OSError:
                self.sock = None
        self.tail = []
        self.t = threading.Thread(target=self._pump, args=(proc, rank), daemon=True)
        self.t.start()

    def _pump(self, proc, rank):
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail = (self.tail + [line])[-20:]
            msg = f"[rank {rank}] {line}\n".encode()
            if self.sock is not None:
                try:
                    self.sock.sendall(msg)
                except OSError:
                    self.sock = None
            else:
                sys.stderr.write(msg.decode())

    def close(self):
        self.t.join(timeout=10)
        if self.sock is not None:
            self.sock.close()


def barrier_task(rows, cfg):
    """The body of one barrier task; yields (rank, rank 0's pickled result or None)."""
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    rank, n = ctx.partitionId(), cfg["world_size"]
    tmp = tempfile.mkdtemp(prefix=f"ddl-rank{rank}-")
    proc, lines = None, None
    try:
        payload = os.path.join(tmp, "payload.pkl")
        with open(payload, "wb") as f:
            f.write(cfg["payload"])
        env = dict(os.environ)
        env.update(cfg["env"])
        env.update(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK="0", DDL_SPARK_MODE="barrier",
                   DDL_SPARK_OUT=tmp, DDL_SPARK_TIMEOUT=str(cfg["timeout"]),
                   DDL_SPARK_PORT_FILE=os.path.join(tmp, "port"), PYTHONUNBUFFERED="1",
                   DDL_SPARK_PARENT=str(os.getpid()))
        if cfg["data"] is not None:
            np.savez(os.path.join(tmp, "data.npz"), partitions=np.array([rank]),
                     **rows_to_arrays(rows, **cfg["data"]))
            env["DDL_SPARK_DATA"] = os.path.join(tmp, "data.npz")
        else:
            for _ in rows:
                pass
        host = ctx.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        python = cfg["python"] if os.path.exists(cfg["python"]) else sys.executable
        cmd = [python, "-m", "ddl.spark._runner", payload]

        def start(extra):
            e = dict(env)
            e.update(extra)
            return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

        addr = ""
        if rank == 0:
            proc = start({"MASTER_ADDR": host})
            lines = _Lines(proc, rank, cfg["log"])
            deadline = time.monotonic() + cfg["timeout"]
            while not os.path.exists(env["DDL_SPARK_PORT_FILE"]):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if os.path.exists(env["DDL_SPARK_PORT_FILE"]):
                with open(env["DDL_SPARK_PORT_FILE"]) as f:
                    addr = f"{host}:{f.read().strip()}"
        master = ctx.allGather(addr)[0]  # every task learns task 0's store address
        if not master:
            rc = None
            if lines is not None:
                rc = proc.wait()
                lines.close()
            if rank == 0:
                raise RuntimeError(f"{FAILED} rank=0: " + _error_text(tmp, 0, lines, rc))
            raise RuntimeError("ddl: rank 0 did not start the store")
        if rank != 0:
            mhost, mport = master.rsplit(":", 1)
            proc = start({"MASTER_ADDR": mhost, "MASTER_PORT": mport})
            lines = _Lines(proc, rank, cfg["log"])
        rc = proc.wait()
        lines.close()
        if rc != 0:
            raise RuntimeError(f"{FAILED} rank={rank}: " + _error_text(tmp, rank, lines, rc))
        result = None
        if rank == 0:
            with open(os.path.join(tmp, "result.pkl"), "rb") as f:
                result = f.read()
        yield rank, result
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _error_text(tmp, rank, lines, rc=None):
    p = os.path.join(tmp, f"error.{rank}.txt")
    if os.path.exists(p):
        with open(p) as f:
            return f.read() + " DDL_END"
    tail = "\n".join(lines.tail) if lines is not None else ""
    return f"exit code {rc}; last output:\n{tail} DDL_END"
