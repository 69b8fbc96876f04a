"""bf16 autocast (ddl.autocast / ddl.amp): the context manager's protocol and errors; Linear,
conv2d and LSTM products in bf16 on AMX (where the CPU has it) within bf16 tolerance of
float32, forward and backward (backward runs in the mode its forward ran in); without AMX
(DDL_NO_AMX=1 stands in) float32 results and a single warning."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ddl
import ddl.nn.functional as F
from ddl import nn

AMX = ddl.amp.is_autocast_available()
needs_amx = pytest.mark.skipif(not AMX, reason="this CPU or kernel has no AMX-BF16")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def t32(a):
    return ddl.tensor(np.asarray(a, dtype=np.float32))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_protocol_and_errors():
    assert not ddl.amp.is_autocast_enabled()
    with ddl.autocast("cpu", dtype=ddl.bfloat16) as ac:
        assert ddl.amp.is_autocast_enabled()
        with ddl.autocast("cpu", enabled=False):
            assert not ddl.amp.is_autocast_enabled()
        assert ddl.amp.is_autocast_enabled()
        assert ac.fast_dtype is ddl.bfloat16
    assert not ddl.amp.is_autocast_enabled()

    @ddl.autocast("cpu")
    def f():
        return ddl.amp.is_autocast_enabled()

    assert f() and not ddl.amp.is_autocast_enabled()
    with pytest.raises(ValueError, match="CPU only"):
        ddl.autocast("cuda")
    with pytest.raises(ValueError, match="only bfloat16"):
        ddl.autocast("cpu", dtype=ddl.float32)
    with pytest.raises(RuntimeError), ddl.autocast("cpu"):
        raise RuntimeError("inside")
    assert not ddl.amp.is_autocast_enabled()  # restored on an exception too


def linear_case(rng, autocast):
    x = ddl.tensor(rng.standard_normal((256, 512)).astype(np.float32), requires_grad=True)
    w = ddl.tensor((rng.standard_normal((384, 512)) * 0.05).astype(np.float32),
                   requires_grad=True)
    b = ddl.tensor(rng.standard_normal(384).astype(np.float32), requires_grad=True)
    with ddl.autocast("cpu", enabled=autocast):
        y = F.linear(x, w, b)
    assert y.dtype is ddl.float32
    R = t32(np.random.RandomState(2).standard_normal(tuple(y.shape)))
    (y * R).sum().backward()  # outside the block: backward follows the forward's mode
    return [t.numpy().copy() for t in (y, x.grad, w.grad, b.grad)]


@needs_amx
def test_linear_bf16_forward_and_backward():
    f32 = linear_case(np.random.default_rng(0), False)
    b16 = linear_case(np.random.default_rng(0), True)
    for name, a, b in zip(("y", "dx", "dw", "db"), b16, f32):
        assert rel(a, b) < 1e-2, name  # bf16: 8 mantissa bits, sums in float32
    for a, b in zip(b16[:3], f32[:3]):  # the products really ran in bf16
        assert not np.array_equal(a, b)
    np.testing.assert_allclose(b16[3], f32[3], rtol=1e-5)  # the bias sum is not a product


@needs_amx
def test_conv_and_lstm_bf16():
    rng = np.random.default_rng(1)
    conv = nn.Conv2d(32, 64, 3, padding=1)
    lstm = nn.LSTM(64, 256)
    x = t32(rng.standard_normal((16, 32, 16, 16)))
    s = t32(rng.standard_normal((12, 32, 64)))
    outs = []
    for on in (False, True):
        conv.zero_grad()
        lstm.zero_grad()
        with ddl.autocast("cpu", enabled=on):
            y = conv(x)
            h, _ = lstm(s)
        (y.sum() + (h * h).sum()).backward()
        outs.append([y.numpy(), h.numpy(), conv.weight.grad.numpy().copy(),
                     lstm.weight_ih_l0.grad.numpy().copy()])
    for a, b in zip(outs[1], outs[0]):
        assert rel(a, b) < 2e-2
    assert not np.array_equal(outs[1][0], outs[0][0])


def test_small_products_stay_float32(rng):
    x, w = t32(rng.standard_normal((8, 16))), t32(rng.standard_normal((4, 16)))
    y32 = F.linear(x, w).numpy()
    with ddl.autocast("cpu"):
        y = F.linear(x, w).numpy()
    np.testing.assert_array_equal(y, y32)


def test_without_amx_float32_and_one_warning():
    code = (
        "import warnings, numpy as np, ddl, ddl.nn.functional as F\n"
        "x = ddl.randn(256, 512); w = ddl.randn(384, 512)\n"
        "y32 = F.linear(x, w).numpy()\n"
        "with warnings.catch_warnings(record=True) as rec:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        with ddl.autocast('cpu', dtype=ddl.bfloat16):\n"
        "            y = F.linear(x, w).numpy()\n"
        "print(len(rec), 'AMX-BF16' in str(rec[0].message), np.array_equal(y, y32))\n"
    )
    env = dict(os.environ, DDL_NO_BF16="1", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True", "True"]


def test_warning_is_a_warning_not_an_error_here():
    if AMX:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ddl.autocast("cpu"):
                pass  # no warning where AMX runs
