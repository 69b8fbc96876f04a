"""ddl.nn.utils: gradient clipping (clip_grad_norm_, clip_grad_value_), as in torch.nn.utils.

The norm is one C pass over all gradients (ddl_grad_norm, accumulated in double) and the
scaling one more (ddl_scale_), both with the GIL released.
"""
import math

from .. import _C
from .._tensor import Tensor
from ..autograd import no_grad

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]

_NONFINITE = ("The total norm of order {} for gradients from `parameters` is non-finite, so it "
              "cannot be clipped. To disable this error and scale the gradients by the non-finite "
              "norm anyway, set `error_if_nonfinite=False`")


def _as_list(tensors):
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _grads(parameters):
    return [p.grad for p in _as_list(parameters) if p.grad is not None]


def _norm_tensor(value, tensors):
    """A 0-d tensor holding value, float64 when any tensor is float64 (else float32)."""
    f64 = any(t.dtype.name == "float64" for t in tensors)
    return _C.full((), float(value), _C.FLOAT64 if f64 else _C.FLOAT32)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm_type-norm of all the tensors taken together (as if concatenated), as a 0-d
    tensor. norm_type: any p > 0, or inf for the largest magnitude."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return _C.full((), 0.0, _C.FLOAT32)
    readable = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    total = _C.grad_norm(readable, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(_NONFINITE.format(norm_type))
    return _norm_tensor(total, tensors)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scale the gradients in place by max_norm / (total_norm + 1e-6) when that is below 1
    (a NaN total norm scales them by NaN, as in PyTorch)."""
    grads = _grads(parameters)
    if not grads:
        return
    coef = float(max_norm) / (float(total_norm) + 1e-6)
    if coef >= 1.0:  # PyTorch clamps the factor to 1.0: the gradients stay as they are
        return
    with no_grad():
        contiguous = [g for g in grads if g.is_contiguous()]
        _C.scale_(contiguous, coef)
        for g in grads:
            if not g.is_contiguous():  # a strided view: the general in-place op
                g.mul_(coef)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Clip the gradients of `parameters` (a Tensor or an iterable of them) so that their total
    norm_type-norm (all gradients together) is at most max_norm: when the norm exceeds it,
    every gradient is scaled in place by max_norm / (norm + 1e-6). Parameters without a
    gradient are ignored. Returns the total norm before clipping, as a 0-d tensor.

    error_if_nonfinite: raise RuntimeError when the norm is NaN or infinite, instead of
    scaling the gradients by it."""
    parameters = _as_list(parameters)  # a generator (model.parameters()) is read twice
    max_norm = float(max_norm)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total.item())
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient of `parameters` to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(min=-clip_value, max=clip_value)
