"""The losses of ddl.nn.functional that run as compositions of ddl's differentiable ops.

Each is written from PyTorch's own definition (aten/src/ATen/native/Loss*.cpp), term by term,
over differentiable core ops (elementwise, reductions, where, log_softmax), so the gradients
come from autograd and float32 and float64 both work. The plain float32 cross entropy / nll /
BCE-with-logits / MSE / L1 paths keep their fused C kernels (nn_loss.c); these cover the
options and dtypes those kernels do not (class weights, probability targets, float64).
"""
import numpy as np

from .. import _C
from .. import _functions as T
from .._tensor import Tensor

_EPSILON = 1e-12  # PyTorch's cosine_embedding_loss


def _reduce(loss, reduction, name):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _const(values, like):
    """A constant tensor of like's float dtype from a NumPy array (no gradient)."""
    return T.tensor(np.asarray(values, dtype=like.dtype.numpy))


def log_softmax_any(x, dim):
    """log_softmax over dim for any float dtype: the C kernel for float32, else
    x - (m + log(sum(exp(x - m)))) with m the (detached) max."""
    if x.dtype.name == "float32":
        from .functional import log_softmax

        return log_softmax(x, dim)
    m = x.detach().amax(dim, keepdim=True)
    return x - (m + (x - m).exp().sum(dim, keepdim=True).log())


def _check_same_shape(a, b, name):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name}: input {tuple(a.shape)} and target {tuple(b.shape)} must have "
                         "the same shape")


# ---- regression ---------------------------------------------------------------------------------


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta = 0 is
    the L1 loss."""
    _check_same_shape(input, target, "smooth_l1_loss")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    d = (input - target).abs()
    if beta == 0:
        return _reduce(d, reduction, "smooth_l1_loss")
    loss = T.where(d < beta, (d * d) * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta)."""
    _check_same_shape(input, target, "huber_loss")
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    d = (input - target).abs()
    loss = T.where(d < delta, (d * d) * 0.5, (d - 0.5 * delta) * delta)
    return _reduce(loss, reduction, "huber_loss")


def kl_div(input, target, reduction="mean", log_target=False):
    """KL(target || input) with input as log-probabilities: target (log target - input), 0 where
    target is 0 (log_target: exp(target) (target - input)). reduction 'batchmean' divides the
    sum by the batch size (the mathematically correct KL; 'mean' divides by every element, as
    PyTorch)."""
    _check_same_shape(input, target, "kl_div")
    if log_target:
        loss = target.exp() * (target - input)
    else:
        pos = target > 0
        logt = T.where(pos, target, 1.0).log()  # xlogy: 0 where target is 0
        loss = T.where(pos, target * logt, 0.0) - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction, "kl_div")


def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """max(0, -target (input1 - input2) + margin), target in {1, -1}."""
    return _reduce((-target * (input1 - input2) + margin).clamp(min=0), reduction,
                   "margin_ranking_loss")


def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """1 - cos(x1, x2) where target is 1, max(0, cos(x1, x2) - margin) where it is -1; cos over
    the last dim of (N, D) or (D,) inputs."""
    if input1.ndim not in (1, 2) or tuple(input1.shape) != tuple(input2.shape):
        raise ValueError(f"cosine_embedding_loss: expected two (N, D) or (D,) inputs of one shape, "
                         f"got {tuple(input1.shape)} and {tuple(input2.shape)}")
    dim = input1.ndim - 1
    prod = (input1 * input2).sum(dim)
    m1 = (input1 * input1).sum(dim) + _EPSILON
    m2 = (input2 * input2).sum(dim) + _EPSILON
    cos = prod / (m1 * m2).sqrt()
    zero = _C.full((), 0.0, cos._dtype_code)
    out = T.where(target == 1, 1 - cos, zero) + T.where(target == -1,
                                                       (cos - margin).clamp(min=0), zero)
    return _reduce(out, reduction, "cosine_embedding_loss")


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-weight (target log(input) + (1 - target) log(1 - input)) on probabilities, each log
    clamped to >= -100 as PyTorch."""
    _check_same_shape(input, target, "binary_cross_entropy")
    a = np.asarray(input.detach())
    if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
    loss = -(target * input.log().clamp(min=-100) + (1 - target) * (1 - input).log().clamp(
        min=-100))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def bce_with_logits_composed(input, target, weight, pos_weight, reduction):
    """(1 - y) x + w_pos softplus(-x), times weight, for the cases the C kernel does not take."""
    _check_same_shape(input, target, "binary_cross_entropy_with_logits")
    sp = ((-input.abs()).exp() + 1).log() + (-input).relu()  # softplus(-x), stable
    if pos_weight is not None:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * sp
    else:
        loss = (1 - target) * input + sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


# ---- classification -----------------------------------------------------------------------------


def _to_rows(input, target, name, prob):
    """input (N, C, d1, ...) or (C,) -> (M, C) rows; target likewise -> (M,) or (M, C)."""
    if input.ndim == 1:
        return input.unsqueeze(0), (target.unsqueeze(0) if prob else target.reshape(1)), ()
    if input.ndim < 1:
        raise ValueError(f"{name}: input must have at least 1 dim")
    C = input.shape[1]
    extra = tuple(input.shape[2:])
    if prob:
        _check_same_shape(input, target, name)
    elif tuple(target.shape) != (input.shape[0],) + extra:
        raise ValueError(f"{name}: expected input (N, C, ...) and target (N, ...), got "
                         f"{tuple(input.shape)} and {tuple(target.shape)}")
    if not extra:
        return input, target, ()
    nd = input.ndim
    perm = (0,) + tuple(range(2, nd)) + (1,)
    rows = input.permute(*perm).reshape(-1, C)
    t = target.permute(*perm).reshape(-1, C) if prob else target.reshape(-1)
    return rows, t, (input.shape[0],) + extra


def _class_weights(weight, C, name):
    if weight is None:
        return None
    w = np.asarray(weight.detach() if isinstance(weight, Tensor) else weight, dtype=np.float64)
    if w.shape != (C,):
        raise ValueError(f"{name}: weight must have shape ({C},), got {w.shape}")
    return w


def nll_from_logp(logp, target, weight, ignore_index, reduction, name):
    """PyTorch's nll_loss on rows logp (M, C) and int64 targets (M,), class weights (C,) or
    None: -w[t] logp[i, t], ignored rows 0; mean divides by the sum of w[t] over the rest."""
    M, C = logp.shape
    t = np.asarray(target).astype(np.int64).reshape(-1)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= C))
    if bad.any():
        i = int(np.argmax(bad))
        raise IndexError(f"{name}: target {int(t[i])} at position {i} is out of range for {C} "
                         "classes")
    w = np.ones(C) if weight is None else weight
    coef = np.zeros((M, C))
    rows = np.nonzero(keep)[0]
    coef[rows, t[rows]] = w[t[rows]]
    losses = -(logp * _const(coef, logp)).sum(1)
    if reduction == "none":
        return losses, coef.sum(1)
    if reduction == "sum":
        return losses.sum(), None
    if reduction == "mean":
        return losses.sum() / float(coef.sum()) if coef.sum() else losses.sum() * float("nan"), \
            None
    raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def cross_entropy_composed(input, target, weight, ignore_index, reduction, label_smoothing):
    """PyTorch's cross_entropy for class-index or probability targets, with class weights and
    label smoothing (LossNLL.cpp's formulas), over differentiable ops."""
    name = "cross_entropy"
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{name}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    prob = target.dtype.is_floating_point and tuple(target.shape) == tuple(input.shape)
    if not prob and target.dtype.name != "int64":
        raise TypeError(f"{name}: target must be int64 class indices or float class "
                        f"probabilities of the input's shape, got {target.dtype.name} of shape "
                        f"{tuple(target.shape)}")
    rows, t, out_shape = _to_rows(input, target, name, prob)
    M, C = rows.shape
    w = _class_weights(weight, C, name)
    logp = log_softmax_any(rows, 1)
    if prob:
        tt = t * (1 - label_smoothing) + label_smoothing / C if label_smoothing > 0 else t
        prodt = logp * tt
        if w is not None:
            prodt = prodt * _const(w, logp)
        if reduction == "none":
            out = -prodt.sum(1)
            return out.reshape(*out_shape) if out_shape else (out.reshape(()) if input.ndim == 1
                                                              else out)
        total = -prodt.sum()
        return total if reduction == "sum" else total / float(M) if M else total * float("nan")
    nll, _ = nll_from_logp(logp, t, w, ignore_index, reduction, name)
    if label_smoothing > 0:
        tn = np.asarray(t).astype(np.int64).reshape(-1)
        keep = (tn != ignore_index).astype(np.float64)
        wrow = np.ones(C) if w is None else w
        smooth = -(logp * _const(np.outer(keep, wrow), logp)).sum(1)
        if reduction == "none":
            sm = smooth
        elif reduction == "sum":
            sm = smooth.sum()
        else:
            denom = float(wrow[tn[keep > 0]].sum())
            sm = smooth.sum() / denom if denom else smooth.sum() * float("nan")
        nll = nll * (1 - label_smoothing) + sm * (label_smoothing / C)
    if reduction == "none":
        if out_shape:
            return nll.reshape(*out_shape)
        return nll.reshape(()) if input.ndim == 1 else nll
    return nll


def nll_loss_composed(input, target, weight, ignore_index, reduction):
    if target.dtype.name != "int64":
        raise TypeError(f"nll_loss: target must be int64, got {target.dtype.name}")
    rows, t, out_shape = _to_rows(input, target, "nll_loss", False)
    w = _class_weights(weight, rows.shape[1], "nll_loss")
    out, _ = nll_from_logp(rows, t, w, ignore_index, reduction, "nll_loss")
    if reduction == "none":
        if out_shape:
            return out.reshape(*out_shape)
        return out.reshape(()) if input.ndim == 1 else out
    return out
