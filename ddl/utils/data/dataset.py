"""Dataset combinators with torch.utils.data's names: Subset, ConcatDataset, IterableDataset,
random_split, and a RandomSampler that honours `generator=`, `replacement` and `num_samples`."""
import bisect
import math
import numbers

from ... import _C, _random
from ...data import Dataset, Sampler


class IterableDataset(Dataset):
    """A dataset that is a stream: subclasses define __iter__ (no __getitem__, no sampler)."""

    def __iter__(self):
        raise NotImplementedError


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """The samples of several datasets one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for d in self.datasets:
            if isinstance(d, IterableDataset):
                raise TypeError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = []
        total = 0
        for d in self.datasets:
            total += len(d)
            self.cumulative_sizes.append(total)

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise IndexError(f"ConcatDataset: index {idx} out of range for {len(self)}")
            idx += len(self)
        if idx >= len(self):
            raise IndexError(f"ConcatDataset: index {idx} out of range for {len(self)}")
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[d - 1] if d else 0
        return self.datasets[d][idx - start]


def randperm_list(n, generator=None):
    """A permutation of range(n) drawn from ddl's generator (or `generator`)."""
    keys = _random.draw(generator, _C.random, "u", (n,), _C.FLOAT64)
    return sorted(range(n), key=keys.numpy().__getitem__)


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping Subsets of the given lengths (or fractions summing to 1,
    the remainder dealt round-robin, as PyTorch does), drawn from `generator`."""
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1):
        counts = [math.floor(n * f) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if not all(isinstance(x, numbers.Integral) and x >= 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be non-negative ints or fractions summing"
                         f" to 1, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: the lengths sum to {sum(lengths)}, the dataset has {n}")
    perm = randperm_list(n, generator)
    out, start = [], 0
    for k in lengths:
        out.append(Subset(dataset, perm[start:start + k]))
        start += k
    return out


class RandomSampler(Sampler):
    """A fresh permutation each epoch (or `num_samples` draws with replacement) from ddl's
    generator, or from `generator` when given."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self._num_samples = num_samples
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise ValueError(f"RandomSampler: num_samples must be a positive int, got "
                             f"{num_samples!r}")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        if self.replacement:
            idx = _random.draw(self.generator, _C.random, "i", (self.num_samples,), _C.INT64,
                               0, n)
            return iter(idx.tolist())
        out = []
        while len(out) < self.num_samples:
            out += randperm_list(n, self.generator)
        return iter(out[: self.num_samples])

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    def __init__(self, indices, generator=None):
        self.indices, self.generator = list(indices), generator

    def __iter__(self):
        perm = randperm_list(len(self.indices), self.generator)
        return iter([self.indices[i] for i in perm])

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """`num_samples` indices drawn with probability proportional to `weights`."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        import numpy as np

        self.weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if (self.weights < 0).any() or not self.weights.sum() > 0:
            raise ValueError("WeightedRandomSampler: weights must be >= 0 with a positive sum")
        if not replacement and num_samples > (self.weights > 0).sum():
            raise ValueError("WeightedRandomSampler: not enough non-zero weights to draw "
                             f"{num_samples} samples without replacement")
        self.num_samples, self.replacement, self.generator = num_samples, replacement, generator

    def __iter__(self):
        import numpy as np

        u = _random.draw(self.generator, _C.random, "u", (self.num_samples,),
                         _C.FLOAT64).numpy()
        p = self.weights / self.weights.sum()
        if self.replacement:
            cdf = np.cumsum(p)
            return iter(np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"),
                                   len(p) - 1).tolist())
        # without replacement: Efraimidis-Spirakis keys u^(1/w), the largest win
        n = len(p)
        keys = _random.draw(self.generator, _C.random, "u", (n,), _C.FLOAT64).numpy()
        with np.errstate(divide="ignore"):
            k = np.where(p > 0, np.log(np.maximum(keys, 1e-300)) / np.where(p > 0, p, 1), -np.inf)
        return iter(np.argsort(-k, kind="stable")[: self.num_samples].tolist())

    def __len__(self):
        return self.num_samples
