"""One ddl rank started by ddl.spark.Distributor: joins the process group, calls the user's
function (or runs the user's script), and leaves rank 0's return value and any rank's error
in files the distributor reads. Not an API: `python -m ddl.spark._runner PAYLOAD`.

Environment (set by the distributor):
  DDL_SPARK_MODE    "local" (ddl.run set RANK, WORLD_SIZE, MASTER_ADDR/PORT: env://) or
                    "barrier" (rank 0 binds the store on a free port and writes the port to
                    DDL_SPARK_PORT_FILE; the others connect to MASTER_ADDR:MASTER_PORT)
  DDL_SPARK_OUT     a directory: result.pkl (rank 0's return value), error.<rank>.txt
  DDL_SPARK_DATA    a .npz of this rank's DataFrame rows, when the function takes data
"""
import os
import pickle
import runpy
import sys
import traceback


def _loads(blob):
    try:
        from pyspark import cloudpickle
    except ImportError:
        return pickle.loads(blob)
    return cloudpickle.loads(blob)


def _barrier_store(rank, world_size, timeout):
    from ..distributed import TCPStore

    if rank == 0:
        store = TCPStore("0.0.0.0", 0, world_size, is_master=True, timeout=timeout,
                         wait_for_workers=False)
        tmp = os.environ["DDL_SPARK_PORT_FILE"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(store.port))
        os.replace(tmp, os.environ["DDL_SPARK_PORT_FILE"])
        return store
    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                    timeout=timeout, wait_for_workers=False)


def _die_with_parent():
    """In a Spark task: SIGKILL when the task's worker dies (a killed stage), not an orphan.
    (Under local mode ddl.run already tied this rank to itself.)"""
    parent = os.environ.get("DDL_SPARK_PARENT")
    if parent:
        from ..run import die_with_parent

        die_with_parent(int(parent))   # exits at once if the parent died before prctl


def main(argv):
    from .. import distributed as dist

    _die_with_parent()

    out = os.environ["DDL_SPARK_OUT"]
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    timeout = float(os.environ.get("DDL_SPARK_TIMEOUT", "300"))
    try:
        with open(argv[1], "rb") as f:
            payload = _loads(f.read())
        if os.environ.get("DDL_SPARK_MODE") == "barrier":
            store = _barrier_store(rank, world_size, timeout)
            dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                    timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        try:
            if payload["kind"] == "script":
                sys.argv = [payload["path"]] + list(payload["args"])
                runpy.run_path(payload["path"], run_name="__main__")
                result = None
            else:
                args = list(payload["args"])
                if os.environ.get("DDL_SPARK_DATA"):
                    from .data import RankData

                    path = os.environ["DDL_SPARK_DATA"].replace("{rank}", str(rank))
                    args.insert(0, RankData.load(path))
                result = payload["fn"](*args, **payload["kwargs"])
            dist.barrier()  # rank 0's store stays up until every rank is done with it
            if rank == 0:
                blob = pickle.dumps(result)
                with open(os.path.join(out, "result.pkl.tmp"), "wb") as f:
                    f.write(blob)
                os.replace(os.path.join(out, "result.pkl.tmp"), os.path.join(out, "result.pkl"))
        finally:
            dist.destroy_process_group()
    except BaseException as e:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        with open(os.path.join(out, f"error.{rank}.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}\n{text}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
