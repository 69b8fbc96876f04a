"""RMSprop, optionally centered and with momentum."""
from .. import _C
from .optimizer import Optimizer, _lazy_state, _zeros_state

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """torch.optim.RMSprop. For each parameter with a gradient g (-g when maximize):

        g = g + weight_decay * p                         (weight_decay != 0)
        sq = alpha * sq + (1 - alpha) * g^2
        ga = alpha * ga + (1 - alpha) * g                (centered, as torch.lerp)
        avg = sqrt(sq - ga^2) + eps if centered else sqrt(sq) + eps
        buf = momentum * buf + g / avg;  p = p - lr * buf     (momentum > 0)
        p = p - lr * g / avg                                  (otherwise)

    State per parameter: "step" (0-d float32), "square_avg" (sq), "momentum_buffer" (momentum
    > 0) and "grad_avg" (centered). One fused C call (ddl_rmsprop_step) per group.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        if capturable or differentiable:
            raise NotImplementedError("RMSprop: capturable and differentiable are not supported")
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                    "centered": centered, "weight_decay": weight_decay, "capturable": False,
                    "foreach": foreach, "maximize": maximize, "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group):
        for key, what in (("lr", "learning rate"), ("eps", "epsilon value"),
                          ("momentum", "momentum value"), ("weight_decay", "weight_decay value"),
                          ("alpha", "alpha value")):
            if not 0.0 <= group[key]:
                raise ValueError(f"Invalid {what}: {group[key]}")

    def _step_group(self, group, params, grads):
        momentum = float(group["momentum"])
        centered = bool(group["centered"])
        sq, steps = [], []
        bufs = [] if momentum > 0 else None
        gavg = [] if centered else None
        for p in params:
            state = self.state[p]
            _lazy_state(state, p, "square_avg")
            sq.append(state["square_avg"])
            steps.append(state["step"])
            if bufs is not None:
                bufs.append(_zeros_state(state, "momentum_buffer", p))
            if gavg is not None:
                gavg.append(_zeros_state(state, "grad_avg", p))
        _C.rmsprop_step(params, grads, sq, bufs, gavg, steps, float(group["lr"]),
                        float(group["alpha"]), float(group["eps"]), float(group["weight_decay"]),
                        momentum, centered, bool(group["maximize"]))
