"""ddl.utils: torch.utils's layout (ddl.utils.data holds the datasets, samplers and loader)."""
from . import data as data

__all__ = ["data"]
