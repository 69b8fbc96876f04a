"""ddl.data (samplers, TensorDataset, DataLoader, collation, C row gathering) and
ddl.datasets.FashionMNIST (the real Debian files when installed; synthetic IDX files written
to tmp_path for every error path). All single-process; the multi-rank sampler check lives in
tests/test_ddp.py."""
import gzip
import os
import threading

import numpy as np
import pytest

import ddl
from ddl import _C
from ddl.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)
from ddl.datasets import FashionMNIST

REAL_ROOT = "/usr/share/datasets/fashion-mnist"


class Range(Dataset):
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return i

    def __len__(self):
        return self.n


def sampled(n, **kw):
    """{rank: indices} for every rank of a DistributedSampler over a dataset of n."""
    world = kw.pop("num_replicas")
    epoch = kw.pop("epoch", None)
    out = {}
    for r in range(world):
        s = DistributedSampler(Range(n), num_replicas=world, rank=r, **kw)
        if epoch is not None:
            s.set_epoch(epoch)
        out[r] = list(s)
        assert len(s) == len(out[r])
    return out


# ---- DistributedSampler ------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 10, 13])
def test_eval_mode_covers_every_index_exactly_once(n, world):
    for epoch in (0, 3):
        got = sampled(n, num_replicas=world, pad=False, seed=1, epoch=epoch)
        flat = [i for r in range(world) for i in got[r]]
        assert sorted(flat) == list(range(n))
        sizes = [len(got[r]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        # drop_last has no say in eval mode
        assert sampled(n, num_replicas=world, pad=False, seed=1, epoch=epoch,
                       drop_last=True) == got


def test_same_permutation_on_every_rank_and_every_kth_index():
    n, world = 23, 4
    full = list(DistributedSampler(Range(n), num_replicas=1, rank=0, seed=5))
    assert sorted(full) == list(range(n)) and full != list(range(n))
    got = sampled(n, num_replicas=world, seed=5)
    padded = full + full[: 24 - n]
    for r in range(world):
        assert got[r] == padded[r::world]
    # constructed again (another process, another rank): the same indices
    assert sampled(n, num_replicas=world, seed=5) == got
    assert sampled(n, num_replicas=world, seed=6) != got


def test_set_epoch_changes_the_order_identically_on_all_ranks():
    n, world = 20, 2
    orders = {}
    for epoch in range(4):
        a = sampled(n, num_replicas=world, seed=3, epoch=epoch)
        b = sampled(n, num_replicas=world, seed=3, epoch=epoch)
        assert a == b
        orders[epoch] = [a[i % world][i // world] for i in range(n)]  # the shared permutation
        assert sorted(orders[epoch]) == list(range(n))
    assert len({tuple(o) for o in orders.values()}) == 4
    # epoch e with seed s is seed s + e, epoch 0 (PyTorch's convention)
    assert sampled(n, num_replicas=world, seed=4, epoch=0) == \
        sampled(n, num_replicas=world, seed=3, epoch=1)


def test_unshuffled_is_strided():
    got = sampled(10, num_replicas=3, shuffle=False)
    assert got == {0: [0, 3, 6, 9], 1: [1, 4, 7, 0], 2: [2, 5, 8, 1]}
    got = sampled(10, num_replicas=3, shuffle=False, drop_last=True)
    assert got == {0: [0, 3, 6], 1: [1, 4, 7], 2: [2, 5, 8]}
    got = sampled(10, num_replicas=3, shuffle=False, pad=False)
    assert got == {0: [0, 3, 6, 9], 1: [1, 4, 7], 2: [2, 5, 8]}


@pytest.mark.parametrize("drop_last", [False, True])
def test_padding_and_drop_last_match_pytorch(drop_last):
    torch = pytest.importorskip("torch")
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    for n in (0, 1, 2, 3, 5, 7, 10, 13):
        for world in (1, 2, 3, 4, 5):
            for r in range(world):
                ours = DistributedSampler(Range(n), num_replicas=world, rank=r, shuffle=False,
                                          drop_last=drop_last)
                theirs = TorchSampler(list(range(n)), num_replicas=world, rank=r,
                                      shuffle=False, drop_last=drop_last)
                assert list(ours) == list(theirs), (n, world, r)
                assert len(ours) == len(theirs), (n, world, r)
    assert torch  # used


@pytest.mark.parametrize("drop_last", [False, True])
def test_padding_shuffled(drop_last):
    n, world = 10, 4
    got = sampled(n, num_replicas=world, seed=0, epoch=2, drop_last=drop_last)
    per = 2 if drop_last else 3
    assert all(len(v) == per for v in got.values())
    flat = [got[i % world][i // world] for i in range(per * world)]
    perm = list(DistributedSampler(Range(n), num_replicas=1, rank=0, seed=2))  # = epoch 2
    if drop_last:
        assert flat == perm[:8]  # the tail is dropped
    else:
        assert flat == perm + perm[:2]  # padded from the start


def test_sampler_errors_and_state():
    with pytest.raises(ValueError, match="no process group"):
        DistributedSampler(Range(4))
    with pytest.raises(ValueError, match="no process group"):
        DistributedSampler(Range(4), num_replicas=2)  # rank still unknown
    with pytest.raises(ValueError, match="rank 2"):
        DistributedSampler(Range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="rank -1"):
        DistributedSampler(Range(4), num_replicas=2, rank=-1)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(Range(4), num_replicas=0, rank=0)
    s = DistributedSampler(Range(9), num_replicas=2, rank=1, seed=11)
    s.set_epoch(4)
    t = DistributedSampler(Range(9), num_replicas=2, rank=1)
    t.load_state_dict(s.state_dict())
    assert list(t) == list(s) and t.epoch == 4 and t.seed == 11


# ---- TensorDataset and DataLoader --------------------------------------------------------------


def _xy(n=10):
    x = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
    y = np.arange(n, dtype=np.int64) * 10
    return x, y


def test_tensor_dataset():
    x, y = _xy()
    ds = TensorDataset(ddl.tensor(x), y)  # arrays are accepted too
    assert len(ds) == 10
    a, b = ds[3]
    np.testing.assert_array_equal(a.numpy(), x[3])
    assert int(b) == 30
    with pytest.raises(ValueError, match="tensor 1"):
        TensorDataset(ddl.ones(3, 2), ddl.ones(4))
    with pytest.raises(ValueError):
        TensorDataset()
    with pytest.raises(ValueError):
        TensorDataset(ddl.tensor(1.0))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_batches_and_partial_last(num_workers):
    x, y = _xy(10)
    dl = DataLoader(TensorDataset(x, y), batch_size=4, num_workers=num_workers)
    assert len(dl) == 3
    got = list(dl)
    assert [tuple(b[0].shape) for b in got] == [(4, 2, 3), (4, 2, 3), (2, 2, 3)]
    assert [tuple(b[1].shape) for b in got] == [(4,), (4,), (2,)]
    assert got[0][0].dtype is ddl.float32 and got[0][1].dtype is ddl.int64
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in got]), x)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in got]), y)
    dl = DataLoader(TensorDataset(x, y), batch_size=4, drop_last=True, num_workers=num_workers)
    assert len(dl) == 2 and [tuple(b[1].shape) for b in dl] == [(4,), (4,)]


def test_shuffle_is_reproducible_under_manual_seed():
    x, y = _xy(50)
    ds = TensorDataset(x, y)

    def order(seed):
        ddl.manual_seed(seed)
        return np.concatenate([b[1].numpy() for b in DataLoader(ds, batch_size=8,
                                                                 shuffle=True)]) // 10

    a, b, c = order(7), order(7), order(8)
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() != list(range(50))
    assert a.tolist() != c.tolist()
    # a fresh permutation each epoch
    ddl.manual_seed(7)
    dl = DataLoader(ds, batch_size=50, shuffle=True)
    e1, e2 = (next(iter(dl))[1].numpy().tolist() for _ in range(2))
    assert e1 != e2
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, shuffle=True, sampler=SequentialSampler(ds))
    with pytest.raises(ValueError):
        DataLoader(ds, num_workers=-1)
    with pytest.raises(ValueError):
        DataLoader(ds, batch_size=0)


def test_prefetch_gives_the_same_batches():
    x, y = _xy(37)
    ds = TensorDataset(x, y)
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, seed=9)
    a = [tuple(t.numpy() for t in b) for b in DataLoader(ds, batch_size=5, sampler=sampler)]
    for workers, factor in ((1, 2), (2, 1), (1, 8)):
        b = [tuple(t.numpy() for t in bb)
             for bb in DataLoader(ds, batch_size=5, sampler=sampler, num_workers=workers,
                                  prefetch_factor=factor)]
        assert len(a) == len(b) == 4
        for u, v in zip(a, b):
            for s, t in zip(u, v):
                np.testing.assert_array_equal(s, t)
    # a generic dataset, through default_collate
    g0 = [bb.numpy().tolist() for bb in DataLoader(Range(11), batch_size=4)]
    g1 = [bb.numpy().tolist() for bb in DataLoader(Range(11), batch_size=4, num_workers=1)]
    assert g0 == g1 == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_abandoned_prefetching_iterator_stops_its_thread():
    before = threading.active_count()
    x, y = _xy(200)
    it = iter(DataLoader(TensorDataset(x, y), batch_size=2, num_workers=1, prefetch_factor=2))
    next(it)
    it.close()
    for _ in range(200):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.01)
    assert threading.active_count() <= before


class Faulty(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 6:
            raise KeyError(f"sample {i} is broken")
        return np.full(3, i, dtype=np.float32), i


@pytest.mark.parametrize("num_workers", [0, 1])
def test_dataset_exceptions_reach_the_consumer(num_workers):
    dl = DataLoader(Faulty(), batch_size=3, num_workers=num_workers)
    seen = []
    with pytest.raises(KeyError, match="sample 6 is broken"):
        for xb, yb in dl:
            seen.append(yb.numpy().tolist())
    assert seen == [[0, 1, 2], [3, 4, 5]]


def test_generic_dataset_and_collate():
    xb, yb = next(iter(DataLoader(Faulty(), batch_size=4)))
    assert tuple(xb.shape) == (4, 3) and xb.dtype is ddl.float32
    assert yb.dtype is ddl.int64 and yb.numpy().tolist() == [0, 1, 2, 3]
    out = default_collate([{"a": 1, "b": (ddl.ones(2), 2.5), "c": [True, 3]},
                           {"a": 2, "b": (ddl.zeros(2), 3.5), "c": [False, 4]}])
    assert set(out) == {"a", "b", "c"}
    assert out["a"].numpy().tolist() == [1, 2] and out["a"].dtype is ddl.int64
    assert isinstance(out["b"], tuple) and tuple(out["b"][0].shape) == (2, 2)
    np.testing.assert_array_equal(out["b"][0].numpy(), [[1, 1], [0, 0]])
    np.testing.assert_allclose(out["b"][1].numpy(), [2.5, 3.5])
    assert isinstance(out["c"], list) and out["c"][0].dtype is ddl.bool
    assert out["c"][1].numpy().tolist() == [3, 4]
    arr = default_collate([np.ones((2, 2)), np.zeros((2, 2))])
    assert tuple(arr.shape) == (2, 2, 2) and arr.dtype is ddl.float64
    with pytest.raises(TypeError, match="object"):
        default_collate([object(), object()])
    # a custom collate_fn is used as is
    dl = DataLoader(Range(5), batch_size=2, collate_fn=lambda b: sum(b))
    assert list(dl) == [1, 5, 4]


def test_batch_sampler_and_basic_samplers():
    assert list(BatchSampler(range(7), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(range(7), 3, False)) == 3 and len(BatchSampler(range(7), 3, True)) == 2
    assert list(SequentialSampler(Range(4))) == [0, 1, 2, 3]
    r = list(RandomSampler(Range(30)))
    assert sorted(r) == list(range(30)) and len(RandomSampler(Range(30))) == 30


def test_gather_rows():
    src = ddl.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    out = _C.gather_rows(src, np.array([3, 0, 3], dtype=np.int64))
    np.testing.assert_array_equal(out.numpy(), [[9, 10, 11], [0, 1, 2], [9, 10, 11]])
    t = ddl.tensor(np.arange(12, dtype=np.float32).reshape(3, 4)).t()  # non-contiguous
    np.testing.assert_array_equal(_C.gather_rows(t, np.array([1], dtype=np.int64)).numpy(),
                                  [[1, 5, 9]])
    assert tuple(_C.gather_rows(src, np.zeros(0, dtype=np.int64)).shape) == (0, 3)
    for bad in ([4], [-1], [0, 99]):
        with pytest.raises(IndexError, match="out of range"):
            _C.gather_rows(src, np.array(bad, dtype=np.int64))
    with pytest.raises(TypeError):
        _C.gather_rows(src, np.array([0.0]))
    # through the loader: a batch sampler asking for a row that does not exist
    dl = DataLoader(TensorDataset(src), batch_sampler=[[0, 1], [2, 4]])
    it = iter(dl)
    next(it)
    with pytest.raises(IndexError):
        next(it)


# ---- FashionMNIST: synthetic IDX files -----------------------------------------------------------


def idx_bytes(shape, data, type_code=0x08):
    hdr = bytes([0, 0, type_code, len(shape)]) + b"".join(int(s).to_bytes(4, "big")
                                                          for s in shape)
    return hdr + np.asarray(data, dtype=np.uint8).tobytes()


def write_fmnist(root, n=7, train=True, compress=True, raw_names=False, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if train else "t10k"
    names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    for name, shape, data in ((names[0], images.shape, images), (names[1], labels.shape, labels)):
        blob = idx_bytes(shape, data)
        if raw_names:
            name = name[:-3]
        (root / name).write_bytes(gzip.compress(blob) if compress else blob)
    return images, labels, [str(root / n) for n in names]


@pytest.mark.parametrize("compress,raw_names", [(True, False), (False, False), (False, True)])
def test_fashion_mnist_synthetic(tmp_path, compress, raw_names):
    images, labels, _ = write_fmnist(tmp_path, compress=compress, raw_names=raw_names)
    ds = FashionMNIST(str(tmp_path), train=True, normalize=False)
    assert len(ds) == 7 and tuple(ds.data.shape) == (7, 1, 28, 28)
    assert ds.data.dtype is ddl.float32 and ds.targets.dtype is ddl.int64
    np.testing.assert_allclose(ds.data.numpy()[:, 0], images / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(ds.targets.numpy(), labels)
    norm = FashionMNIST(str(tmp_path), train=True)
    want = (images / np.float32(255) - ddl.datasets.MEAN) / ddl.datasets.STD
    np.testing.assert_allclose(norm.data.numpy()[:, 0], want, rtol=1e-5, atol=1e-6)
    x, y = ds[2]
    assert tuple(x.shape) == (1, 28, 28) and int(y) == labels[2]
    assert len(FashionMNIST.classes) == 10


def test_fashion_mnist_root_from_environment(tmp_path, monkeypatch):
    write_fmnist(tmp_path, n=3, train=False)
    monkeypatch.setenv("DDL_FASHION_MNIST", str(tmp_path))
    ds = FashionMNIST(train=False)
    assert len(ds) == 3 and ds.root == str(tmp_path) and not ds.train


def test_fashion_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        FashionMNIST(str(tmp_path))
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(e.value)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    _, _, paths = write_fmnist(tmp_path)
    os.remove(paths[1])
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz") as e:
        FashionMNIST(str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


def _corrupt(tmp_path, which, blob):
    _, _, paths = write_fmnist(tmp_path)
    with open(paths[which], "wb") as f:
        f.write(blob)
    return paths[which]


@pytest.mark.parametrize("cut", [4, 30, 500])
def test_fashion_mnist_truncated_gzip(tmp_path, cut):
    rng = np.random.default_rng(1)
    good = gzip.compress(idx_bytes((7, 28, 28), rng.integers(0, 256, 7 * 784)))
    path = _corrupt(tmp_path, 0, good[:-cut])
    with pytest.raises(ValueError, match="truncated|corrupt") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)


def test_fashion_mnist_truncated_payload(tmp_path):
    blob = idx_bytes((7, 28, 28), np.zeros(7 * 784))[:-100]
    path = _corrupt(tmp_path, 0, gzip.compress(blob))
    with pytest.raises(ValueError, match="truncated IDX data") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value) and "5488" in str(e.value)  # 7 * 784 bytes promised
    path = _corrupt(tmp_path, 1, gzip.compress(idx_bytes((7,), np.zeros(7)) + b"\0"))
    with pytest.raises(ValueError, match="oversized") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)
    path = _corrupt(tmp_path, 1, gzip.compress(bytes([0, 0, 8, 3, 0, 0])))
    with pytest.raises(ValueError, match="truncated IDX header") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)


@pytest.mark.parametrize("blob", [b"\x1f\x8b garbage", b"PK\x03\x04not idx", b"", b"\x00\x00"])
def test_fashion_mnist_bad_magic(tmp_path, blob):
    path = _corrupt(tmp_path, 0, blob)
    with pytest.raises(ValueError) as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)


def test_fashion_mnist_bad_idx_type_and_mismatch(tmp_path):
    path = _corrupt(tmp_path, 0, gzip.compress(idx_bytes((7, 28, 28), np.zeros(7 * 784),
                                                         type_code=0x0D)))
    with pytest.raises(ValueError, match="0x0d") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)
    path = _corrupt(tmp_path, 1, gzip.compress(idx_bytes((5,), np.zeros(5))))
    with pytest.raises(ValueError, match="do not match") as e:
        FashionMNIST(str(tmp_path))
    assert path in str(e.value)


def test_idx_load_directly(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(idx_bytes((2, 3), [0, 51, 102, 153, 204, 255]))
    t = _C.idx_load(str(p))
    assert t.dtype is ddl.float32
    np.testing.assert_allclose(t.numpy(), [[0, 0.2, 0.4], [0.6, 0.8, 1.0]], rtol=1e-6)
    p.write_bytes(idx_bytes((4,), [9, 0, 255, 1]))
    t = _C.idx_load(str(p))
    assert t.dtype is ddl.int64 and t.numpy().tolist() == [9, 0, 255, 1]
    with pytest.raises(ValueError, match="cannot open"):
        _C.idx_load(str(tmp_path / "nope"))


# ---- FashionMNIST: the real files --------------------------------------------------------------

needs_real = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(REAL_ROOT, f)) for f in (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
    reason=f"Fashion-MNIST is not installed in {REAL_ROOT} (apt-get install dataset-fashion-mnist)")


@needs_real
def test_real_fashion_mnist_test_set():
    raw = FashionMNIST(train=False, normalize=False)
    assert len(raw) == 10000 and tuple(raw.data.shape) == (10000, 1, 28, 28)
    assert raw.data.dtype is ddl.float32 and raw.targets.dtype is ddl.int64
    d, y = raw.data.numpy(), raw.targets.numpy()
    assert d.min() == 0.0 and d.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [1000] * 10)
    # 255 levels: every value is k / 255
    k = d[:50] * 255
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    norm = FashionMNIST(train=False).data.numpy()
    np.testing.assert_allclose(norm, (d - ddl.datasets.MEAN) / ddl.datasets.STD, rtol=1e-5,
                               atol=1e-5)
    assert abs(norm.mean()) < 0.02 and abs(norm.std() - 1) < 0.02
    xb, yb = next(iter(DataLoader(raw, batch_size=64)))
    assert tuple(xb.shape) == (64, 1, 28, 28) and tuple(yb.shape) == (64,)


@needs_real
def test_real_fashion_mnist_train_set_normalized():
    ds = FashionMNIST(train=True)
    assert len(ds) == 60000 and tuple(ds.data.shape) == (60000, 1, 28, 28)
    d = ds.data.numpy()
    assert abs(float(d.mean())) < 1e-3 and abs(float(d.std()) - 1) < 1e-3
    np.testing.assert_array_equal(np.bincount(ds.targets.numpy(), minlength=10), [6000] * 10)
