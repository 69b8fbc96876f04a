"""The deterministic mode's parts in one process: the exact sum (partition- and order-
independent, accurate, NaN-aware), the global-batch sampler (roles, coverage, state, errors),
the wrapper's gradients and batch-norm statistics against plain full-batch training, and
dropout keyed by the micro-batch's global position."""
from fractions import Fraction

import numpy as np
import pytest

import ddl
import ddl.nn.functional as F
from ddl import nn
from ddl.distributed.deterministic import (
    DeterministicDataParallel,
    ExactSum,
    GlobalBatchSampler,
    micro_batch_key,
    parameter_digest,
)


def _wild_rows(k, n, seed):
    """Values spanning 2^-60 .. 2^20 with both signs: float32 sums of these depend on order."""
    rng = np.random.default_rng(seed)
    mant = rng.standard_normal((k, n))
    return np.ldexp(mant, rng.integers(-60, 20, (k, n))).astype(np.float32)


def test_exact_sum_does_not_depend_on_partition_or_order():
    rows = _wild_rows(8, 300, 0)
    lengths = [100, 150, 49, 1]
    whole = ExactSum(lengths, 8)(rows)
    # the same rows split as 2 or 4 "ranks": sum the int64 parts by hand, as the all_reduce does
    for parts in (2, 4, 8):
        perm = np.random.default_rng(parts).permutation(8)
        shuffled = rows[perm]
        es = ExactSum(lengths, 8)
        chunks = np.split(shuffled, parts)
        info = [np.empty(8, np.int64) for _ in chunks]
        for c, i in zip(chunks, info):
            ddl._C.fixed_exponents(c, es.lengths, i[:4], i[4:])
        top = np.max(info, axis=0)
        shift = np.where(top[:4] == -(1 << 40), 0, es.bits - top[:4])
        acc = np.zeros(300, np.int64)
        for c in chunks:
            part = np.zeros(300, np.int64)
            ddl._C.fixed_accumulate(c, es.lengths, shift, top[4:], part)
            acc += part
        out = np.empty(300, np.float32)
        ddl._C.fixed_to_float(acc, es.lengths, shift, top[4:], 8.0, out)
        assert out.tobytes() == whole.tobytes(), parts
    # while a float32 sum in another order differs (what the mode exists for)
    f1 = rows.sum(axis=0, dtype=np.float32)
    f2 = rows[::-1].cumsum(axis=0, dtype=np.float32)[-1]
    assert f1.tobytes() != f2.tobytes()


def test_segment_kernels_equal_the_row_kernels():
    """The kernels the mode runs (one segment as k separate rows, blocked, vectorized; the
    compact wire fused) give the integers and floats of the row-matrix reference kernels,
    across block boundaries (1024 values), odd lengths, ties (x.5 quanta) and k = 0."""
    C = ddl._C
    for n in (1, 7, 1024, 1025, 2049):
        for k in (0, 1, 3):
            rows = _wild_rows(k, n, n + k) * np.float32(2.0 ** -4)  # |x| < 2^20: shift 40 fits
            if k:
                rows[0, : n // 2] = np.float32(2.5) * np.float32(2.0 ** -40)  # ties at shift 40
            lengths = np.array([n], np.int64)
            e_ref, b_ref = np.empty(1, np.int64), np.empty(1, np.int64)
            C.fixed_exponents(rows, lengths, e_ref, b_ref)
            assert C.fixed_segment_exponent(list(rows)) == (e_ref[0], bool(b_ref[0]))
            for sh in (40, 0, -3):
                ref = np.zeros(n, np.int64)
                shift, skip = np.array([sh], np.int64), np.zeros(1, np.int64)
                if k:
                    assert np.abs(rows).max() * 2.0 ** sh < 2.0 ** 60
                    C.fixed_accumulate(rows, lengths, shift, skip, ref)
                got = np.full(n, 7, np.int64)  # overwritten, not added to
                C.fixed_quantize_sum(list(rows), sh, got)
                assert got.tolist() == ref.tolist(), (n, k, sh)
            # the fused compact path against quantize, pack, unpack, to_float
            small = (rows * np.float32(2.0 ** -30)).astype(np.float32)  # |q| well inside a lane
            q = np.empty(n, np.int64)
            C.fixed_quantize_sum(list(small), 20, q)
            words_ref = np.empty((n + 1) // 2, np.int64)
            C.fixed_pack(q, 5 << 20, words_ref)
            words = np.empty((n + 1) // 2, np.int64)
            C.fixed_quantize_pack(list(small), n, 20, 5 << 20, words)
            assert words.tolist() == words_ref.tolist(), (n, k)
            back, ref_out = np.empty(n, np.int64), np.empty(n, np.float32)
            C.fixed_unpack(words, 5 << 20, back)
            assert back.tolist() == q.tolist()
            C.fixed_to_float(back, lengths, np.array([20], np.int64), skip, 3.0, ref_out)
            out = np.empty(n, np.float32)
            C.fixed_unpack_to_float(words, 20, False, 5 << 20, 3.0, out)
            assert out.tobytes() == ref_out.tobytes(), (n, k)
            C.fixed_unpack_to_float(words, 20, True, 5 << 20, 3.0, out)
            assert np.isnan(out).all()


def test_segment_kernels_reject_bad_buffers():
    C = ddl._C
    a, b = np.zeros(4, np.float32), np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="row 1 has 5 values"):
        C.fixed_segment_exponent([a, b])
    with pytest.raises(TypeError):
        C.fixed_segment_exponent([np.zeros(4, np.float64)])
    with pytest.raises(TypeError):
        C.fixed_quantize_sum(3, 0, np.zeros(4, np.int64))  # not a sequence of rows
    with pytest.raises(ValueError):
        C.fixed_quantize_sum([a], 0, np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        C.fixed_quantize_pack([a], 4, 0, 1, np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        C.fixed_unpack_to_float(np.zeros(2, np.int64), 0, False, -1, 1.0, a)


def test_exact_sum_is_accurate():
    rows = _wild_rows(6, 200, 1)
    lengths = [200]
    got = ExactSum(lengths, 6)(rows)
    exact = [sum(Fraction(float(v)) for v in rows[:, i]) / 6 for i in range(200)]
    top = float(np.abs(rows).max())
    for g, e in zip(got, exact):
        # quantum 2^(E - P) with P = 59 for 6 rows; then one float32 rounding
        assert abs(Fraction(float(g)) - e) <= abs(e) * 2 ** -23 + Fraction(top) * 2 ** -55


def test_compact_lanes_agree_with_the_full_sum():
    rows = _wild_rows(4, 301, 3)  # an odd length: the last lane is padding
    full = ExactSum([300, 1], 4)(rows)
    compact = ExactSum([300, 1], 4, compact=True)(rows)
    top = np.abs(rows[:, :300]).max()
    # quantum 2^(E - 27) per value, 4 values, then / 4
    assert np.abs(compact[:300] - full[:300]).max() <= top * 2.0 ** -26
    assert compact[300] == pytest.approx(full[300], rel=2 ** -20)
    worst = np.full((4, 1), -np.float32(1.5), np.float32)  # every |q| at its bound, negative
    assert ExactSum([1], 4, compact=True)(worst)[0] == -1.5


def test_exact_sum_nan_and_zero_segments():
    rows = np.zeros((2, 6), np.float32)
    rows[0, :3] = [1.0, 2.0, 3.0]
    rows[1, 4] = np.inf
    out = ExactSum([3, 2, 1], 2)(rows)
    assert out[:3].tolist() == [0.5, 1.0, 1.5]
    assert np.isnan(out[3:5]).all()
    assert out[5] == 0.0


def test_sampler_roles_and_coverage():
    world = [GlobalBatchSampler(103, 12, 3, num_replicas=w, rank=r, seed=5)
             for w in (1, 2, 4) for r in range(w)]
    one = world[0]
    assert one.steps_per_epoch == 8 and one.micro_batches == 4
    full = list(one)
    assert len(full) == 96 and len(set(full)) == 96  # a permutation's first 8 * 12
    for w in (2, 4):
        ranks = [s for s in world if s.num_replicas == w]
        got = [list(s) for s in ranks]
        # step by step, the ranks' runs concatenated in rank order are the 1-rank batch
        per = 12 // w
        for step in range(8):
            joined = [i for g in got for i in g[step * per:(step + 1) * per]]
            assert joined == full[step * 12:(step + 1) * 12]
        assert ranks[-1].micro_batch_ids() == list(range(4 - 4 // w, 4))
    one.set_epoch(1)
    assert list(one) != full


def test_sampler_state_and_resume_position():
    s = GlobalBatchSampler(64, 8, 2, num_replicas=2, rank=1, seed=3)
    s.set_epoch(2)
    s.step = 5
    state = s.state_dict()
    t = GlobalBatchSampler(64, 8, 2, num_replicas=4, rank=0, seed=0)
    t.load_state_dict(state)
    t.set_epoch(2)  # the same epoch: the position is kept
    assert (t.epoch, t.step, t.seed) == (2, 5, 3)
    assert len(t) == (8 - 5) * 2
    assert list(t)[:2] == GlobalBatchSampler(64, 8, 2, num_replicas=1, rank=0, seed=3) \
        .__class__.order(t)[5 * 8:5 * 8 + 2].tolist()
    t.set_epoch(3)
    assert t.step == 0
    bad = GlobalBatchSampler(64, 16, 2, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="global_batch_size=8"):
        bad.load_state_dict(state)


@pytest.mark.parametrize("args, match", [
    ((64, 10, 3, 1, 0), "must divide global_batch_size"),
    ((64, 12, 4, 2, 0), "world size 2 must divide"),
    ((64, 8, 2, 2, 2), "outside"),
    ((4, 8, 2, 1, 0), "smaller than one global batch"),
])
def test_sampler_errors(args, match):
    n, b, m, w, r = args
    with pytest.raises(ValueError, match=match):
        GlobalBatchSampler(n, b, m, num_replicas=w, rank=r)


def _mlp():
    ddl.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def test_gradients_are_the_global_mean():
    rng = np.random.default_rng(0)
    x = ddl.tensor(rng.standard_normal((16, 6)).astype(np.float32))
    y = ddl.tensor(rng.integers(0, 3, 16))
    ref = _mlp()
    F.cross_entropy(ref(x), y).backward()
    model = _mlp()
    net = DeterministicDataParallel(model, GlobalBatchSampler(16, 16, 4, 1, 0))
    loss = net.train_step(x, y, F.cross_entropy)
    assert loss == pytest.approx(float(F.cross_entropy(ref(x), y)), rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert net.sampler.step == 1
    with pytest.raises(ValueError, match="takes 4 micro-batches of 4 = 16"):
        net.train_step(x[:8], y[:8], F.cross_entropy)
    with pytest.raises(RuntimeError, match="set_epoch"):
        net.train_step(x, y, F.cross_entropy)


def test_batch_norm_is_ghost_and_running_stats_average_the_micro_batches():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3)).astype(np.float32) * 3 + 1
    ddl.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))
    net = DeterministicDataParallel(model, GlobalBatchSampler(8, 8, 4, 1, 0))
    model.train()
    net.train_step(ddl.tensor(x), ddl.tensor(np.array([0, 1] * 4)), F.cross_entropy)
    bn = model[0]
    halves = x.reshape(2, 4, 3)
    mean = halves.mean(axis=1).mean(axis=0)
    var = halves.var(axis=1, ddof=1).mean(axis=0)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.9 * 0 + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 * 1 + 0.1 * var, rtol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1
    assert bn.momentum == 0.1


def test_sync_batch_norm_is_refused():
    model = nn.Sequential(ddl.nn.parallel.SyncBatchNorm(3))
    with pytest.raises(ValueError, match="ghost batch norm"):
        DeterministicDataParallel(model, GlobalBatchSampler(8, 8, 4, 1, 0))


def test_dropout_is_keyed_by_position_not_by_rank():
    """Micro-batch 3's dropout draws come from the stream keyed by (seed, epoch, 3) alone:
    recomputed by hand from that key (as another rank holding it would), the output is the
    same; the global generator is left as it was. (Bitwise equality across 1, 2 and 4 ranks
    with dropout: tests/test_deterministic_world.py.)"""
    x = ddl.ones(16, 8)
    s = GlobalBatchSampler(16, 16, 4, 1, 0, seed=9)
    s.set_epoch(2)
    ddl.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))
    seen = []
    net = DeterministicDataParallel(model, s)
    ddl.manual_seed(123)
    before = ddl._C.rng_state()
    net.train_step(x, ddl.zeros(16), lambda out, _: seen.append(out.detach().numpy().copy())
                   or out.sum())
    assert ddl._C.rng_state() == before
    with ddl.no_grad():
        for gid in range(4):
            ddl._C.rng_state(*micro_batch_key(9, 2, gid))
            again = model(x[4 * gid:4 * gid + 4]).numpy()
            assert np.array_equal(again, seen[gid]), gid
    assert not np.array_equal(seen[2] == 0, seen[3] == 0)
    assert micro_batch_key(0, 1, 2) != micro_batch_key(0, 2, 2)
    assert micro_batch_key(0, 1, 2) != micro_batch_key(1, 1, 2)


def test_digest_sees_buffers():
    ddl.manual_seed(0)
    a = nn.Sequential(nn.BatchNorm1d(2))
    ddl.manual_seed(0)
    b = nn.Sequential(nn.BatchNorm1d(2))
    assert parameter_digest(a) == parameter_digest(b)
    b[0].running_mean.numpy()[0] = 1e-30
    assert parameter_digest(a) != parameter_digest(b)
    assert parameter_digest(a, buffers=False) == parameter_digest(b, buffers=False)


def test_ddp_hands_off_to_the_deterministic_mode():
    from ddl.nn.parallel import DistributedDataParallel

    s = GlobalBatchSampler(16, 16, 4, 1, 0)
    net = DistributedDataParallel(_mlp(), deterministic=s)
    assert isinstance(net, DeterministicDataParallel) and net.sampler is s
    with pytest.raises(TypeError, match="must be a GlobalBatchSampler"):
        DistributedDataParallel(_mlp(), deterministic="world")


def test_non_float32_parameters_are_refused():
    s = GlobalBatchSampler(16, 16, 4, 1, 0)
    with pytest.raises(TypeError, match="parameter '0.weight' is .*float64"):
        DeterministicDataParallel(_mlp().double(), s)


def test_grads_are_views_of_the_reduced_values():
    """After train_step every .grad holds the reduced mean; the next step rewrites them."""
    ddl.manual_seed(0)
    model = _mlp()
    s = GlobalBatchSampler(64, 16, 4, 1, 0)
    net = DeterministicDataParallel(model, s)
    x = ddl.tensor(np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32))
    y = ddl.tensor(np.arange(16) % 3)
    net.train_step(x, y, F.cross_entropy)
    first = [p.grad.numpy().copy() for p in model.parameters()]
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in first)
    net.train_step(x * 2, y, F.cross_entropy)
    assert any(not np.array_equal(p.grad.numpy(), g) for p, g in zip(model.parameters(), first))


def test_a_batch_norm_in_eval_mode_is_left_alone():
    """With the first of two batch norms in eval mode, the other's statistics and the loss
    still land in their own segments (they once shifted into the frozen layer's)."""
    ddl.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4),
                          nn.Linear(4, 3))
    s = GlobalBatchSampler(64, 16, 4, 1, 0)
    net = DeterministicDataParallel(model, s)
    model[1].eval()
    frozen = model[1].running_mean.numpy().copy(), model[1].running_var.numpy().copy()
    rng = np.random.default_rng(2)
    x = ddl.tensor(rng.standard_normal((16, 6)).astype(np.float32))
    y = ddl.tensor(rng.integers(0, 3, 16))
    loss = net.train_step(x, y, F.cross_entropy)
    assert model[1].running_mean.numpy().tolist() == frozen[0].tolist()
    assert model[1].running_var.numpy().tolist() == frozen[1].tolist()
    assert np.abs(model[3].running_mean.numpy()).sum() > 0
    ref = []
    with ddl.no_grad():
        for j in range(4):
            # the same micro-batch forward (no dropout): its loss
            model[3].train()
            saved = model[3].running_mean.numpy().copy(), model[3].running_var.numpy().copy()
            ref.append(float(F.cross_entropy(model(x[4 * j:4 * j + 4]), y[4 * j:4 * j + 4])))
            model[3].running_mean.numpy()[...], model[3].running_var.numpy()[...] = saved
    assert loss == pytest.approx(sum(ref) / 4, rel=1e-5)
