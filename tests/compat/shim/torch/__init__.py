"""`import torch` -> ddl, for the compatibility suite: put tests/compat/shim first on
PYTHONPATH and unmodified PyTorch scripts (and the processes they spawn) get ddl."""
import sys

import ddl
import ddl.distributed
import ddl.multiprocessing
import ddl.nn.functional
import ddl.nn.parallel
import ddl.optim.lr_scheduler
import ddl.utils.data
import ddl.utils.data.distributed

_ALIASES = {
    "torch": ddl,
    "torch.nn": ddl.nn,
    "torch.nn.functional": ddl.nn.functional,
    "torch.nn.parallel": ddl.nn.parallel,
    "torch.optim": ddl.optim,
    "torch.optim.lr_scheduler": ddl.optim.lr_scheduler,
    "torch.utils": ddl.utils,
    "torch.utils.data": ddl.utils.data,
    "torch.utils.data.distributed": ddl.utils.data.distributed,
    "torch.distributed": ddl.distributed,
    "torch.multiprocessing": ddl.multiprocessing,
    "torch.cuda": ddl.cuda,
    "torch.backends": ddl.backends,
}
sys.modules.update(_ALIASES)
