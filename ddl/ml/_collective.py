"""Small collectives the ML code needs on NumPy arrays and JSON-able values, over the default
process group (a no-op on one process)."""
import json

import numpy as np


def world():
    """(rank, world_size, active): active when a default process group of > 1 ranks exists."""
    from .. import distributed as dist

    if not dist.is_initialized():
        return 0, 1, False
    return dist.get_rank(), dist.get_world_size(), dist.get_world_size() > 1


def allreduce_(arr, op="sum"):
    """Reduce a contiguous float64/int64 array in place across ranks; returns it."""
    from .. import distributed as dist

    _, _, active = world()
    if active:
        dist.all_reduce(arr, op=op)
    return arr


def allgather_json(obj):
    """[every rank's obj], in rank order (obj must be JSON-serializable)."""
    from .. import distributed as dist

    _, size, active = world()
    if not active:
        return [obj]
    raw = np.frombuffer(json.dumps(obj, allow_nan=False).encode(), dtype=np.uint8)
    n = allreduce_(np.array([raw.size], dtype=np.int64), "max")[0]
    mine = np.zeros(int(n) + 1, dtype=np.int64)  # bytes, then the length last
    mine[:raw.size] = raw
    mine[-1] = raw.size
    out = np.zeros(size * mine.size, dtype=np.int64)
    dist.all_gather_into_tensor(out, mine)
    parts = out.reshape(size, mine.size)
    return [json.loads(bytes(p[:p[-1]].astype(np.uint8)).decode()) for p in parts]


def fixed_sum(acc):
    """The totals of compensated (hi, lo) sums, the same bits however the rows were split.

    acc: (2, m) float64, row 0 the sums and row 1 their rounding errors (as the C kernels
    ddl_column_moments / ddl_logistic_sums leave them). Every rank's pair is gathered and the
    pairs are added in rank order with the error of each add kept (TwoSum); the ~106-bit
    result is rounded once. One rank and N ranks thus differ only when the exact total lies
    within ~2^-100 relative of a rounding boundary. Returns an (m,) array (the same on every
    rank)."""
    from .. import distributed as dist

    acc = np.ascontiguousarray(acc, dtype=np.float64)
    _, size, active = world()
    if active:
        out = np.zeros((size,) + acc.shape, dtype=np.float64)
        dist.all_gather_into_tensor(out.reshape(-1), acc.reshape(-1))
        parts = out
    else:
        parts = acc[None]
    hi = np.zeros(acc.shape[1])
    lo = np.zeros(acc.shape[1])
    for p in parts:
        s = hi + p[0]
        bv = s - hi
        lo += (hi - (s - bv)) + (p[0] - bv) + p[1]
        hi = s
    return hi + lo
