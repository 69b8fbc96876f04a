"""ddl.utils.data: torch.utils.data's names, the DataLoader's arguments and its worker
processes (real processes, cleaned up, errors and deaths reported)."""
import multiprocessing as mp
import os

import pytest

import ddl
from ddl.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Subset,
    TensorDataset,
    WeightedRandomSampler,
    get_worker_info,
    random_split,
)
from ddl.utils.data.distributed import DistributedSampler


class Pids(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        info = get_worker_info()
        return ddl.tensor([i, os.getpid(), -1 if info is None else info.id])


class Failing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise KeyError("sample 2 is missing")
        return ddl.tensor(float(i))


class Dying(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            os._exit(7)
        return ddl.tensor(float(i))


def test_aliases_are_ddl_data():
    import ddl.data

    assert ddl.utils.data.TensorDataset is ddl.data.TensorDataset
    assert DistributedSampler is ddl.data.DistributedSampler
    assert issubclass(DataLoader, ddl.data.DataLoader)


def test_pytorch_keywords_accepted():
    ds = TensorDataset(ddl.arange(12.0).reshape(6, 2), ddl.arange(6))
    dl = DataLoader(ds, batch_size=4, shuffle=True, pin_memory=True, drop_last=False,
                    generator=ddl.Generator().manual_seed(1), timeout=0)
    got = sorted(i for _, y in dl for i in y.tolist())
    assert got == list(range(6)) and len(dl) == 2
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(ds, prefetch_factor=4)
    with pytest.raises(ValueError, match="persistent_workers"):
        DataLoader(ds, persistent_workers=True)


def test_generator_makes_shuffle_reproducible():
    ds = TensorDataset(ddl.arange(50))

    def order(seed):
        g = ddl.Generator().manual_seed(seed)
        return [i for (b,) in DataLoader(ds, batch_size=7, shuffle=True, generator=g)
                for i in b.tolist()]

    assert order(3) == order(3) and order(3) != order(4)
    assert sorted(order(3)) == list(range(50))


def test_workers_are_processes_and_are_cleaned_up():
    dl = DataLoader(Pids(), batch_size=2, num_workers=2)
    rows = [r for b in dl for r in b.tolist()]
    assert [r[0] for r in rows] == list(range(8))  # in order
    pids = {r[1] for r in rows}
    assert os.getpid() not in pids and len(pids) == 2
    assert {r[2] for r in rows} == {0, 1}
    assert mp.active_children() == []


def test_worker_init_fn_and_seeds_differ():
    def init(worker_id):
        ddl.manual_seed(100 + worker_id)

    class R(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return ddl.rand(1)

    a = [b.tolist() for b in DataLoader(R(), batch_size=1, num_workers=2, worker_init_fn=init)]
    b = [b.tolist() for b in DataLoader(R(), batch_size=1, num_workers=2, worker_init_fn=init)]
    assert a == b  # same init, same numbers
    assert a[0] != a[1]  # the two workers draw different streams


def test_worker_error_names_the_worker():
    dl = DataLoader(Failing(), batch_size=1, num_workers=2)
    with pytest.raises(KeyError, match="DataLoader worker process 0"):
        list(dl)
    assert mp.active_children() == []


def test_worker_death_is_reported():
    dl = DataLoader(Dying(), batch_size=1, num_workers=2, timeout=60)
    with pytest.raises(RuntimeError, match="exit code 7"):
        list(dl)
    assert mp.active_children() == []


def test_persistent_workers_survive_epochs():
    dl = DataLoader(Pids(), batch_size=4, num_workers=2, persistent_workers=True)
    p1 = {r[1] for b in dl for r in b.tolist()}
    p2 = {r[1] for b in dl for r in b.tolist()}
    assert p1 == p2 and len(mp.active_children()) == 2
    dl._pool.close()
    assert mp.active_children() == []


def test_breaking_out_stops_workers():
    it = iter(DataLoader(Pids(), batch_size=1, num_workers=2))
    next(it)
    it.close()
    assert mp.active_children() == []


def test_subset_concat_random_split():
    ds = TensorDataset(ddl.arange(10))
    s = Subset(ds, [3, 1])
    assert len(s) == 2 and s[0][0].item() == 3
    c = ConcatDataset([ds, s])
    assert len(c) == 12 and c[11][0].item() == 1 and c[-1][0].item() == 1
    a, b = random_split(ds, [7, 3], generator=ddl.Generator().manual_seed(42))
    assert sorted(a.indices + b.indices) == list(range(10))
    a2, _ = random_split(ds, [0.7, 0.3], generator=ddl.Generator().manual_seed(42))
    assert a2.indices == a.indices
    with pytest.raises(ValueError, match="sum"):
        random_split(ds, [5, 3])


def test_samplers():
    ds = TensorDataset(ddl.arange(10))
    r = list(RandomSampler(ds, replacement=True, num_samples=30))
    assert len(r) == 30 and all(0 <= i < 10 for i in r)
    w = list(WeightedRandomSampler([0, 0, 1, 0], 5))
    assert w == [2] * 5
    w = sorted(WeightedRandomSampler([1, 0, 1, 1], 3, replacement=False))
    assert w == [0, 2, 3]


def test_iterable_dataset_and_unbatched():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(7))

    assert [b.tolist() for b in DataLoader(Stream(), batch_size=3)] == [[0, 1, 2], [3, 4, 5],
                                                                           [6]]
    ds = TensorDataset(ddl.arange(3))
    assert [x[0].item() for x in DataLoader(ds, batch_size=None)] == [0, 1, 2]


class _ShardedStream(IterableDataset):
    """range(n), split over DataLoader workers by get_worker_info(), as PyTorch's docs show;
    uneven: worker 0 streams range(n), the others two samples each."""

    def __init__(self, n, uneven=False):
        self.n, self.uneven = n, uneven

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.n))
        if self.uneven:
            return iter(range(self.n) if info.id == 0 else range(100 * info.id, 100 * info.id + 2))
        return iter(range(info.id, self.n, info.num_workers))


# what PyTorch 2.13's DataLoader yields for the same streams (workers taken in turn, a worker
# skipped once its stream ends, drop_last per worker)
@pytest.mark.parametrize("n,uneven,kw,want", [
    (10, False, {}, [[0, 2], [1, 3], [4, 6], [5, 7], [8], [9]]),
    (9, True, {}, [[0, 1], [100, 101], [2, 3], [4, 5], [6, 7], [8]]),
    (11, False, {"drop_last": True}, [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10]]),
    (7, False, {"persistent_workers": True}, [[0, 2], [1, 3], [4, 6], [5]]),
], ids=["even", "uneven", "drop_last", "persistent"])
def test_iterable_dataset_with_workers_matches_pytorch_order(n, uneven, kw, want):
    dl = DataLoader(_ShardedStream(n, uneven), batch_size=2, num_workers=2, **kw)
    for _ in range(2):  # a second epoch restarts every worker's stream
        assert [b.tolist() for b in dl] == want


def test_iterable_dataset_workers_unsharded_yield_everything_each():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    got = list(DataLoader(Stream(), batch_size=None, num_workers=2))
    assert got == [0, 0, 1, 1, 2, 2]


def test_iterable_dataset_worker_error_names_the_worker():
    class Broken(IterableDataset):
        def __iter__(self):
            if get_worker_info().id == 1:
                raise KeyError("no shard for this worker")
            return iter(range(4))

    with pytest.raises(KeyError, match="DataLoader worker process 1"):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))
