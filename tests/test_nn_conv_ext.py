"""Conv1d, grouped / depthwise Conv2d, ConvTranspose2d, pooling with ceil_mode and
count_include_pad=False, AdaptiveMaxPool2d and Upsample/interpolate: forward and gradients
against PyTorch from the same weights (float32, 1e-5), and finite differences."""
import warnings

import numpy as np
import pytest
from _gradcheck import gradcheck

import ddl
from ddl import nn
from ddl.nn import functional as F


def _torch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("torch")


TOL = {"rtol": 1e-5, "atol": 1e-5}


def _both(ours, theirs, x_np, rng):
    torch = _torch()
    sd = {k: ddl.tensor(v.detach().numpy().copy()) for k, v in theirs.state_dict().items()}
    assert set(sd) == set(ours.state_dict())
    ours.load_state_dict(sd)
    x = ddl.tensor(x_np.astype(np.float32)).requires_grad_()
    tx = torch.tensor(x_np.astype(np.float32), requires_grad=True)
    y, ty = ours(x), theirs(tx)
    assert tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **TOL)
    R = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (y * ddl.tensor(R)).sum().backward()
    (ty * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **TOL)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), **TOL, err_msg=name)


CASES = [
    ("Conv1d", (4, 6, 3), {"padding": 1}, (2, 4, 11)),
    ("Conv1d", (4, 6, 3), {"stride": 2, "dilation": 2, "groups": 2}, (2, 4, 13)),
    ("Conv2d", (4, 6, 3), {"groups": 2, "padding": 1}, (2, 4, 7, 6)),
    ("Conv2d", (6, 6, 3), {"groups": 6, "stride": 2}, (2, 6, 9, 8)),  # depthwise
    ("Conv2d", (4, 8, 3), {"groups": 4, "dilation": 2, "bias": False}, (1, 4, 9, 9)),
    ("ConvTranspose2d", (4, 3, 3), {}, (2, 4, 5, 6)),
    ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1},
     (2, 4, 5, 4)),
    ("ConvTranspose2d", (4, 6, (3, 2)), {"stride": (2, 3), "groups": 2, "dilation": 2},
     (1, 4, 4, 5)),
    ("ConvTranspose2d", (3, 2, 3), {"padding": 3}, (1, 3, 8, 8)),  # padding beyond the kernel
    ("MaxPool2d", (3,), {"stride": 2, "ceil_mode": True}, (2, 3, 8, 7)),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 6, 9)),
    ("AvgPool2d", (3,), {"stride": 2, "ceil_mode": True}, (2, 3, 8, 7)),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False}, (2, 3, 7, 6)),
    ("AvgPool2d", (2,), {"padding": 1, "ceil_mode": True, "count_include_pad": False},
     (1, 2, 5, 5)),
    ("AvgPool2d", (2,), {"divisor_override": 3}, (1, 2, 4, 4)),
    ("AdaptiveMaxPool2d", ((3, 2),), {}, (2, 3, 7, 5)),
    ("AdaptiveMaxPool2d", (1,), {}, (2, 3, 4, 4)),
    ("Upsample", (), {"scale_factor": 2, "mode": "nearest"}, (2, 3, 4, 5)),
    ("Upsample", (), {"size": (7, 9), "mode": "nearest"}, (2, 3, 4, 5)),
    ("Upsample", (), {"scale_factor": 2, "mode": "bilinear"}, (2, 3, 4, 5)),
    ("Upsample", (), {"size": (7, 3), "mode": "bilinear", "align_corners": True}, (1, 2, 4, 5)),
    ("Upsample", (), {"scale_factor": 1.5, "mode": "bilinear"}, (1, 2, 4, 6)),
]


@pytest.mark.parametrize("name, args, kw, shape", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch(name, args, kw, shape, rng):
    torch = _torch()
    x = rng.standard_normal(shape)
    x.reshape(-1)[:] += np.arange(x.size) * 1e-3  # distinct values: no ties in max pooling
    torch.manual_seed(0)  # the same weights whatever ran before
    _both(getattr(nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw), x, rng)


def test_gradcheck_conv_transpose_and_interpolate(rng):
    x = ddl.tensor(rng.standard_normal((1, 2, 4, 3)).astype(np.float32)).requires_grad_()
    w = ddl.tensor(rng.standard_normal((2, 3, 3, 3)).astype(np.float32)).requires_grad_()
    assert gradcheck(lambda: F.conv_transpose2d(x, w, stride=2, padding=1), [x, w]) > 0
    x64 = ddl.tensor(rng.standard_normal((1, 2, 4, 3))).requires_grad_()
    assert gradcheck(lambda: F.interpolate(x64, scale_factor=2, mode="bilinear"), [x64],
                     eps=1e-6, rtol=1e-6, atol=1e-9) > 0


def test_errors(rng):
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    x = ddl.tensor(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="groups"):
        F.conv2d(x, ddl.zeros(6, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="exactly one"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, ddl.zeros(4, 2, 3, 3), stride=1, output_padding=1)
