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
