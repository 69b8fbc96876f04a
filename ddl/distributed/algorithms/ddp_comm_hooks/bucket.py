"""GradBucket (what a DDP communication hook gets) and the Python reducer that runs hooks.

With a hook registered, DistributedDataParallel drops its C reducer and `HookReducer` takes
the parameters' gradient hooks: the parameters are bucketed in reverse order (about
bucket_cap_mb each, the first one 1 MiB, like the C reducer), a bucket's hook is called as
soon as its last gradient is final during backward -- buckets in index order, so that every
rank issues the same collectives in the same order -- and the futures are waited on, their
values written back into the gradients, when the last bucket has been launched, before
backward returns."""
import numpy as np

from ...._functions import from_numpy


class GradBucket:
    """One bucket: a flat float copy of its parameters' gradients (buffer())."""

    def __init__(self, index, buffer, params, offsets, is_last):
        self._index, self._buffer, self._params = index, buffer, params
        self._offsets, self._is_last = offsets, is_last

    def index(self):
        return self._index

    def buffer(self):
        return self._buffer

    def set_buffer(self, tensor):
        self._buffer = tensor

    def is_last(self):
        return self._is_last

    def parameters(self):
        return list(self._params)

    def gradients(self):
        """Views of buffer(), one per parameter, shaped like it."""
        flat = self._buffer.numpy().reshape(-1)
        return [from_numpy(flat[a:b].reshape(p.shape))
                for p, (a, b) in zip(self._params, self._offsets)]


def _buckets(params, cap_bytes, first_bytes=1 << 20):
    """Lists of parameter indices, in reverse registration order, about cap_bytes each."""
    out, cur, size = [], [], 0
    limit = min(first_bytes, cap_bytes)
    for i in reversed(range(len(params))):
        nbytes = params[i].numel() * params[i].dtype.itemsize
        if cur and (size + nbytes > limit or params[i].dtype != params[cur[0]].dtype):
            out.append(cur)
            cur, size, limit = [], 0, cap_bytes
        cur.append(i)
        size += nbytes
    if cur:
        out.append(cur)
    return out


class HookReducer:
    def __init__(self, params, names, state, hook, cap_bytes):
        self.params, self.names, self.state, self.hook = params, names, state, hook
        self.buckets = _buckets(params, cap_bytes)
        self.bucket_of = {}
        for k, idx in enumerate(self.buckets):
            for i in idx:
                self.bucket_of[i] = k
        self.in_iteration = False
        self.sync = True
        self.handles = [p.register_hook(self._hook_for(i)) for i, p in enumerate(params)]

    def _hook_for(self, i):
        def on_ready(grad):
            self._ready(i)

        return on_ready

    def prepare(self, sync):
        """Called by DDP's forward (with grad enabled): arm the next backward."""
        if self.in_iteration and self.sync and any(self.pending):
            missing = [self.names[i] for i in range(len(self.params)) if i not in self.ready]
            self.in_iteration = False
            raise ValueError(
                "DistributedDataParallel: the previous iteration did not finish reducing: "
                f"{len(missing)} parameter(s) got no gradient ({', '.join(missing[:8])}); "
                "with a communication hook every parameter must take part in the loss")
        self.sync = sync
        self.in_iteration = True
        self.ready = set()
        self.pending = [len(b) for b in self.buckets]
        self.launched = []   # (future, bucket)

    def _ready(self, i):
        if not self.in_iteration or not self.sync:
            return   # no DDP forward before this backward, or inside no_sync: accumulate
        if i in self.ready:
            raise ValueError(f"DistributedDataParallel: parameter {self.names[i]} got a "
                             "gradient twice in one iteration; run forward again first")
        self.ready.add(i)
        self.pending[self.bucket_of[i]] -= 1
        while len(self.launched) < len(self.buckets) and not self.pending[len(self.launched)]:
            self._launch(len(self.launched))
        if len(self.launched) == len(self.buckets):
            self._finish()

    def _launch(self, k):
        idx = self.buckets[k]
        ps = [self.params[i] for i in idx]
        offsets, at = [], 0
        for p in ps:
            offsets.append((at, at + p.numel()))
            at += p.numel()
        flat = np.empty(at, dtype=np.float32 if ps[0].dtype.name == "float32" else np.float64)
        for p, (a, b) in zip(ps, offsets):
            flat[a:b] = p.grad.numpy().reshape(-1)
        bucket = GradBucket(k, from_numpy(flat), ps, offsets, k == len(self.buckets) - 1)
        fut = self.hook(self.state, bucket)
        if not hasattr(fut, "wait"):
            raise TypeError("DistributedDataParallel: a communication hook must return a "
                            f"Future, got {type(fut).__name__}")
        self.launched.append((fut, bucket))

    def _finish(self):
        self.in_iteration = False
        for fut, bucket in self.launched:
            result = fut.wait()
            if isinstance(result, (list, tuple)):
                result = result[0]
            flat = np.asarray(result.numpy() if hasattr(result, "numpy") else result)
            flat = flat.reshape(-1)
            if flat.size != bucket._offsets[-1][1]:
                raise ValueError(f"DistributedDataParallel: the communication hook returned "
                                 f"{flat.size} values for bucket {bucket.index()} of "
                                 f"{bucket._offsets[-1][1]}")
            for p, (a, b) in zip(bucket._params, bucket._offsets):
                p.grad.numpy().reshape(-1)[:] = flat[a:b]
        self.launched = []

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

