"""ddl.datasets: Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX parsed in C)."""
import os

from .. import _C
from ..data import TensorDataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
_FILES = {True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# per-pixel statistics of the training images (the usual normalization constants)
MEAN, STD = 0.2860, 0.3530

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")


def _existing(path):
    """path, or the uncompressed file next to it (name without .gz) when only that exists."""
    if not os.path.exists(path) and path.endswith(".gz") and os.path.exists(path[:-3]):
        return path[:-3]
    return path


class FashionMNIST(TensorDataset):
    """Fashion-MNIST: `data` (N, 1, 28, 28) float32, normalized to mean 0 / std 1 unless
    normalize=False (then in [0, 1]); `targets` (N,) int64 in [0, 10).

    root defaults to Debian's package location; the DDL_FASHION_MNIST environment variable
    overrides it. Each file may be gzip-compressed (the *.gz names) or raw (the same names
    without .gz).
    """

    classes = CLASSES

    def __init__(self, root=None, train=True, normalize=True):
        root = root or os.environ.get("DDL_FASHION_MNIST") or DEFAULT_ROOT
        paths = [_existing(os.path.join(root, f)) for f in _FILES[bool(train)]]
        for p in paths:
            if not os.path.exists(p):
                raise FileNotFoundError(
                    f"Fashion-MNIST file {p} is missing: install Debian's package with "
                    f"`apt-get install dataset-fashion-mnist`, or pass root= (or set "
                    f"DDL_FASHION_MNIST) to a folder holding {', '.join(_FILES[bool(train)])}")
        images, labels = (_C.idx_load(p) for p in paths)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"{paths[0]} and {paths[1]} do not match: images "
                             f"{tuple(images.shape)}, labels {tuple(labels.shape)}")
        images = images.reshape(images.shape[0], 1, images.shape[1], images.shape[2])
        if normalize:
            images = (images - MEAN) / STD
        super().__init__(images, labels)
        self.data, self.targets, self.train, self.root = images, labels, bool(train), root


__all__ = ["FashionMNIST"]
from .libsvm import load_libsvm  # noqa: F401
