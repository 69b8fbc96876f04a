"""Finite-difference gradient check for the float32 layer ops (ddl.nn, csrc/autograd/grad_nn.c, grad_loss.c, grad_rnn.c).

The layer kernels run in float32 only, so the numeric side cannot move to float64 as
tests/test_autograd.py does. Instead: loss = sum_k sum(out_k * R_k) for fixed random
projections R_k (float32 values), evaluated in float64 arithmetic from the float32 outputs,
with central differences of a fairly large step (eps ~ 1e-2) on well-scaled inputs. Each
perturbed element is changed in place through the tensor's zero-copy NumPy view, and the
difference quotient divides by the step actually stored (x + eps rounded to float32).
"""

import numpy as np

import ddl


def _flat_outputs(out):
    """The tensors of a nested tuple/list output, in order (RNN modules return (y, (h, c)))."""
    if isinstance(out, ddl.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        res = []
        for o in out:
            res.extend(_flat_outputs(o))
        return res
    if out is None:
        return []
    raise TypeError(f"unexpected output of type {type(out).__name__}")


def projected_loss(fn, rs=None, R=None):
    """Run fn(); return (outputs, projections R, loss tensor sum_k sum(out_k * R_k))."""
    outs = _flat_outputs(fn())
    if R is None:
        R = [rs.standard_normal(o.shape).astype(np.float32) for o in outs]
    loss = None
    for o, r in zip(outs, R):
        term = (o * ddl.tensor(r, dtype=o.dtype)).sum()
        loss = term if loss is None else loss + term
    return outs, R, loss


def _numeric_loss(fn, R):
    with ddl.no_grad():
        outs = _flat_outputs(fn())
    return sum(
        float(np.sum(o.numpy().astype(np.float64) * r.astype(np.float64))) for o, r in zip(outs, R)
    )


def gradcheck(fn, wrt, *, eps=1e-2, rtol=1e-2, atol=1e-3, samples=24, seed=0, names=None):
    """Assert that backward() of sum(fn() * R) gives, for each tensor in `wrt` (leaves that
    require grad: inputs or module parameters), the central-difference gradient on up to
    `samples` sampled elements. fn takes no arguments and reads the tensors of `wrt` (a
    closure); it must be deterministic (reseed ddl.manual_seed inside fn for dropout).
    Returns the number of elements compared."""
    wrt = list(wrt)
    names = list(names) if names is not None else [f"wrt[{i}]" for i in range(len(wrt))]
    for t in wrt:
        assert isinstance(t, ddl.Tensor) and t.requires_grad and t.is_leaf, t
        t.grad = None
    rs = np.random.RandomState(seed)
    outs, R, loss = projected_loss(fn, rs)
    assert any(o.requires_grad for o in outs), "no output requires grad"
    loss.backward()
    checked = 0
    for t, name in zip(wrt, names):
        g = t.grad
        assert g is not None, f"{name} got no gradient"
        assert tuple(g.shape) == tuple(t.shape), (name, g.shape, t.shape)
        assert g.dtype is t.dtype, (name, g.dtype, t.dtype)
        analytic = g.numpy().astype(np.float64).reshape(-1)
        view = t.detach().numpy().reshape(-1)  # zero-copy: writes reach t
        n = view.size
        picks = np.arange(n) if n <= samples else rs.choice(n, samples, replace=False)
        numeric = np.empty(len(picks))
        for j, i in enumerate(picks):
            orig = view[i]
            view[i] = orig + view.dtype.type(eps)
            hi, xp = _numeric_loss(fn, R), float(view[i])
            view[i] = orig - view.dtype.type(eps)
            lo, xm = _numeric_loss(fn, R), float(view[i])
            view[i] = orig
            numeric[j] = (hi - lo) / (xp - xm)
        got = analytic[picks]
        bad = np.abs(got - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            k = int(np.argmax(bad))
            raise AssertionError(
                f"gradient of {name} (shape {tuple(t.shape)}) is wrong at flat index "
                f"{int(picks[k])}: backward {got[k]:.6g}, finite difference {numeric[k]:.6g} "
                f"({int(bad.sum())} of {len(picks)} sampled elements off)"
            )
        checked += len(picks)
    return checked


def leaf(a):
    """A float32 leaf tensor that requires grad, from an array-like."""
    return ddl.tensor(np.asarray(a, dtype=np.float32), requires_grad=True)


def away_from_zero(rng, shape, margin=0.1):
    """N(0, 1) values with |x| >= margin (no kinks for relu, leaky_relu, l1 under eps)."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * (margin + np.abs(x)), x)


def distinct(rng, shape):
    """Values in [-3, 3] in random order, every pair at least 3 / numel apart (max-pool ties
    cannot appear under a perturbation of eps < 3 / numel; use eps 1e-3 for up to ~1000)."""
    n = int(np.prod(shape))
    step = 6.0 / max(n - 1, 1)
    vals = np.linspace(-3.0, 3.0, n) + rng.uniform(-step / 4, step / 4, n)
    return rng.permutation(vals).reshape(shape)
