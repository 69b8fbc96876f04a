"""Adadelta, Adagrad, Adamax, NAdam and RAdam: one fused C call per parameter group each."""
from .. import _C
from .optimizer import Optimizer, _lazy_state, _step_counter

__all__ = ["Adadelta", "Adagrad", "Adamax", "NAdam", "RAdam"]


def _no_capturable(name, capturable, differentiable):
    if capturable or differentiable:
        raise NotImplementedError(f"{name}: capturable and differentiable are not supported")


def _check_nonneg(group, *keys):
    what = {"lr": "learning rate", "eps": "epsilon value"}
    for key in keys:
        if not 0.0 <= group[key]:
            raise ValueError(f"Invalid {what.get(key, key + ' value')}: {group[key]}")


def _check_betas(betas):
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {b}")


def _states(opt, params, *names):
    """[state[name] for each param] for each name, making the state on a first step."""
    out = [[] for _ in names]
    for p in params:
        state = opt.state[p]
        _lazy_state(state, p, *(n for n in names if n not in ("step", "mu_product")))
        for lst, name in zip(out, names):
            lst.append(state[name])
    return out


class Adadelta(Optimizer):
    """torch.optim.Adadelta. For each parameter with a gradient g (-g when maximize):

        g = g + weight_decay * p                       (weight_decay != 0)
        sq = rho * sq + (1 - rho) * g^2
        delta = sqrt(acc + eps) / sqrt(sq + eps) * g
        acc = rho * acc + (1 - rho) * delta^2
        p = p - lr * delta

    State per parameter: "step" (0-d float32), "square_avg" (sq), "acc_delta" (acc).
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        _no_capturable("Adadelta", capturable, differentiable)
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize, "capturable": False, "foreach": foreach,
                    "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group):
        _check_nonneg(group, "lr", "eps", "weight_decay")
        if not 0.0 <= group["rho"] <= 1.0:
            raise ValueError(f"Invalid rho value: {group['rho']}")

    def _step_group(self, group, params, grads):
        sq, acc, steps = _states(self, params, "square_avg", "acc_delta", "step")
        _C.adadelta_step(params, grads, sq, acc, steps, float(group["lr"]), float(group["rho"]),
                         float(group["eps"]), float(group["weight_decay"]),
                         bool(group["maximize"]))


class Adagrad(Optimizer):
    """torch.optim.Adagrad (dense gradients). For each parameter with a gradient g at step t:

        g = g + weight_decay * p                       (weight_decay != 0)
        sum = sum + g^2
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)

    State per parameter (made at construction, as PyTorch): "step" (0-d float32) and "sum"
    (filled with initial_accumulator_value).
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None):
        _no_capturable("Adagrad", False, differentiable)
        if fused:
            raise NotImplementedError("Adagrad: fused=True is not supported (ddl's update is "
                                      "always one fused C call)")
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": False, "fused": fused}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = _step_counter()
                state["sum"] = _C.full(p.shape, float(group["initial_accumulator_value"]),
                                       p._dtype_code)

    def _validate(self, group):
        _check_nonneg(group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value",
                      "eps")

    def _step_group(self, group, params, grads):
        for p in params:  # a parameter added with add_param_group after construction
            state = self.state[p]
            if "sum" not in state:
                state["step"] = _step_counter()
                state["sum"] = _C.full(p.shape, float(group["initial_accumulator_value"]),
                                       p._dtype_code)
        sums = [self.state[p]["sum"] for p in params]
        steps = [self.state[p]["step"] for p in params]
        _C.adagrad_step(params, grads, sums, steps, float(group["lr"]),
                        float(group["lr_decay"]), float(group["weight_decay"]),
                        float(group["eps"]), bool(group["maximize"]))


class Adamax(Optimizer):
    """torch.optim.Adamax (Adam with the infinity norm). At step t:

        g = g + weight_decay * p                       (weight_decay != 0)
        m = beta1 * m + (1 - beta1) * g                (as torch.lerp)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1^t) * m / u

    State per parameter: "step" (0-d float32), "exp_avg" (m), "exp_inf" (u).
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False, differentiable=False, capturable=False):
        _no_capturable("Adamax", capturable, differentiable)
        defaults = {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": eps,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize,
                    "differentiable": False, "capturable": False}
        super().__init__(params, defaults)

    def _validate(self, group):
        _check_nonneg(group, "lr", "eps", "weight_decay")
        _check_betas(group["betas"])

    def _step_group(self, group, params, grads):
        m, u, steps = _states(self, params, "exp_avg", "exp_inf", "step")
        beta1, beta2 = group["betas"]
        _C.adamax_step(params, grads, m, u, steps, float(group["lr"]), float(beta1),
                       float(beta2), float(group["eps"]), float(group["weight_decay"]),
                       bool(group["maximize"]))


class NAdam(Optimizer):
    """torch.optim.NAdam (Adam with Nesterov momentum), mu_t = beta1 (1 - 0.5 *
    0.96^(t * momentum_decay)):

        p = p * (1 - lr * weight_decay)     (decoupled_weight_decay)
        g = g + weight_decay * p            (otherwise, when weight_decay != 0)
        mu_product = mu_product * mu_t
        m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
        denom = sqrt(v / (1 - beta2^t)) + eps
        p = p - lr (1 - mu_t) / (1 - mu_product) * g / denom
              - lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / denom

    State per parameter: "step", "mu_product" (0-d float32 each), "exp_avg", "exp_avg_sq".
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        _no_capturable("NAdam", capturable, differentiable)
        defaults = {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": eps,
                    "weight_decay": weight_decay, "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": False, "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group):
        _check_nonneg(group, "lr", "eps", "weight_decay", "momentum_decay")
        _check_betas(group["betas"])

    def _step_group(self, group, params, grads):
        for p in params:
            state = self.state[p]
            if "step" not in state:
                _lazy_state(state, p, "exp_avg", "exp_avg_sq")
                state["mu_product"] = _C.full((), 1.0, _C.FLOAT32)
        m, v, mu, steps = _states(self, params, "exp_avg", "exp_avg_sq", "mu_product", "step")
        beta1, beta2 = group["betas"]
        _C.nadam_step(params, grads, m, v, mu, steps, float(group["lr"]), float(beta1),
                      float(beta2), float(group["eps"]), float(group["weight_decay"]),
                      float(group["momentum_decay"]), bool(group["decoupled_weight_decay"]),
                      bool(group["maximize"]))


class RAdam(Optimizer):
    """torch.optim.RAdam (rectified Adam): Adam's moments; while the variance estimate is not
    yet tractable (rho_t <= 5) the step is the bias-corrected momentum alone, then Adam's step
    scaled by the rectification term (formulas: docs/optim.md).

    State per parameter: "step" (0-d float32), "exp_avg", "exp_avg_sq".
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False,
                 capturable=False, differentiable=False):
        _no_capturable("RAdam", capturable, differentiable)
        defaults = {"lr": lr, "betas": tuple(float(b) for b in betas), "eps": eps,
                    "weight_decay": weight_decay, "decoupled_weight_decay": decoupled_weight_decay,
                    "maximize": maximize, "foreach": foreach, "capturable": False,
                    "differentiable": False}
        super().__init__(params, defaults)

    def _validate(self, group):
        _check_nonneg(group, "lr", "eps", "weight_decay")
        _check_betas(group["betas"])

    def _step_group(self, group, params, grads):
        m, v, steps = _states(self, params, "exp_avg", "exp_avg_sq", "step")
        beta1, beta2 = group["betas"]
        _C.radam_step(params, grads, m, v, steps, float(group["lr"]), float(beta1), float(beta2),
                      float(group["eps"]), float(group["weight_decay"]),
                      bool(group["decoupled_weight_decay"]), bool(group["maximize"]))
