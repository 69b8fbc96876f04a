"""ddl.utils.data: torch.utils.data's names. Dataset, TensorDataset, the samplers and
default_collate are ddl.data's own classes; the DataLoader here takes PyTorch's whole argument
list and runs num_workers > 0 in worker processes (ddl.data.DataLoader uses threads)."""
from ...data import (
    BatchSampler,
    Dataset,
    DistributedSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)
from . import distributed as distributed
from ._worker import WorkerInfo, get_worker_info
from .dataloader import DataLoader
from .dataset import (
    ConcatDataset,
    IterableDataset,
    RandomSampler,
    Subset,
    SubsetRandomSampler,
    WeightedRandomSampler,
    random_split,
)

__all__ = [
    "BatchSampler", "ConcatDataset", "DataLoader", "Dataset", "DistributedSampler",
    "IterableDataset", "RandomSampler", "Sampler", "SequentialSampler", "Subset",
    "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
    "default_collate", "get_worker_info", "random_split",
]
