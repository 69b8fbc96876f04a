"""The fused recurrent sequence op (_C.rnn_seq) and what is built on it: multi-layer and
bidirectional RNN/LSTM/GRU against PyTorch in float64 (outputs and every gradient to 1e-5),
finite differences, the fused op against a loop of the one-step cell ops, thread counts, and
the RNNCell/LSTMCell/GRUCell modules."""

import numpy as np
import pytest
from _gradcheck import gradcheck, leaf

import ddl
import ddl.nn.functional as F
from ddl import _C, nn

F32 = np.float32
T_, B_, I_, H_ = 4, 3, 5, 6


def t32(a):
    return ddl.tensor(np.asarray(a, dtype=F32))


def set_params(m, rng, scale=0.5):
    with ddl.no_grad():
        for p in m.parameters():
            p.copy_(t32(rng.uniform(-scale, scale, p.shape)))


KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]
KIDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def torch_twin(torch, m, name, kw, **extra):
    tm = getattr(torch.nn, name)(I_, H_, **kw, **extra).double()
    assert list(m.state_dict()) == list(tm.state_dict())
    with torch.no_grad():
        for v, tv in zip(m.state_dict().values(), tm.state_dict().values()):
            tv.copy_(torch.tensor(v.numpy().astype(np.float64)))
    return tm


@pytest.mark.parametrize("name,kw", KINDS, ids=KIDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_torch_parity_float64(rng, name, kw, bidirectional, layers):
    """ddl (float32) against PyTorch in float64 from the same weights: forward and every
    gradient to 1e-5 relative."""
    torch = pytest.importorskip("torch")
    extra = {"num_layers": layers, "bidirectional": bidirectional, "batch_first": True}
    m = getattr(nn, name)(I_, H_, **kw, **extra)
    set_params(m, rng)
    tm = torch_twin(torch, m, name, kw, **extra)
    D = 2 if bidirectional else 1
    xa = rng.standard_normal((B_, T_, I_)).astype(F32)
    ha = (rng.standard_normal((layers * D, B_, H_)) * 0.5).astype(F32)
    ca = (rng.standard_normal((layers * D, B_, H_)) * 0.5).astype(F32)
    x, h0, c0 = leaf(xa), leaf(ha), leaf(ca)
    xt, ht, ct = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (xa, ha, ca))
    lstm = name == "LSTM"
    out, st = m(x, (h0, c0) if lstm else h0)
    tout, tst = tm(xt, (ht, ct) if lstm else ht)
    assert out.shape == (B_, T_, D * H_)
    outs = [out] + (list(st) if lstm else [st])
    touts = [tout] + (list(tst) if lstm else [tst])
    tol = {"rtol": 1e-5, "atol": 1e-6}
    rs = np.random.RandomState(3)
    loss, tloss = 0, 0
    for o, to in zip(outs, touts):
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), **tol)
        R = rs.standard_normal(tuple(o.shape)).astype(F32)
        loss = loss + (o * t32(R)).sum()
        tloss = tloss + (to * torch.tensor(R.astype(np.float64))).sum()
    loss.backward()
    tloss.backward()
    for a, ta in [(x, xt), (h0, ht)] + ([(c0, ct)] if lstm else []):
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), **tol)
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[n].grad.numpy(), err_msg=n, **tol)


@pytest.mark.parametrize("name,kw", KINDS, ids=KIDS)
def test_bidirectional_finite_differences(rng, name, kw):
    m = getattr(nn, name)(I_, H_, num_layers=2, bidirectional=True, **kw)
    set_params(m, rng, 0.7)
    x = leaf(rng.standard_normal((T_, B_, I_)))
    h0 = leaf(rng.standard_normal((4, B_, H_)) * 0.5)
    c0 = leaf(rng.standard_normal((4, B_, H_)) * 0.5)
    lstm = name == "LSTM"
    state = (h0, c0) if lstm else h0
    eps = 1e-3 if kw else 1e-2
    names, params = map(list, zip(*m.named_parameters()))
    wrt = [x, h0] + ([c0] if lstm else []) + params
    gradcheck(lambda: m(x, state), wrt, names=["x", "h0"] + (["c0"] if lstm else []) + names,
              eps=eps, samples=6)


def loop_of_cells(kind, x, h, c, w_ih, w_hh, b_ih, b_hh, reverse):
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    ys = [None] * x.shape[0]
    for t in steps:
        if kind == "lstm":
            h, c = F.lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        elif kind == "gru":
            h = F.gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        else:
            h = F.rnn_tanh_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        ys[t] = h
    return ddl.stack(ys, 0), h, c


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_matches_cells(rng, kind, reverse, with_state):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    code = {"rnn": _C.CELL_RNN, "lstm": _C.CELL_LSTM, "gru": _C.CELL_GRU}[kind]
    x = leaf(rng.standard_normal((T_, B_, I_)))
    h = leaf(rng.standard_normal((B_, H_)) * 0.5) if with_state else None
    c = leaf(rng.standard_normal((B_, H_)) * 0.5) if with_state and kind == "lstm" else None
    w = [leaf(rng.standard_normal(s) * 0.4) for s in ((G * H_, I_), (G * H_, H_), (G * H_,),
                                                       (G * H_,))]
    o = _C.rnn_seq(code, x, h, c, *w, _C.RNN_TANH, reverse)
    assert o.shape == (T_ + (2 if kind == "lstm" else 1), B_, H_)
    z = ddl.zeros((B_, H_))
    y, hn, cn = loop_of_cells(kind, x, h if h is not None else z,
                              (c if c is not None else z) if kind == "lstm" else None, *w,
                              reverse)
    np.testing.assert_allclose(o[:T_].numpy(), y.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o[T_].numpy(), hn.numpy(), rtol=1e-5, atol=1e-6)
    if kind == "lstm":
        np.testing.assert_allclose(o[T_ + 1].numpy(), cn.numpy(), rtol=1e-5, atol=1e-6)
    # gradients: the same projection through both
    R = t32(rng.standard_normal(tuple(o.shape)))
    leaves = [a for a in [x, h, c, *w] if a is not None]
    (o * R).sum().backward()
    fused = [a.grad.numpy().copy() for a in leaves]
    for a in leaves:
        a.grad = None
    parts = [y, hn.unsqueeze(0)] + ([cn.unsqueeze(0)] if kind == "lstm" else [])
    (ddl.cat(parts, 0) * R).sum().backward()
    for a, g in zip(leaves, fused):
        np.testing.assert_allclose(g, a.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_backward_twice_doubles(rng):
    m = nn.LSTM(I_, H_, bidirectional=True)
    x = leaf(rng.standard_normal((T_, B_, I_)))
    y, _ = m(x)
    y.sum().backward(retain_graph=True)
    g1 = m.weight_hh_l0_reverse.grad.numpy().copy()
    y.sum().backward()
    np.testing.assert_allclose(m.weight_hh_l0_reverse.grad.numpy(), 2 * g1, rtol=1e-6)


def test_threads_give_close_results(rng):
    m = nn.GRU(16, 32, num_layers=2, bidirectional=True)
    x = leaf(rng.standard_normal((7, 9, 16)))
    before = ddl.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            ddl.set_num_threads(n)
            x.grad = None
            m.zero_grad()
            y, h = m(x)
            (y.sum() + h.sum()).backward()
            res.append((y.numpy().copy(), x.grad.numpy().copy(),
                        m.weight_ih_l1.grad.numpy().copy()))
    finally:
        ddl.set_num_threads(before)
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def lstm_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM direction in float64 NumPy: y (T, B, H), h_n, c_n."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    H, ys = h.shape[1], []
    for t in range(x.shape[0]):
        g = x[t] @ w_ih.T + h @ w_hh.T + b_ih + b_hh
        i, f, gg, o = sig(g[:, :H]), sig(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), sig(g[:, 3 * H:])
        c = f * c + i * gg
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


@pytest.mark.parametrize("scale", [1e-4, 0.3, 3.0])
def test_lstm_gate_math_against_float64(rng, scale):
    """The fused op's float sigmoid/tanh over pre-activations from ~1e-4 (tanh near 0: no
    cancellation) to ~+-25 (saturated): outputs within float32 rounding of a float64
    reference. (Larger weights make the float32 GEMM's own rounding of the pre-activations
    the larger error, with vmath's double gates as with these.)"""
    T, B, I, H = 5, 4, 7, 8
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)) * 0.5, rng.standard_normal((B, H)) * 0.5
    w = [rng.standard_normal(s) * scale for s in ((4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    w32 = [a.astype(F32).astype(np.float64) for a in w]  # the reference sees the same weights
    x32, h32, c32 = (a.astype(F32).astype(np.float64) for a in (x, h0, c0))
    o = _C.rnn_seq(_C.CELL_LSTM, t32(x), t32(h0), t32(c0), *map(t32, w), _C.RNN_TANH, False)
    y, hn, cn = lstm_ref(x32, h32, c32, *w32)
    np.testing.assert_allclose(o[:T].numpy(), y, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(o[T].numpy(), hn, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(o[T + 1].numpy(), cn, rtol=2e-5, atol=1e-6)


def test_gate_math_special_values():
    """NaN flows through the gates (never turns into a number); +-inf pre-activations give
    the limits (i, f, o in {0, 1}, g in {-1, 1}) and finite states."""
    T, B, I, H = 2, 3, 1, 2
    x = np.zeros((T, B, I), F32)
    x[0, 0, 0] = np.nan
    x[:, 1, 0], x[:, 2, 0] = np.inf, -np.inf
    w_ih = np.ones((4 * H, I), F32)
    o = _C.rnn_seq(_C.CELL_LSTM, t32(x), None, None, t32(w_ih), t32(np.zeros((4 * H, H))),
                   None, None, _C.RNN_TANH, False).numpy()
    assert np.isnan(o[0, 0]).all() and np.isnan(o[1, 0]).all()
    # x = +inf: all gates open, c = 1 then 2, h = tanh(c); x = -inf: all closed, h = c = 0
    np.testing.assert_allclose(o[:T, 1], np.tanh([[1.0, 1.0], [2.0, 2.0]]), rtol=1e-6)
    np.testing.assert_array_equal(o[:T, 2], np.zeros((T, H)))
    assert np.isfinite(o[:, 1:]).all()


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_threads_split_batch_and_products(rng, name):
    """With several threads the recurrence runs one batch slice a thread (B = 40: uneven
    slices) and the all-step products are split by rows (T*B = 200, 4H = 160): the same
    outputs and gradients at 1, 2 and 3 threads, and PyTorch's in float64."""
    m = getattr(nn, name)(I_, 40, num_layers=2, bidirectional=True)
    set_params(m, rng, 0.2)
    xs = rng.standard_normal((5, 40, I_))
    h0 = rng.standard_normal((4, 40, 40)) * 0.5
    hx = (t32(h0), t32(h0 * 0.5)) if name == "LSTM" else t32(h0)
    before = ddl.get_num_threads()
    res = []
    try:
        for n in (1, 2, 3):
            ddl.set_num_threads(n)
            x = leaf(xs)
            m.zero_grad()
            y, _ = m(x, hx)
            (y * y).sum().backward()
            res.append([y.numpy().copy(), x.grad.numpy().copy()]
                       + [p.grad.numpy().copy() for p in m.parameters()])
    finally:
        ddl.set_num_threads(before)
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    torch = pytest.importorskip("torch")
    tm = getattr(torch.nn, name)(I_, 40, num_layers=2, bidirectional=True).double()
    with torch.no_grad():
        for v, tv in zip(m.state_dict().values(), tm.state_dict().values()):
            tv.copy_(torch.tensor(v.numpy().astype(np.float64)))
    tx = torch.tensor(xs.astype(F32).astype(np.float64), requires_grad=True)
    th = torch.tensor(h0.astype(F32).astype(np.float64))
    ty, _ = tm(tx, (th, th * 0.5) if name == "LSTM" else th)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(res[1][0], ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res[1][1], tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    for g, tp in zip(res[1][2:], tm.parameters()):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_modules_take_the_fused_op(rng, monkeypatch):
    """LSTM with 2 layers, inter-layer dropout, batch_first and a given state runs one fused
    op per (layer, direction) -- no per-step cell ops -- as the benchmark and the
    word-language-model example use it."""
    calls = {"seq": 0, "cell": 0}
    seq, cell = _C.rnn_seq, _C.rnn_cell

    def count_seq(*a):
        calls["seq"] += 1
        return seq(*a)

    def count_cell(*a):
        calls["cell"] += 1
        return cell(*a)

    monkeypatch.setattr(_C, "rnn_seq", count_seq)
    monkeypatch.setattr(_C, "rnn_cell", count_cell)
    m = nn.LSTM(I_, H_, num_layers=2, dropout=0.2, batch_first=True, bidirectional=True)
    hx = (t32(np.zeros((4, B_, H_))), t32(np.zeros((4, B_, H_))))
    y, _ = m(leaf(rng.standard_normal((B_, T_, I_))), hx)
    y.sum().backward()
    assert calls == {"seq": 4, "cell": 0}


def test_dropout_between_bidirectional_layers(rng):
    m = nn.LSTM(I_, H_, num_layers=2, dropout=0.5, bidirectional=True)
    x = t32(rng.standard_normal((T_, B_, I_)))
    m.eval()
    ref = m(x)[0].numpy()
    m.train()
    ddl.manual_seed(4)
    y1 = m(x)[0].numpy()
    assert not np.allclose(y1, ref, atol=1e-4)
    ddl.manual_seed(4)
    np.testing.assert_array_equal(m(x)[0].numpy(), y1)


def test_bidirectional_names_and_state_shapes(rng):
    m = nn.GRU(I_, H_, num_layers=2, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    assert names[:8] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
        "bias_hh_l0_reverse",
    ]
    assert tuple(m.weight_ih_l1.shape) == (3 * H_, 2 * H_)
    y, h = m(t32(rng.standard_normal((T_, I_))))  # unbatched
    assert y.shape == (T_, 2 * H_) and h.shape == (4, H_)
    with pytest.raises(ValueError, match=r"h_0 of shape \(2, 3, 6\), expected \(4, 3, 6\)"):
        m(t32(np.zeros((T_, B_, I_))), t32(np.zeros((2, B_, H_))))
    assert "bidirectional=True" in repr(m)


def test_rnn_seq_errors(rng):
    x = t32(np.zeros((T_, B_, I_)))
    w_ih, w_hh = t32(np.zeros((4 * H_, I_))), t32(np.zeros((4 * H_, H_)))
    with pytest.raises(ValueError, match="3-D"):
        _C.rnn_seq(_C.CELL_LSTM, x[0], None, None, w_ih, w_hh, None, None, 0, False)
    with pytest.raises(ValueError, match="weight_ih"):
        _C.rnn_seq(_C.CELL_GRU, x, None, None, w_ih, w_hh, None, None, 0, False)
    with pytest.raises(ValueError, match="c_0"):
        _C.rnn_seq(_C.CELL_LSTM, x, None, t32(np.zeros((B_, H_ + 1))), w_ih, w_hh, None, None,
                   0, False)
    with pytest.raises(ValueError, match="only for LSTM"):
        _C.rnn_seq(_C.CELL_RNN, x, None, t32(np.zeros((B_, H_))), w_ih[:H_], w_hh[:H_], None,
                   None, 0, False)
    with pytest.raises(TypeError, match="float32"):
        _C.rnn_seq(_C.CELL_LSTM, ddl.tensor(np.zeros((T_, B_, I_))), None, None, w_ih, w_hh,
                   None, None, 0, False)


# ---- cell modules ------------------------------------------------------------------------------

CELLS = [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
         ("GRUCell", {})]


@pytest.mark.parametrize("name,kw", CELLS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_modules_vs_torch(rng, name, kw, bias):
    torch = pytest.importorskip("torch")
    m = getattr(nn, name)(I_, H_, bias=bias, **kw)
    set_params(m, rng)
    tm = getattr(torch.nn, name)(I_, H_, bias=bias, **kw).double()
    assert list(m.state_dict()) == list(tm.state_dict())
    with torch.no_grad():
        for v, tv in zip(m.state_dict().values(), tm.state_dict().values()):
            tv.copy_(torch.tensor(v.numpy().astype(np.float64)))
    lstm = name == "LSTMCell"
    xa = rng.standard_normal((B_, I_)).astype(F32)
    ha = (rng.standard_normal((B_, H_)) * 0.5).astype(F32)
    ca = (rng.standard_normal((B_, H_)) * 0.5).astype(F32)
    x, h, c = leaf(xa), leaf(ha), leaf(ca)
    xt, ht, ct = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (xa, ha, ca))
    out = m(x, (h, c) if lstm else h)
    tout = tm(xt, (ht, ct) if lstm else ht)
    outs, touts = (list(out), list(tout)) if lstm else ([out], [tout])
    loss = sum((o * o).sum() for o in outs)
    tloss = sum((o * o).sum() for o in touts)
    for o, to in zip(outs, touts):
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), rtol=1e-5, atol=1e-6)
    loss.backward()
    tloss.backward()
    for a, ta in [(x, xt), (h, ht)] + ([(c, ct)] if lstm else []):
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    tp = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[n].grad.numpy(), rtol=1e-5, atol=1e-6)
    # no state: zeros; unbatched input
    z = m(x)
    tz = tm(xt)
    np.testing.assert_allclose((z[0] if lstm else z).numpy(),
                               (tz[0] if lstm else tz).detach().numpy(), rtol=1e-5, atol=1e-6)
    u = m(x[0])
    assert (u[0] if lstm else u).shape == (H_,)


def test_cell_module_errors():
    m = nn.LSTMCell(I_, H_)
    with pytest.raises(ValueError, match="features"):
        m(t32(np.zeros((B_, I_ + 1))))
    with pytest.raises(ValueError, match="hidden state"):
        m(t32(np.zeros((B_, I_))), (t32(np.zeros((B_, H_ + 1))), t32(np.zeros((B_, H_)))))
    with pytest.raises(ValueError, match="tuple"):
        m(t32(np.zeros((B_, I_))), t32(np.zeros((B_, H_))))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNNCell(I_, H_, nonlinearity="gelu")
    assert [n for n, _ in nn.GRUCell(I_, H_).named_parameters()] == [
        "weight_ih", "weight_hh", "bias_ih", "bias_hh"]
