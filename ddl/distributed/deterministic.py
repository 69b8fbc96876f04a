"""World-size-invariant deterministic data parallelism: a global-batch sampler, an exact
fixed-point gradient reduction and the wrapper that trains with them (docs/determinism.md).

    sampler = GlobalBatchSampler(len(train_set), global_batch_size=64, micro_batch_size=16)
    net = DeterministicDataParallel(model, sampler)     # or DDP(model, deterministic=sampler)
    loader = DataLoader(train_set, batch_size=sampler.local_batch_size, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            loss = net.train_step(x, y, loss_fn)        # forward + backward + exact reduction
            opt.step()

For a fixed global batch B, micro-batch m, seed and dataset, the parameters after any number
of steps are bitwise the same at every world size that divides B / m: each micro-batch is
computed alone (same shapes, same kernels) wherever it lands, its gradient is quantized
against a global per-tensor exponent (an exact MAX all-reduce), and the quantized integers are
summed in int64 (exact, so independent of the order and of the partition).
"""
import math

import numpy as np

from .. import _C
from .. import distributed as dist
from .._tensor import Tensor
from ..autograd import no_grad

_MASK64 = (1 << 64) - 1
_NO_EXP = -(1 << 40)  # the exponent of an all-zero segment (below every real one)


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def micro_batch_key(seed, epoch, position):
    """(Philox key, counter offset) of the micro-batch at global `position` (its index among
    the epoch's micro-batches): dropout inside it draws from this stream alone, whichever rank
    computes it."""
    return _splitmix64(_splitmix64(int(seed) & _MASK64) ^ (int(epoch) & _MASK64)), \
        (int(position) & 0xFFFFFFFF) << 32


# ---- the sampler ----------------------------------------------------------------------------


class GlobalBatchSampler:
    """The indices of this rank's share of each global batch.

    One permutation of range(n) per epoch from seed + epoch (the same PCG64 permutation as
    DistributedSampler). Step s takes positions [s*B, (s+1)*B) of it, cut into B/m micro-batches
    of m samples numbered by their global position; rank r of W takes the contiguous run of
    micro-batches [r*k, (r+1)*k) with k = B / (m*W). The last incomplete global batch of an
    epoch is dropped (steps_per_epoch = n // B). The position (epoch, step) is global, so a
    state_dict saved at one world size resumes at any other.
    """

    def __init__(self, dataset_size, global_batch_size, micro_batch_size, num_replicas=None,
                 rank=None, seed=0, shuffle=True):
        if not isinstance(dataset_size, int):
            dataset_size = len(dataset_size)
        if num_replicas is None or rank is None:
            world = dist.get_world_size() if dist.is_initialized() else 1
            me = dist.get_rank() if dist.is_initialized() else 0
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        b, m = int(global_batch_size), int(micro_batch_size)
        if b < 1 or m < 1 or b % m:
            raise ValueError(f"GlobalBatchSampler: micro_batch_size {m} must divide "
                             f"global_batch_size {b} (both >= 1)")
        if num_replicas < 1 or (b // m) % num_replicas:
            raise ValueError(f"GlobalBatchSampler: the world size {num_replicas} must divide the "
                             f"number of micro-batches per step, {b // m} (= {b} / {m})")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"GlobalBatchSampler: rank {rank} is outside [0, {num_replicas})")
        if dataset_size < b:
            raise ValueError(f"GlobalBatchSampler: the dataset ({dataset_size} samples) is "
                             f"smaller than one global batch ({b})")
        self.dataset_size, self.global_batch_size, self.micro_batch_size = dataset_size, b, m
        self.num_replicas, self.rank, self.seed, self.shuffle = num_replicas, rank, seed, shuffle
        self.micro_batches = b // m                       # per global step
        self.local_micro_batches = self.micro_batches // num_replicas
        self.local_batch_size = self.local_micro_batches * m
        self.steps_per_epoch = dataset_size // b
        self.epoch, self.step = 0, 0

    def set_epoch(self, epoch):
        """Start `epoch` (from its first step) unless the sampler is already positioned in it,
        as after load_state_dict."""
        if int(epoch) != self.epoch:
            self.epoch, self.step = int(epoch), 0

    def order(self):
        n = self.dataset_size
        if not self.shuffle:
            return np.arange(n)
        return np.random.Generator(np.random.PCG64(self.seed + self.epoch)).permutation(n)

    def micro_batch_ids(self):
        """The global positions (within the epoch) of this rank's micro-batches at this step."""
        first = self.step * self.micro_batches + self.rank * self.local_micro_batches
        return list(range(first, first + self.local_micro_batches))

    def __iter__(self):
        order, b, lb = self.order(), self.global_batch_size, self.local_batch_size
        out = []
        for s in range(self.step, self.steps_per_epoch):
            start = s * b + self.rank * lb
            out.append(order[start:start + lb])
        return iter(np.concatenate(out).tolist() if out else [])

    def __len__(self):
        return (self.steps_per_epoch - self.step) * self.local_batch_size

    def state_dict(self):
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "global_batch_size": self.global_batch_size,
                "micro_batch_size": self.micro_batch_size, "dataset_size": self.dataset_size}

    def load_state_dict(self, state):
        for k in ("global_batch_size", "micro_batch_size", "dataset_size"):
            if k in state and int(state[k]) != getattr(self, k):
                raise ValueError(f"GlobalBatchSampler: the checkpoint has {k}={int(state[k])}, "
                                 f"this sampler {getattr(self, k)}: the run would differ")
        self.epoch, self.step, self.seed = int(state["epoch"]), int(state["step"]), \
            int(state["seed"])


# ---- the exact reduction -------------------------------------------------------------------


def _precision_bits(count, compact=False):
    """Fraction bits below each segment's exponent so that `count` quantized values sum
    without overflow: every |q| < 2^P, so the sum is < count * 2^P <= 2^62 (int64), or, in
    compact mode, the biased sum <= 2 * count * 2^P <= 2^30 (a 32-bit lane, with room)."""
    return (29 if compact else 62) - max(0, math.ceil(math.log2(count)))


class ExactSum:
    """The sum over every rank of `rows` (k, n) float32, cut into segments (one exponent each),
    divided by `count` (the number of rows over all ranks), bitwise the same whatever the
    rows' distribution over the ranks and their order.

    Per segment E = the global max frexp exponent (|x| < 2^E for all its values); each value
    becomes the integer rint(x * 2^(P - E)) with P = _precision_bits(count); the integers add
    exactly in int64 (locally, then an int64 all_reduce SUM); the sum becomes float once. The
    quantum is 2^(E - P), 2^-52 or finer of the segment's largest value for up to 1024 rows.
    A segment with a NaN or inf anywhere becomes all NaN. compact=True: P = 29 -
    ceil(log2(count)) and the int64 words on the wire carry two 32-bit lanes (_compact_sum).
    """

    def __init__(self, lengths, count, group=None, compact=False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.total = int(self.lengths.sum())
        self.count, self.group = int(count), group
        self.compact = bool(compact)
        self.bits = _precision_bits(self.count, self.compact)
        self._q = self._words = None

    def _all_reduce(self, a, op):
        if self.group is not None:
            dist.all_reduce(a, op=op, group=self.group)

    def __call__(self, rows, out=None):
        """rows: (k, total) float32 C-contiguous (k may be 0). Returns (total,) float32 (in
        `out` when given)."""
        rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, self.total)
        segs = [[r[a:a + n] for r in rows] for a, n in zip(self.starts.tolist(),
                                                           self.lengths.tolist())]
        return self.reduce_segments(segs, rows.shape[0], out)

    def reduce_segments(self, segs, k, out=None):
        """The same sum with the rows given per segment: segs[s] is a sequence of k float32
        C-contiguous buffers (NumPy arrays or ddl tensors) of lengths[s] values each, segment
        s of each local row, so a model's per-micro-batch gradients need no copy into a
        matrix. Returns (total,) float32 (in `out` when given)."""
        nseg = self.lengths.size
        info = np.empty(2 * nseg, dtype=np.int64)
        for s, seg in enumerate(segs):
            info[s], info[nseg + s] = _C.fixed_segment_exponent(seg)
        self._all_reduce(info, dist.ReduceOp.MAX)          # exact: integers
        exps, bad = info[:nseg], info[nseg:]
        shift = np.where((exps == _NO_EXP) | (bad != 0), 0, self.bits - exps)
        if out is None:
            out = np.empty(self.total, dtype=np.float32)
        if self.compact:
            return self._compact_sum(segs, k, shift, bad, out)
        if self._q is None:
            self._q = np.empty(self.total, dtype=np.int64)  # reused: no page faults a step
            self._q_segs = [self._q[a:a + n] for a, n in zip(self.starts.tolist(),
                                                             self.lengths.tolist())]
        q = self._q
        for seg, a, sh, b in zip(segs, self._q_segs, shift.tolist(), bad.tolist()):
            if b:
                a.fill(0)
            else:
                _C.fixed_quantize_sum(seg, sh, a)          # exact: |q| < 2^62 / count
        self._all_reduce(q, dist.ReduceOp.SUM)              # exact: int64 sum
        _C.fixed_to_float(q, self.lengths, shift, bad, float(self.count), out)
        return out

    def _compact_sum(self, segs, k, shift, bad, out):
        """The compact wire: each segment quantized straight into its own run of (len + 1) // 2
        int64 words of two biased 32-bit lanes (half the bytes), one int64 all_reduce, then
        unpacked straight into out. A rank's lane values are q + k * 2^P in [0, 2k * 2^P)
        (|q| < k * 2^P); their sum over the ranks stays <= 2 * count * 2^P <= 2^30, so no
        carry crosses a lane."""
        if self._words is None:
            wl = (self.lengths + 1) // 2
            ws = np.concatenate([[0], np.cumsum(wl)[:-1]]).astype(np.int64)
            self._words = np.empty(int(wl.sum()), dtype=np.int64)
            self._w_segs = [self._words[a:a + n] for a, n in zip(ws.tolist(), wl.tolist())]
            self._o_segs = None
        if self._o_segs is None or self._o_segs[0] is not out:
            self._o_segs = [out] + [out[a:a + n] for a, n in zip(self.starts.tolist(),
                                                               self.lengths.tolist())]
        bias, total_bias = k << self.bits, self.count << self.bits
        for seg, w, n, sh, b in zip(segs, self._w_segs, self.lengths.tolist(), shift.tolist(),
                                    bad.tolist()):
            _C.fixed_quantize_pack(() if b else seg, n, sh, bias, w)
        self._all_reduce(self._words, dist.ReduceOp.SUM)
        cnt = float(self.count)
        for w, o, sh, b in zip(self._w_segs, self._o_segs[1:], shift.tolist(), bad.tolist()):
            _C.fixed_unpack_to_float(w, sh, b, total_bias, cnt, o)
        return out


# ---- the wrapper ---------------------------------------------------------------------------


def _batch_norms(module):
    from ..nn.layers import _BatchNorm
    from ..nn.parallel import SyncBatchNorm

    found = []
    for name, m in module.named_modules():
        if isinstance(m, SyncBatchNorm):
            # a layer kind this mode cannot run, not a wrong argument type
            raise ValueError(  # noqa: TRY004
                f"DeterministicDataParallel: '{name}' is a SyncBatchNorm; this mode normalizes "
                "per micro-batch (ghost batch norm): use BatchNorm")
        if isinstance(m, _BatchNorm):
            found.append(m)
    return found


def _slice(obj, a, b):
    if isinstance(obj, (list, tuple)):
        return type(obj)(_slice(o, a, b) for o in obj)
    return obj[a:b]


class DeterministicDataParallel:
    """Train `module` so that the result does not depend on the world size (see the module
    docstring). `sampler` (a GlobalBatchSampler) fixes B, m and the position used to key
    dropout. Parameters and buffers are broadcast from rank 0 at construction. The group is
    `process_group`, else the world; a sampler for one rank without a group trains locally.
    compact=True quantizes to 29 - ceil(log2(B/m)) bits below each tensor's exponent instead
    of 62 - ceil(log2(B/m)) and sends two 32-bit lanes per int64 word: the bytes of a float32
    all-reduce, still exact and world-invariant, but a coarser quantum (about float32's).

    train_step(inputs, target, loss_fn) runs each local micro-batch's forward and backward
    (loss_fn should average over the micro-batch), reduces the gradients exactly into every
    parameter's .grad (the mean over the global batch), updates batch-norm running statistics
    from the exact mean of the micro-batches' statistics, advances the sampler one step and
    returns the global mean loss (a float, also exact). Then call optimizer.step().
    """

    def __init__(self, module, sampler, process_group=None, compact=False):
        if not isinstance(sampler, GlobalBatchSampler):
            raise TypeError("DeterministicDataParallel: the sampler (DistributedDataParallel's "
                            "deterministic=) must be a GlobalBatchSampler, which fixes the "
                            "global batch and micro-batch sizes; got "
                            f"{type(sampler).__name__}")
        self.module, self.sampler = module, sampler
        self.process_group = None
        world = 1
        # a one-rank sampler without a group trains alone, even inside a larger world
        if process_group is not None or (dist.is_initialized() and sampler.num_replicas > 1):
            self.process_group = process_group if process_group is not None else dist._require()
            world = self.process_group.size()
        if world != sampler.num_replicas:
            raise ValueError(f"DeterministicDataParallel: the sampler was made for "
                             f"{sampler.num_replicas} ranks, the process group has {world}")
        self._params = [p for p in module.parameters() if p.requires_grad]
        from .. import float32

        for name, p in module.named_parameters():
            if p.requires_grad and p.dtype != float32:
                raise TypeError(f"DeterministicDataParallel: parameter '{name}' is {p.dtype}; "
                                "this mode reduces float32 gradients (convert the model with "
                                ".float())")
        self._bns = _batch_norms(module)
        if self.process_group is not None and world > 1:
            with no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    if t.numel():
                        dist.broadcast(t, src=self.process_group.ranks[0],
                                       group=self.process_group)
        lengths = [p.numel() for p in self._params]
        self._bn_seg = {}  # id(batch norm) -> its running mean's segment (the variance's next)
        for bn in self._bns:
            if bn.track_running_stats:
                self._bn_seg[id(bn)] = len(lengths)
                lengths += [bn.num_features, bn.num_features]
        lengths.append(1)  # the loss
        self._reduce = ExactSum(lengths, sampler.micro_batches,
                                self.process_group if world > 1 else None, compact)
        self.last_outputs = []
        self._zeros = [None] * len(self._params)  # the gradient of a parameter a micro-batch
        # did not use
        self._total = None  # (total,) float32: the reduced values, reused

    # Module-like surface: the wrapper is used for training steps; calls, modes and state go
    # to the wrapped module
    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self, mode=True):
        self.module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def parameters(self):
        return self.module.parameters()

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.module.load_state_dict(*args, **kwargs)

    def train_step(self, inputs, target, loss_fn):
        s, m = self.sampler, self.sampler.micro_batch_size
        k = s.local_micro_batches
        n = target.shape[0]
        if n != k * m:
            raise ValueError(f"DeterministicDataParallel.train_step: got {n} samples; this rank "
                             f"takes {k} micro-batches of {m} = {k * m} per step "
                             "(DataLoader batch_size=sampler.local_batch_size)")
        if s.step >= s.steps_per_epoch:
            raise RuntimeError(f"DeterministicDataParallel.train_step: epoch {s.epoch} has "
                               f"{s.steps_per_epoch} steps and all were taken; call "
                               "sampler.set_epoch() for the next epoch")
        bns = [b for b in self._bns if b.training and b.track_running_stats]
        saved_bn = [(b.momentum, b.running_mean.numpy().copy(), b.running_var.numpy().copy(),
                     b.num_batches_tracked.numpy().copy()) for b in bns]
        # segs[s][j]: segment s (a parameter's gradient, a batch-norm statistic, the loss) of
        # micro-batch j, kept as computed: the reduction reads them in place
        segs = [[] for _ in range(self._reduce.lengths.size)]
        rng = _C.rng_state()
        self.last_outputs = []
        try:
            for b in bns:
                b.momentum = 1.0  # running stats := this micro-batch's statistics, exactly
            for j, gid in enumerate(s.micro_batch_ids()):
                for p in self._params:
                    p.grad = None
                for b in bns:
                    b.running_mean.numpy()[...] = 0
                    b.running_var.numpy()[...] = 0
                _C.rng_state(*micro_batch_key(s.seed, s.epoch, gid))
                out = self.module(_slice(inputs, j * m, (j + 1) * m))
                loss = loss_fn(out, target[j * m:(j + 1) * m])
                loss.backward()
                self.last_outputs.append(out.detach() if isinstance(out, Tensor) else out)
                self._collect(segs, bns, loss)
        finally:
            _C.rng_state(*rng)
            for b, (mom, _, _, nbt) in zip(bns, saved_bn):
                b.momentum = mom
                b.num_batches_tracked.numpy()[...] = nbt
        if self._total is None:
            from .._functions import from_numpy

            self._total = np.empty(self._reduce.total, dtype=np.float32)
            # the parameters' .grad: views of the reduced values (rewritten by each step)
            self._grad_views = [from_numpy(self._total[a:a + p.numel()].reshape(p.shape))
                                for p, a in zip(self._params, self._reduce.starts.tolist())]
        total = self._reduce.reduce_segments(segs, k, self._total)
        self._write_back(total, bns, saved_bn)
        s.step += 1
        return float(total[-1])

    def _collect(self, segs, bns, loss):
        """Append this micro-batch's gradients (the tensors themselves, no copy), batch-norm
        statistics and loss to their segments. A batch norm in eval mode adds nothing (its
        segments sum zeros and are not written back)."""
        for i, p in enumerate(self._params):
            g = p.grad
            if g is None:
                if self._zeros[i] is None:
                    self._zeros[i] = np.zeros(p.numel(), dtype=np.float32)
                g = self._zeros[i]
            segs[i].append(g)
        for b in bns:
            i = self._bn_seg[id(b)]
            mean, var = b.running_mean.numpy().copy(), b.running_var.numpy().copy()
            segs[i].append(mean)
            segs[i + 1].append(var)
        segs[-1].append(np.array([float(loss)], dtype=np.float32))

    def _write_back(self, total, bns, saved_bn):
        for p, g in zip(self._params, self._grad_views):
            p.grad = g
        for b, (mom, mean0, var0, nbt) in zip(bns, saved_bn):
            off = int(self._reduce.starts[self._bn_seg[id(b)]])
            c = b.num_features
            nbt = nbt + 1
            b.num_batches_tracked.numpy()[...] = nbt
            w = np.float32(mom if mom is not None else 1.0 / float(nbt))
            mean, var = total[off:off + c], total[off + c:off + 2 * c]
            b.running_mean.numpy()[...] = (np.float32(1) - w) * mean0 + w * mean
            b.running_var.numpy()[...] = (np.float32(1) - w) * var0 + w * var


def parameter_digest(module, buffers=True):
    """SHA-256 of every parameter's (and, with `buffers`, buffer's) name and bytes, in
    state_dict order: equal digests mean bitwise-equal models."""
    import hashlib

    h = hashlib.sha256()
    items = module.state_dict().items() if buffers else module.named_parameters()
    for name, t in items:
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(t)).tobytes())
    return h.hexdigest()


__all__ = ["DeterministicDataParallel", "ExactSum", "GlobalBatchSampler", "micro_batch_key",
           "parameter_digest"]
