"""SGD: stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""
from .. import _C
from .optimizer import Optimizer, _empty

__all__ = ["SGD"]


class SGD(Optimizer):
    """torch.optim.SGD. For each parameter with a gradient g (-g when maximize):

        g = g + weight_decay * p                               (weight_decay != 0)
        buf = g on the first step, else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf            (momentum != 0)
        p = p - lr * g

    State per parameter: "momentum_buffer" (only when momentum != 0). One fused C call
    (ddl_sgd_step) updates a whole group in place.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None):
        if differentiable:
            raise NotImplementedError("SGD: differentiable=True is not supported")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": False, "fused": fused}
        super().__init__(params, defaults)

    def _validate(self, group):
        if group["lr"] < 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["weight_decay"] < 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _step_group(self, group, params, grads):
        momentum = float(group["momentum"])
        bufs = first = None
        fresh = []  # new buffers join the state only once the C call has filled them
        if momentum != 0:
            bufs, first = [], []
            for p in params:
                buf = self.state[p].get("momentum_buffer")
                new = buf is None
                if new:
                    buf = _empty(p)  # the C call sets it to the gradient
                    fresh.append((p, buf))
                bufs.append(buf)
                first.append(new)
        _C.sgd_step(params, grads, bufs, first, float(group["lr"]), momentum,
                    float(group["dampening"]), float(group["weight_decay"]),
                    bool(group["nesterov"]), bool(group["maximize"]))
        for p, buf in fresh:
            self.state[p]["momentum_buffer"] = buf
