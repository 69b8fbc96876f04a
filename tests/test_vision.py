"""ddl.vision: datasets reading the standard files (synthetic ones here, the Debian package's
Fashion-MNIST when installed) and the transforms, against NumPy."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import ddl
from ddl.vision import datasets, transforms


def _write_idx(path, a):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    head = bytes([0, 0, codes[a.dtype.type], a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape)
    body = a.astype(a.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(head + body)


@pytest.fixture
def mnist_root(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 10).astype(np.uint8)
    _write_idx(str(raw / "t10k-images-idx3-ubyte.gz"), imgs)
    _write_idx(str(raw / "t10k-labels-idx1-ubyte"), labels)
    return tmp_path, imgs, labels


def test_mnist_reads_torchvision_layout(mnist_root):
    root, imgs, labels = mnist_root
    ds = datasets.MNIST(str(root), train=False, transform=transforms.ToTensor(),
                        target_transform=lambda y: y + 100)
    assert len(ds) == 10
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype is ddl.float32
    assert np.allclose(x.numpy()[0], imgs[3] / 255.0) and y == labels[3] + 100
    assert ds.targets.tolist() == labels.tolist() and ds.data.shape == (10, 28, 28)
    loader = ddl.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 1, 28, 28) and yb.dtype is ddl.int64


def test_missing_files_say_where_and_download_fails_offline(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="dataset not found.*download=True"):
        datasets.MNIST(str(tmp_path), train=True)

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match=r"download of .* failed \(offline\?\)"):
        datasets.MNIST(str(tmp_path), train=True, download=True)
    assert not any(p.name.endswith(".part") for p in tmp_path.rglob("*"))


def test_read_idx_rejects_bad_files(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="truncated"):
        datasets.read_idx(str(p))
    p.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        datasets.read_idx(str(p))


def test_cifar10_binary_and_python_batches(tmp_path, rng):
    imgs = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4], np.uint8)
    binf = tmp_path / "bin" / "cifar-10-batches-bin"
    binf.mkdir(parents=True)
    recs = np.concatenate([labels[:, None], imgs.reshape(4, -1)], 1)
    recs.tofile(str(binf / "test_batch.bin"))
    ds = datasets.CIFAR10(str(tmp_path / "bin"), train=False)
    img, y = ds[2]
    assert np.array_equal(np.asarray(img), imgs[2].transpose(1, 2, 0)) and y == 3
    pyf = tmp_path / "py" / "cifar-10-batches-py"
    pyf.mkdir(parents=True)
    with open(pyf / "test_batch", "wb") as f:
        pickle.dump({"data": imgs.reshape(4, -1), "labels": labels.tolist()}, f)
    ds = datasets.CIFAR10(str(tmp_path / "py"), train=False, transform=transforms.ToTensor())
    assert ds[1][0].shape == (3, 32, 32) and ds.targets == [1, 2, 3, 4]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_python_batches_are_not_unpickled_blindly(tmp_path):
    pyf = tmp_path / "cifar-10-batches-py"
    pyf.mkdir()
    with open(pyf / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets.CIFAR10(str(tmp_path), train=False)


def test_transforms(rng):
    a = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    t = transforms.ToTensor()(a)
    assert t.shape == (3, 6, 8) and np.allclose(t.numpy(), a.transpose(2, 0, 1) / 255.0)
    n = transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(t)
    ref = (a.transpose(2, 0, 1) / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])[:, None, None]
    assert np.allclose(n.numpy(), ref, atol=1e-6)
    c = transforms.RandomCrop(4, padding=1)(a)
    assert c.shape == (4, 4, 3)
    tc = transforms.RandomCrop((4, 5))(t)
    assert tc.shape == (3, 4, 5)
    f = transforms.RandomHorizontalFlip(p=1.0)(t)
    assert np.array_equal(f.numpy(), t.numpy()[:, :, ::-1])
    assert transforms.RandomHorizontalFlip(p=0.0)(a) is a
    assert transforms.CenterCrop(2)(a).shape == (2, 2, 3)
    comp = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x * 2)])
    assert np.allclose(comp(a).numpy(), 2 * (a.transpose(2, 0, 1) / 255.0))
    with pytest.raises(ValueError, match="larger"):
        transforms.RandomCrop(10)(a)
    with pytest.raises(TypeError, match="ToTensor first"):
        transforms.Normalize((0.5,), (0.5,))(a)


def test_random_transforms_follow_manual_seed(rng):
    a = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    crop = transforms.RandomCrop(5)
    ddl.manual_seed(1)
    x = [crop(a) for _ in range(4)]
    ddl.manual_seed(1)
    y = [crop(a) for _ in range(4)]
    assert all(np.array_equal(p, q) for p, q in zip(x, y))


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    ds = datasets.FashionMNIST(str(tmp_path), train=False, transform=transforms.ToTensor())
    assert len(ds) == 10000 and ds[0][0].shape == (1, 28, 28) and ds[0][1] == 9
    assert sorted(set(ds.targets.tolist())) == list(range(10))
