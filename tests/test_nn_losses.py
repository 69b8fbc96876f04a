"""The losses added for PyTorch parity: smooth_l1, huber, kl_div, margin_ranking,
cosine_embedding, binary_cross_entropy, cross_entropy with weights / label smoothing /
ignore_index / probability targets / (N, C, d) inputs, nll_loss with weights, BCE-with-logits
with weights, and float64 everywhere: forward and gradients against PyTorch (1e-5 float32,
1e-10 float64) and finite differences in float64."""

import numpy as np
import pytest
from _gradcheck import gradcheck
from _util import torch_or_skip

import ddl
from ddl import nn
from ddl.nn import functional as F

DTYPES = [ddl.float32, ddl.float64]
DT_IDS = ["f32", "f64"]


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype is ddl.float32 else {"rtol": 1e-10,
                                                                       "atol": 1e-12}


def _pair(arrays, dtype, grad):
    """ddl and torch tensors of the same values (float arrays in dtype, int arrays as int64)."""
    torch = torch_or_skip()
    ours, theirs = [], []
    for a, g in zip(arrays, grad):
        if a.dtype.kind == "f":
            a = a.astype(dtype.numpy)
        o = ddl.tensor(a)
        t = torch.tensor(a)
        if g:
            o.requires_grad_()
            t.requires_grad_()
        ours.append(o)
        theirs.append(t)
    return ours, theirs


def _compare(fn_ours, fn_theirs, arrays, grad, dtype, rng):
    """fn(*tensors) on both sides: the outputs and the gradients of sum(out * R)."""
    torch = torch_or_skip()
    ours, theirs = _pair(arrays, dtype, grad)
    o = fn_ours(*ours)
    t = fn_theirs(*theirs)
    assert o.dtype is dtype
    np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), **tol(dtype))
    R = rng.standard_normal(tuple(t.shape)).astype(dtype.numpy)
    (o * ddl.tensor(R)).sum().backward()
    (t * torch.tensor(R)).sum().backward()
    for a, b, g in zip(ours, theirs, grad):
        if g:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tol(dtype))


REDUCTIONS = ["none", "mean", "sum"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, kw", [
    ("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.3}), ("smooth_l1_loss", {"beta": 0.0}),
    ("huber_loss", {}), ("huber_loss", {"delta": 0.4}),
    ("mse_loss", {}), ("l1_loss", {}),
])
def test_regression_losses_match_torch(name, kw, reduction, dtype, rng):
    torch = torch_or_skip()
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    _compare(lambda a, b: getattr(F, name)(a, b, reduction=reduction, **kw),
             lambda a, b: getattr(torch.nn.functional, name)(a, b, reduction=reduction, **kw),
             [x, y], [True, True], dtype, rng)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch(reduction, log_target, dtype, rng):
    torch = torch_or_skip()
    logp = np.log(rng.dirichlet(np.ones(5), size=4))
    target = rng.dirichlet(np.ones(5), size=4)
    target[0, 2] = 0.0  # xlogy: 0 log 0 = 0
    if log_target:
        target = np.log(target + 0.1)
    _compare(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target),
             lambda a, b: torch.nn.functional.kl_div(a, b, reduction=reduction,
                                                     log_target=log_target),
             [logp, target], [True, False], dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_and_cosine_embedding_match_torch(reduction, dtype, rng):
    torch = torch_or_skip()
    x1, x2 = rng.standard_normal(6), rng.standard_normal(6)
    y = np.array([1.0, -1, 1, -1, -1, 1])
    _compare(lambda a, b, c: F.margin_ranking_loss(a, b, c, margin=0.3, reduction=reduction),
             lambda a, b, c: torch.nn.functional.margin_ranking_loss(a, b, c, margin=0.3,
                                                                    reduction=reduction),
             [x1, x2, y], [True, True, False], dtype, rng)
    a1, a2 = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    _compare(lambda a, b, c: F.cosine_embedding_loss(a, b, c, margin=-0.2, reduction=reduction),
             lambda a, b, c: torch.nn.functional.cosine_embedding_loss(a, b, c, margin=-0.2,
                                                                      reduction=reduction),
             [a1, a2, y], [True, True, False], dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_matches_torch(weighted, reduction, dtype, rng):
    torch = torch_or_skip()
    p = rng.uniform(0.05, 0.95, (4, 3))
    y = rng.uniform(0, 1, (4, 3))
    w = rng.uniform(0.5, 2, (4, 3))
    pw = rng.uniform(0.5, 2, 3)
    arrays = [p, y, w] if weighted else [p, y]
    _compare(lambda *a: F.binary_cross_entropy(a[0], a[1], weight=a[2] if weighted else None,
                                               reduction=reduction),
             lambda *a: torch.nn.functional.binary_cross_entropy(
                 a[0], a[1], weight=a[2] if weighted else None, reduction=reduction),
             arrays, [True, True, False][:len(arrays)], dtype, rng)
    logits = rng.standard_normal((4, 3)) * 3
    _compare(lambda *a: F.binary_cross_entropy_with_logits(
                 a[0], a[1], weight=a[2] if weighted else None, pos_weight=a[-1],
                 reduction=reduction),
             lambda *a: torch.nn.functional.binary_cross_entropy_with_logits(
                 a[0], a[1], weight=a[2] if weighted else None, pos_weight=a[-1],
                 reduction=reduction),
             arrays[:2] + ([w] if weighted else []) + [pw],
             [True, True] + ([False] if weighted else []) + [False], dtype, rng)
    _compare(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction=reduction),
             lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(
                 a, b, reduction=reduction), [logits, y], [True, True], dtype, rng)


CE_CASES = [
    {},
    {"weight": True},
    {"weight": True, "ignore_index": 1},
    {"label_smoothing": 0.2},
    {"label_smoothing": 0.15, "weight": True, "ignore_index": 2},
    {"ignore_index": 0},
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", CE_CASES, ids=[str(i) for i in range(len(CE_CASES))])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)], ids=["NC", "NCd"])
def test_cross_entropy_and_nll_class_targets_match_torch(shape, kw, reduction, dtype, rng):
    torch = torch_or_skip()
    x = rng.standard_normal(shape) * 2
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int64)
    t.reshape(-1)[:3] = [0, 1, 2]  # every case has some ignored targets
    w = rng.uniform(0.3, 2.0, shape[1])
    kw = dict(kw)
    use_w = kw.pop("weight", False)
    arrays = [x, t] + ([w] if use_w else [])

    def call(mod, *a):
        return mod.cross_entropy(a[0], a[1], weight=a[2] if use_w else None,
                                 reduction=reduction, **kw)

    _compare(lambda *a: call(F, *a), lambda *a: call(torch.nn.functional, *a), arrays,
             [True, False, False], dtype, rng)
    if kw.get("label_smoothing"):
        return
    lp = np.log(rng.dirichlet(np.ones(shape[1]), size=(shape[0],) + shape[2:]))
    lp = np.moveaxis(lp, -1, 1)

    def nll(mod, *a):
        return mod.nll_loss(a[0], a[1], weight=a[2] if use_w else None, reduction=reduction,
                            **kw)

    _compare(lambda *a: nll(F, *a), lambda *a: nll(torch.nn.functional, *a),
             [lp, t] + ([w] if use_w else []), [True, False, False], dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", [{}, {"weight": True}, {"label_smoothing": 0.1},
                                {"weight": True, "label_smoothing": 0.3}], ids=str)
def test_cross_entropy_probability_targets_match_torch(kw, reduction, dtype, rng):
    torch = torch_or_skip()
    x = rng.standard_normal((5, 4))
    p = rng.dirichlet(np.ones(4), size=5)
    w = rng.uniform(0.3, 2.0, 4)
    kw = dict(kw)
    use_w = kw.pop("weight", False)

    def call(mod, *a):
        return mod.cross_entropy(a[0], a[1], weight=a[2] if use_w else None,
                                 reduction=reduction, **kw)

    _compare(lambda *a: call(F, *a), lambda *a: call(torch.nn.functional, *a),
             [x, p] + ([w] if use_w else []), [True, True, False], dtype, rng)


def test_loss_modules_match_functional_and_keep_buffers(rng):
    x = ddl.tensor(rng.standard_normal((4, 3)))
    t = ddl.tensor(np.array([0, 2, 1, 2]))
    w = ddl.tensor(np.array([1.0, 2.0, 0.5]))
    m = nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    assert "weight" in m.state_dict()
    np.testing.assert_allclose(m(x, t).item(), F.cross_entropy(x, t, w, label_smoothing=0.1).item())
    assert float(nn.NLLLoss(weight=w)(x, t).item()) == float(F.nll_loss(x, t, w).item())
    y = ddl.tensor(rng.standard_normal((4, 3)))
    for mod, fn in ((nn.SmoothL1Loss(beta=0.5), lambda a, b: F.smooth_l1_loss(a, b, beta=0.5)),
                    (nn.HuberLoss(delta=0.5), lambda a, b: F.huber_loss(a, b, delta=0.5))):
        assert float(mod(x, y).item()) == float(fn(x, y).item())
    kl = nn.KLDivLoss(reduction="batchmean")
    assert kl.reduction == "batchmean"
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="batchmean")


@pytest.mark.parametrize("name", ["smooth_l1", "huber", "kl_div", "margin", "cosine", "bce",
                                  "ce_weighted_smoothed", "ce_prob", "nll_weighted"])
def test_gradcheck_float64(name, rng):
    a = ddl.tensor(rng.standard_normal((4, 5))).requires_grad_()
    b = ddl.tensor(rng.standard_normal((4, 5))).requires_grad_()
    t = ddl.tensor(np.array([0, 3, 4, 1]))
    w = ddl.tensor(rng.uniform(0.5, 2, 5))
    y = ddl.tensor(np.array([1.0, -1, -1, 1]))
    fns = {
        "smooth_l1": (lambda: F.smooth_l1_loss(a, b, beta=0.7, reduction="none"), [a, b]),
        "huber": (lambda: F.huber_loss(a, b, delta=0.6, reduction="none"), [a, b]),
        "kl_div": (lambda: F.kl_div(a, b.exp(), reduction="none"), [a, b]),
        "margin": (lambda: F.margin_ranking_loss(a[:, 0], b[:, 0], y, margin=0.1,
                                                 reduction="none"), [a, b]),
        "cosine": (lambda: F.cosine_embedding_loss(a, b, y, margin=-0.5, reduction="none"),
                   [a, b]),
        "bce": (lambda: F.binary_cross_entropy(a.sigmoid(), b.sigmoid(), weight=w,
                                               reduction="none"), [a, b]),
        "ce_weighted_smoothed": (lambda: F.cross_entropy(a, t, weight=w, label_smoothing=0.2,
                                                         ignore_index=3), [a]),
        "ce_prob": (lambda: F.cross_entropy(a, F.softmax(b, 1), weight=w, reduction="none"),
                    [a, b]),
        "nll_weighted": (lambda: F.nll_loss(F.log_softmax(a, 1), t, weight=w), [a]),
    }
    fn, wrt = fns[name]
    assert gradcheck(fn, wrt, eps=1e-6, rtol=1e-6, atol=1e-9) > 0


def test_loss_errors(rng):
    x = ddl.tensor(rng.standard_normal((4, 3)))
    with pytest.raises(IndexError, match="target 7 at position 1"):
        F.cross_entropy(x, ddl.tensor(np.array([0, 7, 1, 1])), weight=ddl.ones(3))
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(x, x)
    with pytest.raises(ValueError, match="beta"):
        F.smooth_l1_loss(x, x, beta=-1)
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, x.softmax(1) if hasattr(x, "softmax") else F.softmax(x, 1),
                        label_smoothing=2.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("name, kw", [("gelu", {}), ("gelu", {"approximate": "tanh"}),
                                      ("leaky_relu", {"negative_slope": 0.2}), ("silu", {}),
                                      ("mish", {}), ("softplus", {"beta": 2.0})])
def test_activations_match_torch(name, kw, dtype, rng):
    torch = torch_or_skip()
    x = rng.standard_normal((4, 6)) * 3
    _compare(lambda a: getattr(F, name)(a, **kw),
             lambda a: getattr(torch.nn.functional, name)(a, **kw), [x], [True], dtype, rng)


def test_gelu_float64_gradcheck(rng):
    x = ddl.tensor(rng.standard_normal((3, 4)) * 2).requires_grad_()
    for approximate in ("none", "tanh"):
        assert gradcheck(lambda a=approximate: F.gelu(x, a), [x], eps=1e-6, rtol=1e-6,
                         atol=1e-9) > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_both_dtypes_match_torch(padding_idx, dtype, rng):
    torch = torch_or_skip()
    w = rng.standard_normal((6, 4))
    idx = np.array([[0, 2, 5], [2, 2, 1]])
    _compare(lambda i, a: F.embedding(i, a, padding_idx=padding_idx),
             lambda i, a: torch.nn.functional.embedding(i, a, padding_idx=padding_idx),
             [idx, w], [False, True], dtype, rng)


def test_embedding_float64_gradcheck_and_module(rng):
    w = ddl.tensor(rng.standard_normal((5, 3))).requires_grad_()
    idx = ddl.tensor(np.array([1, 4, 1, 0]))
    assert gradcheck(lambda: F.embedding(idx, w), [w], eps=1e-6, rtol=1e-6,
                     atol=1e-9) > 0
    m = nn.Embedding(5, 3, padding_idx=1).double()
    assert m(idx).dtype is ddl.float64
    with pytest.raises(IndexError, match="index 7 at position 1"):
        m(ddl.tensor(np.array([0, 7])))
