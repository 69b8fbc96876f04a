"""ddl.vision.datasets: MNIST, FashionMNIST and CIFAR10 with torchvision's constructor
(root, train=True, transform=None, target_transform=None, download=False).

The standard files are looked for under root/<Name>/raw/ (torchvision's layout), root/<Name>/,
root/ itself and the Debian dataset packages' folders (/usr/share/datasets/...: the
dataset-fashion-mnist package installs Fashion-MNIST there). Samples are (image, label): a PIL
image when Pillow is installed (as torchvision), else a uint8 NumPy array (H, W) or (H, W, 3);
labels are ints. download=True fetches missing files from the usual mirrors and fails with a
clear message when that is impossible (offline). Nothing is unpickled: CIFAR-10's "python"
batches are read with an unpickler that accepts only dicts, lists, strings, bytes and NumPy
arrays.
"""
import gzip
import os
import pickle
import urllib.request
from typing import ClassVar

import numpy as np

from .. import _C
from ..data import Dataset

_DEBIAN = "/usr/share/datasets"


def _to_image(a):
    try:
        from PIL import Image
    except ImportError:
        return a
    return Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")


def read_idx(path):
    """An IDX file (MNIST's format, gzip or raw) as a NumPy array of its stored type."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    nd = data[3]
    dims = np.frombuffer(data, ">i4", nd, 4).astype(np.int64)
    dt = np.dtype(types[data[2]])
    n = int(np.prod(dims)) if nd else 1
    if len(data) != 4 + 4 * nd + n * dt.itemsize:
        raise ValueError(f"{path}: the file is truncated or has trailing bytes")
    return np.frombuffer(data, dt, n, 4 + 4 * nd).reshape(tuple(dims)).astype(dt.newbyteorder("="))


class _VisionDataset(Dataset):
    def __init__(self, root, transform=None, target_transform=None):
        self.root = os.path.expanduser(os.fspath(root)) if root is not None else "."
        self.transform, self.target_transform = transform, target_transform

    def _finish(self, img, target):
        img = _to_image(img)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self):
        return (f"Dataset {type(self).__name__}\n    Number of datapoints: {len(self)}\n"
                f"    Root location: {self.root}")


def _download(urls, folder, name):
    os.makedirs(folder, exist_ok=True)
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                data = r.read()
        except OSError as e:
            errors.append(f"{url}: {e}")
            continue
        tmp = os.path.join(folder, f".{name}.part")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(folder, name))
        return
    raise RuntimeError(f"download of {name} failed (offline?): " + "; ".join(errors))


class MNIST(_VisionDataset):
    """MNIST digits: 60000 training and 10000 test images of 28x28, labels 0-9."""

    mirrors = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/")
    debian = ("mnist",)
    classes: ClassVar[list] = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False):
        super().__init__(root, transform, target_transform)
        self.train = train
        stem = "train" if train else "t10k"
        names = (f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte")
        paths = [self._find(n) for n in names]
        if None in paths and download:
            raw = os.path.join(self.root, type(self).__name__, "raw")
            for n, p in zip(names, paths):
                if p is None:
                    _download([m + n + ".gz" for m in self.mirrors], raw, n + ".gz")
            paths = [self._find(n) for n in names]
        if None in paths:
            missing = [n for n, p in zip(names, paths) if p is None]
            raise RuntimeError(
                f"{type(self).__name__}: dataset not found: {', '.join(missing)} (.gz or raw) "
                f"is not in {self._folders()}. Put the standard files there, install the "
                f"Debian package (dataset-{self.debian[0]}) or pass download=True")
        self._images = read_idx(paths[0])
        self._labels = read_idx(paths[1]).astype(np.int64)
        if len(self._images) != len(self._labels):
            raise ValueError(f"{type(self).__name__}: {len(self._images)} images but "
                             f"{len(self._labels)} labels")

    def _folders(self):
        name = type(self).__name__
        out = [os.path.join(self.root, name, "raw"), os.path.join(self.root, name), self.root]
        out += [os.path.join(self.root, d) for d in self.debian]
        out += [os.path.join(_DEBIAN, d) for d in self.debian]
        return out

    def _find(self, name):
        for folder in self._folders():
            for n in (name, name + ".gz"):
                p = os.path.join(folder, n)
                if os.path.isfile(p):
                    return p
        return None

    @property
    def data(self):
        """The images as a (N, 28, 28) integer tensor (stored as int64, see ddl/_dtype.py)."""
        return _C.from_buffer(self._images.astype(np.int64))

    @property
    def targets(self):
        return _C.from_buffer(self._labels)

    @property
    def class_to_idx(self):
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, index):
        return self._finish(self._images[index], int(self._labels[index]))


class FashionMNIST(MNIST):
    """Fashion-MNIST: Zalando's article images in MNIST's format."""

    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    debian = ("fashion-mnist",)
    classes: ClassVar[list] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                               "Shirt", "Sneaker", "Bag", "Ankle boot"]


class _SafeUnpickler(pickle.Unpickler):
    """Only what CIFAR-10's python batches hold: builtins and NumPy arrays."""

    _ALLOWED: ClassVar[set] = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                                                           "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR10: refusing to load {module}.{name} from a batch "
                                     "file (only arrays and plain data are accepted)")


class CIFAR10(_VisionDataset):
    """CIFAR-10: 50000 training and 10000 test 32x32 colour images in 10 classes. Reads the
    binary version (cifar-10-batches-bin/*.bin) or the python one (cifar-10-batches-py/)."""

    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    classes: ClassVar[list] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False):
        super().__init__(root, transform, target_transform)
        self.train = train
        if not self._load() and download:
            self._fetch()
        if not hasattr(self, "_images"):
            raise RuntimeError(
                f"CIFAR10: dataset not found under {self.root} (cifar-10-batches-bin/ or "
                "cifar-10-batches-py/). Put the standard files there or pass download=True")

    def _load(self):
        names = [f"data_batch_{i}" for i in range(1, 6)] if self.train else ["test_batch"]
        for folder in (self.root, os.path.join(self.root, "CIFAR10"),
                       os.path.join(_DEBIAN, "cifar10")):
            binf = os.path.join(folder, "cifar-10-batches-bin")
            if all(os.path.isfile(os.path.join(binf, n + ".bin")) for n in names):
                recs = [np.fromfile(os.path.join(binf, n + ".bin"), np.uint8) for n in names]
                r = np.concatenate(recs).reshape(-1, 3073)
                self._labels = r[:, 0].astype(np.int64)
                self._images = np.ascontiguousarray(r[:, 1:].reshape(-1, 3, 32, 32)
                                                    .transpose(0, 2, 3, 1))
                return True
            pyf = os.path.join(folder, "cifar-10-batches-py")
            if all(os.path.isfile(os.path.join(pyf, n)) for n in names):
                imgs, labels = [], []
                for n in names:
                    with open(os.path.join(pyf, n), "rb") as f:
                        d = _SafeUnpickler(f, encoding="latin1").load()
                    imgs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32))
                    labels += list(d.get("labels", d.get("fine_labels", [])))
                self._images = np.ascontiguousarray(np.concatenate(imgs).transpose(0, 2, 3, 1))
                self._labels = np.asarray(labels, np.int64)
                return True
        return False

    def _fetch(self):
        import tarfile

        folder = self.root
        _download([self.url], folder, "cifar-10-binary.tar.gz")
        with tarfile.open(os.path.join(folder, "cifar-10-binary.tar.gz")) as tf:
            tf.extractall(folder, filter="data")
        self._load()

    @property
    def data(self):
        """The images as a (N, 32, 32, 3) uint8 NumPy array, as torchvision's."""
        return self._images

    @property
    def targets(self):
        return self._labels.tolist()

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, index):
        return self._finish(self._images[index], int(self._labels[index]))



__all__ = ["CIFAR10", "MNIST", "FashionMNIST", "read_idx"]
