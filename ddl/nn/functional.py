"""ddl.nn.functional: the layer ops, differentiable, with PyTorch's names and arguments.

The kernels (csrc/nn_*.c) run in float32 with the GIL released; these wrappers only normalize
arguments (ints or pairs, reductions, dims) and call one C function each.
"""
from .. import _C
from .. import _functions as T
from . import _conv_ext as _X
from . import _losses as _L

_REDUCTIONS = {"none": _C.REDUCTION_NONE, "mean": _C.REDUCTION_MEAN, "sum": _C.REDUCTION_SUM}


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _reduction(reduction):
    try:
        return _REDUCTIONS[reduction]
    except KeyError:
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}") from None


# ---- linear and convolution -------------------------------------------------------------------


def _f64(*ts):
    """True when any of ts is a float64 tensor: the op then runs as a composition of ddl's
    differentiable core ops (which have float64 kernels) instead of the float32 layer kernel."""
    return any(t is not None and t.dtype.name == "float64" for t in ts)


def _same_dtype(who, **ts):
    """TypeError unless the given tensors (None skipped) share one dtype (as PyTorch)."""
    named = [(k, t.dtype.name) for k, t in ts.items() if t is not None]
    if len({d for _, d in named}) > 1:
        raise TypeError(f"{who}: expected {', '.join(k for k, _ in named)} of one dtype, got "
                        + ", ".join(f"{k} {d}" for k, d in named)
                        + " (float32 and float64 do not mix)")


def linear(input, weight, bias=None):
    """input (..., in) @ weight.T (out, in) + bias (out,)."""
    if _f64(input, weight, bias):
        _same_dtype("linear", input=input, weight=weight, bias=bias)
        out = input @ weight.transpose(0, 1) if weight.ndim == 2 else input @ weight
        return out if bias is None else out + bias
    return _C.linear(input, weight, bias)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of input (N, C, H, W) with weight (O, C / groups, KH, KW); groups > 1
    (depthwise included) runs one convolution per group on its channel slice."""
    if input.ndim == 3:  # unbatched (C, H, W), as PyTorch accepts
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                      groups).squeeze(0)
    if groups != 1:
        return _X.grouped_conv2d(conv2d, input, weight, bias, stride, padding, dilation,
                                 int(groups))
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            kh, kw = weight.shape[2], weight.shape[3]
            dh, dw = _pair(dilation, "dilation")
            if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2 or _pair(stride, "stride") != (1, 1):
                raise ValueError("conv2d: padding='same' needs stride 1 and odd effective kernels")
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if sh < 1 or sw < 1 or dh < 1 or dw < 1:
        raise ValueError("conv2d: stride and dilation must be positive")
    return _C.conv2d(input, weight, bias, sh, sw, ph, pw, dh, dw)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of (N, C, L) with weight (O, C / groups, K): conv2d over (N, C, 1, L)."""
    return _X.conv1d(conv2d, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed convolution of (N, C, H, W) with weight (C, O / groups, KH, KW)."""
    return _X.conv_transpose2d(conv2d, input, weight, bias, stride, padding, output_padding,
                               groups, dilation)


# ---- pooling ------------------------------------------------------------------------------------


def _pool(kind, input, kernel_size, stride, padding, ceil_mode, name, count_include_pad=True,
          divisor_override=None):
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    ph, pw = _pair(padding, "padding")
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    if kind == _C.POOL_MAX and ceil_mode:
        if ph > kh // 2 or pw > kw // 2:
            raise ValueError(f"{name}: pad should be at most half of effective kernel size")
        out = _X.max_pool2d_ceil(_C.pool2d, x, (kh, kw), (sh, sw), (ph, pw))
    elif kind == _C.POOL_AVG and (ceil_mode or not count_include_pad or divisor_override):
        out = _X.avg_pool2d_general(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode,
                                    count_include_pad, divisor_override)
    else:
        out = _C.pool2d(kind, x, kh, kw, sh, sw, ph, pw)
    return out.squeeze(0) if unbatched else out


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    if dilation not in (1, (1, 1)):
        raise ValueError("max_pool2d: only dilation=1 is supported")
    if return_indices:
        raise ValueError("max_pool2d: return_indices=True is not supported")
    return _pool(_C.POOL_MAX, input, kernel_size, stride, padding, ceil_mode, "max_pool2d")


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _pool(_C.POOL_AVG, input, kernel_size, stride, padding, ceil_mode, "avg_pool2d",
                 count_include_pad, divisor_override)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max over PyTorch's adaptive windows (one max per output cell)."""
    if return_indices:
        raise ValueError("adaptive_max_pool2d: return_indices=True is not supported")
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    return _X.adaptive_max_pool2d(input, tuple(size))


interpolate = _X.interpolate


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    return _X.interpolate(input, size, scale_factor, mode, align_corners)


def adaptive_avg_pool2d(input, output_size):
    oh, ow = _pair(output_size, "output_size")
    if input.ndim == 3:
        return _C.pool2d(_C.POOL_ADAPTIVE_AVG, input.unsqueeze(0), oh, ow, 0, 0, 0, 0).squeeze(0)
    return _C.pool2d(_C.POOL_ADAPTIVE_AVG, input, oh, ow, 0, 0, 0, 0)


# ---- normalization, dropout, embedding ---------------------------------------------------------


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch norm over dim 1 of (N, C, ...). In training, batch statistics are used and the
    running ones (when given) are updated in place: (1 - momentum) * old + momentum * new,
    with the unbiased variance, as PyTorch."""
    if _f64(input, weight, bias):
        _same_dtype("batch_norm", input=input, running_mean=running_mean,
                    running_var=running_var, weight=weight, bias=bias)
        return _batch_norm_f64(input, running_mean, running_var, weight, bias, training,
                               float(momentum), float(eps))
    return _C.batch_norm(input, running_mean, running_var, weight, bias, bool(training),
                         float(momentum), float(eps))


def _batch_norm_f64(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """batch_norm from the core ops (float64): the same statistics and running updates."""
    from ..autograd import no_grad

    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of at least 2 dims, got shape "
                         f"{tuple(x.shape)}")
    C = x.shape[1]
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, C) + (1,) * (x.ndim - 2)
    if training:
        n = x.numel() // C if C else 0
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {tuple(x.shape)}")
        mean = x.mean(dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dims, keepdim=True)
        with no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum)
                running_mean.add_(mean.detach().reshape(C) * momentum)
            if running_var is not None:
                running_var.mul_(1 - momentum)
                running_var.add_(var.detach().reshape(C) * (momentum * n / (n - 1)))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed in eval mode")
        mean, var = running_mean.reshape(*shape), running_var.reshape(*shape)
    out = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        out = out * weight.reshape(*shape)
    if bias is not None:
        out = out + bias.reshape(*shape)
    return out


_ROW_NORM_LAYER, _ROW_NORM_RMS = 0, 1  # ddl_row_norm_kind (nn_layer_norm.h)


def _normalized_numel(input, normalized_shape, name):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or tuple(input.shape[input.ndim - k:]) != shape or input.ndim < k:
        raise ValueError(f"{name}: normalized_shape {list(shape)} does not match the last dims "
                         f"of an input of shape {tuple(input.shape)}")
    n = 1
    for d in shape:
        n *= int(d)
    return n


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing normalized_shape dims (biased variance), then weight and
    bias of that shape. One C kernel, float32 or float64."""
    n = _normalized_numel(input, normalized_shape, "layer_norm")
    return _C.layer_norm(input, weight, bias, n, float(eps), _ROW_NORM_LAYER)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2) + eps) over the trailing dims, times weight; eps None: the dtype's
    machine epsilon (as PyTorch)."""
    n = _normalized_numel(input, normalized_shape, "rms_norm")
    if eps is None:
        import numpy as np

        eps = float(np.finfo(input.dtype.numpy).eps)
    return _C.layer_norm(input, weight, None, n, float(eps), _ROW_NORM_RMS)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each of num_groups channel groups of (N, C, *) per sample, then a per-channel
    affine weight (C,) and bias (C,)."""
    if input.ndim < 2:
        raise ValueError(f"group_norm: expected an input of at least 2 dims, got shape "
                         f"{tuple(input.shape)}")
    N, C = input.shape[0], input.shape[1]
    if num_groups <= 0 or C % num_groups:
        raise ValueError(f"group_norm: {C} channels do not split into {num_groups} groups")
    numel = input.numel()
    rows = N * num_groups
    out = _C.layer_norm(input.contiguous(), None, None, numel // rows if rows else 1, float(eps),
                        _ROW_NORM_LAYER) if numel else input
    if weight is None and bias is None:
        return out
    bshape = (1, C) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(*bshape)
    if bias is not None:
        out = out + bias.reshape(*bshape)
    return out


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalize each (sample, channel) plane of (N, C, *) on its own, then a per-channel
    affine; running statistics are not supported (track_running_stats=False, the default)."""
    if running_mean is not None or running_var is not None or not use_input_stats:
        raise ValueError("instance_norm: running statistics (track_running_stats=True) are not "
                         "supported")
    return group_norm(input, input.shape[1], weight, bias, eps)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability p (seeded by ddl.manual_seed), scale by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if _f64(input):  # float64: a mask from ddl's seeded generator, through the core ops
        from .._functions import rand

        keep = rand(*input.shape, dtype=input.dtype) >= p
        return input * keep.to(input.dtype) * (1.0 / (1.0 - p)) if p < 1.0 else input * 0.0
    return _C.dropout(input, float(p))


def embedding(input, weight, padding_idx=None):
    """Rows of weight (num_embeddings, dim) picked by int64 indices: (...,) -> (..., dim)."""
    if padding_idx is None:
        padding_idx = -1
    else:
        num = weight.shape[0] if weight.ndim else 0
        if not -num <= padding_idx < num:  # checked here: the kernel only sees it in backward
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {num} "
                             "embeddings")
        if padding_idx < 0:
            padding_idx += num
    if _f64(weight):
        return _C.embedding64(input, weight, int(padding_idx))
    return _C.embedding(input, weight, int(padding_idx))


# ---- activations ----------------------------------------------------------------------------------


def relu(input, inplace=False):
    return input.relu()


def leaky_relu(input, negative_slope=0.01, inplace=False):
    if _f64(input):
        from .._functions import where

        return where(input > 0, input, input * float(negative_slope))
    return _C.activation(_C.ACT_LEAKY_RELU, input, float(negative_slope), _C.GELU_NONE)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if _f64(input):
        return _C.gelu64(input, _C.GELU_TANH if approximate == "tanh" else _C.GELU_NONE)
    return _C.activation(_C.ACT_GELU, input, 0.0,
                         _C.GELU_TANH if approximate == "tanh" else _C.GELU_NONE)


def silu(input, inplace=False):
    """x * sigmoid(x) (also called swish)."""
    return input * input.sigmoid()


def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    return input * softplus(input).tanh()


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x where beta x > threshold (as PyTorch)."""
    from .._functions import where

    bx = input * beta if beta != 1.0 else input
    soft = (((-bx.abs()).exp() + 1).log() + bx.relu())
    soft = soft / beta if beta != 1.0 else soft
    return where(bx > threshold, input, soft)


def tanh(input):
    return input.tanh()


def sigmoid(input):
    return input.sigmoid()


def _over_dim(fn, input, dim):
    """Apply a last-dim op over `dim` by moving that dim last and back (views, no copy)."""
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1  # PyTorch's legacy implicit choice
    nd = input.ndim
    if not -max(nd, 1) <= dim < max(nd, 1):
        raise IndexError(f"dim {dim} is out of range for a tensor of {nd} dims")
    dim = dim + nd if dim < 0 else dim
    if nd == 0:
        return fn(input.reshape(1)).reshape(())
    if dim == nd - 1:
        return fn(input)
    return fn(input.transpose(dim, -1)).transpose(dim, -1)


def _softmax_f64(x, log):
    """softmax / log_softmax over the last dim from core ops (float64)."""
    m = x.detach().amax(-1, keepdim=True)
    z = x - m
    if log:
        return z - z.exp().sum(-1, keepdim=True).log()
    e = z.exp()
    return e / e.sum(-1, keepdim=True)


def softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    if _f64(input):
        return _over_dim(lambda x: _softmax_f64(x, False), input, dim)
    return _over_dim(lambda x: _C.softmax(x, False), input, dim)


def log_softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    if _f64(input):
        return _over_dim(lambda x: _softmax_f64(x, True), input, dim)
    return _over_dim(lambda x: _C.softmax(x, True), input, dim)


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def pad(input, pad, mode="constant", value=0.0):
    """Constant padding; `pad` lists (left, right) pairs starting from the last dim."""
    from .._functions import cat

    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding {pad!r} does not fit a {input.ndim}-d input")
    out = input
    for i in range(len(pad) // 2):
        left, right = int(pad[2 * i]), int(pad[2 * i + 1])
        if left < 0 or right < 0:
            raise ValueError("pad: negative padding is not supported")
        dim = input.ndim - 1 - i
        parts = []
        for width in (left, None, right):
            if width is None:
                parts.append(out)
            elif width:
                shape = list(out.shape)
                shape[dim] = width
                parts.append(_C.full(tuple(shape), float(value), out.dtype.code))
        if len(parts) > 1:
            out = cat(parts, dim)
    return out


# ---- losses ------------------------------------------------------------------------------------------


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross entropy from logits (N, C) or (N, C, d1, ...) and int64 class targets (N, ...),
    or class probabilities of the input's shape; class weights (C,), label smoothing and
    ignore_index as PyTorch. The plain float32 (N, C) case runs one fused C kernel."""
    prob = target.dtype.is_floating_point and tuple(target.shape) == tuple(input.shape)
    if weight is None and input.ndim == 2 and target.ndim == 1 and not _f64(input) and not prob:
        return _C.class_loss(_C.CLASS_LOSS_CROSS_ENTROPY, input, target, _reduction(reduction),
                             int(ignore_index), float(label_smoothing))
    return _L.cross_entropy_composed(input, target, weight, int(ignore_index), reduction,
                                     float(label_smoothing))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood from log-probabilities (N, C) or (N, C, d1, ...) and int64
    targets; class weights (C,): mean divides by the sum of the targets' weights."""
    if weight is None and input.ndim == 2 and target.ndim == 1 and not _f64(input):
        return _C.class_loss(_C.CLASS_LOSS_NLL, input, target, _reduction(reduction),
                             int(ignore_index), 0.0)
    return _L.nll_loss_composed(input, target, weight, int(ignore_index), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    if weight is None and not _f64(input, target, pos_weight):
        return _C.pair_loss(_C.PAIR_LOSS_BCE_WITH_LOGITS, input, target, pos_weight,
                            _reduction(reduction))
    if weight is not None and not _f64(input, target, pos_weight, weight):
        # the fused kernel's per-element losses, weighted, then reduced
        losses = _C.pair_loss(_C.PAIR_LOSS_BCE_WITH_LOGITS, input, target, pos_weight,
                              _C.REDUCTION_NONE) * weight
        return _L._reduce(losses, reduction, "binary_cross_entropy_with_logits")
    return _L.bce_with_logits_composed(input, target, weight, pos_weight, reduction)


binary_cross_entropy = _L.binary_cross_entropy
smooth_l1_loss = _L.smooth_l1_loss
huber_loss = _L.huber_loss
kl_div = _L.kl_div
margin_ranking_loss = _L.margin_ranking_loss
cosine_embedding_loss = _L.cosine_embedding_loss


def mse_loss(input, target, reduction="mean"):
    if _f64(input, target):
        _L._check_same_shape(input, target, "mse_loss")
        return _L._reduce((input - target) ** 2, reduction, "mse_loss")
    return _C.pair_loss(_C.PAIR_LOSS_MSE, input, target, None, _reduction(reduction))


def l1_loss(input, target, reduction="mean"):
    if _f64(input, target):
        _L._check_same_shape(input, target, "l1_loss")
        return _L._reduce((input - target).abs(), reduction, "l1_loss")
    return _C.pair_loss(_C.PAIR_LOSS_L1, input, target, None, _reduction(reduction))


# ---- recurrent cells (one time step over the batch) ---------------------------------------------


def _cell(kind, input, hx, cx, w_ih, w_hh, b_ih, b_hh, nl):
    """One C cell step (float32), or its core-op composition when any tensor is float64."""
    if _f64(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
        from . import _rnn_f64

        out = _rnn_f64.cell(kind, input, hx, cx, w_ih, w_hh, b_ih, b_hh, nl)
        return T.cat(list(out), 1) if kind == _C.CELL_LSTM else out
    return _C.rnn_cell(kind, input, hx, cx, w_ih, w_hh, b_ih, b_hh, nl)


def rnn_tanh_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell(_C.CELL_RNN, input, hx, None, w_ih, w_hh, b_ih, b_hh, _C.RNN_TANH)


def rnn_relu_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell(_C.CELL_RNN, input, hx, None, w_ih, w_hh, b_ih, b_hh, _C.RNN_RELU)


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step (PyTorch's gate order i, f, g, o); returns (h', c')."""
    hc = _cell(_C.CELL_LSTM, input, hx, cx, w_ih, w_hh, b_ih, b_hh, _C.RNN_TANH)
    h = hx.shape[1]
    return hc[:, :h], hc[:, h:]


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    return _cell(_C.CELL_GRU, input, hx, None, w_ih, w_hh, b_ih, b_hh, _C.RNN_TANH)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(query key^T scale + mask) value in one fused C kernel (see ddl.nn.attention)."""
    from .attention import scaled_dot_product_attention as sdpa

    return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("math", "Tensor")]
