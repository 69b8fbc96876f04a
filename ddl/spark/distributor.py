"""ddl.spark.Distributor: run a ddl training function (or script) on N ranks, on the Spark
driver (local_mode=True) or as one barrier stage of N tasks on the cluster (local_mode=False),
in the shape of pyspark's TorchDistributor. docs/spark.md is the guide.

    from ddl.spark import Distributor

    def train(lr):
        import ddl.distributed as dist      # the process group is already initialized
        ...
        return model_state                  # rank 0's return value comes back

    state = Distributor(num_processes=2, local_mode=False).run(train, 0.1)
    Distributor(2).run("train.py", "--epochs", "3")                 # a script, on the driver
    Distributor(2, local_mode=False).run_on_dataframe(df, fit_fn)   # fit_fn(data, ...)
"""
import os
import pickle
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading

from ._task import FAILED, barrier_task


class RankFailedError(RuntimeError):
    """A rank raised (or exited non-zero); .rank names it, the message carries its error."""

    def __init__(self, rank, message):
        super().__init__(f"ddl rank {rank} failed: {message}")
        self.rank = rank


def _dumps(obj, fn=None):
    """cloudpickle when pyspark is there (functions of __main__, a notebook or a top-level
    module outside any package, such as a test file, go by value), else pickle (importable
    functions only)."""
    try:
        from pyspark import cloudpickle
    except ImportError:
        return pickle.dumps(obj)
    mod = sys.modules.get(getattr(fn, "__module__", None) or "")
    by_value = mod is not None and mod.__name__ != "__main__" and mod.__spec__ is not None \
        and not (mod.__package__ or "") and hasattr(cloudpickle, "register_pickle_by_value")
    if by_value:
        cloudpickle.register_pickle_by_value(mod)
    try:
        return cloudpickle.dumps(obj)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(mod)


def _payload(train_object, args, kwargs):
    if isinstance(train_object, (str, os.PathLike)):
        if kwargs:
            raise TypeError("Distributor.run: a script takes command-line arguments (*args) only")
        path = os.fspath(train_object)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Distributor.run: no script {path!r}")
        return {"kind": "script", "path": os.path.abspath(path), "args": [str(a) for a in args]}
    if not callable(train_object):
        raise TypeError(f"Distributor.run: train_object must be a function or a script path, "
                        f"got {type(train_object).__name__}")
    return {"kind": "function", "fn": train_object, "args": list(args), "kwargs": dict(kwargs)}


class _LogServer(socketserver.ThreadingTCPServer):
    """Receives the tasks' output lines (already prefixed with the rank) and logs them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sink):
        self.sink = sink

        class Handler(socketserver.StreamRequestHandler):
            def handle(inner):
                for raw in inner.rfile:
                    sink(raw.decode("utf-8", "replace").rstrip("\n"))

        super().__init__(("0.0.0.0", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


def _default_sink(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _local_cores(master):
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master)
    if not m:
        return None
    if m.group(1) in (None,):
        return 1
    return os.cpu_count() or 1 if m.group(1) == "*" else int(m.group(1))


def free_slots(sc):
    """Task slots of the cluster not taken by running tasks (cores / spark.task.cpus)."""
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    cores = _local_cores(sc.master)
    if cores is None:
        cores = sc.defaultParallelism  # the executors' cores, once they have registered
    total = cores // max(task_cpus, 1)
    tracker = sc.statusTracker()
    busy = 0
    for sid in tracker.getActiveStageIds():
        info = tracker.getStageInfo(sid)
        busy += info.numActiveTasks if info is not None else 0
    return total - busy


class Distributor:
    """Runs a function or script on num_processes ddl ranks (Gloo process group initialized).

    local_mode=True: the ranks are processes on the driver, started by `python -m ddl.run`.
    local_mode=False: one barrier-stage task per rank on the cluster. Task 0's rank binds the
    rendezvous store on a free port and keeps it (no port probing), every task learns its
    address by BarrierTaskContext.allGather, each rank runs in a child process of its task with
    `python` (default: the driver's interpreter when that path exists on the executor, else the
    executor's), and its output reaches the driver's log with the rank. Before submitting, it
    fails when the cluster has fewer free slots than num_processes (Spark would otherwise wait
    for them for many minutes). A rank's exception aborts the stage and is raised on the driver
    as RankFailedError naming the rank; destroy_process_group runs on every rank either way.

    spark: a SparkSession (default: the active one). timeout: seconds for the rendezvous and
    each collective. env: extra environment for the ranks. log: a callable taking each output
    line (default: print to stdout).
    """

    def __init__(self, num_processes=1, local_mode=True, *, spark=None, timeout=300.0,
                 env=None, python=None, log=None):
        if not isinstance(num_processes, int) or isinstance(num_processes, bool) or \
                num_processes < 1:
            raise ValueError(f"Distributor: num_processes must be an int >= 1, got "
                             f"{num_processes!r}")
        if not timeout > 0:
            raise ValueError(f"Distributor: timeout must be > 0 seconds, got {timeout}")
        self.num_processes, self.local_mode = num_processes, bool(local_mode)
        self.spark, self.timeout = spark, float(timeout)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.python = python or sys.executable
        self.log = log or _default_sink

    def __repr__(self):
        return (f"Distributor(num_processes={self.num_processes}, "
                f"local_mode={self.local_mode})")

    # ---- public ---------------------------------------------------------------------------
    def run(self, train_object, *args, **kwargs):
        """Run train_object (a function: called as fn(*args, **kwargs) on every rank; or a
        script path: run with *args as its argv) and return rank 0's return value (None for
        a script)."""
        payload = _payload(train_object, args, kwargs)
        if self.local_mode:
            return self._run_local(payload, None)
        return self._run_barrier(payload, None, None)

    def run_on_dataframe(self, df, train_fn, *args, features="features", label="label",
                         weight=None, columns=(), **kwargs):
        """Like run(train_fn, ...), with train_fn(data, *args, **kwargs) getting this rank's
        rows of df as a ddl.spark.RankData (X from the vector column `features`, y from
        `label`, w from `weight`, `columns` as NumPy arrays). local_mode=False: each rank reads
        only its own partition (df is repartitioned to num_processes partitions when it has another
        count, one shuffle; nothing is collected on the driver). local_mode=True: the driver collects df and gives
        rank r the r-th contiguous share of the rows."""
        if not callable(train_fn):
            raise TypeError("Distributor.run_on_dataframe: train_fn must be a function")
        payload = _payload(train_fn, args, kwargs)
        spec = {"features": features, "label": label, "weight": weight,
                "others": tuple(columns)}
        names = [c for c in (features, label, weight, *columns) if c]
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise KeyError(f"Distributor.run_on_dataframe: df has no column(s) {missing}; it "
                           f"has {df.columns}")
        sel = df.select(*names)
        if self.local_mode:
            return self._run_local(payload, (sel, spec))
        return self._run_barrier(payload, sel, spec)

    # ---- local mode -----------------------------------------------------------------------
    def _run_local(self, payload, data):
        tmp = tempfile.mkdtemp(prefix="ddl-spark-")
        try:
            path = os.path.join(tmp, "payload.pkl")
            with open(path, "wb") as f:
                f.write(_dumps(payload, payload.get("fn")))
            env = dict(os.environ)
            env.update(self.env)
            env.update(DDL_SPARK_MODE="local", DDL_SPARK_OUT=tmp,
                       DDL_SPARK_TIMEOUT=str(self.timeout), PYTHONUNBUFFERED="1")
            if data is not None:
                self._split_on_driver(data, tmp)
                env["DDL_SPARK_DATA"] = os.path.join(tmp, "data.{rank}.npz")
            cmd = [self.python, "-m", "ddl.run", "--nproc-per-node", str(self.num_processes),
                   "--timeout", str(min(self.timeout, 30.0)), "-m", "ddl.spark._runner", path]
            from ..run import _prctl, die_with_parent

            _prctl()   # loaded before the fork: between fork and exec only prctl and getppid run
            driver = os.getpid()
            # the launcher (and so its ranks) dies with the driver, kill -9 included
            with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  preexec_fn=lambda: die_with_parent(driver)) as proc:  # noqa: PLW1509
                for raw in proc.stdout:
                    self.log(raw.decode("utf-8", "replace").rstrip("\n"))
                rc = proc.wait()
            if rc != 0:
                self._raise_local(tmp, rc)
            return self._result(os.path.join(tmp, "result.pkl"), payload)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _split_on_driver(self, data, tmp):
        import numpy as np

        from ._task import rows_to_arrays

        sel, spec = data
        rows = sel.collect()
        n = self.num_processes
        bounds = [len(rows) * r // n for r in range(n + 1)]
        for r in range(n):
            arrs = rows_to_arrays(rows[bounds[r]:bounds[r + 1]], **spec)
            np.savez(os.path.join(tmp, f"data.{r}.npz"), partitions=np.array([r]), **arrs)

    def _raise_local(self, tmp, rc):
        errs = sorted(f for f in os.listdir(tmp) if f.startswith("error."))
        if errs:
            first = min(errs, key=lambda f: os.path.getmtime(os.path.join(tmp, f)))
            rank = int(first.split(".")[1])
            with open(os.path.join(tmp, first)) as f:
                raise RankFailedError(rank, f.read().strip())
        raise RankFailedError(-1, f"the launcher exited with code {rc} before any rank "
                                  "reported an error (see the log above)")

    def _result(self, path, payload):
        if payload["kind"] == "script":
            return None
        if not os.path.exists(path):
            raise RankFailedError(0, "rank 0 finished without leaving its result")
        with open(path, "rb") as f:
            return pickle.load(f)

    # ---- barrier mode ---------------------------------------------------------------------
    def _session(self):
        if self.spark is not None:
            return self.spark
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise RuntimeError("Distributor(local_mode=False) needs pyspark (pip install "
                               "pyspark) and a SparkSession") from None
        s = SparkSession.getActiveSession()
        if s is None:
            raise RuntimeError("Distributor(local_mode=False): no active SparkSession; start "
                               "one or pass spark=")
        return s

    def _run_barrier(self, payload, df, spec):
        spark = self._session()
        sc = spark.sparkContext
        n = self.num_processes
        free = free_slots(sc)
        if free < n:
            raise RuntimeError(f"Distributor: {n} processes need {n} free task slots, the "
                               f"cluster has {free} (master {sc.master}, spark.task.cpus "
                               f"{sc.getConf().get('spark.task.cpus', '1')}); a barrier stage "
                               "would wait for them")
        server = _LogServer(self.log)
        try:
            driver_host = sc.getConf().get("spark.driver.host", socket.gethostname())
            cfg = {"world_size": n, "payload": _dumps(payload, payload.get("fn")), "python": self.python,
                   "timeout": self.timeout, "log": (driver_host, server.server_address[1]),
                   "data": spec, "env": self._rank_env()}
            if df is None:
                rdd = sc.parallelize(range(n), n)
            else:
                # a barrier stage takes no coalesce in its chain: one shuffle to n partitions
                rdd = df.rdd if df.rdd.getNumPartitions() == n else df.repartition(n).rdd
            try:
                from pyspark import cloudpickle

                from . import _task

                cloudpickle.register_pickle_by_value(_task)
            except (ImportError, AttributeError):
                pass

            def task(it, cfg=cfg):
                return barrier_task(it, cfg)

            try:
                out = rdd.barrier().mapPartitions(task).collect()
            except Exception as e:
                m = re.search(FAILED + r" rank=(\d+): (.*?) DDL_END", str(e), re.DOTALL)
                if m:
                    raise RankFailedError(int(m.group(1)), m.group(2).strip()) from None
                raise
        finally:
            server.stop()
        blob = dict(out).get(0)
        if payload["kind"] == "script":
            return None
        if blob is None:
            raise RankFailedError(0, "rank 0 finished without leaving its result")
        return pickle.loads(blob)

    def _rank_env(self):
        env = dict(self.env)
        pp = os.environ.get("PYTHONPATH")
        if pp and "PYTHONPATH" not in env:  # where the driver found ddl
            env["PYTHONPATH"] = pp
        return env
