"""A stand-in for torchvision in the PyTorch reference runs where torchvision is not
installed: FashionMNIST/MNIST read with ddl.vision's IDX reader into NumPy, ToTensor and
Normalize as torchvision defines them (uint8 / 255 -> float32 (C, H, W); (x - m) / s).
Used only by tests/test_compat.py's reference runs (real torchvision is preferred)."""
import sys
import types

import numpy as np
import torch

from ddl.vision import datasets as _ddl_datasets


class _Wrap:
    def __init__(self, cls, root, train=True, transform=None, target_transform=None,
                 download=False):
        d = cls(root, train=train, download=False)
        self._images, self._labels = d._images, d._labels
        self.transform, self.target_transform = transform, target_transform
        self.classes = d.classes

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        img, y = self._images[i], int(self._labels[i])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return img, y


def _FashionMNIST(*a, **k):
    return _Wrap(_ddl_datasets.FashionMNIST, *a, **k)


def _MNIST(*a, **k):
    return _Wrap(_ddl_datasets.MNIST, *a, **k)


class ToTensor:
    def __call__(self, a):
        a = a[:, :, None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), np.float32) / 255)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, t):
        m = torch.tensor(self.mean).view(-1, 1, 1)
        s = torch.tensor(self.std).view(-1, 1, 1)
        return (t - m) / s


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x


datasets = types.ModuleType("torchvision.datasets")
datasets.FashionMNIST, datasets.MNIST = _FashionMNIST, _MNIST
transforms = types.ModuleType("torchvision.transforms")
transforms.ToTensor, transforms.Normalize, transforms.Compose = ToTensor, Normalize, Compose
sys.modules.update({"torchvision.datasets": datasets, "torchvision.transforms": transforms})
