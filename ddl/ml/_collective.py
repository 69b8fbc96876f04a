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
