"""DDP communication hooks, as torch.distributed.algorithms.ddp_comm_hooks.

    from ddl.distributed.algorithms.ddp_comm_hooks import default_hooks
    model = DistributedDataParallel(net)
    model.register_comm_hook(None, default_hooks.bf16_compress_hook)   # state, hook

A hook is hook(state, bucket) -> Future of the bucket's reduced flat gradient: it gets a
GradBucket (buffer(), index(), is_last(), parameters(), gradients()) once every gradient in
the bucket is final, and whatever its future returns is written back into the gradients
(averaged over the ranks, as DDP's own allreduce would). The stock hooks are in default_hooks;
the 16-bit conversions run in C (csrc/core/half.c). docs/multinode.md has numbers and limits.
"""
from . import default_hooks
from .bucket import GradBucket
from .future import Future

__all__ = ["Future", "GradBucket", "default_hooks"]
