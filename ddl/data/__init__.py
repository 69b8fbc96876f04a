"""ddl.data: Dataset, TensorDataset, samplers (incl. DistributedSampler) and DataLoader.

Batches of a TensorDataset are assembled in C (one gather of the sampled rows per tensor, the
GIL released); `num_workers > 0` prefetches batches on background threads while the model
trains.
"""
import math
import queue
import threading

import numpy as np

from .. import _C
from .._functions import as_tensor, stack, tensor
from .._tensor import Tensor


class Dataset:
    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Samples are rows of the given tensors (all with the same first dim)."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        tensors = tuple(as_tensor(t) for t in tensors)
        n = tensors[0].shape[0] if tensors[0].ndim else None
        for i, t in enumerate(tensors):
            if t.ndim == 0 or t.shape[0] != n:
                raise ValueError(f"TensorDataset: tensor {i} has shape {tuple(t.shape)}, "
                                 f"expected {n} rows like tensor 0")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


# ---- samplers ---------------------------------------------------------------------------------


def _permutation(n, seed):
    """The same permutation of range(n) for the same seed on every machine (PCG64)."""
    return np.random.Generator(np.random.PCG64(seed)).permutation(n)


class Sampler:
    def __iter__(self):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.n = len(data_source)

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class RandomSampler(Sampler):
    """A fresh permutation each epoch, drawn from ddl's generator (ddl.manual_seed)."""

    def __init__(self, data_source, generator=None):
        self.n = len(data_source)

    def __iter__(self):
        seed = int(_C.random("i", (), _C.INT64, 0, 2**62).item())
        return iter(_permutation(self.n, seed).tolist())

    def __len__(self):
        return self.n


class DistributedSampler(Sampler):
    """Each of `num_replicas` ranks takes every num_replicas-th index of one permutation that
    all ranks draw alike from seed + epoch (call set_epoch each epoch).

    Training mode (pad=True, PyTorch's behaviour) pads by repeating indices so every rank gets
    the same count (or drops the tail with drop_last). Evaluation mode (pad=False) neither pads
    nor drops: ranks may get counts differing by one, and over all ranks every sample is seen
    exactly once, so a distributed metric counts each sample once.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False, pad=True):
        if num_replicas is None or rank is None:
            world, me = _process_group_defaults()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank} is outside [0, {num_replicas})")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.pad = shuffle, seed, drop_last, pad
        self.epoch = 0
        n = len(dataset)
        if not pad:
            self.num_samples = len(range(rank, n, num_replicas))
            self.total_size = n
        elif drop_last and n % num_replicas:
            self.num_samples = n // num_replicas
            self.total_size = self.num_samples * num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
            self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def indices(self):
        n = len(self.dataset)
        order = _permutation(n, self.seed + self.epoch) if self.shuffle else np.arange(n)
        if self.pad:
            if self.total_size > n:  # repeat from the start until it divides evenly
                reps = math.ceil(self.total_size / max(n, 1))
                order = np.tile(order, reps)[: self.total_size]
            else:
                order = order[: self.total_size]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def state_dict(self):
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state):
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])


def _process_group_defaults():
    try:
        from .. import distributed as dist
    except ImportError:
        dist = None
    if dist is None or not dist.is_initialized():
        raise ValueError("DistributedSampler: no process group is initialized; pass "
                         "num_replicas and rank, or call ddl.distributed.init_process_group()")
    return dist.get_world_size(), dist.get_rank()


class BatchSampler(Sampler):
    def __init__(self, sampler, batch_size, drop_last):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


# ---- collation and the loader -------------------------------------------------------------------


def default_collate(samples):
    """Stack a list of samples: tensors and arrays stack, numbers become a tensor, tuples,
    lists and dicts collate field by field."""
    first = samples[0]
    if isinstance(first, Tensor):
        return stack(samples, 0)
    if isinstance(first, np.ndarray):
        return stack([as_tensor(s) for s in samples], 0)
    if isinstance(first, (int, float, bool, np.number)):
        return tensor(samples)
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(default_collate(list(f)) for f in zip(*samples)) if isinstance(
            first, list) else tuple(default_collate(list(f)) for f in zip(*samples))
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


class DataLoader:
    """Batches from a dataset, PyTorch's arguments. TensorDataset batches are gathered in C.

    num_workers > 0 assembles up to `prefetch_factor * num_workers` batches ahead on background
    threads (threads, not processes: the gather runs without the GIL).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, drop_last=False, prefetch_factor=2):
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True are mutually exclusive")
        if num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be >= 0, got {num_workers}")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.collate_fn = collate_fn
        if batch_sampler is None:
            if sampler is None:
                sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.sampler, self.batch_sampler = sampler, batch_sampler

    def __len__(self):
        return len(self.batch_sampler)

    def _fetch(self, indices):
        ds = self.dataset
        if self.collate_fn is None and isinstance(ds, TensorDataset):
            idx = _C.from_buffer(np.asarray(indices, dtype=np.int64))
            return tuple(_C.gather_rows(t, idx) for t in ds.tensors)
        collate = self.collate_fn or default_collate
        return collate([ds[i] for i in indices])

    def __iter__(self):
        if self.num_workers == 0:
            for indices in self.batch_sampler:
                yield self._fetch(indices)
            return
        yield from self._prefetching_iter()

    def _prefetching_iter(self):
        depth = max(1, self.prefetch_factor * self.num_workers)
        out = queue.Queue(maxsize=depth)
        stop = threading.Event()
        batches = list(self.batch_sampler)

        def work():
            try:
                for indices in batches:
                    if stop.is_set():
                        return
                    out.put(("ok", self._fetch(indices)))
                out.put(("end", None))
            # any error, KeyboardInterrupt too, is re-raised in the consumer
            except BaseException as e:  # noqa: BLE001
                out.put(("error", e))

        thread = threading.Thread(target=work, daemon=True, name="ddl-dataloader")
        thread.start()
        try:
            while True:
                kind, item = out.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    out.get_nowait()
                except queue.Empty:
                    thread.join(0.01)


__all__ = [
    "BatchSampler", "DataLoader", "Dataset", "DistributedSampler", "RandomSampler", "Sampler",
    "SequentialSampler", "TensorDataset", "default_collate",
]
from .shards import ShardedDataset, save_shards  # noqa: F401
