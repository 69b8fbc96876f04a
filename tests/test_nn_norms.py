"""LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d/2d and BatchNorm1d on (N, C, L): forward and
gradients against PyTorch from the same weights (float32 1e-5, float64 1e-10), finite
differences in float64, and the errors."""

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
    return {"rtol": 1e-5, "atol": 1e-5} if dtype is ddl.float32 else {"rtol": 1e-10,
                                                                       "atol": 1e-11}


def _both(ours, theirs, x_np, dtype, rng):
    """Copy theirs' parameters into ours, run both on x, compare outputs and all gradients."""
    torch = torch_or_skip()
    theirs = theirs.to(torch.float64 if dtype is ddl.float64 else torch.float32)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    sd = {k: ddl.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    ours.load_state_dict(sd)
    x = ddl.tensor(x_np.astype(dtype.numpy)).requires_grad_()
    tx = torch.tensor(x_np.astype(dtype.numpy), requires_grad=True)
    y, ty = ours(x), theirs(tx)
    assert y.dtype is dtype
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **tol(dtype))
    R = rng.standard_normal(tuple(ty.shape)).astype(dtype.numpy)
    (y * ddl.tensor(R)).sum().backward()
    (ty * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **tol(dtype))
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("make, shape", [
    (lambda m: m.LayerNorm(6), (3, 4, 6)),
    (lambda m: m.LayerNorm((4, 6), eps=1e-3), (3, 4, 6)),
    (lambda m: m.LayerNorm(6, elementwise_affine=False), (5, 6)),
    (lambda m: m.LayerNorm(6, bias=False), (2, 6)),
    (lambda m: m.RMSNorm(6), (3, 4, 6)),
    (lambda m: m.RMSNorm([4, 6], eps=1e-4), (3, 4, 6)),
    (lambda m: m.GroupNorm(2, 6), (3, 6, 5)),
    (lambda m: m.GroupNorm(3, 6), (2, 6, 3, 4)),
    (lambda m: m.GroupNorm(1, 6, affine=False), (2, 6, 4)),
    (lambda m: m.InstanceNorm2d(3), (2, 3, 4, 5)),
    (lambda m: m.InstanceNorm2d(3, affine=True), (2, 3, 4, 5)),
    (lambda m: m.InstanceNorm1d(3, affine=True), (2, 3, 7)),
], ids=["ln", "ln2d", "ln-noaffine", "ln-nobias", "rms", "rms2d", "gn", "gn4d", "gn1",
        "in2d", "in2d-affine", "in1d-affine"])
def test_norm_modules_match_torch(make, shape, dtype, rng):
    torch = torch_or_skip()
    _both(make(nn).to(dtype), make(torch.nn),
          rng.standard_normal(shape) * 2 + 0.5, dtype, rng)


def test_batchnorm1d_on_ncl_matches_torch(rng):
    torch = torch_or_skip()
    ours, theirs = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    _both(ours, theirs, rng.standard_normal((4, 3, 7)), ddl.float32, rng)
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("make, shape", [(lambda m: m.BatchNorm1d(3), (4, 3, 7)),
                                         (lambda m: m.BatchNorm1d(3, affine=False), (6, 3)),
                                         (lambda m: m.BatchNorm2d(2), (3, 2, 4, 5))],
                         ids=["bn1d-ncl", "bn1d-nc", "bn2d"])
def test_batchnorm_both_dtypes_train_then_eval_match_torch(make, shape, dtype, rng):
    torch = torch_or_skip()
    ours, theirs = make(nn).to(dtype), make(torch.nn)
    _both(ours, theirs, rng.standard_normal(shape) * 2 + 1, dtype, rng)
    _both(ours, theirs, rng.standard_normal(shape), dtype, rng)  # a second step of the stats
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(),
                               **tol(dtype))
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(),
                               **tol(dtype))
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape).astype(dtype.numpy)
    np.testing.assert_allclose(ours(ddl.tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), **tol(dtype))


@pytest.mark.parametrize("name", ["layer", "rms", "group", "instance"])
def test_norm_gradcheck_float64(name, rng):
    x = ddl.tensor(rng.standard_normal((3, 4, 5))).requires_grad_()
    w = ddl.tensor(rng.standard_normal(5)).requires_grad_()
    b = ddl.tensor(rng.standard_normal(5)).requires_grad_()
    wc = ddl.tensor(rng.standard_normal(4)).requires_grad_()
    bc = ddl.tensor(rng.standard_normal(4)).requires_grad_()
    fns = {
        "layer": (lambda: F.layer_norm(x, (5,), w, b), [x, w, b]),
        "rms": (lambda: F.rms_norm(x, (5,), w, eps=1e-6), [x, w]),
        "group": (lambda: F.group_norm(x, 2, wc, bc), [x, wc, bc]),
        "instance": (lambda: F.instance_norm(x, weight=wc, bias=bc), [x, wc, bc]),
    }
    fn, wrt = fns[name]
    assert gradcheck(fn, wrt, eps=1e-6, rtol=1e-6, atol=1e-9) > 0


def test_backward_twice_doubles_the_gradient(rng):
    x = ddl.tensor(rng.standard_normal((3, 5)).astype(np.float32)).requires_grad_()
    ln = nn.LayerNorm(5)
    R = ddl.tensor(rng.standard_normal((3, 5)).astype(np.float32))
    (ln(x) * R).sum().backward()
    g1 = x.grad.numpy().copy()
    (ln(x) * R).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1, rtol=1e-6)


def test_norm_errors(rng):
    x = ddl.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(x, (5,))
    with pytest.raises(TypeError, match="weight is float64 but the input is float32"):
        F.layer_norm(x, (4,), ddl.ones(4, dtype=ddl.float64))
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="groups"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match="track_running_stats"):
        nn.InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.layer_norm(ddl.tensor(np.ones((2, 2), dtype=np.int64)), (2,))
