"""Grad mode: ddl.no_grad(), ddl.enable_grad(), ddl.set_grad_enabled(flag).

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
