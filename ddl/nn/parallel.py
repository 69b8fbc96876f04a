"""DistributedDataParallel, SyncBatchNorm and Join, with PyTorch's names and behaviour.

The reducer lives in C (csrc/reducer.c): gradients live in flat bucket buffers; each
parameter's leaf hook marks it ready during backward, and a full bucket's allreduce starts on
the group's communication thread right away, overlapping the rest of backward. backward()
returns with averaged gradients in every parameter's .grad.
"""
import contextlib
import json
import os

import numpy as np

from .. import _C
from .. import distributed as dist
from .._tensor import Tensor
from ..autograd import is_grad_enabled, no_grad
from .layers import _BatchNorm
from .module import Module


def _group(process_group):
    g = process_group if process_group is not None else dist._require()
    if isinstance(g, dist._NonMember):
        # a value, not a type, is wrong: the group does not include this rank
        raise ValueError(  # noqa: TRY004
            "DistributedDataParallel: this rank is not in the given process group")
    return g


def _outputs(obj):
    """Every tensor inside a (nested) forward output."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _outputs(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _outputs(o)


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over `process_group` (the world by default).

    At construction every rank checks it has the same parameters (names and shapes), then
    parameters and buffers are broadcast from rank 0. Each backward all-reduces (averages)
    the gradients in buckets of about `bucket_cap_mb`, overlapped with backward.
    """

    def __new__(cls, module=None, *args, deterministic=None, **kwargs):
        # issue 18: DistributedDataParallel(model, deterministic=sampler) hands off to the
        # world-size-invariant mode (ddl/distributed/deterministic.py, docs/determinism.md)
        if deterministic is not None:
            from ..distributed.deterministic import DeterministicDataParallel

            return DeterministicDataParallel(module, deterministic,
                                             kwargs.get("process_group"))
        return super().__new__(cls)

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, process_group=None, bucket_cap_mb=25,
                 find_unused_parameters=False, gradient_as_bucket_view=True,
                 static_graph=False, deterministic=None):
        super().__init__()
        if device_ids not in (None, [], ()):  # cuda ids only under DDL_CUDA_AS_CPU
            from .. import _device

            for d in (*device_ids, *([] if output_device is None else [output_device])):
                _device.check(d, "DistributedDataParallel(device_ids=...)")
        self.module = module
        self.process_group = _group(process_group)
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.bucket_cap_mb = bucket_cap_mb
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._verify_same_model(module)
        self._sync_module_state()
        cap = int(bucket_cap_mb * 1024 * 1024)
        self._reducer = _C.reducer_new(self.process_group._handle, self._params, cap,
                                       min(cap, 1024 * 1024))
        _C.reducer_set_overlap(self._reducer, _overlap_default(self.process_group))
        # the buffers broadcast at each forward, found once (as PyTorch's DDP does)
        self._buffers_to_sync = [b for b in module.buffers() if b.numel()]
        self._sync = True
        self._iterations = 0
        self._joined_ranks_possible = False
        self._comm_hook = None   # a HookReducer once register_comm_hook was called

    # ---- construction-time agreement ---------------------------------------------------------
    def _verify_same_model(self, module):
        g = self.process_group
        desc = [[n, list(p.shape), p.dtype.name] for n, p in module.named_parameters()]
        blob = np.frombuffer(json.dumps(desc).encode(), dtype=np.uint8).astype(np.int64)
        length = np.array([blob.size], dtype=np.int64)
        dist.all_reduce(length, op=dist.ReduceOp.MAX, group=g)
        padded = np.full(int(length[0]), -1, dtype=np.int64)
        padded[: blob.size] = blob
        everyone = np.zeros((g.size(), padded.size), dtype=np.int64)
        dist.all_gather_into_tensor(everyone, padded, group=g)
        mine = desc
        for r in range(g.size()):
            row = everyone[r]
            theirs = json.loads(bytes(row[row >= 0].astype(np.uint8)).decode())
            if theirs == mine:
                continue
            for i in range(max(len(mine), len(theirs))):
                a = mine[i] if i < len(mine) else None
                b = theirs[i] if i < len(theirs) else None
                if a != b:
                    raise ValueError(
                        "DistributedDataParallel: the models differ across ranks: parameter "
                        f"#{i} is {_fmt(a)} on rank {g.rank()} but {_fmt(b)} on rank "
                        f"{g.ranks[r]}")

    def _sync_module_state(self):
        with no_grad():
            for t in list(self.module.parameters()) + list(self.module.buffers()):
                if t.numel():
                    dist.broadcast(t, src=self.process_group.ranks[0], group=self.process_group)

    # ---- the training step ---------------------------------------------------------------------
    def forward(self, *inputs, **kwargs):
        g = self.process_group
        if g._handle is None:  # the C reducer holds the group: never touch a destroyed one
            raise RuntimeError("DistributedDataParallel: its process group was destroyed "
                               "(destroy_process_group); wrap the module again in a new group")
        if self._joined_ranks_possible:
            flag = np.ones(1, dtype=np.int64)  # "I still have data" for Join
            dist.all_reduce(flag, group=g)
        if self._iterations == 1 and self._sync and self._comm_hook is None:
            _C.reducer_rebuild(self._reducer)  # bucket by the order grads became ready
        if self.broadcast_buffers and self._buffers_to_sync:
            self._sync_buffers()
        out = self.module(*inputs, **kwargs)
        if is_grad_enabled() and self._comm_hook is not None:   # register_comm_hook
            self._comm_hook.prepare(self._sync)
            self._iterations += 1
        elif is_grad_enabled():
            unused = self._unused_flags(out) if self.find_unused_parameters else None
            _C.reducer_set_sync(self._reducer, self._sync)
            try:
                _C.reducer_prepare(self._reducer, unused)
            except ValueError as e:
                raise ValueError(self._name_params(str(e))) from None
            self._iterations += 1
        return out

    def _sync_buffers(self):
        """Rank 0's buffers to every rank: one packed broadcast (the reducer's), or one per
        buffer once a communication hook replaced the reducer."""
        if self._reducer is not None:
            _C.reducer_sync_buffers(self._reducer, self._buffers_to_sync)
            return
        g = self.process_group
        with no_grad():
            for b in self._buffers_to_sync:
                dist.broadcast(b, src=g.ranks[0], group=g)

    def _unused_flags(self, out):
        reachable = set()
        for o in _outputs(out):
            if o.requires_grad:
                reachable |= _C.graph_leaves(o)
        return bytes(0 if _C.tensor_id(p) in reachable else 1 for p in self._params)

    def _name_params(self, message):
        pending = _C.reducer_pending(self._reducer)
        names = [self._param_names[i] for i in pending[:8]]
        if names:
            message += ". Parameters without a gradient: " + ", ".join(names)
        return message

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside; the first backward after it
        all-reduces the accumulated total."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def join(self, divide_by_initial_world_size=True, enable=True):
        """Context manager for uneven inputs: a rank that runs out of batches keeps shadowing
        the others' gradient all-reduces (with zeros) until every rank is done."""
        return Join([self], enable=enable)

    def _join_shadow_until_done(self):
        if self._comm_hook is not None:
            raise RuntimeError("DistributedDataParallel.join: not supported with a "
                               "communication hook (register_comm_hook)")
        g = self.process_group
        last = True  # no rank was still training when this one joined
        while True:
            flag = np.zeros(1, dtype=np.int64)
            dist.all_reduce(flag, group=g)
            if flag[0] == 0:
                break
            last = False
            if self._iterations == 1 and self._sync:
                _C.reducer_rebuild(self._reducer)
            if self.broadcast_buffers and self._buffers_to_sync:
                self._sync_buffers()
            _C.reducer_shadow(self._reducer)
            self._iterations += 1
        self._sync_final_model(last)

    def _sync_final_model(self, last):
        """Ranks that joined early skipped the last optimizer steps: copy the parameters and
        buffers of the last rank to join (PyTorch's DDP join hook does the same)."""
        g = self.process_group
        who = np.array([g.rank() if last else -1, 0 if last else 1], dtype=np.int64)
        dist.all_reduce(who, op=dist.ReduceOp.MAX, group=g)
        if who[1] == 0:  # every rank joined at the same time: nothing to copy
            return
        with no_grad():
            for t in list(self.module.parameters()) + list(self.module.buffers()):
                if t.numel():
                    dist.broadcast(t, src=g.ranks[int(who[0])], group=g)

    # ---- communication hooks (ddl/distributed/algorithms/ddp_comm_hooks) ----------------------
    def register_comm_hook(self, state, hook):
        """Reduce gradients with hook(state, bucket) -> Future instead of DDP's allreduce, as
        PyTorch's DDP does (e.g. default_hooks.bf16_compress_hook halves the bytes sent). Call
        it once, before the first forward; the buckets are then reduced in Python (the C
        reducer is dropped), and find_unused_parameters and join() are not supported."""
        from ..distributed.algorithms.ddp_comm_hooks.bucket import HookReducer

        if not callable(hook):
            raise TypeError(f"register_comm_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        if self._comm_hook is not None:
            raise RuntimeError("register_comm_hook: a communication hook is already registered "
                               "(it can be registered only once)")
        if self._iterations:
            raise RuntimeError("register_comm_hook: call it before the first forward")
        if self.find_unused_parameters:
            raise ValueError("register_comm_hook: not supported with find_unused_parameters")
        self._reducer = None   # frees the C reducer, which removes its gradient hooks
        self._comm_hook = HookReducer(self._params, self._param_names, state, hook,
                                      int(self.bucket_cap_mb * 1024 * 1024))

    def bucket_info(self):
        """[(parameter names, allreduce start_us, end_us)] per bucket (ddl._C.now_us clock)."""
        return [([self._param_names[i] for i in idx], s, e)
                for idx, s, e in _C.reducer_buckets(self._reducer)]

    def state_dict(self, *args, **kwargs):
        return super().state_dict(*args, **kwargs)


def _overlap_default(group):
    """Whether buckets before the last are reduced on the comm thread, overlapping backward:
    only when this host has a core to spare beyond one per rank (with every core running a
    rank, the comm thread only preempts one, and each hand-off can cost a scheduler tick).
    DDL_DDP_OVERLAP=1 or 0 forces it."""
    env = os.environ.get("DDL_DDP_OVERLAP", "")
    if env in ("0", "1"):
        return env == "1"
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    hosts = max(1, dist.get_backend_info(group)["hosts"])
    local_ranks = -(-group.size() // hosts)
    return cpus > local_ranks


def _fmt(entry):
    if entry is None:
        return "absent"
    name, shape, dtype = entry
    return f"'{name}' {tuple(shape)} {dtype}"


class Join:
    """with Join([ddp_model]): ranks that finish their data early shadow the others' collectives
    on exit, so uneven inputs end instead of hanging."""

    def __init__(self, joinables, enable=True, throw_on_early_termination=False):
        self.joinables = list(joinables)
        self.enable = enable

    def __enter__(self):
        if self.enable:
            for j in self.joinables:
                j._joined_ranks_possible = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.enable:
            return False
        try:
            if exc_type is None:
                for j in self.joinables:
                    j._join_shadow_until_done()
        finally:
            for j in self.joinables:
                j._joined_ranks_possible = False
        return False


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are computed over the whole global batch: the
    per-channel sums are all-reduced (differentiably) across the process group."""

    _expected_dims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.process_group = process_group

    def forward(self, x):
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        if x.ndim not in self._expected_dims or x.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}): bad input shape "
                             f"{tuple(x.shape)}")
        g = self.process_group or dist._require()
        c = self.num_features
        dims = [0] + list(range(2, x.ndim))
        count = x.numel() // c
        local = _stack_stats(x, dims, count)                 # (3, C): sum, sum of squares, n
        total = _C.allreduce_sum_ag(g._handle, local)
        n = total[2]
        mean = total[0] / n
        var = total[1] / n - mean * mean                     # biased, over the global batch
        shape = [1, c] + [1] * (x.ndim - 2)
        xhat = (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt()
        out = xhat
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked.item())
                ntot = float(n[0].item())
                unbiased = var.detach() * (ntot / max(ntot - 1.0, 1.0))
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(unbiased * m)
        return out

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """A copy-free conversion: every BatchNorm*d inside `module` becomes a SyncBatchNorm
        sharing its parameters and running statistics."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls.__new__(cls)
            Module.__init__(sync)
            for k in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
                setattr(sync, k, getattr(module, k))
            sync.process_group = process_group
            for name, p in module._parameters.items():
                sync._parameters[name] = p
            for name, b in module._buffers.items():
                sync._buffers[name] = b
            sync.training = module.training
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                module._modules[name] = cls.convert_sync_batchnorm(child, process_group)
        return module


def _stack_stats(x, dims, count):
    from .._functions import full, stack

    s = x.sum(dims)
    sq = (x * x).sum(dims)
    n = full(s.shape, float(count), dtype=x.dtype)
    return stack([s, sq, n], 0)


DDP = DistributedDataParallel
