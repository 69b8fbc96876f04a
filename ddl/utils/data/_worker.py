"""DataLoader worker processes: the loop each worker runs, and how batches cross the pipe.

Workers are forked (the dataset is inherited, never pickled). Each reads (batch index, sample
indices) from its own index queue, builds the batch with the loader's fetch function and puts
(batch index, payload) on the shared result queue. Tensors cross as NumPy arrays (ddl tensors
do not pickle, by design) and become tensors again in the parent, zero-copy.
"""
import os
import queue
import traceback

import numpy as np

from ... import _C
from ..._tensor import Tensor

_info = None  # this process's WorkerInfo when it is a DataLoader worker


class WorkerInfo:
    """get_worker_info() inside a worker: id, num_workers, seed, dataset."""

    def __init__(self, id, num_workers, seed, dataset):
        self.id, self.num_workers, self.seed, self.dataset = id, num_workers, seed, dataset

    def __repr__(self):
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed})"


def get_worker_info():
    """The WorkerInfo of this DataLoader worker process; None in the main process."""
    return _info


class _Arr:
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a


def pack(obj):
    if isinstance(obj, Tensor):
        return _Arr(np.array(obj.detach().numpy(), copy=True))
    if isinstance(obj, tuple):
        return tuple(pack(x) for x in obj)
    if isinstance(obj, list):
        return [pack(x) for x in obj]
    if isinstance(obj, dict):
        return {k: pack(v) for k, v in obj.items()}
    return obj


def unpack(obj):
    if isinstance(obj, _Arr):
        return _C.from_buffer(obj.a) if obj.a.dtype in (np.float32, np.float64, np.int64,
                                                       np.bool_) else obj.a
    if isinstance(obj, tuple):
        return tuple(unpack(x) for x in obj)
    if isinstance(obj, list):
        return [unpack(x) for x in obj]
    if isinstance(obj, dict):
        return {k: unpack(v) for k, v in obj.items()}
    return obj


class StreamEnd:
    """An IterableDataset worker's answer once its stream is exhausted for the epoch."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


class WorkerError:
    """An exception raised in a worker, carried to the parent as its type and traceback."""

    def __init__(self, worker_id, exc):
        self.worker_id, self.pid = worker_id, os.getpid()
        self.exc_type = type(exc)
        self.text = "".join(traceback.format_exception(exc))

    def reraise(self):
        msg = (f"Caught {self.exc_type.__name__} in DataLoader worker process {self.worker_id}"
               f" (pid {self.pid}). Original traceback:\n{self.text}")
        try:
            err = self.exc_type(msg)
        except Exception:  # noqa: BLE001 (a type that does not take one message)
            err = RuntimeError(msg)
        raise err


def worker_loop(fetch, dataset, index_q, result_q, done, worker_id, num_workers, seed,
                worker_init_fn, parent=None):
    global _info
    import random

    from ... import manual_seed

    if parent is not None:   # (pid, started from its main thread): die with the loader's process
        from ...run import tie_to_parent

        tie_to_parent(*parent)

    try:
        manual_seed(seed)
        random.seed(seed)
        _info = WorkerInfo(worker_id, num_workers, seed, dataset)
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which re-raises)
        result_q.put((None, WorkerError(worker_id, e)))
        return
    while not done.is_set():
        try:
            job = index_q.get(timeout=0.1)
        except queue.Empty:
            continue
        if job is None:
            break
        i, indices = job
        try:
            result_q.put((i, pack(fetch(indices))))
        except StopIteration:
            result_q.put((i, StreamEnd(worker_id)))
        except BaseException as e:  # noqa: BLE001
            result_q.put((i, WorkerError(worker_id, e)))
    result_q.cancel_join_thread()
