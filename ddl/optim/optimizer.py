"""Optimizer: the base class of ddl.optim (param groups, per-parameter state, checkpoints).

As in PyTorch: `param_groups` is a list of dicts, each with a "params" list and that group's
hyperparameters; `state` maps each parameter (by identity) to a dict of its state tensors;
`state_dict()` replaces parameters by integer ids, numbered in group order.
"""
import warnings
from collections import defaultdict
from itertools import chain

import numpy as np

from .. import _C
from .._tensor import Tensor, _from_array_copy
from ..autograd import enable_grad, no_grad

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyperparameter without a default: every param group must give it."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _zeros(p):
    """A zero tensor shaped like parameter p (contiguous, its dtype)."""
    return _C.full(p.shape, 0.0, p._dtype_code)


def _empty(p):
    return _C.full(p.shape, None, p._dtype_code)


def _step_counter():
    """PyTorch's step state: a 0-d float32 tensor (the fused C update increments it)."""
    return _C.full((), 0.0, _C.FLOAT32)


def _lazy_state(state, p, *names):
    """On a parameter's first step (no "step" in its state, as PyTorch): a step counter and a
    zero tensor like p for each of names."""
    if "step" not in state:
        state["step"] = _step_counter()
        for name in names:
            state[name] = _zeros(p)


def _zeros_state(state, name, p):
    """state[name], made a zero tensor like p if missing or None (optional buffers)."""
    if state.get(name) is None:
        state[name] = _zeros(p)
    return state[name]


def _readable(g):
    """A gradient the C update can read: contiguous (a copy when it is not)."""
    return g if g.is_contiguous() else g.contiguous()


class Optimizer:
    """Base class of the optimizers.

    Args:
        params: an iterable of Tensors, of (name, Tensor) pairs, or of dicts each holding
            "params" and hyperparameters that override `defaults` for that group.
        defaults: the hyperparameters of groups that do not set them.

    Subclasses implement `_step_group(group, params, grads)` (one fused C call per group; step()
    calls it under ddl.no_grad() for each group with gradients) and may define
    `_validate(group)` to check a group's hyperparameters (ValueError, PyTorch's wording).
    """

    def __init__(self, params, defaults):
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        self.state = defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def _validate(self, group):
        """Check one group's hyperparameters; subclasses raise ValueError."""

    # ---- param groups ----------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with "params" and optional hyperparameters), as when
        unfreezing layers while fine-tuning. Missing hyperparameters take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)  # the caller's dict stays as it was
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param "
                                 "names are missing")
            group["param_names"] = names
        group["params"] = params
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.dtype.is_floating_point:
                raise TypeError(f"optimizer can only optimize float32 or float64 Tensors, but "
                                f"params[{i}] is {p.dtype.name}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        self._validate(group)
        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", stacklevel=3)
        seen = set()
        for g in self.param_groups:
            seen.update(id(p) for p in g["params"])
            if ("param_names" in group) != ("param_names" in g):
                which = "with names" if "param_names" in group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # ---- gradients -------------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all parameters: drop them (set_to_none=True, the default: the
        next step skips parameters that get no gradient), or zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    with no_grad():
                        g.zero_()

    def step(self, closure=None):
        """Update every parameter that has a gradient. `closure`, if given, reevaluates the
        model (with grad mode on) and returns the loss, which step returns."""
        loss = self._closure_loss(closure)
        with no_grad():
            for group in self.param_groups:
                params, grads = self._params_with_grad(group)
                if params:
                    self._step_group(group, params, grads)
        return loss

    def _step_group(self, group, params, grads):
        """Update one group's params (those with a gradient; grads contiguous), under
        no_grad: the optimizers' one fused C call. Subclasses implement it or step()."""
        raise NotImplementedError

    def _closure_loss(self, closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    def _params_with_grad(self, group):
        """(params, readable grads) of the group's parameters whose .grad is not None."""
        params, grads = [], []
        for p in group["params"]:
            g = p.grad
            if g is not None:
                params.append(p)
                grads.append(_readable(g))
        return params, grads

    # ---- checkpoints -----------------------------------------------------------------------
    def state_dict(self):
        """{"state": {param id: {name: tensor or value}}, "param_groups": [group dicts whose
        "params" are ids]}, ids numbering the parameters in group order (PyTorch's layout).
        The state tensors are the live ones, not copies: save them before stepping again."""
        mapping = {}
        start = 0

        def pack(group):
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        param_groups = [pack(g) for g in self.param_groups]
        state = {(mapping[id(k)] if isinstance(k, Tensor) else k): v
                 for k, v in self.state.items()}
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Load a state_dict() of an optimizer over the same parameter layout: the same number
        of groups, each of the same size. State tensors are copied (cast to each parameter's
        dtype, except the step counts); shapes must match the parameters."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or \
                "state" not in state_dict:
            raise ValueError("load_state_dict expects a dict with 'state' and 'param_groups' "
                             "(as returned by state_dict())")
        groups = self.param_groups
        saved_groups = [_copy_group(g) for g in state_dict["param_groups"]]
        if len(groups) != len(saved_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}) than the optimizer ({len(groups)})")
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group: group {i} has "
                                 f"{len(s['params'])} parameters in the state dict, "
                                 f"{len(g['params'])} in the optimizer")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                p = id_map[k]
                state[p] = {name: _cast_state(p, k, name, value) for name, value in v.items()}
            else:
                state[k] = v
        new_groups = []
        for g, s in zip(groups, saved_groups):
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            for name, default in self.defaults.items():  # older checkpoints: fill new keys
                s.setdefault(name, default)
            self._validate(s)
            new_groups.append(s)
        self.__setstate__({"state": state, "param_groups": new_groups})

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _copy_group(group):
    """A copy of a saved group deep enough that loading never aliases the caller's lists."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in group.items()}


# One-element state entries that keep their own dtype (NAdam's mu_product is float32 as in
# PyTorch, whatever the parameter's dtype).
_SCALAR_STATE = ("step", "mu_product")


def _cast_state(p, pid, name, value):
    """A copy of one loaded state entry for parameter p: tensors (or arrays) become contiguous
    ddl tensors in p's dtype, except the step count, which keeps its own."""
    if isinstance(value, np.ndarray):
        value = _from_array_copy(value)
    if not isinstance(value, Tensor):
        return value
    if name in _SCALAR_STATE:
        if value.numel() != 1:
            raise ValueError(f"loaded state for parameter {pid}: '{name}' must have one element, "
                             f"got shape {tuple(value.shape)}")
        return value.clone()
    if tuple(value.shape) != tuple(p.shape):
        raise ValueError(f"loaded state for parameter {pid}: '{name}' has shape "
                         f"{tuple(value.shape)}, but the parameter has shape {tuple(p.shape)}")
    if value.dtype is not p.dtype:
        return value.to(p.dtype).contiguous()
    return value.clone()

