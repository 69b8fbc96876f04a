"""ddl.utils.data.distributed: DistributedSampler (the one of ddl.data, the same class)."""
from ...data import DistributedSampler

__all__ = ["DistributedSampler"]
