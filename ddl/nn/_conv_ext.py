"""Convolution and pooling variants built on the conv2d / pool2d kernels (float32 or float64)
and the core ops: Conv1d, grouped (and depthwise) Conv2d, ConvTranspose2d, pooling with ceil_mode,
AdaptiveMaxPool2d, and interpolate (nearest, bilinear) through interpolation matrices.

Each is a composition of differentiable ops, so its gradient comes from autograd:
- grouped conv2d runs conv2d once per group on a channel slice and concatenates;
- conv_transpose2d spreads the input onto a zero grid (a 0/1 matrix product per spatial dim),
  pads, and runs conv2d with the flipped, transposed kernel;
- ceil_mode pads the right/bottom edge (with -inf for max pooling) so the last window fits;
- interpolate multiplies by an (OH, H) matrix on the left and a (W, OW) one on the right.
"""
import math

import numpy as np

from .. import _C
from .. import _functions as T


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _const(a, like):
    return T.tensor(np.ascontiguousarray(a, dtype=like.dtype.numpy))


def grouped_conv2d(conv2d, input, weight, bias, stride, padding, dilation, groups):
    C, O = input.shape[1], weight.shape[0]
    if groups < 1 or C % groups or O % groups:
        raise ValueError(f"conv2d: {C} input and {O} output channels do not split into "
                         f"{groups} groups")
    if weight.shape[1] * groups != C:
        raise ValueError(f"conv2d: weight of shape {tuple(weight.shape)} expects "
                         f"{weight.shape[1] * groups} input channels for groups={groups}, got {C}")
    cg, og = C // groups, O // groups
    outs = []
    for g in range(groups):
        b = None if bias is None else bias[g * og:(g + 1) * og]
        outs.append(conv2d(input[:, g * cg:(g + 1) * cg], weight[g * og:(g + 1) * og], b,
                           stride, padding, dilation))
    return T.cat(outs, 1)


def conv1d(conv2d, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """(N, C, L) with weight (O, C / groups, K): conv2d on (N, C, 1, L)."""
    unbatched = input.ndim == 2
    if unbatched:
        input = input.unsqueeze(0)
    if input.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: expected input (N, C, L) and weight (O, C, K), got "
                         f"{tuple(input.shape)} and {tuple(weight.shape)}")
    one = lambda v: v if isinstance(v, str) else (1, int(v[0] if isinstance(v, (tuple, list))
                                                          else v))
    pad = padding if isinstance(padding, str) else (0, one(padding)[1])
    out = conv2d(input.unsqueeze(2), weight.unsqueeze(2), bias, one(stride), pad,
                 one(dilation), groups).squeeze(2)
    return out.squeeze(0) if unbatched else out


def _spread(x, s, dim_size, axis):
    """Zero-insertion along axis (2: rows, 3: cols): x[..., i, ...] -> position i * s."""
    if s == 1:
        return x
    n = (dim_size - 1) * s + 1
    Z = np.zeros((n, dim_size))
    Z[np.arange(dim_size) * s, np.arange(dim_size)] = 1.0
    Z = _const(Z, x)
    return Z @ x if axis == 2 else x @ Z.transpose(0, 1)


def conv_transpose2d(conv2d, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """The gradient of conv2d with respect to its input, as a layer: input (N, C, H, W),
    weight (C, O / groups, KH, KW) -> (N, O, (H - 1) s - 2 p + d (K - 1) + output_padding + 1)."""
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    oph, opw = _pair(output_padding, "output_padding")
    dh, dw = _pair(dilation, "dilation")
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError("conv_transpose2d: output_padding must be smaller than stride or "
                         "dilation")
    C, H, W = input.shape[1], input.shape[2], input.shape[3]
    if weight.shape[0] != C or C % groups:
        raise ValueError(f"conv_transpose2d: weight of shape {tuple(weight.shape)} for {C} "
                         f"input channels and groups={groups}")
    KH, KW = weight.shape[2], weight.shape[3]
    x = _spread(_spread(input, sh, H, 2), sw, W, 3)
    # flipped kernel, (C, O/g) -> (O, C/g) per group
    cg = C // groups
    flip_h = _const(np.eye(KH)[::-1], weight)
    flip_w = _const(np.eye(KW)[::-1], weight)
    wf = flip_h @ weight @ flip_w  # (C, O/g, KH, KW) flipped in both spatial dims
    parts = [wf[g * cg:(g + 1) * cg].transpose(0, 1) for g in range(groups)]
    wt = T.cat(parts, 0) if groups > 1 else parts[0]
    eh, ew = dh * (KH - 1) - ph, dw * (KW - 1) - pw
    from .functional import pad as fpad

    top, bottom, left, right = eh, eh + oph, ew, ew + opw
    x = fpad(x, (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)))
    if min(top, left, bottom, right) < 0:  # padding beyond the kernel: crop instead
        Hx, Wx = x.shape[2], x.shape[3]
        x = x[:, :, max(-top, 0):Hx - max(-bottom, 0), max(-left, 0):Wx - max(-right, 0)]
    from .functional import conv2d as c2d

    out = c2d(x, wt, bias, 1, 0, (dh, dw), groups)
    return out.squeeze(0) if unbatched else out


def _ceil_extra(n, k, s, p, d=1):
    """The extra right padding ceil_mode needs along one dim (PyTorch's output size rule)."""
    eff = d * (k - 1) + 1
    out = math.ceil((n + 2 * p - eff) / s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return max((out - 1) * s + eff - (n + 2 * p), 0)


def max_pool2d_ceil(pool, input, k, s, p):
    """max pooling with ceil_mode: -inf padding (explicit) on all sides plus the extra."""
    from .functional import pad as fpad

    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    eh = _ceil_extra(input.shape[-2], kh, sh, ph)
    ew = _ceil_extra(input.shape[-1], kw, sw, pw)
    x = fpad(input, (pw, pw + ew, ph, ph + eh), value=float("-inf"))
    return pool(_C.POOL_MAX, x, kh, kw, sh, sw, 0, 0)


def avg_pool2d_general(input, k, s, p, ceil_mode, count_include_pad, divisor_override=None):
    """avg pooling with ceil_mode and/or count_include_pad=False: the sum of each window over a
    zero-padded input (an avg pool times the window size) divided by PyTorch's divisor (the
    window clipped to the padded input, or to the input itself without count_include_pad)."""
    from .functional import pad as fpad

    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    H, W = input.shape[-2], input.shape[-1]
    eh = _ceil_extra(H, kh, sh, ph) if ceil_mode else 0
    ew = _ceil_extra(W, kw, sw, pw) if ceil_mode else 0
    x = fpad(input, (pw, pw + ew, ph, ph + eh))
    sums = _C.pool2d(_C.POOL_AVG, x, kh, kw, sh, sw, 0, 0) * float(kh * kw)
    OH, OW = sums.shape[-2], sums.shape[-1]

    def counts(n, k_, s_, p_, o):
        c = np.empty(o)
        for i in range(o):
            start = i * s_ - p_
            end = min(start + k_, n + p_)
            lo, hi = (max(start, 0), min(end, n)) if not count_include_pad else (start, end)
            c[i] = hi - lo
        return c

    if divisor_override:
        return sums * (1.0 / divisor_override)
    div = np.outer(counts(H, kh, sh, ph, OH), counts(W, kw, sw, pw, OW))
    return sums * _const(1.0 / div, sums)


def adaptive_max_pool2d(input, output_size):
    """The max over PyTorch's adaptive windows: start floor(i H / OH), end ceil((i + 1) H / OH)."""
    oh, ow = output_size
    H, W = input.shape[-2], input.shape[-1]
    oh = H if oh is None else oh
    ow = W if ow is None else ow
    rows = []
    for i in range(oh):
        h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
        cols = []
        for j in range(ow):
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            cols.append(input[..., h0:h1, w0:w1].amax((-2, -1), keepdim=True))
        rows.append(T.cat(cols, -1))
    return T.cat(rows, -2)


def _interp_matrix(n_in, n_out, mode, align_corners, scale):
    """(n_out, n_in) matrix of PyTorch's nearest / linear interpolation weights."""
    A = np.zeros((n_out, n_in))
    if mode == "nearest":
        sc = (1.0 / scale) if scale else n_in / n_out
        for i in range(n_out):
            A[i, min(math.floor(i * sc), n_in - 1)] = 1.0
        return A
    for i in range(n_out):
        if align_corners:
            src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            sc = (1.0 / scale) if scale else n_in / n_out
            src = max((i + 0.5) * sc - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        A[i, i0] += 1.0 - lam
        A[i, i1] += lam
    return A


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize (N, C, H, W) to size or by scale_factor: mode 'nearest' or 'bilinear'
    (align_corners as PyTorch); (N, C, L) with 'nearest' or 'linear'."""
    if antialias:
        raise ValueError("interpolate: antialias is not supported")
    if mode not in ("nearest", "bilinear", "linear"):
        raise ValueError(f"interpolate: mode must be 'nearest', 'linear' or 'bilinear', got "
                         f"{mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    spatial = input.ndim - 2
    if spatial not in (1, 2) or (mode == "bilinear" and spatial != 2) or \
            (mode == "linear" and spatial != 1):
        raise ValueError(f"interpolate: mode {mode!r} does not fit an input of shape "
                         f"{tuple(input.shape)}")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    dims = input.shape[2:]
    if size is not None:
        out = [int(size)] * spatial if isinstance(size, int) else [int(v) for v in size]
        scales = [None] * spatial
    else:
        sf = [float(scale_factor)] * spatial if not isinstance(scale_factor, (tuple, list)) \
            else [float(v) for v in scale_factor]
        out = [math.floor(n * f) for n, f in zip(dims, sf)]
        scales = [None if recompute_scale_factor else f for f in sf]
    ac = bool(align_corners)
    x = input
    if spatial == 2:
        Ah = _const(_interp_matrix(dims[0], out[0], mode, ac, scales[0]), x)
        Aw = _const(_interp_matrix(dims[1], out[1], mode, ac, scales[1]).T, x)
        return (Ah @ x) @ Aw
    Al = _const(_interp_matrix(dims[0], out[0], mode, ac, scales[0]).T, x)
    return x @ Al
