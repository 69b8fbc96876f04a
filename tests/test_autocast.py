"""bf16 autocast (ddl.autocast / ddl.amp): the context manager's protocol and errors; Linear,
conv2d and LSTM products in bf16 on whichever path the CPU has (AMX tiles, else AVX512-BF16):
forward and backward (backward runs in the mode its forward ran in) against a float64
reference of the bf16-rounded operands, with tails in every dimension, every transpose the
layers use, and one or two threads; without either path (DDL_NO_BF16=1 stands in) float32
results and a single warning; DDL_NO_AMX=1 selects the AVX512-BF16 path."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ddl
import ddl.nn.functional as F
from ddl import nn

BF16 = ddl.amp.is_autocast_available()
needs_bf16 = pytest.mark.skipif(
    not BF16, reason="this CPU (or its OS) has neither AMX-BF16 nor AVX512-BF16: autocast "
                     "computes in float32 here (test_without_bf16_float32_and_one_warning)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def t32(a):
    return ddl.tensor(np.asarray(a, dtype=np.float32))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def bf16(a):
    """float32 -> bf16 (round to nearest even) -> float64, as the kernels round."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def close_to(got, ref, k):
    """got within float32 accumulation error of the float64 reference (a sum of k products):
    far tighter than bf16's rounding of the operands (2^-9 relative)."""
    scale = np.abs(ref).max() + 1e-30
    err = np.abs(got - ref).max() / scale
    assert err < 5e-7 * np.sqrt(k), (err, k)


def test_protocol_and_errors():
    with warnings.catch_warnings():
        # without a bf16 path, the first autocast of the process warns once (tested below in
        # a subprocess): which test comes first must not matter here
        warnings.simplefilter("ignore", UserWarning)
        _protocol_and_errors()


def _protocol_and_errors():
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


@needs_bf16
def test_linear_bf16_forward_and_backward():
    f32 = linear_case(np.random.default_rng(0), False)
    b16 = linear_case(np.random.default_rng(0), True)
    for name, a, b in zip(("y", "dx", "dw", "db"), b16, f32):
        assert rel(a, b) < 1e-2, name  # bf16: 8 mantissa bits, sums in float32
    for a, b in zip(b16[:3], f32[:3]):  # the products really ran in bf16
        assert not np.array_equal(a, b)
    np.testing.assert_allclose(b16[3], f32[3], rtol=1e-5)  # the bias sum is not a product


# (batch, in, out, threads): tails in every dim, K past one cache block, N past one 1024-column
# block, one panel of B (rows split over threads); each product large enough for the bf16 path
# on AMX and on AVX512-BF16 (gemm_bf16.c's bf16_pays)
LINEAR_SHAPES = [
    (131, 301, 197, 1),
    (64, 600, 1100, 2),
    (2048, 256, 64, 2),
    (96, 513, 320, 2),
]


@needs_bf16
@pytest.mark.parametrize("M,K,N,threads", LINEAR_SHAPES)
def test_linear_products_match_the_bf16_reference(M, K, N, threads):
    """y = x w^T (B transposed), dx = dy w (neither), dw = dy^T x (A transposed), each within
    float32 accumulation error of the exact product of the bf16-rounded operands."""
    rng = np.random.default_rng(M + K + N)
    xa = rng.standard_normal((M, K)).astype(np.float32)
    wa = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
    ba = rng.standard_normal(N).astype(np.float32)
    ra = rng.standard_normal((M, N)).astype(np.float32)
    old = ddl.get_num_threads()
    ddl.set_num_threads(threads)
    try:
        x, w, b = (ddl.tensor(a, requires_grad=True) for a in (xa, wa, ba))
        with ddl.autocast("cpu", dtype=ddl.bfloat16):
            y = F.linear(x, w, b)
        (y * t32(ra)).sum().backward()
        got = [t.numpy().astype(np.float64) for t in (y, x.grad, w.grad, b.grad)]
    finally:
        ddl.set_num_threads(old)
    X, W, R = bf16(xa), bf16(wa), bf16(ra)
    close_to(got[0], X @ W.T + ba, K)
    close_to(got[1], R @ W, N)
    close_to(got[2], R.T @ X, M)
    np.testing.assert_allclose(got[3], ra.astype(np.float64).sum(0), rtol=1e-4, atol=1e-4)
    # and the products really were rounded: float32 operands give a visibly different result
    exact = xa.astype(np.float64) @ wa.T.astype(np.float64) + ba
    assert 1e-4 < rel(got[0], exact) < 1e-2


@needs_bf16
def test_non_finite_values_propagate_as_in_float32():
    rng = np.random.default_rng(3)
    xa = rng.standard_normal((128, 256)).astype(np.float32)
    wa = rng.standard_normal((192, 256)).astype(np.float32)
    xa[5, 7], xa[70, 3], wa[11, 200] = np.inf, np.nan, -np.inf
    y32 = F.linear(t32(xa), t32(wa)).numpy()
    with ddl.autocast("cpu"):
        y = F.linear(t32(xa), t32(wa)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y32))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y32))
    assert np.isfinite(y).sum() == np.isfinite(y32).sum() > 0.9 * y.size


def conv_reference(x, w, r, pad):
    """float64 conv2d (stride 1) forward, dweight and dinput for dy = r."""
    h, wd = x.shape[2:]
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # n c oh ow kh kw
    y = np.einsum("ncijab,ocab->noij", win, w)
    dw = np.einsum("noij,ncijab->ocab", r, win)
    dxp = np.zeros_like(xp)
    oh, ow = y.shape[2:]
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a:a + oh, b:b + ow] += np.einsum("noij,oc->ncij", r, w[:, :, a, b])
    return y, dw, dxp[:, :, pad:pad + h, pad:pad + wd]


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_products_match_the_bf16_reference(threads):
    rng = np.random.default_rng(threads)
    xa = rng.standard_normal((3, 24, 13, 11)).astype(np.float32)
    wa = (rng.standard_normal((96, 24, 5, 5)) * 0.05).astype(np.float32)
    ra = rng.standard_normal((3, 96, 13, 11)).astype(np.float32)
    old = ddl.get_num_threads()
    ddl.set_num_threads(threads)
    try:
        x, w = ddl.tensor(xa, requires_grad=True), ddl.tensor(wa, requires_grad=True)
        with ddl.autocast("cpu"):
            y = F.conv2d(x, w, padding=2)
        (y * t32(ra)).sum().backward()
        got = [t.numpy().astype(np.float64) for t in (y, w.grad, x.grad)]
    finally:
        ddl.set_num_threads(old)
    ref = conv_reference(bf16(xa), bf16(wa), bf16(ra), 2)
    for g, r, k in zip(got, ref, (24 * 25, 3 * 13 * 11, 96 * 25)):
        close_to(g, r, k)


@needs_bf16
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


def test_without_bf16_float32_and_one_warning():
    code = (
        "import warnings, numpy as np, ddl, ddl.nn.functional as F\n"
        "x = ddl.randn(256, 512); w = ddl.randn(384, 512)\n"
        "y32 = F.linear(x, w).numpy()\n"
        "with warnings.catch_warnings(record=True) as rec:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        with ddl.autocast('cpu', dtype=ddl.bfloat16):\n"
        "            y = F.linear(x, w).numpy()\n"
        "print(len(rec), 'AVX512-BF16' in str(rec[0].message), np.array_equal(y, y32),\n"
        "      ddl.amp.is_autocast_available())\n"
    )
    env = dict(os.environ, DDL_NO_BF16="1", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True", "True", "False"]


def test_without_amx_the_avx512_path_runs():
    """DDL_NO_AMX=1 hides AMX only: autocast is available iff the CPU has AVX512-BF16, and
    then its products match the bf16 reference (on an AMX machine: the AVX512-BF16 kernel)."""
    code = (
        "import sys, numpy as np, ddl, ddl.nn.functional as F\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((100, 300)).astype(np.float32)\n"
        "w = rng.standard_normal((200, 300)).astype(np.float32)\n"
        "with ddl.autocast('cpu'):\n"
        "    y = F.linear(ddl.tensor(x), ddl.tensor(w)).numpy()\n"
        "if ddl.amp.is_autocast_available():\n"
        "    sys.stdout.buffer.write(y.astype('<f4').tobytes())\n"
        "else:\n"
        "    print('none')\n"
    )
    env = dict(os.environ, DDL_NO_AMX="1", PYTHONPATH=ROOT)
    env.pop("DDL_NO_BF16", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    if "avx512_bf16" not in cpu_flags():
        assert done.stdout.strip() == b"none"
        return
    y = np.frombuffer(done.stdout, dtype="<f4").reshape(100, 200)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 300)).astype(np.float32)
    w = rng.standard_normal((200, 300)).astype(np.float32)
    close_to(y.astype(np.float64), bf16(x) @ bf16(w).T, 300)


def test_warning_is_a_warning_not_an_error_here():
    if BF16:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ddl.autocast("cpu"):
                pass  # no warning where a bf16 path runs
