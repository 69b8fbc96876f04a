"""ddl.optim and ddl.nn.utils clipping: each optimizer and option against a NumPy float64
reimplementation of PyTorch's update formulas, state_dict round trips, error paths, the
schedulers against PyTorch's closed forms, and (when torch is installed) parity with torch."""
import importlib.util
import math
import os

import numpy as np
import pytest
from _util import rss_test, torch_or_skip

import ddl
from ddl import _C
from ddl.optim import SGD, Adam, AdamW, RMSprop, lr_scheduler

try:
    from ddl.nn import utils as nn_utils
except ImportError:  # ddl.nn not importable yet: load the module file on its own
    _spec = importlib.util.spec_from_file_location(
        "ddl.nn.utils", os.path.join(os.path.dirname(ddl.__file__), "nn", "utils.py"))
    nn_utils = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(nn_utils)

SHAPES = [(3, 4), (5,), (2, 3, 2), ()]
LRS = (0.05, 0.01)  # group 0, group 1


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype is ddl.float32 else {"rtol": 1e-12, "atol": 1e-13}


# ---- NumPy references (float64), term by term from torch.optim's single-tensor code ----------

def ref_sgd(p, g, st, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False,
            maximize=False):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        st["buf"] = g.copy() if "buf" not in st else momentum * st["buf"] + (1 - dampening) * g
        g = g + momentum * st["buf"] if nesterov else st["buf"]
    return p - lr * g


def ref_adam(p, g, st, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    g = -g if maximize else g
    st["step"] = t = st.get("step", 0) + 1
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    v = st["v"]
    if amsgrad:
        st["vmax"] = v = np.maximum(st.get("vmax", 0.0), v)
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
    return p - lr / (1 - b1 ** t) * st["m"] / denom


def ref_adamw(p, g, st, lr, weight_decay=1e-2, **kw):
    return ref_adam(p, g, st, lr, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(p, g, st, lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                maximize=False):
    g = -g if maximize else g
    st["step"] = st.get("step", 0) + 1
    if weight_decay != 0:
        g = g + weight_decay * p
    st["sq"] = alpha * st.get("sq", 0.0) + (1 - alpha) * g * g
    if centered:
        st["ga"] = alpha * st.get("ga", 0.0) + (1 - alpha) * g
        avg = np.sqrt(st["sq"] - st["ga"] ** 2) + eps
    else:
        avg = np.sqrt(st["sq"]) + eps
    if momentum > 0:
        st["buf"] = momentum * st.get("buf", 0.0) + g / avg
        return p - lr * st["buf"]
    return p - lr * g / avg


CASES = [
    (SGD, ref_sgd, {}),
    (SGD, ref_sgd, {"momentum": 0.9}),
    (SGD, ref_sgd, {"momentum": 0.9, "dampening": 0.3}),
    (SGD, ref_sgd, {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    (SGD, ref_sgd, {"weight_decay": 0.05, "maximize": True}),
    (SGD, ref_sgd, {"momentum": 0.5, "dampening": 0.1, "weight_decay": 0.01, "maximize": True}),
    (Adam, ref_adam, {}),
    (Adam, ref_adam, {"weight_decay": 0.1}),
    (Adam, ref_adam, {"amsgrad": True}),
    (Adam, ref_adam, {"maximize": True, "weight_decay": 0.02, "amsgrad": True}),
    (Adam, ref_adam, {"betas": (0.3, 0.9), "eps": 1e-3}),  # lerp weight 0.7: PyTorch's other form
    (AdamW, ref_adamw, {}),
    (AdamW, ref_adamw, {"weight_decay": 0.3, "amsgrad": True, "maximize": True}),
    (RMSprop, ref_rmsprop, {}),
    (RMSprop, ref_rmsprop, {"momentum": 0.9}),
    (RMSprop, ref_rmsprop, {"centered": True}),
    (RMSprop, ref_rmsprop, {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    (RMSprop, ref_rmsprop, {"alpha": 0.3, "centered": True, "maximize": True}),
]


def _ids(case):
    cls, _, kw = case
    return cls.__name__ + "(" + ",".join(f"{k}={v}" for k, v in kw.items()) + ")"


def make_params(dtype, rng):
    return [ddl.tensor(rng.standard_normal(s).astype(dtype.numpy)).requires_grad_()
            for s in SHAPES]


def has_grad(step, i):
    """Which parameters get a gradient at a step: each misses one step of four."""
    return (step + i) % 4 != 3


def set_grads(params, step, rng):
    grads = []
    for i, p in enumerate(params):
        if has_grad(step, i):
            g = (rng.standard_normal(p.shape) * (1 + step)).astype(p.dtype.numpy)
            p.grad = ddl.tensor(g)
            grads.append(g.astype(np.float64))
        else:
            p.grad = None
            grads.append(None)
    return grads


def make_opt(cls, params, kw):
    # two groups with different learning rates
    return cls([{"params": params[:2]}, {"params": params[2:], "lr": LRS[1]}], lr=LRS[0], **kw)


@pytest.mark.parametrize("dtype", [ddl.float64, ddl.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_optimizer_against_numpy(case, dtype, rng):
    cls, ref, kw = case
    params = make_params(dtype, rng)
    opt = make_opt(cls, params, kw)
    ref_p = [p.numpy().astype(np.float64) for p in params]
    ref_st = [{} for _ in params]
    for step in range(5):
        grads = set_grads(params, step, rng)
        for i, g in enumerate(grads):
            if g is not None:
                ref_p[i] = ref(ref_p[i], g, ref_st[i], LRS[i >= 2], **kw)
        opt.step()
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.numpy(), ref_p[i], **tol(dtype),
                                       err_msg=f"param {i} after step {step}")
            assert p.dtype is dtype
    # the state mirrors the reference, step counts included (skipped steps do not count)
    for i, p in enumerate(params):
        st = opt.state[p]
        if "step" in ref_st[i]:
            assert st["step"].item() == ref_st[i]["step"] == sum(has_grad(s, i) for s in range(5))
            assert st["step"].dtype is ddl.float32 and st["step"].shape == ()
        names = {"buf": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq",
                 "vmax": "max_exp_avg_sq", "sq": "square_avg", "ga": "grad_avg"}
        for k, name in names.items():
            if k in ref_st[i]:
                assert isinstance(st[name], ddl.Tensor) and st[name].dtype is dtype
                np.testing.assert_allclose(st[name].numpy(), ref_st[i][k], **tol(dtype))
        assert set(st) == {names[k] if k != "step" else "step" for k in ref_st[i]}


def test_none_grads_skipped_entirely(rng):
    p, q = make_params(ddl.float64, rng)[:2]
    q0 = q.numpy().copy()
    opt = Adam([p, q], lr=0.1)
    p.grad = ddl.ones(p.shape, dtype=ddl.float64)
    opt.step()
    np.testing.assert_array_equal(q.numpy(), q0)
    assert q not in opt.state and p in opt.state
    # no gradient anywhere: nothing happens (no C call needed), and the closure's loss returns
    opt.zero_grad()
    p0 = p.numpy().copy()
    assert opt.step(lambda: 42.0) == 42.0
    np.testing.assert_array_equal(p.numpy(), p0)


def test_closure_runs_with_grad_enabled(rng):
    p = make_params(ddl.float32, rng)[1]
    opt = SGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    p0 = p.numpy().copy()
    with ddl.no_grad():
        loss = opt.step(closure)
    np.testing.assert_allclose(loss.item(), (p0.astype(np.float64) ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(p.numpy(), p0 - 0.1 * 2 * p0, rtol=1e-6)
    assert ddl.is_grad_enabled()


def test_zero_grad_both_modes(rng):
    params = make_params(ddl.float32, rng)
    opt = SGD(params, lr=0.1)
    set_grads(params, 0, rng)
    with_grad = [p for i, p in enumerate(params) if has_grad(0, i)]
    ptrs = [p.grad._data_ptr for p in with_grad]
    opt.zero_grad(set_to_none=False)
    for p, ptr in zip(with_grad, ptrs):
        assert p.grad._data_ptr == ptr  # the same memory, zeroed in place
        assert not p.grad.numpy().any()
    opt.zero_grad()  # set_to_none=True is the default
    assert all(p.grad is None for p in params)
    opt.zero_grad(set_to_none=False)  # no gradients: nothing to do
    assert all(p.grad is None for p in params)


def test_zero_grad_in_place_on_a_parameter_that_requires_grad(rng):
    p = make_params(ddl.float32, rng)[0]
    (p * 3.0).sum().backward()
    SGD([p]).zero_grad(set_to_none=False)  # grad mode on: still allowed on .grad
    assert not p.grad.numpy().any()


def _snapshot(sd):
    """A deep copy of a state_dict through NumPy (what a checkpoint file round trip does)."""
    state = {k: {n: (v.numpy().copy() if isinstance(v, ddl.Tensor) else v)
                 for n, v in s.items()} for k, s in sd["state"].items()}
    groups = [dict(g, params=list(g["params"])) for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


@pytest.mark.parametrize("case", [CASES[3], CASES[9], CASES[12], CASES[16]], ids=_ids)
@pytest.mark.parametrize("via_numpy", [False, True], ids=["tensors", "numpy"])
def test_state_dict_round_trip(case, via_numpy, rng):
    cls, _, kw = case
    params = make_params(ddl.float64, rng)
    opt = make_opt(cls, params, kw)
    for step in range(3):
        set_grads(params, step, rng)
        opt.step()
    sd = opt.state_dict()
    # PyTorch's layout: integer ids in group order, hyperparameters per group
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert [g["lr"] for g in sd["param_groups"]] == list(LRS)
    assert set(sd["state"]) <= {0, 1, 2, 3} and len(sd["state"]) == 4
    saved = _snapshot(sd) if via_numpy else sd

    clones = [ddl.tensor(p.numpy()).requires_grad_() for p in params]
    opt2 = cls([{"params": clones[:2]}, {"params": clones[2:]}], lr=0.5)  # lrs get overwritten
    opt2.load_state_dict(saved)
    assert [g["lr"] for g in opt2.param_groups] == list(LRS)
    assert opt2.param_groups[0]["params"][0] is clones[0]
    for step in range(3, 6):
        grads = set_grads(params, step, rng)
        for c, g in zip(clones, grads):
            c.grad = None if g is None else ddl.tensor(g)
        opt.step()
        opt2.step()
        for p, c in zip(params, clones):
            np.testing.assert_array_equal(c.numpy(), p.numpy())
    # the loaded state is a copy: the first optimizer's stepping did not write into it
    if not via_numpy:
        for k in opt2.state[clones[0]]:
            assert opt2.state[clones[0]][k]._data_ptr != opt.state[params[0]][k]._data_ptr


def test_load_state_dict_casts_state_to_the_parameter_dtype(rng):
    p64 = make_params(ddl.float64, rng)[0]
    opt = Adam([p64], lr=0.1)
    p64.grad = ddl.ones(p64.shape, dtype=ddl.float64)
    opt.step()
    p32 = ddl.tensor(p64.numpy().astype(np.float32))
    opt32 = Adam([p32], lr=0.1)
    opt32.load_state_dict(opt.state_dict())
    st = opt32.state[p32]
    assert st["exp_avg"].dtype is ddl.float32 and st["step"].dtype is ddl.float32
    p32.grad = ddl.ones(p32.shape)
    opt32.step()
    assert st["step"].item() == 2


def test_load_state_dict_mismatches_raise(rng):
    params = make_params(ddl.float64, rng)
    opt = make_opt(SGD, params, {"momentum": 0.9})
    set_grads(params, 0, rng)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        SGD(params, lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size"):
        SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    # the right sizes but parameters of other shapes
    other = [ddl.zeros(5, dtype=ddl.float64), ddl.zeros(3, 4, dtype=ddl.float64)] + params[2:]
    with pytest.raises(ValueError, match=r"'momentum_buffer' has shape \(3, 4\), but the "
                                         r"parameter has shape \(5,\)"):
        SGD([{"params": other[:2]}, {"params": other[2:]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="state_dict"):
        SGD(params, lr=0.1).load_state_dict({"state": {}})


@pytest.mark.parametrize("make, err, match", [
    (lambda p: SGD(p, lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), ValueError, "Invalid momentum value"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1), ValueError, "Invalid weight_decay value"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
    (lambda p: SGD([{"params": p, "lr": -0.1}]), ValueError, "Invalid learning rate"),
    (lambda p: Adam(p, lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda p: Adam(p, eps=-1e-8), ValueError, "Invalid epsilon value"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0"),
    (lambda p: AdamW(p, betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1"),
    (lambda p: AdamW(p, weight_decay=-1), ValueError, "Invalid weight_decay value"),
    (lambda p: RMSprop(p, lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda p: RMSprop(p, alpha=-0.1), ValueError, "Invalid alpha value"),
    (lambda p: RMSprop(p, momentum=-0.1), ValueError, "Invalid momentum value"),
    (lambda p: SGD([], lr=0.1), ValueError, "empty parameter list"),
    (lambda p: SGD(p[0], lr=0.1), TypeError, "iterable of Tensors or dicts"),
    (lambda p: SGD([{"params": p[:2]}, {"params": p[1:]}]), ValueError, "more than one"),
    (lambda p: SGD([p[0], 3.0]), TypeError, "can only optimize Tensors"),
    (lambda p: SGD([ddl.tensor([1, 2, 3])]), TypeError, r"float32 or float64.*int64"),
    (lambda p: SGD([p[0] * 2.0]), ValueError, "non-leaf"),
    (lambda p: SGD([{"params": {p[0]}}]), TypeError, "ordered collections"),
])
def test_constructor_errors(make, err, match, rng):
    with pytest.raises(err, match=match):
        make(make_params(ddl.float32, rng))


def test_add_param_group_and_named_params(rng):
    params = make_params(ddl.float32, rng)
    opt = SGD([("w", params[0]), ("b", params[1])], lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    with pytest.raises(ValueError, match="with/without names"):
        opt.add_param_group({"params": params[2:]})
    opt.add_param_group({"params": [("c", params[2])], "lr": 0.5})
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    assert "Parameter Group 1" in repr(opt) and "lr: 0.5" in repr(opt)


def test_duplicate_parameter_warns(rng):
    p = make_params(ddl.float32, rng)[0]
    with pytest.warns(UserWarning, match="duplicate parameters"):
        SGD([p, p], lr=0.1)


# ---- the C entry points: validation before any write ---------------------------------------

def test_c_errors_name_the_index_and_shapes(rng):
    params = [ddl.zeros(3, dtype=ddl.float64), ddl.zeros(2, 2, dtype=ddl.float64)]
    grads = [ddl.ones(3, dtype=ddl.float64), ddl.ones(2, 2, dtype=ddl.float64)]
    bufs = [ddl.zeros(3, dtype=ddl.float64), ddl.zeros(4, dtype=ddl.float64)]
    with ddl.no_grad():
        with pytest.raises(ValueError, match=r"momentum_bufs\[1\] has shape \(4,\) but "
                                             r"params\[1\] has shape \(2, 2\)"):
            _C.sgd_step(params, grads, bufs, [0, 0], 0.1, 0.9, 0.0, 0.0, False, False)
        assert not params[0].numpy().any()  # validated before anything was written
        bufs[1] = ddl.zeros(2, 2)  # float32
        with pytest.raises(TypeError, match=r"momentum_bufs\[1\] is float32 but params\[1\] is "
                                            "float64"):
            _C.sgd_step(params, grads, bufs, [0, 0], 0.1, 0.9, 0.0, 0.0, False, False)
        with pytest.raises(TypeError, match=r"params\[0\] is int64"):
            _C.sgd_step([ddl.tensor([1, 2])], [ddl.tensor([1, 2])], None, None, 0.1, 0.0, 0.0,
                        0.0, False, False)
        t = ddl.zeros(3, 4, dtype=ddl.float64).T
        with pytest.raises(ValueError, match=r"params\[0\] \(shape \(4, 3\)\) is not contiguous"):
            _C.sgd_step([t], [ddl.zeros(4, 3, dtype=ddl.float64)], None, None, 0.1, 0.0, 0.0,
                        0.0, False, False)
        with pytest.raises(ValueError, match="share memory"):
            _C.sgd_step(params[:1], params[:1], None, None, 0.1, 0.0, 0.0, 0.0, False, False)
        with pytest.raises(ValueError, match="grads has 1 entries, expected 2"):
            _C.sgd_step(params, grads[:1], None, None, 0.1, 0.0, 0.0, 0.0, False, False)
        with pytest.raises(ValueError, match=r"exp_avg_sqs\[0\] is NULL"):
            _C.adam_step(params[:1], grads[:1], [ddl.zeros(3, dtype=ddl.float64)], [None], None,
                         [ddl.zeros(())], 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False)
        with pytest.raises(ValueError, match=r"steps\[0\] must have one element"):
            _C.rmsprop_step(params[:1], grads[:1], [ddl.zeros(3, dtype=ddl.float64)], None,
                            None, [ddl.zeros(2)], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False)
        with pytest.raises(TypeError, match=r"steps\[0\] must be float32, float64 or int64"):
            _C.rmsprop_step(params[:1], grads[:1], [ddl.zeros(3, dtype=ddl.float64)], None,
                            None, [ddl.zeros((), dtype=ddl.bool)], 0.1, 0.99, 1e-8, 0.0, 0.0,
                            False, False)
        with pytest.raises(TypeError, match="must be a Tensor"):
            _C.sgd_step([np.zeros(3)], grads[:1], None, None, 0.1, 0.0, 0.0, 0.0, False, False)
    # a parameter that requires grad is not updated in place while grad mode is on
    p = ddl.zeros(3).requires_grad_()
    with pytest.raises(RuntimeError):
        _C.sgd_step([p], [ddl.ones(3)], None, None, 0.1, 0.0, 0.0, 0.0, False, False)


def test_c_step_counter_dtypes():
    # int64 and float64 counters work too (PyTorch's are float32)
    for dt in (ddl.int64, ddl.float64):
        p, g, s = ddl.zeros(2), ddl.ones(2), ddl.zeros((), dtype=dt)
        with ddl.no_grad():
            _C.adam_step([p], [g], [ddl.zeros(2)], [ddl.zeros(2)], None, [s], 0.1, 0.9, 0.999,
                         1e-8, 0.0, False, False, False)
        assert s.item() == 1
        np.testing.assert_allclose(p.numpy(), -0.1, rtol=1e-6)  # Adam's first step: -lr*sign


def test_noncontiguous_grad_is_read_through_a_copy(rng):
    p = ddl.zeros(3, 4, dtype=ddl.float64).requires_grad_()
    g = rng.standard_normal((4, 3))
    p.grad = ddl.tensor(g).T
    assert not p.grad.is_contiguous()
    SGD([p], lr=0.5).step()
    np.testing.assert_allclose(p.numpy(), -0.5 * g.T, rtol=1e-15)


# ---- schedulers -------------------------------------------------------------------------------

BASE = (0.1, 0.02)  # two groups


def _opt():
    p, q = ddl.zeros(2).requires_grad_(), ddl.zeros(3).requires_grad_()
    return SGD([{"params": [p]}, {"params": [q], "lr": BASE[1]}], lr=BASE[0], momentum=0.9)


class Warmup:
    """A callable object: LambdaLR saves its __dict__."""

    def __init__(self, n):
        self.n = n

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.n)


def _cos(base, e, T=4, eta=0.001):
    return eta + (base - eta) * (1 + math.cos(math.pi * e / T)) / 2


SCHEDULERS = {
    "StepLR": (lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
               lambda b, e: b * 0.5 ** (e // 3)),
    "MultiStepLR": (lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5, 8], gamma=0.1),
                    lambda b, e: b * 0.1 ** sum(m <= e for m in [2, 5, 5, 8])),
    "ExponentialLR": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
                      lambda b, e: b * 0.9 ** e),
    "CosineAnnealingLR": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.001),
                          _cos),  # past T_max: back up, period 2 T_max
    "LambdaLR": (lambda o: lr_scheduler.LambdaLR(o, [lambda e: 0.95 ** e, Warmup(4)]),
                 None),
    "LinearLR": (lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0,
                                                 total_iters=4),
                 lambda b, e: b * (0.25 + 0.75 * min(e, 4) / 4)),
}


def _lambda_closed(i, b, e):
    return b * (0.95 ** e if i == 0 else min(1.0, (e + 1) / 4))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_sequence(name):
    make, closed = SCHEDULERS[name]
    opt = _opt()
    sched = make(opt)
    seen = [sched.get_last_lr()]
    for _ in range(10):
        opt.step()
        sched.step()
        seen.append(sched.get_last_lr())
        assert seen[-1] == [g["lr"] for g in opt.param_groups]
    for e, lrs in enumerate(seen):
        for i, (b, lr) in enumerate(zip(BASE, lrs)):
            want = _lambda_closed(i, b, e) if closed is None else closed(b, e)
            assert lr == pytest.approx(want, rel=1e-12, abs=1e-15), (e, i)
    assert sched.last_epoch == 10 and sched.base_lrs == list(BASE)
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_state_dict_round_trip(name):
    make, _ = SCHEDULERS[name]
    opt = _opt()
    sched = make(opt)
    for _ in range(4):
        opt.step()
        sched.step()
    s_sd, o_sd = sched.state_dict(), opt.state_dict()
    assert "optimizer" not in s_sd and s_sd["last_epoch"] == 4
    # PyTorch's resume order: a new scheduler, then its state, then the optimizer's state
    opt2 = _opt()
    sched2 = make(opt2)
    sched2.load_state_dict(s_sd)
    opt2.load_state_dict(o_sd)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(6):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert sched2.get_last_lr() == sched.get_last_lr()


def test_lambda_lr_state_dict_leaves_out_functions():
    opt = _opt()
    w = Warmup(4)
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, w])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [None, {"n": 4}]
    w2 = Warmup(10)
    opt2 = _opt()
    sched2 = lr_scheduler.LambdaLR(opt2, [lambda e: 1.0, w2])
    sched2.load_state_dict(sd)
    assert w2.n == 4 and "lr_lambdas" in sd  # restored into the object; the dict unchanged


def test_scheduler_step_with_epoch_uses_the_closed_form():
    opt = _opt()
    sched = lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    opt.step()
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched.step(7)
    assert sched.get_last_lr() == pytest.approx([b * 0.25 for b in BASE])


def test_scheduler_warns_when_stepped_before_the_optimizer():
    opt = _opt()
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.5)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_scheduler_errors():
    opt = _opt()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="Ending multiplicative factor"):
        lr_scheduler.LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(_opt(), step_size=2, last_epoch=3)


def test_schedulers_chain_on_one_optimizer():
    # warm-up then decay, both multiplicative on the current rate (PyTorch's chainable form)
    opt = _opt()
    s1 = lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2)
    s2 = lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for e in range(1, 5):
        opt.step()
        s1.step()
        s2.step()
        want = BASE[0] * (0.5 + 0.5 * min(e, 2) / 2) * 0.9 ** e
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12)


# ---- gradient clipping ------------------------------------------------------------------------

def _grad_params(rng, dtypes=(ddl.float32, ddl.float64, ddl.float32)):
    ps, gs = [], []
    for shape, dt in zip([(3, 4), (7,), (2, 2)], dtypes):
        p = ddl.zeros(shape, dtype=dt).requires_grad_()
        g = (rng.standard_normal(shape) * 3).astype(dt.numpy)
        p.grad = ddl.tensor(g)
        ps.append(p)
        gs.append(g.astype(np.float64))
    ps.append(ddl.zeros(2).requires_grad_())  # no gradient: ignored
    return ps, gs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_against_numpy(norm_type, rng):
    ps, gs = _grad_params(rng)
    flat = np.concatenate([g.ravel() for g in gs])
    want = np.max(np.abs(flat)) if norm_type == math.inf else \
        np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
    total = nn_utils.clip_grad_norm_(iter(ps), max_norm=1.0, norm_type=norm_type)
    assert total.shape == () and total.dtype is ddl.float64  # a float64 grad is among them
    np.testing.assert_allclose(total.item(), want, rtol=1e-12)
    coef = 1.0 / (want + 1e-6)
    for p, g in zip(ps, gs):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-6)
    assert ps[-1].grad is None


def test_clip_grad_norm_below_max_leaves_grads(rng):
    ps, gs = _grad_params(rng, (ddl.float32,) * 3)
    total = nn_utils.clip_grad_norm_(ps, max_norm=1e6)
    assert total.dtype is ddl.float32
    for p, g in zip(ps, gs):
        np.testing.assert_array_equal(p.grad.numpy(), g.astype(np.float32))
    # a single tensor works; no gradients at all give 0
    assert nn_utils.clip_grad_norm_(ps[0], 1e6).item() == pytest.approx(np.linalg.norm(gs[0]),
                                                                       rel=1e-6)
    assert nn_utils.clip_grad_norm_([ddl.zeros(2)], 1.0).item() == 0.0


def test_clip_grad_norm_noncontiguous_grad(rng):
    p = ddl.zeros(3, 4, dtype=ddl.float64).requires_grad_()
    g = rng.standard_normal((4, 3)) * 5
    p.grad = ddl.tensor(g).T
    total = nn_utils.clip_grad_norm_([p], 0.5)
    np.testing.assert_allclose(total.item(), np.linalg.norm(g), rtol=1e-12)
    np.testing.assert_allclose(p.grad.numpy(), g.T * 0.5 / (np.linalg.norm(g) + 1e-6),
                               rtol=1e-12)


def test_clip_grad_norm_nonfinite(rng):
    ps, _ = _grad_params(rng)
    ps[1].grad.numpy()[3] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        nn_utils.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    total = nn_utils.clip_grad_norm_(ps, 1.0)  # PyTorch: scaled by the NaN norm anyway
    assert math.isnan(total.item()) and np.isnan(ps[0].grad.numpy()).all()
    with pytest.raises(ValueError, match="norm_type"):
        nn_utils.clip_grad_norm_(ps, 1.0, norm_type=-1)


def test_clip_grad_value(rng):
    ps, gs = _grad_params(rng)
    nn_utils.clip_grad_value_(ps, 0.5)
    for p, g in zip(ps, gs):
        np.testing.assert_allclose(p.grad.numpy(), np.clip(g, -0.5, 0.5), rtol=1e-7)


# ---- optional parity with PyTorch ---------------------------------------------------------------


PARITY = [
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", {"momentum": 0.7, "dampening": 0.2, "maximize": True}),
    ("Adam", {"amsgrad": True, "weight_decay": 0.05}),
    ("AdamW", {"betas": (0.8, 0.95), "weight_decay": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    ("RMSprop", {"alpha": 0.9, "maximize": True}),
]


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, kw", PARITY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PARITY)])
def test_parity_with_torch(name, kw, dtype, rng):
    torch = torch_or_skip()
    params = make_params(dtype, rng)
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    ours = make_opt(getattr(ddl.optim, name), params, kw)
    theirs = getattr(torch.optim, name)(
        [{"params": tparams[:2]}, {"params": tparams[2:], "lr": LRS[1]}], lr=LRS[0], **kw)
    for step in range(5):
        grads = set_grads(params, step, rng)
        for tp, g in zip(tparams, grads):
            tp.grad = None if g is None else torch.tensor(g.astype(dtype.numpy))
        ours.step()
        theirs.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-6)
    # the state_dict has PyTorch's keys
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for k in sd["state"]:
        assert set(sd["state"][k]) == set(tsd["state"][k])
    assert set(sd["param_groups"][0]) == set(tsd["param_groups"][0])


def test_scheduler_parity_withtorch_or_skip():
    torch = torch_or_skip()
    T = torch.optim.lr_scheduler
    pairs = [
        (lambda o, m: m.StepLR(o, step_size=3, gamma=0.5)),
        (lambda o, m: m.MultiStepLR(o, milestones=[2, 5, 5, 8], gamma=0.1)),
        (lambda o, m: m.ExponentialLR(o, gamma=0.9)),
        (lambda o, m: m.CosineAnnealingLR(o, T_max=3, eta_min=0.001)),
        (lambda o, m: m.LambdaLR(o, lambda e: 1 / (1 + e))),
        (lambda o, m: m.LinearLR(o, start_factor=0.1, total_iters=6)),
    ]
    for make in pairs:
        opt = _opt()
        top = torch.optim.SGD([{"params": [torch.zeros(2)]},
                               {"params": [torch.zeros(3)], "lr": BASE[1]}], lr=BASE[0])
        s, ts = make(opt, lr_scheduler), make(top, T)
        for _ in range(12):
            opt.step()
            top.step()
            s.step()
            ts.step()
            assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12, abs=0)
        sd, tsd = s.state_dict(), ts.state_dict()
        assert set(sd) == set(tsd), type(s).__name__


@rss_test
def test_c_calls_leak_nothing():
    """Fresh 1 MB tensors through the success and error paths of each binding: a leaked
    reference would keep ~1 MB per call alive."""
    import gc

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def once():
        n = 1 << 18
        p, g = ddl.zeros(n), ddl.ones(n)
        s = ddl.zeros(())
        with ddl.no_grad():
            _C.adam_step([p], [g], [ddl.zeros(n)], [ddl.zeros(n)], [ddl.zeros(n)], [s], 0.1,
                         0.9, 0.999, 1e-8, 0.0, True, False, False)
            _C.rmsprop_step([p], [g], [ddl.zeros(n)], [ddl.zeros(n)], [ddl.zeros(n)], [s], 0.1,
                            0.9, 1e-8, 0.0, 0.9, True, False)
            _C.sgd_step([p], [g], [ddl.zeros(n)], [True], 0.1, 0.9, 0.0, 0.0, False, False)
            _C.scale_([g], 0.5)
            _C.grad_norm([g, None], 2.0)
            with pytest.raises(ValueError):
                _C.adam_step([p], [g], [ddl.zeros(n)], [ddl.zeros(3)], None, [s], 0.1, 0.9,
                             0.999, 1e-8, 0.0, False, False, False)
            with pytest.raises(TypeError):
                _C.sgd_step([p], [g], [np.zeros(n)], [False], 0.1, 0.9, 0.0, 0.0,
                            False, False)

    for _ in range(5):
        once()
    gc.collect()
    before = rss()
    for _ in range(50):
        once()
    gc.collect()
    assert rss() - before < 25 << 20
