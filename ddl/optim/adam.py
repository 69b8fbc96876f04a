"""Adam and AdamW (decoupled weight decay), with optional AMSGrad."""
from .. import _C
from .optimizer import Optimizer, _lazy_state, _zeros_state

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """torch.optim.Adam. For each parameter with a gradient g (-g when maximize), at step t:

        p = p * (1 - lr * weight_decay)     (decoupled_weight_decay: AdamW)
        g = g + weight_decay * p            (otherwise, when weight_decay != 0: L2)
        m = beta1 * m + (1 - beta1) * g     (as torch.lerp)
        v = beta2 * v + (1 - beta2) * g^2
        vmax = max(vmax, v)                 (amsgrad; v below means vmax)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    State per parameter: "step" (a 0-d float32 tensor), "exp_avg" (m), "exp_avg_sq" (v) and,
    with amsgrad, "max_exp_avg_sq" (vmax). One fused C call (ddl_adam_step) per group.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False):
        if capturable or differentiable:
            raise NotImplementedError(f"{type(self).__name__}: capturable and differentiable "
                                      "are not supported")
        betas = tuple(float(b) for b in betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": False, "differentiable": False, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _validate(self, group):
        lr, eps, betas, wd = group["lr"], group["eps"], group["betas"], group["weight_decay"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= wd:
            raise ValueError(f"Invalid weight_decay value: {wd}")

    def _step_group(self, group, params, grads):
        amsgrad = bool(group["amsgrad"])
        m, v, vmax, steps = [], [], [] if amsgrad else None, []
        for p in params:
            state = self.state[p]
            _lazy_state(state, p, "exp_avg", "exp_avg_sq")
            m.append(state["exp_avg"])
            v.append(state["exp_avg_sq"])
            steps.append(state["step"])
            if amsgrad:
                vmax.append(_zeros_state(state, "max_exp_avg_sq", p))
        beta1, beta2 = group["betas"]
        _C.adam_step(params, grads, m, v, vmax, steps, float(group["lr"]), float(beta1),
                     float(beta2), float(group["eps"]), float(group["weight_decay"]), amsgrad,
                     bool(group["decoupled_weight_decay"]), bool(group["maximize"]))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay before
    the Adam update, instead of adding weight_decay * p to the gradient). weight_decay
    defaults to 1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:  # a loaded Adam state stays AdamW here, as in PyTorch
            group["decoupled_weight_decay"] = True
