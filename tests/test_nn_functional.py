"""ddl.nn.functional: forward values against NumPy float64 references, gradients (inputs and
weights) against float32 central differences (tests/_gradcheck.py), error paths, and optional
parity with PyTorch (skipped when torch is not installed).

The layer kernels are float32-only: inputs are float32 ~N(0, 1), references run in float64
on the same (float32-rounded) values, and inputs stay away from kinks (relu/leaky_relu/l1 at
0, max-pool ties).
"""

import math

import numpy as np
import pytest
from _gradcheck import away_from_zero, distinct, gradcheck, leaf
from _util import torch_or_skip

import ddl
import ddl.nn.functional as F

F32 = np.float32
FWD = {"rtol": 1e-5, "atol": 1e-5}  # float32 kernels against float64 references


def t32(a, requires_grad=False):
    return ddl.tensor(np.asarray(a, dtype=F32), requires_grad=requires_grad)


def f64(t):
    return t.detach().numpy().astype(np.float64)


# ---- NumPy float64 references --------------------------------------------------------------------


def ref_linear(x, w, b):
    y = x @ w.T
    return y + b if b is not None else y


def _out_size(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def ref_conv2d(x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    N, _, H, W = x.shape
    O, _, KH, KW = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    OH, OW = _out_size(H, KH, sh, ph, dh), _out_size(W, KW, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((N, O, OH, OW))
    for i in range(KH):
        for j in range(KW):
            patch = xp[
                :,
                :,
                i * dh : i * dh + sh * (OH - 1) + 1 : sh,
                j * dw : j * dw + sw * (OW - 1) + 1 : sw,
            ]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_pool(x, k, s, p, kind):
    N, C, H, W = x.shape
    OH, OW = _out_size(H, k, s, p), _out_size(W, k, s, p)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    out = np.empty((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            win = xp[:, :, i * s : i * s + k, j * s : j * s + k]
            out[:, :, i, j] = (
                win.max(axis=(2, 3)) if kind == "max" else win.sum(axis=(2, 3)) / (k * k)
            )
    return out


def ref_adaptive_avg(x, oh, ow):
    N, C, H, W = x.shape
    out = np.empty((N, C, oh, ow))
    for i in range(oh):
        h0, h1 = (i * H) // oh, -(-((i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -(-((j + 1) * W) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def ref_batch_norm(x, mean, var, w, b, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        y = y * w.reshape(shape) + b.reshape(shape)
    return y


def ref_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


_erf = np.vectorize(math.erf)


def ref_gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _reduce(losses, reduction, count=None):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (losses.size if count is None else count)


def ref_cross_entropy(x, t, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    logp = ref_log_softmax(x, 1)
    keep = t != ignore_index
    tt = np.where(keep, t, 0)
    nll = -logp[np.arange(len(t)), tt]
    smooth = -logp.mean(axis=1)
    losses = np.where(keep, (1 - label_smoothing) * nll + label_smoothing * smooth, 0.0)
    return _reduce(losses, reduction, keep.sum())


def ref_nll(logp, t, reduction="mean", ignore_index=-100):
    keep = t != ignore_index
    losses = np.where(keep, -logp[np.arange(len(t)), np.where(keep, t, 0)], 0.0)
    return _reduce(losses, reduction, keep.sum())


def ref_bce_logits(x, y, pos_weight=None, reduction="mean"):
    w = 1.0 if pos_weight is None else 1 + (pos_weight - 1) * y
    softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
    return _reduce((1 - y) * x + w * softplus_neg, reduction)


# ---- the checker catches wrong gradients ---------------------------------------------------------


def test_gradcheck_catches_a_wrong_gradient(rng):
    x = leaf(rng.standard_normal((3, 4)))
    # forward value 1.05 * x, but autograd only sees x: every gradient is 5% short
    with pytest.raises(AssertionError, match="gradient of x"):
        gradcheck(lambda: x * 1.0 + x.detach() * 0.05, [x], names=["x"])
    # the same function without the detached part passes
    gradcheck(lambda: x * 1.05, [x])


def test_gradcheck_catches_a_wrong_layer_gradient(rng):
    # a layer op whose gradient misses a term: linear with the bias added detached
    x, w, b = (leaf(rng.standard_normal(s)) for s in ((4, 3), (2, 3), (2,)))
    with pytest.raises(AssertionError, match="gradient of b"):
        gradcheck(lambda: F.linear(x, w) + b.detach() * 2 + b, [x, w, b], names="xwb")
    with pytest.raises(AssertionError, match="got no gradient"):
        gradcheck(lambda: F.linear(x, w) + b.detach(), [x, w, b], names="xwb")


# ---- linear --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "xshape,bias", [((5, 4), True), ((2, 3, 4), True), ((5, 4), False), ((4,), True)]
)
def test_linear(rng, xshape, bias):
    xa, wa = rng.standard_normal(xshape), rng.standard_normal((3, 4))
    ba = rng.standard_normal(3) if bias else None
    x, w = leaf(xa), leaf(wa)
    b = leaf(ba) if bias else None
    y = F.linear(x, w, b)
    assert y.shape == xshape[:-1] + (3,) and y.dtype is ddl.float32
    np.testing.assert_allclose(
        y.numpy(), ref_linear(f64(x), f64(w), f64(b) if bias else None), **FWD
    )
    gradcheck(lambda: F.linear(x, w, b), [x, w] + ([b] if bias else []))


def test_linear_backward_twice_doubles(rng):
    x, w, b = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal((2, 3))), leaf([1.0, 2.0])
    y = (F.linear(x, w, b) ** 2).sum()
    y.backward(retain_graph=True)
    g = [t.grad.numpy().copy() for t in (x, w, b)]
    y.backward()
    for t, g1 in zip((x, w, b), g):
        np.testing.assert_allclose(t.grad.numpy(), 2 * g1, rtol=1e-6)


# ---- conv2d --------------------------------------------------------------------------------------


CONV_CASES = [  # (x shape, w shape, stride, padding, dilation, bias)
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 0, 1, True),
    ((2, 2, 7, 6), (3, 2, 3, 2), (2, 1), (1, 2), 1, True),
    ((1, 2, 7, 7), (2, 2, 3, 3), 2, 1, 2, False),
    ((2, 3, 4, 5), (2, 3, 1, 1), 1, 0, 1, True),  # 1x1: the pointwise (no im2col) path
    ((2, 3, 4, 5), (2, 3, 1, 1), 2, 1, 1, False),  # 1x1 with stride and padding: im2col
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,bias", CONV_CASES)
def test_conv2d(rng, xs, ws, stride, padding, dilation, bias):
    x, w = leaf(rng.standard_normal(xs)), leaf(rng.standard_normal(ws) * 0.5)
    b = leaf(rng.standard_normal(ws[0])) if bias else None
    pair = lambda v: v if isinstance(v, tuple) else (v, v)
    y = F.conv2d(x, w, b, stride, padding, dilation)
    ref = ref_conv2d(
        f64(x), f64(w), f64(b) if bias else None, pair(stride), pair(padding), pair(dilation)
    )
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)
    gradcheck(
        lambda: F.conv2d(x, w, b, stride, padding, dilation),
        [x, w] + ([b] if bias else []),
        samples=16,
    )


def test_conv2d_unbatched(rng):
    x, w, b = (
        leaf(rng.standard_normal((2, 5, 5))),
        leaf(rng.standard_normal((3, 2, 3, 3))),
        leaf(rng.standard_normal(3)),
    )
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (3, 5, 5)
    ref = ref_conv2d(f64(x)[None], f64(w), f64(b), (1, 1), (1, 1), (1, 1))[0]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)
    gradcheck(lambda: F.conv2d(x, w, b, padding=1), [x, w, b], samples=16)


def test_conv2d_padding_same_and_valid(rng):
    x, w = t32(rng.standard_normal((1, 2, 6, 5))), t32(rng.standard_normal((3, 2, 3, 5)))
    y = F.conv2d(x, w, padding="same")
    assert y.shape == (1, 3, 6, 5)
    np.testing.assert_allclose(
        y.numpy(), ref_conv2d(f64(x), f64(w), None, (1, 1), (1, 2), (1, 1)), rtol=1e-4, atol=1e-4
    )
    assert F.conv2d(x, w, padding="valid").shape == (1, 3, 4, 1)
    with pytest.raises(ValueError, match="same"):
        F.conv2d(x, w, padding="same", stride=2)


# ---- pooling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 1, 1)])
def test_max_pool2d(rng, k, s, p):
    x = leaf(distinct(rng, (2, 2, 6, 5)))
    y = F.max_pool2d(x, k, s, p)
    np.testing.assert_allclose(y.numpy(), ref_pool(f64(x), k, s, p, "max"), rtol=0, atol=0)
    gradcheck(lambda: F.max_pool2d(x, k, s, p), [x], eps=1e-3, samples=40)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_avg_pool2d(rng, k, s, p):
    x = leaf(rng.standard_normal((2, 3, 6, 5)))
    y = F.avg_pool2d(x, k, s, p)
    np.testing.assert_allclose(y.numpy(), ref_pool(f64(x), k, s, p, "avg"), **FWD)
    gradcheck(lambda: F.avg_pool2d(x, k, s, p), [x], samples=40)


@pytest.mark.parametrize("out", [(1, 1), (3, 2), (2, 5), 4])
def test_adaptive_avg_pool2d(rng, out):
    x = leaf(rng.standard_normal((2, 3, 7, 5)))
    oh, ow = out if isinstance(out, tuple) else (out, out)
    y = F.adaptive_avg_pool2d(x, out)
    assert y.shape == (2, 3, oh, ow)
    np.testing.assert_allclose(y.numpy(), ref_adaptive_avg(f64(x), oh, ow), **FWD)
    gradcheck(lambda: F.adaptive_avg_pool2d(x, out), [x], samples=40)


def test_pools_unbatched(rng):
    x = leaf(distinct(rng, (3, 6, 6)))
    for fn, kind in ((F.max_pool2d, "max"), (F.avg_pool2d, "avg")):
        y = fn(x, 2)
        assert y.shape == (3, 3, 3)
        np.testing.assert_allclose(y.numpy(), ref_pool(f64(x)[None], 2, 2, 0, kind)[0], **FWD)
    assert F.adaptive_avg_pool2d(x, 2).shape == (3, 2, 2)
    gradcheck(lambda: F.max_pool2d(x, 2), [x], eps=1e-3)


# ---- batch norm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 2), (4, 3, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training(rng, shape, affine):
    C = shape[1]
    x = leaf(rng.standard_normal(shape) * 2 + 0.5)
    w = leaf(rng.uniform(0.5, 1.5, C)) if affine else None
    b = leaf(rng.standard_normal(C)) if affine else None
    rm, rv = t32(rng.standard_normal(C)), t32(rng.uniform(0.5, 2, C))
    rm0, rv0 = f64(rm), f64(rv)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-5)
    axes = (0,) + tuple(range(2, len(shape)))
    xd = f64(x)
    mean, var = xd.mean(axis=axes), xd.var(axis=axes)
    M = xd.size // C
    np.testing.assert_allclose(
        y.numpy(),
        ref_batch_norm(xd, mean, var, f64(w) if affine else None, f64(b) if affine else None, 1e-5),
        rtol=1e-4,
        atol=1e-4,
    )
    # running stats: (1 - momentum) * old + momentum * new, with the unbiased variance
    np.testing.assert_allclose(rm.numpy(), 0.7 * rm0 + 0.3 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        rv.numpy(), 0.7 * rv0 + 0.3 * var * M / (M - 1), rtol=1e-5, atol=1e-6
    )
    params = [x] + ([w, b] if affine else [])
    gradcheck(lambda: F.batch_norm(x, None, None, w, b, training=True), params, samples=20)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_eval(rng, shape, affine):
    C = shape[1]
    x = leaf(rng.standard_normal(shape))
    w = leaf(rng.uniform(0.5, 1.5, C)) if affine else None
    b = leaf(rng.standard_normal(C)) if affine else None
    rm, rv = t32(rng.standard_normal(C)), t32(rng.uniform(0.5, 2, C))
    rm0, rv0 = rm.numpy().copy(), rv.numpy().copy()
    y = F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-3)
    np.testing.assert_allclose(
        y.numpy(),
        ref_batch_norm(
            f64(x), f64(rm), f64(rv), f64(w) if affine else None, f64(b) if affine else None, 1e-3
        ),
        **FWD,
    )
    np.testing.assert_array_equal(rm.numpy(), rm0)  # eval leaves running stats alone
    np.testing.assert_array_equal(rv.numpy(), rv0)
    gradcheck(
        lambda: F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-3),
        [x] + ([w, b] if affine else []),
    )


def test_batch_norm_errors(rng):
    x = t32(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(x, t32(np.zeros(2)), t32(np.ones(2)), training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="more than 1 value"):
        F.batch_norm(t32(rng.standard_normal((1, 3))), None, None, training=True)


# ---- dropout -------------------------------------------------------------------------------------


def test_dropout_values_and_gradient(rng):
    x = leaf(rng.standard_normal((8, 16)))

    def fn():
        ddl.manual_seed(7)  # the same mask in every evaluation
        return F.dropout(x, 0.3)

    y = fn().numpy()
    xd = f64(x)
    kept = y != 0
    assert 0.45 < kept.mean() < 0.9
    np.testing.assert_allclose(y[kept], xd[kept] / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(fn().numpy(), y)  # seeded: reproducible
    gradcheck(fn, [x], samples=40)
    # the gradient is the mask scaled: zero where dropped
    x.grad = None
    fn().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7, rtol=1e-6)


def test_dropout_modes(rng):
    x = t32(rng.standard_normal((4, 5)))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), np.zeros((4, 5), F32))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            F.dropout(x, p)


# ---- embedding -----------------------------------------------------------------------------------


def test_embedding(rng):
    w = leaf(rng.standard_normal((6, 4)))
    idx = ddl.tensor(np.array([[1, 3, 1], [0, 1, 5]], dtype=np.int64))
    y = F.embedding(idx, w)
    assert y.shape == (2, 3, 4)
    np.testing.assert_array_equal(y.numpy(), f64(w)[idx.numpy()].astype(F32))
    gradcheck(lambda: F.embedding(idx, w), [w], samples=24)
    # repeated indices accumulate: row 1 appears three times
    w.grad = None
    F.embedding(idx, w).sum().backward()
    counts = np.bincount(idx.numpy().ravel(), minlength=6)
    np.testing.assert_array_equal(w.grad.numpy(), np.repeat(counts[:, None], 4, 1).astype(F32))


def test_embedding_padding_idx(rng):
    w = leaf(rng.standard_normal((5, 3)))
    idx = ddl.tensor(np.array([2, 0, 2, 4, 0], dtype=np.int64))
    w.grad = None
    (F.embedding(idx, w, padding_idx=0) * t32(rng.standard_normal((5, 3)))).sum().backward()
    g = w.grad.numpy()
    np.testing.assert_array_equal(g[0], 0)  # no gradient into the padding row
    assert np.all(g[2] != 0) and np.all(g[4] != 0)
    np.testing.assert_array_equal(g[[1, 3]], 0)
    # a negative padding_idx counts from the end, as PyTorch
    w.grad = None
    F.embedding(idx, w, padding_idx=-1).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[4], 0)
    np.testing.assert_array_equal(w.grad.numpy()[0], 2)


def test_embedding_gradcheck_with_padding(rng):
    # the padding row's forward value still matters (a finite difference there is not 0, its
    # gradient is): keep it a constant and check the other rows, fed in through cat
    pad_row = t32(rng.standard_normal((1, 3)))
    rest = leaf(rng.standard_normal((4, 3)))
    idx = ddl.tensor(np.array([[2, 0], [2, 4], [1, 0], [2, 3]], dtype=np.int64))
    gradcheck(lambda: F.embedding(idx, ddl.cat([pad_row, rest]), padding_idx=0), [rest])
    g = rest.grad.numpy()
    np.testing.assert_array_equal(g[[0, 1, 2, 3]] != 0, True)  # rows 1..4 all used


def test_embedding_errors(rng):
    w = t32(rng.standard_normal((5, 3)))
    with pytest.raises(IndexError):
        F.embedding(ddl.tensor(np.array([1, 5], dtype=np.int64)), w)
    with pytest.raises(IndexError):
        F.embedding(ddl.tensor(np.array([-1], dtype=np.int64)), w)
    with pytest.raises(TypeError, match="int64"):
        F.embedding(t32([1.0, 2.0]), w)
    with pytest.raises((ValueError, IndexError), match="padding_idx"):
        F.embedding(ddl.tensor(np.array([1], dtype=np.int64)), w, padding_idx=5)


# ---- activations ---------------------------------------------------------------------------------


ACTIVATIONS = [
    ("relu", F.relu, lambda x: np.maximum(x, 0)),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("leaky_relu_default", F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    ("gelu", F.gelu, lambda x: ref_gelu(x, "none")),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: ref_gelu(x, "tanh")),
    ("tanh", F.tanh, np.tanh),
    ("sigmoid", F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
]


@pytest.mark.parametrize("name,fn,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(rng, name, fn, ref):
    x = leaf(away_from_zero(rng, (4, 3, 5), margin=0.05) * 1.5)
    y = fn(x)
    assert y.shape == x.shape and y.dtype is ddl.float32
    np.testing.assert_allclose(y.numpy(), ref(f64(x)), rtol=1e-5, atol=2e-6)
    gradcheck(
        lambda: fn(x),
        [x],
        eps=1e-2 if name.startswith(("gelu", "tanh", "sig")) else 2e-2,
        samples=40,
    )


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(t32([1.0]), approximate="erf")


# ---- softmax -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("log", [False, True])
def test_softmax(rng, dim, log):
    x = leaf(rng.standard_normal((3, 4, 5)) * 2)
    fn = F.log_softmax if log else F.softmax
    y = fn(x, dim=dim)
    ref = ref_log_softmax(f64(x), dim)
    np.testing.assert_allclose(y.numpy(), ref if log else np.exp(ref), rtol=1e-5, atol=1e-6)
    gradcheck(lambda: fn(x, dim=dim), [x], samples=30)


def test_softmax_extremes():
    x = t32([[1000.0, 0.0, -1000.0], [-1e30, -1e30, 0.0]])
    np.testing.assert_allclose(F.softmax(x, 1).numpy(), [[1, 0, 0], [0, 0, 1]], atol=1e-7)
    np.testing.assert_allclose(F.log_softmax(x, 1).numpy()[0], [0, -1000, -2000], rtol=1e-6)
    y = F.softmax(t32(np.zeros((2, 4))), dim=-1)
    np.testing.assert_allclose(y.numpy(), 0.25)
    assert F.softmax(t32(3.0), dim=0).item() == 1.0  # 0-d input


# ---- shape ops -----------------------------------------------------------------------------------


def test_flatten(rng):
    x = leaf(rng.standard_normal((2, 3, 4)))
    assert F.flatten(x).shape == (24,)
    y = F.flatten(x, 1)
    assert y.shape == (2, 12)
    np.testing.assert_array_equal(y.numpy(), x.numpy().reshape(2, 12))
    assert F.flatten(x, 0, 1).shape == (6, 4)
    gradcheck(lambda: F.flatten(x, 1), [x])


@pytest.mark.parametrize("pad", [(1, 2), (0, 1, 2, 0), (1, 1, 1, 1, 1, 0)])
def test_pad(rng, pad):
    x = leaf(rng.standard_normal((2, 3, 4)))
    y = F.pad(x, pad, value=0.5)
    widths = [(0, 0)] * 3
    for i in range(len(pad) // 2):
        widths[2 - i] = (pad[2 * i], pad[2 * i + 1])
    np.testing.assert_array_equal(y.numpy(), np.pad(x.numpy(), widths, constant_values=0.5))
    gradcheck(lambda: F.pad(x, pad), [x])


def test_pad_errors(rng):
    x = t32(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError):
        F.pad(x, (1,))
    with pytest.raises(ValueError):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="reflect"):
        F.pad(x, (1, 1), mode="reflect")


# ---- losses --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_l1(rng, reduction):
    x = leaf(rng.standard_normal((4, 5)))
    # l1 has a kink at x == y: keep them apart
    y = leaf(f64(x) + away_from_zero(rng, (4, 5), margin=0.1))
    for fn, ref in ((F.mse_loss, lambda d: d**2), (F.l1_loss, np.abs)):
        out = fn(x, y, reduction=reduction)
        np.testing.assert_allclose(out.numpy(), _reduce(ref(f64(x) - f64(y)), reduction), **FWD)
        gradcheck(lambda fn=fn: fn(x, y, reduction=reduction), [x, y], samples=20)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy(rng, reduction, smoothing):
    x = leaf(rng.standard_normal((6, 5)) * 2)
    t = ddl.tensor(np.array([0, 4, 2, 2, 1, 3], dtype=np.int64))
    out = F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing)
    ref = ref_cross_entropy(f64(x), t.numpy(), reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(out.numpy(), ref, **FWD)
    gradcheck(
        lambda: F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing),
        [x],
        samples=30,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignore_index(rng, reduction):
    x = leaf(rng.standard_normal((5, 4)))
    for ignore in (-100, 1):
        tv = (
            np.array([1, -100, 3, 1, 0], dtype=np.int64)
            if ignore == -100
            else np.array([1, 2, 3, 1, 0], dtype=np.int64)
        )
        t = ddl.tensor(tv)
        out = F.cross_entropy(x, t, ignore_index=ignore, reduction=reduction, label_smoothing=0.1)
        ref = ref_cross_entropy(f64(x), tv, reduction, ignore, 0.1)
        np.testing.assert_allclose(out.numpy(), ref, **FWD)
        gradcheck(
            lambda t=t, ignore=ignore: F.cross_entropy(
                x, t, ignore_index=ignore, reduction=reduction, label_smoothing=0.1
            ),
            [x],
            samples=20,
        )
        x.grad = None
        F.cross_entropy(x, t, ignore_index=ignore, reduction=reduction).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy()[tv == ignore], 0)


def test_cross_entropy_all_ignored_mean_is_nan(rng):
    x = t32(rng.standard_normal((2, 3)))
    t = ddl.tensor(np.array([-100, -100], dtype=np.int64))
    assert math.isnan(F.cross_entropy(x, t).item())
    assert F.cross_entropy(x, t, reduction="sum").item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(rng, reduction):
    logp = leaf(ref_log_softmax(rng.standard_normal((5, 4)), 1))
    tv = np.array([3, 0, 0, -100, 2], dtype=np.int64)
    t = ddl.tensor(tv)
    out = F.nll_loss(logp, t, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), ref_nll(f64(logp), tv, reduction), **FWD)
    gradcheck(lambda: F.nll_loss(logp, t, reduction=reduction), [logp])
    # nll(log_softmax(x)) == cross_entropy(x)
    x = t32(rng.standard_normal((5, 4)))
    np.testing.assert_allclose(
        F.nll_loss(F.log_softmax(x, 1), t, reduction=reduction).numpy(),
        F.cross_entropy(x, t, reduction=reduction).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_bce_with_logits(rng, reduction, with_pos_weight):
    x = leaf(rng.standard_normal((4, 3)) * 2)
    y = leaf(rng.uniform(0, 1, (4, 3)))
    pw = t32(rng.uniform(0.5, 3, 3)) if with_pos_weight else None
    out = F.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw)
    ref = ref_bce_logits(f64(x), f64(y), f64(pw) if with_pos_weight else None, reduction)
    np.testing.assert_allclose(out.numpy(), ref, **FWD)
    gradcheck(
        lambda: F.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw), [x, y]
    )


def test_bce_with_logits_is_stable():
    x = t32([[100.0, -100.0, 0.0]])
    y = t32([[0.0, 1.0, 1.0]])
    out = F.binary_cross_entropy_with_logits(x, y, reduction="none").numpy()
    np.testing.assert_allclose(out, [[100.0, 100.0, math.log(2)]], rtol=1e-6)


def test_loss_modules_match_functional(rng):
    x = t32(rng.standard_normal((4, 3)))
    y = t32(rng.standard_normal((4, 3)))
    t = ddl.tensor(np.array([0, 2, 1, 2], dtype=np.int64))
    nn = ddl.nn
    pairs = [
        (nn.MSELoss(reduction="sum")(x, y), F.mse_loss(x, y, "sum")),
        (nn.L1Loss()(x, y), F.l1_loss(x, y)),
        (
            nn.CrossEntropyLoss(label_smoothing=0.1)(x, t),
            F.cross_entropy(x, t, label_smoothing=0.1),
        ),
        (nn.NLLLoss(reduction="none")(x, t), F.nll_loss(x, t, reduction="none")),
        (
            nn.BCEWithLogitsLoss(pos_weight=t32([1, 2, 3]))(x, y.sigmoid()),
            F.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=t32([1, 2, 3])),
        ),
    ]
    for a, b in pairs:
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_class_loss_target_out_of_range(rng, fn):
    x = t32(rng.standard_normal((4, 3)))
    with pytest.raises(IndexError, match=r"target 3 at position 2 .*3 classes"):
        fn(x, ddl.tensor(np.array([0, 1, 3, 0], dtype=np.int64)))
    with pytest.raises(IndexError, match=r"target -2 at position 1"):
        fn(x, ddl.tensor(np.array([0, -2, 1, 0], dtype=np.int64)))
    with pytest.raises(IndexError, match=r"target -100 at position 0"):  # not the ignore_index
        fn(x, ddl.tensor(np.array([-100, 1, 1, 0], dtype=np.int64)), ignore_index=1)


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_class_loss_shape_and_dtype_errors(rng, fn):
    x = t32(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3,\)"):
        fn(x, ddl.tensor(np.array([0, 1, 2], dtype=np.int64)))
    with pytest.raises(TypeError, match="int64"):
        fn(x, t32([0, 1, 2, 0]))
    # float64 runs (through the core ops) and stays float64
    assert fn(x.double(), ddl.tensor(np.array([0, 1, 2, 0], dtype=np.int64))).dtype is ddl.float64
    with pytest.raises(ValueError, match="reduction"):
        fn(x, ddl.tensor(np.array([0, 1, 2, 0], dtype=np.int64)), reduction="avg")


@pytest.mark.parametrize("fn", [F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits])
def test_pair_loss_shape_errors(rng, fn):
    x = t32(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(3, 4\).*same shape"):
        fn(x, t32(rng.standard_normal((3, 4))))
    with pytest.raises(ValueError, match="same shape"):
        fn(x, t32(rng.standard_normal((4, 3, 1))))
    assert fn(x.double(), x.double()).dtype is ddl.float64  # float64 runs through the core ops


def test_float32_float64_mixing_rejected(rng):
    # float64 runs everywhere (tests/test_nn_f64.py); mixing the two in one op is a TypeError
    x64 = ddl.tensor(rng.standard_normal((2, 3, 5, 5)))
    w32 = t32(rng.standard_normal((4, 3, 3, 3)))
    calls = [
        lambda: F.linear(ddl.tensor(rng.standard_normal((2, 3))), t32(np.ones((4, 3)))),
        lambda: F.linear(t32(np.ones((2, 3))), ddl.tensor(np.ones((4, 3)))),
        lambda: F.conv2d(x64, w32),
        lambda: F.conv2d(x64.float(), w32.double()),
        lambda: F.conv2d(x64, w32.double(), t32(np.ones(4))),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="float32"):
            call()


def test_kernel_larger_than_input(rng):
    x = t32(rng.standard_normal((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="kernel"):
        F.conv2d(x, t32(rng.standard_normal((2, 2, 4, 4))))
    with pytest.raises(ValueError, match="kernel"):
        F.conv2d(x, t32(rng.standard_normal((2, 2, 3, 3))), dilation=2)
    for fn in (F.max_pool2d, F.avg_pool2d):
        with pytest.raises(ValueError, match="kernel"):
            fn(x, 4)
    F.conv2d(x, t32(rng.standard_normal((2, 2, 4, 4))), padding=1)  # fits once padded


def test_conv_and_linear_shape_errors(rng):
    x = t32(rng.standard_normal((2, 3, 5, 5)))
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(x, t32(rng.standard_normal((4, 2, 3, 3))))
    with pytest.raises(ValueError, match="bias"):
        F.conv2d(x, t32(rng.standard_normal((4, 3, 3, 3))), t32(np.zeros(3)))
    with pytest.raises(ValueError, match="4-D"):
        F.conv2d(t32(np.zeros((5, 5))), t32(rng.standard_normal((4, 3, 3, 3))))
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, t32(rng.standard_normal((4, 3, 3, 3))), groups=3)
    with pytest.raises(ValueError):
        F.conv2d(x, t32(rng.standard_normal((4, 3, 3, 3))), stride=0)
    with pytest.raises(ValueError, match="in_features=4"):
        F.linear(t32(np.ones((2, 3))), t32(np.ones((5, 4))))
    with pytest.raises(ValueError, match="bias"):
        F.linear(t32(np.ones((2, 4))), t32(np.ones((5, 4))), t32(np.ones(4)))
    with pytest.raises(ValueError):
        F.max_pool2d(x, 2, padding=2)  # padding over half the kernel
    with pytest.raises(ValueError):
        F.max_pool2d(t32(np.zeros((5, 5))), 2)


# ---- optional parity with PyTorch ----------------------------------------------------------------


def _tt(torch, t, requires_grad=False):
    return torch.tensor(t.detach().numpy().copy(), requires_grad=requires_grad)


def _same(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(
        a.numpy() if isinstance(a, ddl.Tensor) else a, b.detach().numpy(), rtol=rtol, atol=atol
    )


def _parity(torch, ddl_fn, torch_fn, inputs, rtol=1e-5, atol=1e-6):
    """Run both on the same values; compare outputs and input gradients of sum(out * R)."""
    rs = np.random.RandomState(3)
    tin = [_tt(torch, x, x.requires_grad) if isinstance(x, ddl.Tensor) else x for x in inputs]
    for x in inputs:
        if isinstance(x, ddl.Tensor) and x.requires_grad:
            x.grad = None
    yd, yt = ddl_fn(*inputs), torch_fn(*tin)
    _same(yd, yt, rtol, atol)
    R = rs.standard_normal(tuple(yd.shape)).astype(F32)
    (yd * t32(R)).sum().backward()
    (yt * torch.tensor(R)).sum().backward()
    for x, xt in zip(inputs, tin):
        if isinstance(x, ddl.Tensor) and x.requires_grad:
            _same(x.grad, xt.grad, rtol, atol)


def test_torch_parity_functional(rng):
    torch = torch_or_skip()
    TF = torch.nn.functional
    x4 = leaf(rng.standard_normal((2, 3, 7, 6)))
    w4, b4 = leaf(rng.standard_normal((4, 3, 3, 3))), leaf(rng.standard_normal(4))
    _parity(
        torch,
        lambda *a: F.conv2d(*a, stride=2, padding=1, dilation=(1, 2)),
        lambda *a: TF.conv2d(*a, stride=2, padding=1, dilation=(1, 2)),
        [x4, w4, b4],
        rtol=1e-4,
        atol=1e-4,
    )
    xd = leaf(distinct(rng, (2, 3, 7, 6)))
    _parity(torch, lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1), [xd])
    _parity(torch, lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1), [x4])
    _parity(
        torch,
        lambda x: F.adaptive_avg_pool2d(x, (3, 4)),
        lambda x: TF.adaptive_avg_pool2d(x, (3, 4)),
        [x4],
    )
    x2 = leaf(rng.standard_normal((5, 4)) * 2)
    for fn, tfn in (
        (F.gelu, TF.gelu),
        (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
        (lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),
        (lambda x: F.softmax(x, 0), lambda x: TF.softmax(x, 0)),
        (lambda x: F.log_softmax(x, 1), lambda x: TF.log_softmax(x, 1)),
    ):
        _parity(torch, fn, tfn, [x2])
    t = ddl.tensor(np.array([1, 0, 3, -100, 2], dtype=np.int64))
    tt = torch.tensor(t.numpy())
    y2 = leaf(rng.uniform(0, 1, (5, 4)))
    pw = t32(rng.uniform(0.5, 2, 4))
    tpw = _tt(torch, pw)
    for red in ("mean", "sum", "none"):
        cases = [  # (ddl function, torch function, inputs)
            (
                lambda x, r=red: F.cross_entropy(x, t, reduction=r, label_smoothing=0.15),
                lambda x, r=red: TF.cross_entropy(x, tt, reduction=r, label_smoothing=0.15),
                [x2],
            ),
            (
                lambda x, r=red: F.nll_loss(x, t, reduction=r),
                lambda x, r=red: TF.nll_loss(x, tt, reduction=r),
                [x2],
            ),
            (
                lambda x, y, r=red: F.binary_cross_entropy_with_logits(
                    x, y, reduction=r, pos_weight=pw
                ),
                lambda x, y, r=red: TF.binary_cross_entropy_with_logits(
                    x, y, reduction=r, pos_weight=tpw
                ),
                [x2, y2],
            ),
            (
                lambda x, y, r=red: F.mse_loss(x, y, r),
                lambda x, y, r=red: TF.mse_loss(x, y, reduction=r),
                [x2, y2],
            ),
            (
                lambda x, y, r=red: F.l1_loss(x, y, r),
                lambda x, y, r=red: TF.l1_loss(x, y, reduction=r),
                [x2, y2],
            ),
        ]
        for fn, tfn, inputs in cases:
            _parity(torch, fn, tfn, inputs)
    w = leaf(rng.standard_normal((6, 3)))
    idx = ddl.tensor(np.array([[1, 0, 1], [5, 0, 1]], dtype=np.int64))
    _parity(
        torch,
        lambda w: F.embedding(idx, w, padding_idx=0),
        lambda w: TF.embedding(torch.tensor(idx.numpy()), w, padding_idx=0),
        [w],
    )


# ---- empty sizes and private-binding arguments ---------------------------------------------------

EMPTY_CASES = {  # name: (function of the leaves, leaf shapes)
    "linear": (lambda x, w, b: F.linear(x, w, b), [(0, 3), (2, 3), (2,)]),
    "linear_3d": (lambda x, w, b: F.linear(x, w, b), [(2, 0, 3), (2, 3), (2,)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1), [(0, 2, 4, 4), (3, 2, 3, 3), (3,)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [(0, 2, 4, 4)]),
    "max_pool2d_no_channels": (lambda x: F.max_pool2d(x, 2), [(2, 0, 4, 4)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), [(0, 2, 4, 4)]),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 2), [(0, 2, 4, 4)]),
    "batch_norm": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        [(0, 3), (3,), (3,)],
    ),
    "batch_norm_no_length": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        [(2, 3, 0), (3,), (3,)],
    ),
    "softmax": (lambda x: F.softmax(x, 1), [(0, 3)]),
    "log_softmax": (lambda x: F.log_softmax(x, 1), [(2, 0)]),
    "cross_entropy": (
        lambda x: F.cross_entropy(x, ddl.zeros(0, dtype=ddl.int64), reduction="sum"),
        [(0, 3)],
    ),
    "mse_loss": (lambda x, y: F.mse_loss(x, y, "sum"), [(0, 3), (0, 3)]),
    "bce": (
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none"),
        [(0, 3), (0, 3)],
    ),
    "gelu": (lambda x: F.gelu(x), [(0, 3)]),
    "leaky_relu": (lambda x: F.leaky_relu(x), [(0, 3)]),
    "dropout": (lambda x: F.dropout(x, 0.5), [(0, 3)]),
    "gru_cell": (lambda x, h, wi, wh: F.gru_cell(x, h, wi, wh), [(0, 3), (0, 4), (12, 3), (12, 4)]),
}


@pytest.mark.parametrize("name", list(EMPTY_CASES))
def test_empty_inputs_forward_and_backward(rng, name):
    fn, shapes = EMPTY_CASES[name]
    leaves = [leaf(rng.standard_normal(s)) for s in shapes]
    out = fn(*leaves)
    out.sum().backward()
    for t in leaves:  # nothing flowed back: zero gradients of the right shapes
        assert t.grad is not None and t.grad.shape == t.shape
        np.testing.assert_array_equal(t.grad.numpy(), 0)


def test_linear_without_input_features(rng):
    # (B, 0) @ (OUT, 0).T is zeros: the output is the bias, and only the bias has a gradient
    x, w, b = leaf(np.zeros((3, 0))), leaf(np.zeros((2, 0))), leaf([1.5, -2.0])
    y = F.linear(x, w, b)
    np.testing.assert_array_equal(y.numpy(), [[1.5, -2.0]] * 3)
    (y * t32([[1, 2]] * 3)).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [3, 6])
    np.testing.assert_array_equal(F.linear(x, w).numpy(), np.zeros((3, 2)))


def test_softmax_dim_out_of_range(rng):
    x = t32(rng.standard_normal((2, 3)))
    for dim in (2, -3):
        with pytest.raises(IndexError, match="out of range"):
            F.softmax(x, dim)
        with pytest.raises(IndexError, match="out of range"):
            F.log_softmax(x, dim)


def test_binding_rejects_unknown_kinds():
    from ddl import _C

    x = t32(np.zeros((1, 1, 4, 4)))
    v = t32(np.zeros((2, 3)))
    t = ddl.zeros(2, dtype=ddl.int64)
    h, w_ih, w_hh = t32(np.zeros((2, 4))), t32(np.zeros((4, 3))), t32(np.zeros((4, 4)))
    for bad in (99, -1):  # outside every kind enum
        calls = [
            (_C.pool2d, bad, x, 2, 2, 2, 2, 0, 0),
            (_C.class_loss, bad, v, t, _C.REDUCTION_MEAN, -100, 0.0),
            (_C.pair_loss, bad, v, v, None, _C.REDUCTION_MEAN),
            (_C.activation, bad, v, 0.0, _C.GELU_NONE),
            (_C.activation, _C.ACT_GELU, v, 0.0, bad),
            (_C.rnn_cell, bad, v, h, None, w_ih, w_hh, None, None, _C.RNN_TANH),
            (_C.rnn_cell, _C.CELL_RNN, v, h, None, w_ih, w_hh, None, None, bad),
            (_C.reshape, bad, v, (3, 2)),
        ]
        for fn, *args in calls:
            with pytest.raises(ValueError, match="unknown"):
                fn(*args)
    with pytest.raises(ValueError, match="invalid reduction"):
        _C.class_loss(_C.CLASS_LOSS_NLL, v, t, 7, -100, 0.0)
    with pytest.raises(TypeError):  # kinds are enum values now, not characters
        _C.pool2d("m", x, 2, 2, 2, 2, 0, 0)
