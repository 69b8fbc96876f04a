"""PyTorch's stock DDP hooks: allreduce_hook, fp16_compress_hook, bf16_compress_hook.

`state` is the process group (None = the world), as in PyTorch. The compress hooks send 16
bits per gradient value instead of 32: scale by 1/world_size and compress (C), an all_to_all
that gives each rank one chunk from every rank, a float32 sum of that chunk (C), compress it
again, an all_gather of the reduced chunks, decompress (C). Per rank that is (w-1)/w of the
bucket in 16-bit values each way -- half of a float32 ring allreduce's bytes -- and the sum
itself is in float32 (one rounding to 16 bits before and one after it)."""
import numpy as np

from .... import _C
from .... import distributed as dist
from .future import Future

_FP16, _BF16 = 0, 1


def _group(process_group):
    return process_group if process_group is not None else dist._require()


def allreduce_hook(process_group, bucket):
    """DDP's default: average the bucket with one allreduce (async)."""
    g = _group(process_group)
    tensor = bucket.buffer()
    tensor.div_(g.size())
    work = dist.all_reduce(tensor, group=process_group, async_op=True)
    return Future.of_work(work, [tensor]).then(lambda fut: fut.value()[0])


def _compress_hook(kind, process_group, bucket):
    g = _group(process_group)
    w = g.size()
    buf = bucket.buffer()
    if buf.dtype.name != "float32":
        raise TypeError(f"{'fp16' if kind == _FP16 else 'bf16'}_compress_hook: gradients must "
                        f"be float32, got {buf.dtype.name}")
    n = buf.numel()
    chunk = -(-n // w)
    chunk += chunk % 2               # 16-bit values travel in pairs, as float32 words
    padded = chunk * w
    flat = np.zeros(padded, np.float32)
    flat[:n] = buf.numpy().reshape(-1)
    sent = np.empty(padded, np.uint16)
    _C.half_compress(sent, flat, 1.0 / w, kind)
    got = np.empty(padded, np.uint16)
    # every rank's copy of my chunk (rows: ranks); bits are copied, never added, on the wire.
    # Started now, overlapping the rest of backward; the sum and the all_gather run when DDP
    # waits for the bucket's future (after the last bucket was launched).
    work = dist.all_to_all_single(got.view(np.float32), sent.view(np.float32),
                                  group=process_group, async_op=True)

    def reduce_and_gather(fut, sent=sent):   # sent: alive until the all_to_all is done
        part = np.empty(chunk, np.float32)
        _C.half_decompress_sum(part, got, w, kind)
        mine = np.empty(chunk, np.uint16)
        _C.half_compress(mine, part, 1.0, kind)
        every = np.empty(padded, np.uint16)
        dist.all_gather_into_tensor(every.view(np.float32), mine.view(np.float32),
                                    group=process_group)
        _C.half_decompress_sum(flat, every, 1, kind)
        buf.numpy().reshape(-1)[:] = flat[:n]
        return buf

    return Future.of_work(work, None).then(reduce_and_gather)


def fp16_compress_hook(process_group, bucket):
    """Average the bucket in IEEE half precision (values above 65504 after the 1/world_size
    scaling become inf, as in PyTorch's hook)."""
    return _compress_hook(_FP16, process_group, bucket)


def bf16_compress_hook(process_group, bucket):
    """Average the bucket in bfloat16 (float32's range, 8 bits of mantissa)."""
    return _compress_hook(_BF16, process_group, bucket)
