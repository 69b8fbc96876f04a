"""Grad mode (ddl.no_grad(), ddl.enable_grad(), ddl.set_grad_enabled(flag)) and gradcheck.

Grad mode is per thread, as in PyTorch. Each works as a context manager and as a decorator.
"""
import functools

from . import _C


class _GradMode:
    _enabled = True

    def __enter__(self):
        self._prev = _C.set_grad_enabled(self._enabled)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Ops inside do not record the graph (evaluation, optimizer updates)."""

    _enabled = False


class enable_grad(_GradMode):
    """Turn recording back on inside a no_grad region."""

    _enabled = True


class set_grad_enabled(_GradMode):
    """set_grad_enabled(False) as a call, a context manager or a decorator."""

    def __init__(self, mode):
        self._enabled = bool(mode)
        self._prev = _C.set_grad_enabled(self._enabled)

    def __enter__(self):
        return self

    def __call__(self, fn):
        _C.set_grad_enabled(self._prev)
        mode = self._enabled

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapper


def is_grad_enabled():
    return _C.is_grad_enabled()


class RemovableHandle:
    """Returned by Tensor.register_hook; .remove() unregisters the hook."""

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        try:
            self._hooks.remove(self._fn)
        except ValueError:
            pass


# ---- gradcheck -----------------------------------------------------------------------------
# ddl's graph records first derivatives only (backward has no create_graph), so there is no
# gradgradcheck: a second derivative cannot be asked of the engine.


class GradcheckError(RuntimeError):
    """gradcheck found an analytical gradient that disagrees with finite differences."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _float_outputs(out, tensor_type):
    outs = _as_tuple(out)
    for k, o in enumerate(outs):
        if not isinstance(o, tensor_type):
            raise TypeError(f"gradcheck: fn must return a tensor or a tuple of tensors; output "
                            f"{k} is {type(o).__name__}")
    return outs


def _numerical_jacobians(fn, inputs, checked, outs_shape, eps):
    """{(k, i): (out_k.numel, in_i.numel) array} of central differences, in float64."""
    import numpy as np

    jac = {}
    with no_grad():
        for i in checked:
            view = inputs[i].numpy()
            if not view.flags.writeable or not view.flags.c_contiguous:
                raise ValueError(f"gradcheck: input {i} cannot be perturbed in place; pass a "
                                 "contiguous leaf (x.contiguous().detach().requires_grad_())")
            flat = view.reshape(-1)
            cols = {k: np.empty((n, flat.size)) for k, n in enumerate(outs_shape)}
            for e in range(flat.size):
                orig = flat[e]
                flat[e] = orig + eps
                plus = [o.numpy().astype(np.float64).reshape(-1) for o in
                        _as_tuple(fn(*inputs))]
                flat[e] = orig - eps
                minus = [o.numpy().astype(np.float64).reshape(-1) for o in
                         _as_tuple(fn(*inputs))]
                flat[e] = orig
                for k, col in cols.items():
                    col[:, e] = (plus[k] - minus[k]) / (2 * eps)
            for k, c in cols.items():
                jac[(k, i)] = c
    return jac


def _analytical_jacobians(outs, inputs, checked):
    import numpy as np

    from . import tensor

    jac = {(k, i): np.zeros((o.numel(), inputs[i].numel())) for k, o in enumerate(outs)
           for i in checked}
    for k, o in enumerate(outs):
        if not o.requires_grad:
            continue  # no path to any input: the analytical Jacobian is zero
        for j in range(o.numel()):
            seed = np.zeros(o.numel())
            seed[j] = 1.0
            for i in checked:
                inputs[i].grad = None
            o.backward(tensor(seed.reshape(o.shape), dtype=o.dtype), retain_graph=True)
            for i in checked:
                g = inputs[i].grad
                if g is not None:
                    jac[(k, i)][j, :] = g.numpy().astype(np.float64).reshape(-1)
    return jac


def _index_text(flat, shape):
    import numpy as np

    if not shape:
        return ""
    return "[" + ", ".join(str(int(v)) for v in np.unravel_index(flat, shape)) + "]"


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Check fn's analytical gradients against central finite differences, as PyTorch's
    torch.autograd.gradcheck does (its full-Jacobian mode).

    fn(*inputs) returns a tensor or a tuple of tensors. Every input tensor with
    requires_grad=True is checked; it must be a float64 leaf (finite differences with
    eps=1e-6 are meaningless in float32). For each output element, backward() gives one row
    of the analytical Jacobian; each input element is moved by +-eps in place to give one
    column of the numerical one; an entry passes when |analytical - numerical| <= atol +
    rtol * |numerical|. Returns True; on a mismatch raises GradcheckError naming the output,
    the input and the element (or returns False with raise_exception=False). The inputs'
    .grad are restored afterwards. Cost: 2 * (input elements) forwards and (output elements)
    backwards: meant for small inputs."""
    import numpy as np

    from . import Tensor, float64

    inputs = _as_tuple(inputs)
    for name, v in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            raise ValueError(f"gradcheck: {name} must be a number >= 0, got {v!r}")
    if not eps > 0:
        raise ValueError("gradcheck: eps must be > 0")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad (pass tensors made with "
                         "requires_grad=True)")
    for i in checked:
        x = inputs[i]
        if x.dtype != float64:
            raise TypeError(f"gradcheck: input {i} is {x.dtype.name}; finite differences need "
                            "float64 inputs (x.double().detach().requires_grad_())")
        if not x.is_leaf:
            raise ValueError(f"gradcheck: input {i} is not a leaf (made by {x.grad_fn}); pass "
                             "x.detach().requires_grad_()")
    saved = [inputs[i].grad for i in checked]
    try:
        with enable_grad():
            outs = _float_outputs(fn(*inputs), Tensor)
            analytical = _analytical_jacobians(outs, inputs, checked)
        numerical = _numerical_jacobians(fn, inputs, checked, [o.numel() for o in outs], eps)
    finally:
        for i, g in zip(checked, saved):
            inputs[i].grad = g
    for k, o in enumerate(outs):
        for i in checked:
            a, n = analytical[(k, i)], numerical[(k, i)]
            with np.errstate(invalid="ignore"):
                diff = np.abs(a - n)
                bad = ~(diff <= atol + rtol * np.abs(n))
            if not bad.any():
                continue
            j, e = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(
                diff, nan=np.inf), -1.0))), a.shape)
            text = (f"gradcheck: Jacobian mismatch for output {k} with respect to input {i}: "
                    f"d(output {k}){_index_text(j, tuple(o.shape))} / d(input {i})"
                    f"{_index_text(e, tuple(inputs[i].shape))}: analytical {float(a[j, e])!r}, "
                    f"numerical {float(n[j, e])!r} (|difference| {diff[j, e]:.3g} > atol {atol:g} + "
                    f"rtol {rtol:g} * |numerical|); {int(bad.sum())} of {bad.size} entries of "
                    "this Jacobian disagree")
            if raise_exception:
                raise GradcheckError(text)
            return False
    return True
