"""scaled_dot_product_attention (fused kernel vs PyTorch and vs its naive twin, masks, causal,
dropout), MultiheadAttention and the Transformer modules against PyTorch from the same
state_dict (float32 1e-5, float64 1e-10), finite differences in float64, a tiny causal
language model that learns, and the errors."""

import numpy as np
import pytest
from _gradcheck import gradcheck
from _util import torch_or_skip

import ddl
from ddl import nn
from ddl.nn import attention as A
from ddl.nn import functional as F

DTYPES = [ddl.float32, ddl.float64]
DT_IDS = ["f32", "f64"]


def tol(dtype):
    return {"rtol": 1e-5, "atol": 2e-6} if dtype is ddl.float32 else {"rtol": 1e-10,
                                                                       "atol": 1e-12}


def _grads_match(ours, theirs, o, t, dtype, rng, tolerance=None):
    torch = torch_or_skip()
    tolerance = tolerance or tol(dtype)
    np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), **tolerance)
    R = rng.standard_normal(tuple(t.shape)).astype(dtype.numpy)
    (o * ddl.tensor(R)).sum().backward()
    (t * torch.tensor(R)).sum().backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tolerance)


MASKS = ["none", "causal", "bool", "float", "padding"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("L, S", [(7, 7), (70, 150), (130, 33)])
def test_sdpa_matches_torch(L, S, mask, dtype, rng):
    torch = torch_or_skip()
    if mask == "causal" and L > S:
        L = S
    q = rng.standard_normal((2, 3, L, 8))
    k = rng.standard_normal((2, 3, S, 8))
    v = rng.standard_normal((2, 3, S, 5))
    m = tm = None
    if mask == "bool":
        mb = rng.random((L, S)) < 0.7
        mb[:, 0] = True
        m, tm = ddl.tensor(mb), torch.tensor(mb)
    elif mask == "float":
        mf = rng.standard_normal((2, 1, L, S)).astype(dtype.numpy)
        m, tm = ddl.tensor(mf), torch.tensor(mf)
    elif mask == "padding":  # (B, 1, 1, S): keys hidden per batch entry, one row fully hidden
        mf = np.zeros((2, 1, 1, S), dtype=dtype.numpy)
        mf[0, 0, 0, S // 2:] = -np.inf
        mf[1, 0, 0, :] = -np.inf
        m, tm = ddl.tensor(mf), torch.tensor(mf)
    ours = [ddl.tensor(a.astype(dtype.numpy)).requires_grad_() for a in (q, k, v)]
    theirs = [torch.tensor(a.astype(dtype.numpy), requires_grad=True) for a in (q, k, v)]
    causal = mask == "causal"
    o = F.scaled_dot_product_attention(*ours, attn_mask=m, is_causal=causal)
    t = torch.nn.functional.scaled_dot_product_attention(*theirs, attn_mask=tm, is_causal=causal)
    _grads_match(ours, theirs, o, t, dtype, rng)


@pytest.mark.parametrize("mask", MASKS)
def test_fused_matches_the_naive_twin(mask, rng):
    L, S = 150, 150
    arrays = [rng.standard_normal((1, 2, L, 16)), rng.standard_normal((1, 2, S, 16)),
              rng.standard_normal((1, 2, S, 16))]
    m = None
    if mask in ("bool", "padding"):
        m = ddl.tensor(rng.random((L, S)) < 0.8)
    elif mask == "float":
        m = ddl.tensor(rng.standard_normal((L, S)).astype(np.float32))
    causal = mask == "causal"
    outs, grads = [], []
    R = ddl.tensor(rng.standard_normal((1, 2, L, 16)).astype(np.float32))
    for naive in (False, True):
        ts = [ddl.tensor(a.astype(np.float32)).requires_grad_() for a in arrays]
        fn = A._sdpa_naive if naive else (lambda *a, **k: F.scaled_dot_product_attention(*a, **k))
        o = fn(*ts, attn_mask=m, is_causal=causal)
        (o * R).sum().backward()
        outs.append(o.detach().numpy())
        grads.append([t.grad.numpy() for t in ts])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("layout", ["blhd", "packed", "strided-features", "expanded"])
def test_sdpa_reads_strided_layouts(layout, dtype, rng):
    """Views the kernels read in place ((B, L, H, D) transposed, slices of a packed (B, L, 3HD)
    projection) and ones they must copy (features not unit-stride, an expanded batch): values
    and gradients as PyTorch's, the output and gradients shaped as the inputs."""
    torch = torch_or_skip()
    B, L, H, D = 2, 70, 3, 8
    if layout == "packed":
        base = rng.standard_normal((B, L, 3 * H * D)).astype(dtype.numpy)
    elif layout == "expanded":
        base = rng.standard_normal((1, H, L, 3 * D)).astype(dtype.numpy)
    else:
        base = rng.standard_normal((B, L, H, 3 * D)).astype(dtype.numpy)

    def split(x, lib):
        if layout == "packed":
            parts = [x[..., i * H * D:(i + 1) * H * D].reshape(B, L, H, D) for i in range(3)]
            return [p.transpose(1, 2) for p in parts]
        if layout == "expanded":
            return [x[..., i * D:(i + 1) * D].expand(B, H, L, D) for i in range(3)]
        parts = [x[..., i * D:(i + 1) * D] for i in range(3)]
        if layout == "strided-features":
            x2 = x.transpose(2, 3)  # (B, L, 3D, H): features at stride H
            return [x2[:, :, i * D:(i + 1) * D, :].permute(0, 3, 1, 2) for i in range(3)]
        return [p.transpose(1, 2) for p in parts]

    ob = ddl.tensor(base).requires_grad_()
    tb = torch.tensor(base, requires_grad=True)
    o = F.scaled_dot_product_attention(*split(ob, ddl))
    t = torch.nn.functional.scaled_dot_product_attention(*split(tb, torch))
    assert tuple(o.shape) == tuple(t.shape) == (B, H, L, D)
    if layout in ("blhd", "packed"):  # written as (B, L, H, D), as PyTorch's flash kernel
        assert o.transpose(1, 2).is_contiguous()
    _grads_match([ob], [tb], o, t, dtype, rng)
    if layout in ("blhd", "packed") and dtype is ddl.float32:  # and the naive twin agrees
        nb = ddl.tensor(base).requires_grad_()
        n = A._sdpa_naive(*split(nb, ddl))
        np.testing.assert_allclose(n.detach().numpy(), o.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sdpa_same_bits_on_any_thread_count(rng):
    """(b, h) pairs are split over ddl's threads, each computed by one thread in a fixed
    order: the results do not depend on the thread count."""
    arrays = [rng.standard_normal((3, 2, 90, 16)).astype(np.float32) for _ in range(3)]
    before = ddl.get_num_threads()
    results = []
    try:
        for n in (1, 2, 5):
            ddl.set_num_threads(n)
            ts = [ddl.tensor(a).requires_grad_() for a in arrays]
            o = F.scaled_dot_product_attention(*ts, is_causal=True)
            (o * o).sum().backward()
            results.append([o.detach().numpy()] + [t.grad.numpy() for t in ts])
    finally:
        ddl.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_sdpa_three_dims_scale_and_dropout(rng):
    torch = torch_or_skip()
    q, k, v = (rng.standard_normal((4, 9, 6)) for _ in range(3))
    ours = [ddl.tensor(a).requires_grad_() for a in (q, k, v)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    o = F.scaled_dot_product_attention(*ours, scale=0.3)
    t = torch.nn.functional.scaled_dot_product_attention(*theirs, scale=0.3)
    _grads_match(ours, theirs, o, t, ddl.float64, rng)
    # dropout: reproducible under the seed, every weight kept or scaled by 1 / (1 - p)
    x = [ddl.tensor(a.astype(np.float32)) for a in (q, k, v)]
    ddl.manual_seed(3)
    a = F.scaled_dot_product_attention(*x, dropout_p=0.5)
    ddl.manual_seed(3)
    b = F.scaled_dot_product_attention(*x, dropout_p=0.5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), F.scaled_dot_product_attention(*x).numpy())


def test_sdpa_gradcheck_float64(rng):
    q, k, v = (ddl.tensor(rng.standard_normal((1, 2, 5, 3))).requires_grad_() for _ in range(3))
    m = ddl.tensor(rng.standard_normal((5, 5)))
    assert gradcheck(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=m), [q, k, v],
                     eps=1e-6, rtol=1e-6, atol=1e-9) > 0
    assert gradcheck(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v],
                     eps=1e-6, rtol=1e-6, atol=1e-9) > 0


def _load(ours, theirs, dtype):
    """theirs' state_dict (cast to dtype) into ours: the names must map one to one."""
    torch = torch_or_skip()
    theirs.to(torch.float64 if dtype is ddl.float64 else torch.float32)
    sd = {k: ddl.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    assert set(sd) == set(ours.state_dict())
    ours.to(dtype)
    ours.load_state_dict(sd)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("case", ["self", "cross-kdim", "masks", "weights-per-head"])
def test_multihead_attention_matches_torch(case, batch_first, dtype, rng):
    torch = torch_or_skip()
    E, H, N, L, S = 12, 3, 2, 5, 7
    kw = {"kdim": 6, "vdim": 4} if case == "cross-kdim" else {}
    torch.manual_seed(0)
    ours = nn.MultiheadAttention(E, H, batch_first=batch_first, **kw)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, **kw)
    _load(ours, theirs, dtype)
    dt = dtype.numpy

    def shaped(n, length, d):
        a = rng.standard_normal((n, length, d)).astype(dt)
        return a if batch_first else a.transpose(1, 0, 2).copy()

    x = shaped(N, L, E)
    if case == "self":
        arrays = [x]
    else:
        arrays = [x, shaped(N, S, kw.get("kdim", E)), shaped(N, S, kw.get("vdim", E))]
    o_in = [ddl.tensor(a).requires_grad_() for a in arrays]
    t_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    oq, ok, ov = (o_in * 3)[:3] if case == "self" else o_in
    tq, tk, tv = (t_in * 3)[:3] if case == "self" else t_in
    extra_o, extra_t = {}, {}
    if case in ("masks", "weights-per-head"):
        kpm = np.zeros((N, S), dtype=bool)
        kpm[0, -2:] = True
        am = np.triu(np.ones((L, S), dtype=bool), 3)
        extra_o = {"key_padding_mask": ddl.tensor(kpm), "attn_mask": ddl.tensor(am)}
        extra_t = {"key_padding_mask": torch.tensor(kpm), "attn_mask": torch.tensor(am)}
    avg = case != "weights-per-head"
    o, ow = ours(oq, ok, ov, need_weights=True, average_attn_weights=avg, **extra_o)
    t, tw = theirs(tq, tk, tv, need_weights=True, average_attn_weights=avg, **extra_t)
    np.testing.assert_allclose(ow.detach().numpy(), tw.detach().numpy(), **tol(dtype))
    _grads_match(o_in, t_in, o, t, dtype, rng)
    # need_weights=False runs the fused kernel: the same output
    o2, none = ours(oq, ok, ov, need_weights=False, **extra_o)
    assert none is None
    np.testing.assert_allclose(o2.detach().numpy(), t.detach().numpy(), **tol(dtype))
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), **tol(dtype))


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_matches_torch(activation, norm_first, dtype, rng):
    torch = torch_or_skip()
    kw = {"d_model": 8, "nhead": 2, "num_encoder_layers": 2, "num_decoder_layers": 2,
          "dim_feedforward": 16, "dropout": 0.0, "activation": activation,
          "norm_first": norm_first, "batch_first": True}
    torch.manual_seed(0)  # the same weights whatever ran before
    ours, theirs = nn.Transformer(**kw), torch.nn.Transformer(**kw)
    # float32 through four layers of outputs ~2: 1e-6-level absolute noise, so an absolute
    # tolerance of 1e-5 (5e-6 of the output scale) next to the 1e-5 relative one
    ptol = tol(dtype) if dtype is ddl.float64 else {"rtol": 1e-5, "atol": 1e-5}
    _load(ours, theirs, dtype)
    src = rng.standard_normal((2, 6, 8)).astype(dtype.numpy)
    tgt = rng.standard_normal((2, 5, 8)).astype(dtype.numpy)
    mask = nn.Transformer.generate_square_subsequent_mask(5, dtype=dtype)
    tmask = torch.nn.Transformer.generate_square_subsequent_mask(
        5, dtype=torch.float64 if dtype is ddl.float64 else torch.float32)
    np.testing.assert_array_equal(mask.numpy(), tmask.numpy())
    kpm = np.zeros((2, 6), dtype=bool)
    kpm[1, -1] = True
    o_in = [ddl.tensor(src).requires_grad_(), ddl.tensor(tgt).requires_grad_()]
    t_in = [torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)]
    o = ours(*o_in, tgt_mask=mask, src_key_padding_mask=ddl.tensor(kpm),
             memory_key_padding_mask=ddl.tensor(kpm))
    t = theirs(*t_in, tgt_mask=tmask, src_key_padding_mask=torch.tensor(kpm),
               memory_key_padding_mask=torch.tensor(kpm))
    _grads_match(o_in, t_in, o, t, dtype, rng, ptol)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), **ptol, err_msg=name)


def test_encoder_layers_start_equal_and_train_apart(rng):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    enc = nn.TransformerEncoder(layer, 2)
    a, b = enc.layers[0].linear1.weight, enc.layers[1].linear1.weight
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a._data_ptr != b._data_ptr


def test_tiny_causal_language_model_learns(rng):
    """A 1-layer decoder-only Transformer memorizes a short periodic text."""
    text = "the cat sat on the mat. " * 8
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    V, Lc = len(vocab), 16
    ddl.manual_seed(0)
    emb = nn.Embedding(V, 16)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    head = nn.Linear(16, V)
    params = list(emb.parameters()) + list(layer.parameters()) + list(head.parameters())
    opt = ddl.optim.Adam(params, lr=1e-2)
    mask = nn.Transformer.generate_square_subsequent_mask(Lc)
    starts = np.arange(0, len(ids) - Lc - 1, 4)
    x = ddl.tensor(np.stack([ids[s:s + Lc] for s in starts]))
    y = ddl.tensor(np.stack([ids[s + 1:s + Lc + 1] for s in starts]).reshape(-1))
    losses = []
    for _ in range(60):
        opt.zero_grad()
        logits = head(layer(emb(x), src_mask=mask))
        loss = F.cross_entropy(logits.reshape(-1, V), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_attention_errors(rng):
    q = ddl.tensor(rng.standard_normal((1, 2, 3, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=ddl.zeros(3, 3), is_causal=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=ddl.zeros(2, 3))
    with pytest.raises(TypeError, match="key is float64 but query is float32"):
        F.scaled_dot_product_attention(q, q.double(), q)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(10, 3)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = ddl.tensor(rng.standard_normal((2, 3, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, x, x, key_padding_mask=ddl.zeros(2, 4, dtype=ddl.bool))
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(4, 2, activation="swish")


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
def test_transformer_language_model_tracks_torch_loss(rng):
    """A 2-layer causal Transformer LM on a small text, the same initial weights and batches
    in ddl and PyTorch, trained 40 Adam steps: the loss curves agree step by step."""
    torch = torch_or_skip()
    text = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness, it was the epoch of belief. ") * 3
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    V, Lc, E = len(vocab), 24, 32

    def build(m):
        emb = m.nn.Embedding(V, E)
        enc = m.nn.TransformerEncoder(m.nn.TransformerEncoderLayer(
            E, 4, dim_feedforward=64, dropout=0.0, batch_first=True), 2)
        head = m.nn.Linear(E, V)
        return emb, enc, head

    torch.manual_seed(0)
    t_mods = build(torch)
    o_mods = build(ddl)
    for om, tm in zip(o_mods, t_mods):
        om.load_state_dict({k: ddl.tensor(v.detach().numpy().copy())
                            for k, v in tm.state_dict().items()})
    t_opt = torch.optim.Adam([p for m in t_mods for p in m.parameters()], lr=3e-3)
    o_opt = ddl.optim.Adam([p for m in o_mods for p in m.parameters()], lr=3e-3)
    t_mask = torch.nn.Transformer.generate_square_subsequent_mask(Lc)
    o_mask = nn.Transformer.generate_square_subsequent_mask(Lc)
    starts = np.arange(0, len(ids) - Lc - 1, 7)
    ours, theirs = [], []
    for step in range(40):
        batch = rng.choice(starts, 8, replace=False)
        x = np.stack([ids[s:s + Lc] for s in batch])
        y = np.stack([ids[s + 1:s + Lc + 1] for s in batch]).reshape(-1)
        for mods, opt, mask, lib, out, tens in (
                (o_mods, o_opt, o_mask, F, ours, ddl.tensor),
                (t_mods, t_opt, t_mask, torch.nn.functional, theirs, torch.tensor)):
            emb, enc, head = mods
            opt.zero_grad()
            logits = head(enc(emb(tens(x)), mask=mask))
            loss = lib.cross_entropy(logits.reshape(-1, V), tens(y))
            loss.backward()
            opt.step()
            out.append(float(loss.item()))
    np.testing.assert_allclose(ours, theirs, rtol=2e-3)
    assert ours[-1] < 0.6 * ours[0]
