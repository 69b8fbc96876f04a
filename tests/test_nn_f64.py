"""float64 through the conv2d, pooling and recurrent kernels: finite-difference gradient checks,
PyTorch numerics to 1e-10, and `.double()` models that train (issue 16's float64 everywhere)."""

import numpy as np
import pytest
from _gradcheck import distinct, gradcheck

import ddl
import ddl.nn.functional as F
from ddl import nn

torch = pytest.importorskip("torch", reason="the PyTorch comparisons need torch")
TF = torch.nn.functional

FD = {"eps": 1e-6, "rtol": 1e-6, "atol": 1e-9}  # float64 central differences


def d64(a, grad=True):
    return ddl.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def close(ours, theirs, tol=1e-10):
    a = ours.detach().numpy() if isinstance(ours, ddl.Tensor) else np.asarray(ours)
    b = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert a.dtype == np.float64 and a.shape == b.shape, (a.dtype, a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def against_torch(ours_fn, theirs_fn, arrays, rng):
    """ours_fn(*ddl leaves) vs theirs_fn(*torch leaves), outputs and every input's gradient."""
    xs = [d64(a) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    y, yt = ours_fn(*xs), theirs_fn(*ts)
    assert y.dtype is ddl.float64
    close(y, yt)
    r = rng.standard_normal(tuple(y.shape))
    (y * ddl.tensor(r)).sum().backward()
    (yt * torch.tensor(r)).sum().backward()
    for x, t in zip(xs, ts):
        close(x.grad, t.grad)


CONV_CASES = [
    {"stride": 1, "padding": 0, "dilation": 1},
    {"stride": (2, 1), "padding": 1, "dilation": 1},
    {"stride": 1, "padding": (2, 1), "dilation": (2, 1)},
    {"stride": 2, "padding": 0, "dilation": 1, "k": 1},  # 1x1, strided
    {"stride": 1, "padding": 0, "dilation": 1, "k": 1},  # pointwise: no im2col
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_float64_gradcheck_and_torch(case, rng):
    kw = dict(case)
    k = kw.pop("k", 3)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    xd, wd, bd = d64(x), d64(w), d64(b)
    assert gradcheck(lambda: F.conv2d(xd, wd, bd, **kw), [xd, wd, bd], **FD) > 0
    against_torch(lambda a, c, e: F.conv2d(a, c, e, **kw), lambda a, c, e: TF.conv2d(a, c, e, **kw),
                  [x, w, b], rng)


def test_conv_extensions_float64(rng):
    x1, w1 = rng.standard_normal((2, 4, 9)), rng.standard_normal((6, 2, 3))
    against_torch(lambda a, c: F.conv1d(a, c, stride=2, padding=1, groups=2),
                  lambda a, c: TF.conv1d(a, c, stride=2, padding=1, groups=2), [x1, w1], rng)
    x, wg = rng.standard_normal((2, 4, 6, 5)), rng.standard_normal((4, 1, 3, 3))
    against_torch(lambda a, c: F.conv2d(a, c, padding=1, groups=4),
                  lambda a, c: TF.conv2d(a, c, padding=1, groups=4), [x, wg], rng)
    wt, bt = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(3)
    kw = {"stride": 2, "padding": 1, "output_padding": 1}
    against_torch(lambda a, c, e: F.conv_transpose2d(a, c, e, **kw),
                  lambda a, c, e: TF.conv_transpose2d(a, c, e, **kw), [x, wt, bt], rng)
    xd, wd, bd = d64(x), d64(wt), d64(bt)
    assert gradcheck(lambda: F.conv_transpose2d(xd, wd, bd, **kw), [xd, wd, bd], **FD) > 0
    x1d, w1d = d64(x1), d64(w1)
    assert gradcheck(lambda: F.conv1d(x1d, w1d, dilation=2, groups=2), [x1d, w1d], **FD) > 0


POOLS = [
    ("max", lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1)),
    ("max22", lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2)),
    ("max_ceil", lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True),
     lambda x: TF.max_pool2d(x, 3, 2, ceil_mode=True)),
    ("avg", lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1)),
    ("avg_ceil", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
     lambda x: TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avg", lambda x: F.adaptive_avg_pool2d(x, (4, 3)),
     lambda x: TF.adaptive_avg_pool2d(x, (4, 3))),
    ("adaptive_max", lambda x: F.adaptive_max_pool2d(x, (3, 4)),
     lambda x: TF.adaptive_max_pool2d(x, (3, 4))),
]


@pytest.mark.parametrize("name,ours,theirs", POOLS, ids=[p[0] for p in POOLS])
def test_pool_float64_gradcheck_and_torch(name, ours, theirs, rng):
    x = distinct(rng, (2, 3, 9, 8))  # no max ties under the perturbation
    xd = d64(x)
    assert gradcheck(lambda: ours(xd), [xd], **FD) > 0
    against_torch(ours, theirs, [x], rng)


def test_float64_kernels_reject_mixing(rng):
    x64 = ddl.tensor(rng.standard_normal((2, 3, 5, 5)))
    w64 = ddl.tensor(rng.standard_normal((4, 3, 3, 3)))
    with pytest.raises(TypeError, match="do not mix"):
        F.conv2d(x64, w64.float())
    with pytest.raises(TypeError, match="do not mix"):
        F.conv2d(x64, w64, ddl.tensor(np.ones(4, dtype=np.float32)))
    with pytest.raises(TypeError, match="float32 or float64"):
        F.max_pool2d(ddl.tensor(np.ones((1, 1, 4, 4), dtype=np.int64)), 2)


def test_double_cnn_trains(rng):
    ddl.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).double()
    x = ddl.tensor(rng.standard_normal((16, 1, 8, 8)))
    y = ddl.tensor(rng.integers(0, 3, 16))
    opt = ddl.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        assert loss.dtype is ddl.float64
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype is ddl.float64 and p.grad.dtype is ddl.float64 for p in model.parameters())
    assert losses[-1] < 0.9 * losses[0], losses


# ---- recurrent: float64 through core-op compositions (ddl/nn/_rnn_f64.py) ----------------------

def _copy_rnn(ours, theirs):
    """theirs (a torch module) gets ours' parameters (same names and layouts)."""
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.tensor(getattr(ours, name).detach().numpy()))


RNN_KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("GRU", {})]


@pytest.mark.parametrize("kind,extra", RNN_KINDS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_rnn_float64_two_layers_bidirectional_vs_torch(kind, extra, rng):
    ddl.manual_seed(1)
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True, **extra}
    ours = getattr(nn, kind)(3, 4, **kw).double()
    theirs = getattr(torch.nn, kind)(3, 4, **kw).double()
    _copy_rnn(ours, theirs)
    x = rng.standard_normal((2, 5, 3))
    xd, xt = d64(x), torch.tensor(x, requires_grad=True)
    (y, hs), (yt, hts) = ours(xd), theirs(xt)
    hs = hs if isinstance(hs, tuple) else (hs,)
    hts = hts if isinstance(hts, tuple) else (hts,)
    close(y, yt)
    for a, b in zip(hs, hts):
        close(a, b)
    r = rng.standard_normal(tuple(y.shape))
    (y * ddl.tensor(r) + hs[0].sum()).sum().backward()
    (yt * torch.tensor(r) + hts[0].sum()).sum().backward()
    close(xd.grad, xt.grad)
    for name, p in theirs.named_parameters():
        close(getattr(ours, name).grad, p.grad)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_rnn_float64_gradcheck(kind, rng):
    ddl.manual_seed(2)
    m = getattr(nn, kind)(3, 2, num_layers=2, bidirectional=True).double()
    x = d64(rng.standard_normal((3, 2, 3)))
    params = list(m.parameters())
    assert gradcheck(lambda: m(x), [x, params[0], params[1], params[-1]], **FD) > 0


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_float64_vs_torch_and_gradcheck(kind, rng):
    ddl.manual_seed(3)
    ours, theirs = getattr(nn, kind)(3, 4).double(), getattr(torch.nn, kind)(3, 4).double()
    _copy_rnn(ours, theirs)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    state = (d64(h), d64(h * 0.5)) if kind == "LSTMCell" else d64(h)
    tstate = ((torch.tensor(h), torch.tensor(h * 0.5)) if kind == "LSTMCell"
              else torch.tensor(h))
    out, tout = ours(d64(x, grad=False), state), theirs(torch.tensor(x), tstate)
    for a, b in zip(out if isinstance(out, tuple) else (out,),
                    tout if isinstance(tout, tuple) else (tout,)):
        close(a, b)
    xd = d64(x)
    assert gradcheck(lambda: ours(xd, state), [xd, ours.weight_ih, ours.bias_hh], **FD) > 0


def test_rnn_mixing_dtypes_is_a_type_error(rng):
    m = nn.LSTM(3, 4).double()
    with pytest.raises(TypeError, match="do not mix"):
        m(ddl.tensor(rng.standard_normal((2, 1, 3)).astype(np.float32)))


def test_double_lstm_trains(rng):
    ddl.manual_seed(4)
    lstm, head = nn.LSTM(2, 8, batch_first=True).double(), nn.Linear(8, 1).double()
    x = ddl.tensor(rng.standard_normal((8, 6, 2)))
    target = ddl.tensor(rng.standard_normal((8, 1)))
    opt = ddl.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=3e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        y, _ = lstm(x)
        loss = F.mse_loss(head(y[:, -1]), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad.dtype is ddl.float64 for p in lstm.parameters())
    assert losses[-1] < 0.8 * losses[0], losses
