"""Adadelta, Adagrad, Adamax, NAdam, RAdam and LBFGS: step-by-step parity with torch.optim
(float32 to 1e-5, float64 to 1e-10) over two parameter groups with a missing gradient,
state_dict round trips with PyTorch's keys, LBFGS's iterates on float64 problems to 1e-8, and
the error paths."""

import numpy as np
import pytest
from _util import torch_or_skip

import ddl
from ddl import optim

SHAPES = [(3, 4), (5,), (2, 3, 2), ()]


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype is ddl.float32 else {"rtol": 1e-10,
                                                                       "atol": 1e-12}


def make_params(dtype, rng):
    return [ddl.tensor(rng.standard_normal(s).astype(dtype.numpy)).requires_grad_()
            for s in SHAPES]


def grads_for(step, rng, dtype):
    # parameter 1 has no gradient on odd steps (PyTorch skips it and its state)
    return [None if (i == 1 and step % 2) else rng.standard_normal(s).astype(dtype.numpy)
            for i, s in enumerate(SHAPES)]


CASES = [
    ("Adadelta", {}),
    ("Adadelta", {"rho": 0.8, "weight_decay": 0.1, "maximize": True, "eps": 1e-4}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.1, "weight_decay": 0.05, "initial_accumulator_value": 0.3}),
    ("Adamax", {}),
    ("Adamax", {"betas": (0.7, 0.9), "weight_decay": 0.02, "maximize": True}),
    ("NAdam", {}),
    ("NAdam", {"weight_decay": 0.1, "momentum_decay": 0.01}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    ("RAdam", {}),
    ("RAdam", {"betas": (0.8, 0.9), "weight_decay": 0.1}),
    ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CASES)]
LRS = (0.05, 0.01)


def _groups(params):
    return [{"params": params[:2]}, {"params": params[2:], "lr": LRS[1]}]


@pytest.mark.parametrize("dtype", [ddl.float32, ddl.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_parity_with_torch(name, kw, dtype, rng):
    torch = torch_or_skip()
    params = make_params(dtype, rng)
    tparams = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in params]
    ours = getattr(optim, name)(_groups(params), lr=LRS[0], **kw)
    theirs = getattr(torch.optim, name)(_groups(tparams), lr=LRS[0], **kw)
    for step in range(12):  # RAdam switches to the rectified update after step 5
        grads = grads_for(step, rng, dtype)
        for p, tp, g in zip(params, tparams, grads):
            p.grad = None if g is None else ddl.tensor(g)
            tp.grad = None if g is None else torch.tensor(g)
        ours.step()
        theirs.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), **tol(dtype))
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for k in sd["state"]:
        assert set(sd["state"][k]) == set(tsd["state"][k])
        for key, v in tsd["state"][k].items():
            np.testing.assert_allclose(np.asarray(sd["state"][k][key]), v.numpy(), **tol(dtype))
    assert set(sd["param_groups"][0]) == set(tsd["param_groups"][0])


@pytest.mark.parametrize("name, kw", CASES[::2], ids=IDS[::2])
def test_state_dict_round_trip(name, kw, rng):
    params = make_params(ddl.float64, rng)
    opt = getattr(optim, name)(_groups(params), lr=LRS[0], **kw)
    for step in range(3):
        for p, g in zip(params, grads_for(step, rng, ddl.float64)):
            p.grad = None if g is None else ddl.tensor(g)
        opt.step()
    clones = [ddl.tensor(p.numpy().copy()).requires_grad_() for p in params]
    opt2 = getattr(optim, name)(_groups(clones), lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == list(LRS)
    for step in range(3, 7):
        grads = grads_for(step, rng, ddl.float64)
        for p, c, g in zip(params, clones, grads):
            p.grad = None if g is None else ddl.tensor(g)
            c.grad = None if g is None else ddl.tensor(g)
        opt.step()
        opt2.step()
        for p, c in zip(params, clones):
            np.testing.assert_array_equal(c.numpy(), p.numpy())


@pytest.mark.parametrize("make, match", [
    (lambda p: optim.Adadelta(p, rho=1.5), "Invalid rho value"),
    (lambda p: optim.Adagrad(p, lr=-1), "Invalid learning rate"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value"),
    (lambda p: optim.Adamax(p, betas=(1.0, 0.9)), "Invalid beta parameter at index 0"),
    (lambda p: optim.NAdam(p, momentum_decay=-1), "Invalid momentum_decay value"),
    (lambda p: optim.RAdam(p, eps=-1), "Invalid epsilon value"),
    (lambda p: optim.LBFGS(p, line_search_fn="armijo"), "line_search_fn"),
])
def test_constructor_errors(make, match, rng):
    with pytest.raises(ValueError, match=match):
        make(make_params(ddl.float32, rng))


def test_c_step_errors_name_the_index(rng):
    p = [ddl.zeros(3, 4), ddl.zeros(5)]
    g = [ddl.zeros(3, 4), ddl.zeros(5)]
    bad = [ddl.zeros(3, 4), ddl.zeros(4)]
    steps = [ddl.zeros(()), ddl.zeros(())]
    with pytest.raises(ValueError, match=r"exp_infs\[1\] has shape \(4,\)"):
        ddl._C.adamax_step(p, g, [ddl.zeros(3, 4), ddl.zeros(5)], bad, steps, 0.1, 0.9, 0.99,
                           1e-8, 0.0, False)
    with pytest.raises(TypeError, match=r"square_avgs\[0\] is float64"):
        ddl._C.adadelta_step(p, g, [ddl.zeros(3, 4, dtype=ddl.float64), ddl.zeros(5)],
                             [ddl.zeros(3, 4), ddl.zeros(5)], steps, 1.0, 0.9, 1e-6, 0.0, False)
    with pytest.raises(ValueError, match=r"mu_products\[0\] must be a one-element"):
        ddl._C.nadam_step(p, g, [ddl.zeros(3, 4), ddl.zeros(5)], [ddl.zeros(3, 4), ddl.zeros(5)],
                          [ddl.zeros(2), ddl.zeros(())], steps, 0.1, 0.9, 0.99, 1e-8, 0.0, 4e-3,
                          False, False)
    # nothing was written on failure: the steps are still 0
    assert [float(s.item()) for s in steps] == [0.0, 0.0]


def test_a_float64_model_trains_with_each_optimizer(rng):
    x = ddl.tensor(rng.standard_normal((32, 4)))
    y = ddl.tensor(rng.standard_normal((32, 1)))
    for name, kw in (("Adadelta", {"lr": 1.0}), ("Adagrad", {"lr": 0.1}),
                     ("Adamax", {"lr": 0.05}), ("NAdam", {"lr": 0.05}), ("RAdam", {"lr": 0.05})):
        model = ddl.nn.Linear(4, 1).double()
        opt = getattr(optim, name)(model.parameters(), **kw)
        first = None
        for _ in range(40):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            first = first if first is not None else float(loss.item())
        assert float(loss.item()) < first, name


# ---- LBFGS ------------------------------------------------------------------------------------

def _rosenbrock(xy):
    x, y = xy[0], xy[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


# (options, outer steps). Without a line search, lr=1 LBFGS on Rosenbrock is chaotic: PyTorch's
# CPU kernels fuse multiply-adds (add_ with alpha, dot) where NumPy rounds twice, and those
# last-bit differences grow to 1e-7 after ~40 iterations; 20 iterations stay within 1e-12.
LBFGS_CASES = [
    ({}, 1),
    ({"line_search_fn": "strong_wolfe"}, 6),
    ({"history_size": 3, "max_iter": 7, "lr": 0.5}, 6),
    ({"history_size": 2, "line_search_fn": "strong_wolfe", "max_iter": 5}, 6),
]


@pytest.mark.parametrize("kw, steps", LBFGS_CASES, ids=[str(i) for i in range(len(LBFGS_CASES))])
def test_lbfgs_reproduces_torch_iterates_on_rosenbrock(kw, steps):
    torch = torch_or_skip()
    start = np.array([-1.5, 2.0])
    ours_p = ddl.tensor(start.copy()).requires_grad_()
    theirs_p = torch.tensor(start.copy(), requires_grad=True)
    ours = optim.LBFGS([ours_p], **kw)
    theirs = torch.optim.LBFGS([theirs_p], **kw)
    evals = {"ours": 0, "theirs": 0}

    def closure_ours():
        ours.zero_grad()
        loss = _rosenbrock(ours_p)
        loss.backward()
        evals["ours"] += 1
        return loss

    def closure_theirs():
        theirs.zero_grad()
        loss = _rosenbrock(theirs_p)
        loss.backward()
        evals["theirs"] += 1
        return loss

    for _ in range(steps):
        lo = ours.step(closure_ours)
        lt = theirs.step(closure_theirs)
        assert abs(float(lo.item()) - float(lt.item())) <= 1e-8 * max(1.0, abs(float(lt.item())))
        np.testing.assert_allclose(ours_p.numpy(), theirs_p.detach().numpy(), rtol=1e-8,
                                   atol=1e-10)
    assert evals["ours"] == evals["theirs"]
    assert ours.state[ours_p]["n_iter"] == theirs.state[theirs_p]["n_iter"]
    assert ours.state[ours_p]["func_evals"] == theirs.state[theirs_p]["func_evals"]


def test_lbfgs_least_squares_two_parameters_matches_torch(rng):
    torch = torch_or_skip()
    A = rng.standard_normal((20, 5))
    b = rng.standard_normal((20, 1))
    w0, c0 = rng.standard_normal((5, 1)), rng.standard_normal((1,))
    ow, oc = ddl.tensor(w0.copy()).requires_grad_(), ddl.tensor(c0.copy()).requires_grad_()
    tw, tc = torch.tensor(w0.copy(), requires_grad=True), torch.tensor(c0.copy(),
                                                                       requires_grad=True)
    ours = optim.LBFGS([ow, oc], history_size=4, max_iter=10, line_search_fn="strong_wolfe")
    theirs = torch.optim.LBFGS([tw, tc], history_size=4, max_iter=10,
                               line_search_fn="strong_wolfe")
    oA, ob, tA, tb = ddl.tensor(A), ddl.tensor(b), torch.tensor(A), torch.tensor(b)

    def co():
        ours.zero_grad()
        loss = (((oA @ ow + oc - ob) ** 2).mean()) + 0.1 * (ow ** 4).sum()
        loss.backward()
        return loss

    def ct():
        theirs.zero_grad()
        loss = (((tA @ tw + tc - tb) ** 2).mean()) + 0.1 * (tw ** 4).sum()
        loss.backward()
        return loss

    for _ in range(3):
        ours.step(co)
        theirs.step(ct)
        np.testing.assert_allclose(ow.numpy(), tw.detach().numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(oc.numpy(), tc.detach().numpy(), rtol=1e-8, atol=1e-10)


def test_lbfgs_converges_withouttorch_or_skip():
    p = ddl.tensor(np.array([-1.2, 1.0])).requires_grad_()
    opt = optim.LBFGS([p], line_search_fn="strong_wolfe", max_iter=100)

    def closure():
        opt.zero_grad()
        loss = _rosenbrock(p)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(p.numpy(), [1.0, 1.0], atol=1e-4)  # from (-1.2, 1)


def test_lbfgs_errors(rng):
    p = make_params(ddl.float32, rng)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.LBFGS([{"params": p[:1]}, {"params": p[1:]}])
    opt = optim.LBFGS(p[:1])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="one dtype"):
        optim.LBFGS([p[0], ddl.zeros(2, dtype=ddl.float64).requires_grad_()])
