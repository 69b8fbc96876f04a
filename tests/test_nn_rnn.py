"""Recurrent cells (ddl.nn.functional.*_cell) and layers (nn.RNN, nn.LSTM, nn.GRU): forward
against a NumPy float64 reference, gradients w.r.t. inputs, initial states and every
parameter by float32 central differences, shapes for batch_first / unbatched input, errors,
and optional parity with PyTorch (2 layers). Sizes are kept tiny: T=3, B=2, I=3, H=4."""

import numpy as np
import pytest
from _gradcheck import gradcheck, leaf

import ddl
import ddl.nn.functional as F
from ddl import nn

F32 = np.float32
T_, B_, I_, H_ = 3, 2, 3, 4


def t32(a):
    return ddl.tensor(np.asarray(a, dtype=F32))


def f64(t):
    return None if t is None else t.detach().numpy().astype(np.float64)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---- NumPy references ----------------------------------------------------------------------------


def ref_cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step; returns (h', c') (c' None except LSTM) and the pre-activations (for kink
    margins of the relu cell)."""
    gi = x @ w_ih.T + (0 if b_ih is None else b_ih)
    gh = h @ w_hh.T + (0 if b_hh is None else b_hh)
    H = h.shape[1]
    if kind in ("tanh", "relu"):
        pre = gi + gh
        return (np.tanh(pre) if kind == "tanh" else np.maximum(pre, 0)), None, pre
    if kind == "lstm":
        g = gi + gh
        i, f, gg, o = (g[:, k * H : (k + 1) * H] for k in range(4))
        c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        return sigmoid(o) * np.tanh(c2), c2, g
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    return (1 - z) * n + z * h, None, gi + gh


def ref_rnn(kind, m, x, h0=None, c0=None):
    """Reference of the whole module m (its parameters) on time-major x (T, B, I)."""
    L, H = m.num_layers, m.hidden_size
    B = x.shape[1]
    h0 = np.zeros((L, B, H)) if h0 is None else h0
    c0 = np.zeros((L, B, H)) if (c0 is None and kind == "lstm") else c0
    inp, hn, cn, pres = x, [], [], []
    for layer in range(L):
        p = [
            f64(getattr(m, f"{n}_l{layer}", None))
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        h, c = h0[layer], (c0[layer] if kind == "lstm" else None)
        outs = []
        for t in range(x.shape[0]):
            h, c, pre = ref_cell(kind, inp[t], h, c, *p)
            outs.append(h)
            pres.append(pre)
        inp = np.stack(outs)
        hn.append(h)
        cn.append(c)
    return inp, np.stack(hn), (np.stack(cn) if kind == "lstm" else None), pres


CELLS = {
    "tanh": lambda x, h, c, *p: F.rnn_tanh_cell(x, h, *p),
    "relu": lambda x, h, c, *p: F.rnn_relu_cell(x, h, *p),
    "lstm": lambda x, h, c, *p: F.lstm_cell(x, h, c, *p),
    "gru": lambda x, h, c, *p: F.gru_cell(x, h, *p),
}
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}


def cell_inputs(rng, kind, bias=True, B=B_, I=I_, H=H_):
    G = GATES[kind] * H
    x, h = leaf(rng.standard_normal((B, I))), leaf(rng.standard_normal((B, H)) * 0.5)
    c = leaf(rng.standard_normal((B, H))) if kind == "lstm" else None
    w_ih, w_hh = leaf(rng.standard_normal((G, I)) * 0.5), leaf(rng.standard_normal((G, H)) * 0.5)
    b_ih = leaf(rng.standard_normal(G) * 0.5) if bias else None
    b_hh = leaf(rng.standard_normal(G) * 0.5) if bias else None
    return x, h, c, w_ih, w_hh, b_ih, b_hh


# ---- cells ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tanh", "relu", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_cell(rng, kind, bias):
    args = cell_inputs(rng, kind, bias)
    out = CELLS[kind](*args)
    h_ref, c_ref, pre = ref_cell(kind, *[f64(a) for a in args])
    if kind == "lstm":
        h_new, c_new = out
        assert h_new.shape == c_new.shape == (B_, H_)
        np.testing.assert_allclose(c_new.numpy(), c_ref, rtol=1e-5, atol=1e-6)
    else:
        h_new = out
    assert h_new.shape == (B_, H_) and h_new.dtype is ddl.float32
    np.testing.assert_allclose(h_new.numpy(), h_ref, rtol=1e-5, atol=1e-6)
    eps = 1e-2
    if kind == "relu":  # keep the pre-activations clear of the kink for this step size
        eps = 1e-3
        assert np.abs(pre).min() > 20 * eps, np.abs(pre).min()
    names = ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"]
    wrt = [(a, n) for a, n in zip(args, names) if a is not None]
    gradcheck(
        lambda: CELLS[kind](*args),
        [a for a, _ in wrt],
        names=[n for _, n in wrt],
        eps=eps,
        samples=12,
    )


def test_lstm_cell_outputs_are_separate_gradient_paths(rng):
    x, h, c, *p = cell_inputs(rng, "lstm")
    _, c2 = F.lstm_cell(x, h, c, *p)
    c2.sum().backward()  # only c' feeds the loss: dL/dh' = 0
    gc = c.grad.numpy().copy()
    # dc'/dc = f (the forget gate)
    _, _, g = ref_cell("lstm", *[f64(a) for a in (x, h, c, *p)])
    np.testing.assert_allclose(gc, sigmoid(g[:, H_ : 2 * H_]), rtol=1e-5, atol=1e-6)


def test_cell_errors(rng):
    x, h, c, w_ih, w_hh, b_ih, b_hh = cell_inputs(rng, "lstm")
    with pytest.raises(ValueError, match="cell state"):
        F.lstm_cell(x, h, t32(np.zeros((B_, H_ + 1))), w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="weight_ih"):
        F.lstm_cell(t32(np.zeros((B_, I_ + 1))), h, c, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="bias"):
        F.lstm_cell(x, h, c, w_ih, w_hh, t32(np.zeros(3)), b_hh)
    with pytest.raises(ValueError):  # a tanh cell given LSTM weights (4H rows)
        F.rnn_tanh_cell(x, h, w_ih, w_hh)
    with pytest.raises(ValueError, match="2-D"):
        F.gru_cell(t32(np.zeros(I_)), h, t32(np.zeros((3 * H_, I_))), t32(np.zeros((3 * H_, H_))))
    with pytest.raises(TypeError, match="float32"):
        F.rnn_tanh_cell(
            ddl.tensor(np.zeros((B_, I_))), h, t32(np.zeros((H_, I_))), t32(np.zeros((H_, H_)))
        )


# ---- modules -------------------------------------------------------------------------------------


def make(cls, rng, **kw):
    kind = kw.pop("kind", None)
    m = cls(I_, H_, **kw) if kind is None else cls(I_, H_, nonlinearity=kind, **kw)
    with ddl.no_grad():  # wider than the default +-1/sqrt(H), so every weight matters
        for p in m.parameters():
            p.copy_(t32(rng.uniform(-0.7, 0.7, p.shape)))
    return m


def module_kind(m):
    return "lstm" if isinstance(m, nn.LSTM) else "gru" if isinstance(m, nn.GRU) else m.nonlinearity


MODULES = [(nn.RNN, {}), (nn.RNN, {"kind": "relu"}), (nn.LSTM, {}), (nn.GRU, {})]
IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


@pytest.mark.parametrize("cls,kw", MODULES, ids=IDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_module(rng, cls, kw, batch_first, with_state):
    m = make(cls, rng, num_layers=2, batch_first=batch_first, **kw)
    kind = module_kind(m)
    xs = rng.standard_normal((T_, B_, I_))
    x = leaf(xs.transpose(1, 0, 2) if batch_first else xs)
    h0 = leaf(rng.standard_normal((2, B_, H_)) * 0.5) if with_state else None
    c0 = leaf(rng.standard_normal((2, B_, H_)) * 0.5) if with_state and kind == "lstm" else None
    state = (h0, c0) if kind == "lstm" and with_state else h0
    out, hn = m(x, state)
    if kind == "lstm":
        hn, cn = hn
    y_ref, hn_ref, cn_ref, pres = ref_rnn(
        kind, m, f64(x).transpose(1, 0, 2) if batch_first else f64(x), f64(h0), f64(c0)
    )
    assert out.shape == ((B_, T_, H_) if batch_first else (T_, B_, H_))
    assert hn.shape == (2, B_, H_)  # h_n is (layers, batch, hidden) even with batch_first
    y = out.numpy().transpose(1, 0, 2) if batch_first else out.numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hn.numpy(), hn_ref, rtol=1e-5, atol=1e-5)
    if kind == "lstm":
        assert cn.shape == (2, B_, H_)
        np.testing.assert_allclose(cn.numpy(), cn_ref, rtol=1e-5, atol=1e-5)
    eps = 1e-2
    if kind == "relu":
        eps = 1e-3
        margin = min(np.abs(p).min() for p in pres)
        assert margin > 0.01, margin  # a step of 1e-3 moves a pre-activation < 2e-3
    names, params = map(list, zip(*m.named_parameters()))
    wrt = [(x, "input")] + [(s, n) for s, n in ((h0, "h0"), (c0, "c0")) if s is not None]
    gradcheck(
        lambda: m(x, state),
        [a for a, _ in wrt] + params,
        names=[n for _, n in wrt] + names,
        eps=eps,
        samples=8,
    )


@pytest.mark.parametrize("cls,kw", MODULES, ids=IDS)
def test_module_unbatched(rng, cls, kw):
    m = make(cls, rng, num_layers=2, **kw)
    kind = module_kind(m)
    x = leaf(rng.standard_normal((T_, I_)))
    h0 = leaf(rng.standard_normal((2, H_)) * 0.5)
    c0 = leaf(rng.standard_normal((2, H_)) * 0.5) if kind == "lstm" else None
    state = (h0, c0) if kind == "lstm" else h0
    out, hn = m(x, state)
    assert out.shape == (T_, H_)
    hn = hn[0] if kind == "lstm" else hn
    assert hn.shape == (2, H_)
    # the same as a batch of one
    bstate = (h0.unsqueeze(1), c0.unsqueeze(1)) if kind == "lstm" else h0.unsqueeze(1)
    out_b, _ = m(x.unsqueeze(1), bstate)
    np.testing.assert_array_equal(out.numpy(), out_b.numpy()[:, 0])
    eps = 1e-3 if kind == "relu" else 1e-2
    if kind == "relu":
        pres = ref_rnn(kind, m, f64(x)[:, None], f64(h0)[:, None])[3]
        assert min(np.abs(p).min() for p in pres) > 0.01
    wrt = [x, h0] + ([c0] if c0 is not None else []) + list(m.parameters())
    gradcheck(lambda: m(x, state), wrt, eps=eps, samples=6)
    # without a state: zeros
    out0, _ = m(x)
    y_ref = ref_rnn(kind, m, f64(x)[:, None])[0][:, 0]
    np.testing.assert_allclose(out0.numpy(), y_ref, rtol=1e-5, atol=1e-5)


def test_module_without_bias(rng):
    m = make(nn.GRU, rng, bias=False)
    assert [n for n, _ in m.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    x = leaf(rng.standard_normal((T_, B_, I_)))
    out, hn = m(x)
    y_ref, hn_ref, _, _ = ref_rnn("gru", m, f64(x))
    np.testing.assert_allclose(out.numpy(), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hn.numpy(), hn_ref, rtol=1e-5, atol=1e-5)
    gradcheck(lambda: m(x), [x, *m.parameters()], samples=8)


def test_module_dropout_between_layers(rng):
    m = make(nn.LSTM, rng, num_layers=2, dropout=0.5)
    x = t32(rng.standard_normal((T_, B_, I_)))
    ref = ref_rnn("lstm", m, f64(x))[0]
    m.eval()
    np.testing.assert_allclose(m(x)[0].numpy(), ref, rtol=1e-5, atol=1e-5)  # eval: no dropout
    m.train()
    ddl.manual_seed(1)
    y1 = m(x)[0].numpy()
    assert not np.allclose(y1, ref, atol=1e-4)
    ddl.manual_seed(1)
    np.testing.assert_array_equal(m(x)[0].numpy(), y1)


def test_module_names_and_init():
    m = nn.LSTM(3, 5, num_layers=2)
    assert [(n, tuple(p.shape)) for n, p in m.named_parameters()] == [
        ("weight_ih_l0", (20, 3)),
        ("weight_hh_l0", (20, 5)),
        ("bias_ih_l0", (20,)),
        ("bias_hh_l0", (20,)),
        ("weight_ih_l1", (20, 5)),
        ("weight_hh_l1", (20, 5)),
        ("bias_ih_l1", (20,)),
        ("bias_hh_l1", (20,)),
    ]
    assert tuple(nn.GRU(3, 5).weight_ih_l0.shape) == (15, 3)
    assert tuple(nn.RNN(3, 5).weight_hh_l0.shape) == (5, 5)
    bound = 1 / np.sqrt(5)
    for p in m.parameters():
        assert np.abs(p.numpy()).max() <= bound


def test_module_errors(rng):
    m = nn.LSTM(I_, H_, num_layers=2)
    x = t32(rng.standard_normal((T_, B_, I_)))
    good = t32(np.zeros((2, B_, H_)))
    with pytest.raises(ValueError, match=r"h_0 of shape \(1, 2, 4\), expected \(2, 2, 4\)"):
        m(x, (t32(np.zeros((1, B_, H_))), good))
    with pytest.raises(ValueError, match=r"c_0 of shape \(2, 3, 4\)"):
        m(x, (good, t32(np.zeros((2, 3, H_)))))
    with pytest.raises(ValueError, match="tuple"):
        m(x, good)
    with pytest.raises(ValueError, match=r"input_size=3.*5 features"):
        m(t32(np.zeros((T_, B_, 5))))
    with pytest.raises(ValueError, match="2-d or 3-d"):
        m(t32(np.zeros((T_, B_, I_, 1))))
    with pytest.raises(TypeError, match="float32"):
        m(ddl.tensor(np.zeros((T_, B_, I_))))
    g = nn.GRU(I_, H_)
    with pytest.raises(ValueError, match="h_0"):
        g(x, t32(np.zeros((1, B_, H_ + 1))))
    for bad in ({"num_layers": 0}, {"dropout": 2.0}):
        with pytest.raises(ValueError):
            nn.GRU(I_, H_, **bad)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(I_, H_, nonlinearity="sigmoid")


# ---- optional parity with PyTorch ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_parity(rng, name, batch_first):
    torch = pytest.importorskip("torch")
    m = getattr(nn, name)(I_, H_, num_layers=2, batch_first=batch_first)
    tm = getattr(torch.nn, name)(I_, H_, num_layers=2, batch_first=batch_first)
    assert list(m.state_dict()) == list(tm.state_dict())
    with torch.no_grad():
        for v, tv in zip(m.state_dict().values(), tm.state_dict().values()):
            tv.copy_(torch.tensor(v.numpy()))
    shape = (B_, T_, I_) if batch_first else (T_, B_, I_)
    xa = rng.standard_normal(shape).astype(F32)
    ha = rng.standard_normal((2, B_, H_)).astype(F32) * 0.5
    ca = rng.standard_normal((2, B_, H_)).astype(F32) * 0.5
    x, h0, c0 = leaf(xa), leaf(ha), leaf(ca)
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (xa, ha, ca))
    lstm = name == "LSTM"
    out, st = m(x, (h0, c0) if lstm else h0)
    tout, tst = tm(xt, (ht, ct) if lstm else ht)
    outs = [out] + (list(st) if lstm else [st])
    touts = [tout] + (list(tst) if lstm else [tst])
    tol = {"rtol": 1e-4, "atol": 1e-5}
    loss, tloss = 0, 0
    rs = np.random.RandomState(9)
    for o, to in zip(outs, touts):
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), **tol)
        R = rs.standard_normal(tuple(o.shape)).astype(F32)
        loss = loss + (o * t32(R)).sum()
        tloss = tloss + (to * torch.tensor(R)).sum()
    loss.backward()
    tloss.backward()
    for a, ta in [(x, xt), (h0, ht)] + ([(c0, ct)] if lstm else []):
        np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), **tol)
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[n].grad.numpy(), err_msg=n, **tol)


def test_module_empty_sequence_and_batch(rng):
    m = nn.LSTM(I_, H_)
    with pytest.raises(ValueError, match="sequence length"):
        m(t32(np.zeros((0, B_, I_))))
    x = leaf(np.zeros((T_, 0, I_)))  # an empty batch runs, with empty outputs
    out, (h, c) = m(x)
    assert out.shape == (T_, 0, H_) and h.shape == c.shape == (1, 0, H_)
    out.sum().backward()
    np.testing.assert_array_equal(m.weight_ih_l0.grad.numpy(), 0)
