"""Backward of every differentiable op against central finite differences.

Each case builds leaf inputs (float64 unless said otherwise; contiguous, transposed or a
stepped slice of a larger buffer), runs loss = sum(fn(*inputs) * R) for a fixed random R,
and compares every requiring-grad input's .grad with central differences of that loss taken
in float64 on a few dozen sampled elements. Inputs are kept away from kinks: abs/relu/sign
away from 0, max/min/maximum/minimum without ties, log/sqrt/pow on positive bases.
"""
import zlib

import numpy as np
import pytest

import ddl

F32, F64 = ddl.float32, ddl.float64


# ---- the checker ----------------------------------------------------------------------------


def _as_f64_input(t):
    """What the numeric reference runs on: float tensors as float64 copies (so float32 cases
    are checked against an exact-ish reference), anything else unchanged."""
    if isinstance(t, ddl.Tensor) and t.dtype.is_floating_point:
        return t.detach().numpy().astype(np.float64)
    return t


def check_grad(fn, *inputs, rtol=1e-6, atol=1e-7, eps=1e-6, samples=30, seed=0):
    """Assert d(sum(fn(*inputs) * R))/d(input) from backward() matches central differences,
    for every input that requires grad. The numeric side is evaluated in float64."""
    for t in inputs:
        if isinstance(t, ddl.Tensor) and t.requires_grad:
            t.grad = None
    out = fn(*inputs)
    assert out.requires_grad, "the output does not require grad"
    assert out.grad_fn is not None and not out.is_leaf
    rs = np.random.RandomState(seed)
    R = rs.standard_normal(out.shape)
    loss = (out * ddl.tensor(R, dtype=out.dtype)).sum()
    assert loss.shape == ()
    loss.backward()

    base = [_as_f64_input(t) for t in inputs]

    def numeric_loss(arrays):
        args = [ddl.tensor(a) if isinstance(a, np.ndarray) else a for a in arrays]
        with ddl.no_grad():
            o = fn(*args)
        return float(np.sum(o.numpy().astype(np.float64) * R))

    n_checked = 0
    for i, t in enumerate(inputs):
        if not (isinstance(t, ddl.Tensor) and t.requires_grad):
            continue
        g = t.grad
        assert g is not None, f"input {i} got no gradient"
        assert g.shape == t.shape, (g.shape, t.shape)
        assert g.dtype is t.dtype, (g.dtype, t.dtype)
        analytic = g.numpy().astype(np.float64).reshape(-1)
        n = base[i].size
        idx = np.arange(n) if n <= samples else rs.choice(n, samples, replace=False)
        numeric = np.empty(len(idx))
        for j, k in enumerate(idx):
            arrays = list(base)
            plus, minus = base[i].copy(), base[i].copy()
            plus.reshape(-1)[k] += eps
            minus.reshape(-1)[k] -= eps
            arrays[i] = plus
            lp = numeric_loss(arrays)
            arrays[i] = minus
            lm = numeric_loss(arrays)
            numeric[j] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(analytic[idx], numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")
        n_checked += 1
    assert n_checked, "no input requires grad"


# ---- inputs ---------------------------------------------------------------------------------


def _values(kind, shape, rs):
    n = int(np.prod(shape, dtype=np.int64))
    if kind == "u":  # anywhere in [-2, 2]
        v = rs.uniform(-2, 2, n)
    elif kind == "pos":  # log, sqrt, pow bases
        v = rs.uniform(0.5, 2, n)
    elif kind == "nz":  # away from 0: abs, relu, sign, divisors, prod
        v = rs.choice([-1.0, 1.0], n) * rs.uniform(0.5, 1.5, n)
    elif kind == "distinct":  # no ties within any reduction: shuffled, 0.25 apart
        v = rs.permutation(n) * 0.25 - n * 0.125 + rs.uniform(-0.05, 0.05, n)
    elif kind == "ga":  # integers +- 0.1 ...
        v = rs.randint(-3, 4, n) + rs.uniform(-0.1, 0.1, n)
    elif kind == "gb":  # ... against half-integers +- 0.1: maximum/minimum never tie
        v = rs.randint(-3, 3, n) + 0.5 + rs.uniform(-0.1, 0.1, n)
    else:
        raise AssertionError(kind)
    return v.reshape(shape)


def mk(shape, kind="u", layout="c", dtype=F64, grad=True):
    """A builder (rs -> leaf tensor). layout: c contiguous, t all dims reversed in memory,
    s a stepped slice at an offset in a larger buffer."""

    def build(rs):
        vals = _values(kind, tuple(shape), rs)
        nd = len(shape)
        if layout == "c":
            t = ddl.tensor(vals, dtype=dtype)
        elif layout == "t":
            assert nd >= 2
            t = ddl.tensor(np.ascontiguousarray(vals.transpose()), dtype=dtype)
            t = t.permute(*reversed(range(nd)))
        elif layout == "s":
            big = np.zeros([2 * s + 1 for s in shape])
            sl = tuple(slice(1, None, 2) for _ in shape)
            big[sl] = vals
            t = ddl.tensor(big, dtype=dtype)[sl]
        else:
            raise AssertionError(layout)
        assert t.shape == tuple(shape)
        if layout != "c":
            assert not t.is_contiguous()
        np.testing.assert_array_equal(t.numpy(), vals.astype(dtype.numpy))
        assert t.is_leaf
        return t.requires_grad_(grad)

    return build


def const(shape, kind="u"):
    return mk(shape, kind, grad=False)


def _run(case_id, fn, builders, **tol):
    rs = np.random.RandomState(zlib.crc32(case_id.encode()))
    inputs = [b(rs) for b in builders]
    check_grad(fn, *inputs, **tol)


def _cases(table):
    return pytest.mark.parametrize("fn,builders", [c[1:] for c in table],
                                   ids=[c[0] for c in table])


# ---- binary ops, broadcasting, scalars ------------------------------------------------------

BINARY = [
    ("add", lambda a, b: a + b, [mk((3, 4)), mk((3, 4))]),
    ("add_bcast_lead", lambda a, b: a + b, [mk((4,)), mk((2, 3, 4))]),
    ("add_bcast_noncontig", lambda a, b: a + b, [mk((2, 3, 4), layout="t"), mk((4,), layout="s")]),
    ("add_fn", lambda a, b: ddl.add(a, b), [mk((3, 1)), mk((1, 4))]),
    ("add_alpha", lambda a, b: a.add(b, alpha=2), [mk((3, 4)), mk((3, 4))]),
    ("sub", lambda a, b: a - b, [mk((3, 4)), mk((3, 4), layout="t")]),
    ("sub_bcast", lambda a, b: a - b, [mk((3, 1)), mk((1, 4))]),
    ("sub_alpha", lambda a, b: a.sub(b, alpha=3), [mk((2, 3)), mk((3,))]),
    ("mul", lambda a, b: a * b, [mk((3, 4)), mk((3, 4))]),
    ("mul_bcast", lambda a, b: a * b, [mk((3, 1)), mk((1, 4))]),
    ("mul_bcast_lead", lambda a, b: a * b, [mk((2, 3, 4)), mk((4,))]),
    ("mul_noncontig", lambda a, b: a * b, [mk((4, 3), layout="s"), mk((4, 3), layout="t")]),
    ("mul_one_const", lambda a, b: a * b, [mk((3, 4)), const((3, 4))]),
    ("mul_const_first", lambda a, b: a * b, [const((3, 1)), mk((1, 4))]),
    ("div", lambda a, b: a / b, [mk((3, 4)), mk((3, 4), "nz")]),
    ("div_bcast", lambda a, b: a / b, [mk((3, 1)), mk((3, 4), "nz")]),
    ("div_bcast2", lambda a, b: a / b, [mk((2, 3, 4), layout="s"), mk((1, 4), "nz")]),
    ("pow", lambda a, b: a ** b, [mk((3, 4), "pos"), mk((3, 4))]),
    ("pow_bcast", lambda a, b: a ** b, [mk((3, 1), "pos"), mk((1, 4))]),
    ("pow_fn_noncontig", lambda a, b: ddl.pow(a, b), [mk((3, 4), "pos", "t"), mk((4,))]),
    ("maximum", lambda a, b: ddl.maximum(a, b), [mk((3, 4), "ga"), mk((3, 4), "gb")]),
    ("maximum_bcast", lambda a, b: a.maximum(b), [mk((3, 1), "ga"), mk((1, 4), "gb")]),
    ("maximum_lead", lambda a, b: ddl.maximum(a, b), [mk((4,), "gb"), mk((2, 3, 4), "ga")]),
    ("minimum", lambda a, b: ddl.minimum(a, b), [mk((3, 4), "ga"), mk((3, 4), "gb", "t")]),
    ("minimum_bcast", lambda a, b: a.minimum(b), [mk((3, 1), "gb"), mk((1, 4), "ga")]),
    ("max_of_tensor", lambda a, b: a.max(b), [mk((3, 4), "ga"), mk((4,), "gb")]),
    ("min_of_tensor", lambda a, b: a.min(b), [mk((3, 4), "gb"), mk((3, 1), "ga")]),
    # 0-d tensors on either side
    ("scalar_tensor_right", lambda a, s: a * s, [mk((3, 4)), mk(())]),
    ("scalar_tensor_left", lambda s, a: s - a, [mk(()), mk((3, 4))]),
    ("scalar_tensor_div", lambda s, a: s / a, [mk(()), mk((2, 3), "nz")]),
    ("scalar_tensor_pow", lambda a, s: a ** s, [mk((2, 3), "pos"), mk(())]),
    ("scalar_tensor_both", lambda s, t: s * t + t, [mk(()), mk(())]),
    # one tensor in both operands
    ("same_tensor", lambda a: a * a + a / (a * a + 1.0) - a, [mk((3, 4))]),
]

SCALAR = [
    ("add_s", lambda a: a + 2.5, [mk((3, 4))]),
    ("radd_s", lambda a: 2.5 + a, [mk((3, 4), layout="t")]),
    ("sub_s", lambda a: a - 2, [mk((3, 4))]),
    ("rsub_s", lambda a: 2 - a, [mk((3, 4))]),
    ("mul_s", lambda a: a * 3, [mk((3, 4), layout="s")]),
    ("rmul_s", lambda a: -1.5 * a, [mk((3, 4))]),
    ("div_s", lambda a: a / 3.0, [mk((3, 4))]),
    ("rdiv_s", lambda a: 1 / a, [mk((3, 4), "nz")]),
    ("rdiv_s2", lambda a: 2.5 / a, [mk((3, 4), "nz", "t")]),
    ("pow_s2", lambda a: a ** 2, [mk((3, 4))]),
    ("pow_s3_int", lambda a: a ** 3, [mk((3, 4))]),
    ("pow_half", lambda a: a ** 0.5, [mk((3, 4), "pos")]),
    ("pow_neg", lambda a: a ** -1.5, [mk((3, 4), "pos")]),
    ("rpow_s", lambda a: 2 ** a, [mk((3, 4))]),
    ("rpow_s_float", lambda a: 0.5 ** a, [mk((3, 4), layout="s")]),
    ("maximum_s", lambda a: ddl.maximum(a, 0.0), [mk((3, 4), "gb")]),
    ("rmaximum_s", lambda a: ddl.maximum(0.0, a), [mk((3, 4), "gb")]),
    ("minimum_s", lambda a: ddl.minimum(a, 0.25), [mk((3, 4), "ga")]),
    ("rminimum_s", lambda a: ddl.minimum(0.25, a), [mk((3, 4), "ga")]),
    ("chain_s", lambda a: (3 - a) * 2 / (a * a + 1) ** 0.5, [mk((3, 4))]),
]


@_cases(BINARY + SCALAR)
def test_binary_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders)


# ---- unary ops ------------------------------------------------------------------------------

UNARY = [
    ("neg", lambda a: -a, [mk((3, 4))]),
    ("neg_fn", lambda a: ddl.neg(a), [mk((3, 4), layout="t")]),
    ("exp", lambda a: a.exp(), [mk((3, 4))]),
    ("exp_noncontig", lambda a: ddl.exp(a), [mk((3, 4), layout="s")]),
    ("log", lambda a: a.log(), [mk((3, 4), "pos")]),
    ("log_noncontig", lambda a: ddl.log(a), [mk((3, 4), "pos", "t")]),
    ("sqrt", lambda a: a.sqrt(), [mk((3, 4), "pos")]),
    ("sqrt_noncontig", lambda a: ddl.sqrt(a), [mk((4, 3), "pos", "s")]),
    ("abs", lambda a: a.abs(), [mk((3, 4), "nz")]),
    ("abs_builtin", lambda a: abs(a), [mk((3, 4), "nz", "t")]),
    ("tanh", lambda a: a.tanh(), [mk((3, 4))]),
    ("tanh_noncontig", lambda a: ddl.tanh(a), [mk((3, 4), layout="s")]),
    ("sigmoid", lambda a: a.sigmoid(), [mk((3, 4))]),
    ("sigmoid_noncontig", lambda a: ddl.sigmoid(a), [mk((3, 4), layout="t")]),
    ("relu", lambda a: a.relu(), [mk((3, 4), "nz")]),
    ("relu_noncontig", lambda a: ddl.relu(a), [mk((3, 4), "nz", "s")]),
    ("sign", lambda a: a.sign(), [mk((3, 4), "nz")]),  # zero gradient
    ("sign_times", lambda a: ddl.sign(a) * a * a, [mk((3, 4), "nz")]),
    ("abs_0d", lambda a: a.abs(), [mk((), "nz")]),
    ("chain", lambda a: (a.tanh() * a.sigmoid() + a.exp()).abs().sqrt().log(), [mk((3, 4))]),
]


@_cases(UNARY)
def test_unary_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders)


# ---- reductions -----------------------------------------------------------------------------

RED_DIMS = [None, 1, -1, (0, 2), (-1, -3), (0, 1, 2)]
RED_OPS = {
    "sum": ("u", lambda a, d, k: a.sum() if d is None and not k else a.sum(d, keepdim=k)),
    "mean": ("u", lambda a, d, k: a.mean(d, keepdim=k)),
    "amax": ("distinct", lambda a, d, k: a.amax(d, keepdim=k)),
    "amin": ("distinct", lambda a, d, k: a.amin(d, keepdim=k)),
    "prod": ("nz", lambda a, d, k: a.prod(d, keepdim=k)),
    "var0": ("u", lambda a, d, k: a.var(d, keepdim=k, correction=0)),
    "var1": ("u", lambda a, d, k: a.var(d, keepdim=k, correction=1)),
    "std0": ("u", lambda a, d, k: a.std(d, keepdim=k, correction=0)),
    "std1": ("u", lambda a, d, k: a.std(d, keepdim=k, unbiased=True)),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dims", RED_DIMS, ids=str)
@pytest.mark.parametrize("op", list(RED_OPS))
def test_reduce_grad(op, dims, keepdim):
    kind, f = RED_OPS[op]
    rs = np.random.RandomState(zlib.crc32(f"{op}{dims}{keepdim}".encode()))
    x = mk((3, 4, 5), kind)(rs)
    check_grad(lambda a: f(a, dims, keepdim), x)


REDUCE_MORE = [
    ("sum_noncontig", lambda a: a.sum(1), [mk((3, 4, 5), layout="t")]),
    ("mean_sliced", lambda a: a.mean((0, -1), keepdim=True), [mk((3, 4, 5), layout="s")]),
    ("max_dim_values", lambda a: a.max(dim=1).values, [mk((3, 4, 5), "distinct")]),
    ("min_dim_keepdim", lambda a: a.min(-1, keepdim=True)[0], [mk((3, 4, 5), "distinct", "t")]),
    ("max_all", lambda a: a.max(), [mk((3, 4), "distinct")]),
    ("min_all_fn", lambda a: ddl.min(a), [mk((3, 4), "distinct", "s")]),
    ("prod_all", lambda a: a.prod(), [mk((3, 4), "nz")]),
    ("var_default", lambda a: a.var(), [mk((3, 4), layout="t")]),
    ("std_fn", lambda a: ddl.std(a, 0), [mk((3, 4), layout="s")]),
    ("var_ddof", lambda a: a.var(axis=1, ddof=0), [mk((3, 4))]),
    ("sum_axis_keepdims", lambda a: a.sum(axis=(0, 1), keepdims=True), [mk((3, 4, 2))]),
    ("sum_0d", lambda a: a.sum(), [mk(())]),
    ("mean_1d", lambda a: a.mean(0), [mk((5,))]),
    ("softmax_xent",  # a real composite: log-softmax cross entropy from primitives
     lambda z: (z - z.amax(1, keepdim=True)).exp().sum(1).log().mean()
     - (z - z.amax(1, keepdim=True))[:, 2].mean(),
     [mk((4, 5), "distinct")]),
    ("layernorm_like",
     lambda x: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, correction=0)
                                                 + 1e-5).sqrt(),
     [mk((3, 6))]),
]


@_cases(REDUCE_MORE)
def test_reduce_more_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders)


# ---- matmul ---------------------------------------------------------------------------------

MATMUL = [
    ("k@k", [mk((5,)), mk((5,))]),
    ("mk@k", [mk((3, 5)), mk((5,))]),
    ("k@kn", [mk((5,)), mk((5, 4))]),
    ("mk@kn", [mk((3, 5)), mk((5, 4))]),
    ("mk@kn_transposed", [mk((3, 5), layout="t"), mk((5, 4), layout="t")]),
    ("mk@kn_sliced", [mk((3, 5), layout="s"), mk((5, 4), layout="s")]),
    ("bmk@kn", [mk((2, 3, 5)), mk((5, 4))]),
    ("bmk@bkn", [mk((2, 3, 5)), mk((2, 5, 4), layout="t")]),
    ("mk@bkn", [mk((3, 5)), mk((2, 5, 4))]),
    ("k@bkn", [mk((5,)), mk((2, 5, 4))]),
    ("bmk@k", [mk((2, 3, 5)), mk((5,))]),
    ("b1mk@ckn", [mk((2, 1, 3, 5)), mk((3, 5, 4))]),
    ("b1mk@c1kn", [mk((2, 1, 3, 4)), mk((1, 3, 4, 2))]),
    ("mk@kn_const_b", [mk((3, 5)), const((5, 4))]),
    ("mk@kn_const_a", [const((3, 5)), mk((5, 4))]),
]


@pytest.mark.parametrize("builders", [c[1] for c in MATMUL], ids=[c[0] for c in MATMUL])
@pytest.mark.parametrize("form", ["op", "fn"])
def test_matmul_grad(request, builders, form):
    f = (lambda a, b: a @ b) if form == "op" else (lambda a, b: ddl.matmul(a, b))
    _run(request.node.callspec.id, f, builders)


def test_mlp_grad():
    rs = np.random.RandomState(7)
    x = mk((4, 3), grad=False)(rs)
    w1, b1, w2 = mk((3, 5))(rs), mk((5,))(rs), mk((5, 2))(rs)
    check_grad(lambda x, w1, b1, w2: ((x @ w1 + b1).tanh() @ w2).sigmoid().mean(0),
               x, w1, b1, w2)


# ---- views, shape ops, indexing -------------------------------------------------------------

VIEWS = [
    ("view", lambda a: a.view(6, 4) * a.view(6, 4).exp(), [mk((2, 3, 4))]),
    ("view_neg1", lambda a: a.view(-1)[3:] * 2, [mk((2, 3, 4))]),
    ("reshape_noncontig", lambda a: a.reshape(4, 6).exp(), [mk((2, 3, 4), layout="t")]),
    ("reshape_fn", lambda a: ddl.reshape(a, (3, 8)).tanh(), [mk((2, 3, 4), layout="s")]),
    ("view_as", lambda a, b: a.view_as(b) * b, [mk((2, 6)), mk((3, 4))]),
    ("reshape_as", lambda a, b: a.reshape_as(b) * b, [mk((6, 2), layout="t"), mk((3, 4))]),
    ("expand", lambda a: a.expand(2, 3, 4).exp(), [mk((3, 1))]),
    ("expand_neg1", lambda a: a.expand(3, -1) * 1.5, [mk((1, 4))]),
    ("expand_as", lambda a, b: a.expand_as(b) * b, [mk((4,)), mk((3, 4))]),
    ("expand_noncontig", lambda a: a[:, :1].expand(3, 5).tanh(), [mk((3, 4), layout="t")]),
    ("permute", lambda a: a.permute(2, 0, 1).exp() * ddl.arange(3.0, dtype=F64),
     [mk((2, 3, 4))]),
    ("permute_neg", lambda a: a.permute(-1, 0, -2).reshape(4, 6).tanh(), [mk((2, 3, 4))]),
    ("permute_fn", lambda a: ddl.permute(a, (1, 0)) @ a, [mk((3, 3))]),
    ("transpose", lambda a: a.transpose(0, 2) * a.transpose(0, 2).sigmoid(), [mk((2, 3, 4))]),
    ("transpose_neg", lambda a: a.transpose(-1, -2).exp(), [mk((2, 3, 4), layout="s")]),
    ("transpose_fn", lambda a: ddl.transpose(a, 0, 1).exp(), [mk((2, 3))]),
    ("t", lambda a: a.t() @ a, [mk((3, 2))]),
    ("T", lambda a: a.T.exp() * ddl.arange(3.0, dtype=F64), [mk((3, 2))]),
    ("mT", lambda a: a.mT @ a, [mk((2, 3, 2))]),
    ("squeeze_dim", lambda a: a.squeeze(1).exp(), [mk((3, 1, 4))]),
    ("squeeze_all", lambda a: a.squeeze().exp() * ddl.arange(4.0, dtype=F64), [mk((1, 3, 1, 4))]),
    ("squeeze_fn", lambda a: ddl.squeeze(a, -1).exp(), [mk((3, 1))]),
    ("unsqueeze", lambda a: a.unsqueeze(0) * a.unsqueeze(1), [mk((3,))]),
    ("unsqueeze_neg", lambda a: ddl.unsqueeze(a, -1).exp() * a.unsqueeze(-2), [mk((3,))]),
    ("flatten", lambda a: a.flatten().exp() * ddl.arange(24.0, dtype=F64), [mk((2, 3, 4))]),
    ("flatten_1", lambda a: a.flatten(1).tanh(), [mk((2, 3, 4), layout="t")]),
    ("flatten_01", lambda a: ddl.flatten(a, 0, 1).exp(), [mk((2, 3, 4))]),
    # basic indexing
    ("index_int", lambda a: a[1].exp(), [mk((3, 4))]),
    ("index_neg_int", lambda a: a[-1] * a[0], [mk((3, 4))]),
    ("index_slice", lambda a: a[:, 1:3].exp(), [mk((3, 4))]),
    ("index_step", lambda a: a[::2].exp(), [mk((5, 3))]),
    ("index_none", lambda a: a[None, 0].exp(), [mk((3, 4))]),
    ("index_ellipsis", lambda a: a[..., 1].exp(), [mk((2, 3, 4))]),
    ("index_chain", lambda a: a[1:, None, ::2][0][:, 1].exp(), [mk((3, 4, 5))]),
    ("index_chain2", lambda a: a[:, 1:3][::2] * a[0, :2], [mk((4, 4))]),
    ("index_noncontig", lambda a: a[1][1:3].exp() + a[:, 0].sum(), [mk((3, 4), layout="t")]),
    ("index_sliced_input", lambda a: a[1:, ::2].exp(), [mk((3, 5), layout="s")]),
    ("index_overlap", lambda a: a[1:] * a[:-1], [mk((6,))]),  # one leaf read by two views
    ("iterate", lambda a: sum(r * (i + 1) for i, r in enumerate(a)), [mk((3, 4))]),
]


@_cases(VIEWS)
def test_view_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders)


# ---- dtype casts ----------------------------------------------------------------------------


def test_cast_float32_to_float64_in_middle():
    rs = np.random.RandomState(3)
    x = mk((3, 4), dtype=F32)(rs)
    w = mk((3, 4))(rs)  # float64

    def f(x, w):
        return ((x * 0.5).to(F64) * w).exp()  # float32 -> float64 in the middle of the graph

    y = (x * 0.5).to(F64)
    assert y.dtype is F64 and y.grad_fn == "ToCopyBackward"

    check_grad(f, x, w, rtol=1e-5, atol=1e-6)  # x's gradient is float32
    assert x.grad.dtype is F32 and w.grad.dtype is F64


def test_cast_roundtrip_and_methods():
    rs = np.random.RandomState(4)
    x = mk((3, 4))(rs)

    def f(x):
        return x.float().tanh().double() * x.double() + x.to("float32").to(ddl.float64)

    # float32 rounding inside: a wider step keeps the numeric side above the rounding noise
    check_grad(f, x, rtol=1e-3, atol=1e-4, eps=1e-3)


def test_reduce_with_dtype_casts():
    rs = np.random.RandomState(5)
    x = mk((3, 4))(rs)
    check_grad(lambda a: a.sum(1, dtype=ddl.float32).double() + a.mean(0, dtype=F64).sum(), x,
               rtol=1e-3, atol=1e-4, eps=1e-3)
    assert x.grad.dtype is F64


def test_cast_to_same_dtype_is_identity():
    x = ddl.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    assert x.to(F64) is x  # no node needed
    y = x.double() * 3
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


# ---- float32 ----------------------------------------------------------------------------

FLOAT32 = [
    ("mul_bcast", lambda a, b: a * b, [mk((3, 1), dtype=F32), mk((1, 4), dtype=F32)]),
    ("div", lambda a, b: a / b, [mk((3, 4), dtype=F32), mk((4,), "nz", dtype=F32)]),
    ("pow", lambda a, b: a ** b, [mk((3, 4), "pos", dtype=F32), mk((3, 4), dtype=F32)]),
    ("rsub_rdiv", lambda a: (2 - a) + 1 / a, [mk((3, 4), "nz", "t", F32)]),
    ("unary_chain", lambda a: (a.tanh() + a.sigmoid() * a.exp()).abs().sqrt(),
     [mk((3, 4), dtype=F32)]),
    ("relu_log", lambda a: a.relu().maximum(ddl.tensor(0.25)) .log(),
     [mk((3, 4), "nz", "s", F32)]),
    ("var_std", lambda a: a.var(1) + a.std(0, keepdim=True).sum(), [mk((3, 4), dtype=F32)]),
    ("mean_max", lambda a: a.mean(-1) * a.amax(-1), [mk((3, 4), "distinct", dtype=F32)]),
    ("matmul", lambda a, b: a @ b, [mk((2, 3, 5), dtype=F32), mk((5, 4), layout="t", dtype=F32)]),
    ("views", lambda a: a.permute(1, 0)[1:, None].reshape(-1).exp(), [mk((3, 4), dtype=F32)]),
]


@_cases(FLOAT32)
def test_float32_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders, rtol=1e-4, atol=1e-4, eps=1e-6)


# ---- the checker itself ---------------------------------------------------------------------


def test_check_grad_catches_a_wrong_gradient():
    # x * x.detach() has analytic gradient x (the detached factor is a constant to backward)
    # but numeric gradient 2x: the checker must notice
    x = ddl.tensor(np.linspace(0.5, 1.5, 6), requires_grad=True)
    with pytest.raises(AssertionError):
        check_grad(lambda a: a * a.detach(), x)


def test_check_grad_requires_a_graph():
    x = ddl.tensor(np.ones(3))  # does not require grad
    with pytest.raises(AssertionError):
        check_grad(lambda a: a * 2, x)


# ---- values where a naive formula breaks ------------------------------------------------------


@pytest.mark.parametrize("dims,keepdim", [(None, False), (1, False), (0, True), ((0, 1), True)])
def test_prod_grad_with_zeros(dims, keepdim):
    # prod is a polynomial: smooth at 0, so central differences hold there. Rows with no,
    # one and two zeros: d/da_i is the product of the others, never out / a_i = 0 / 0
    vals = np.array([[1.5, -0.5, 2.0, 0.8],
                     [1.2, 0.0, -1.1, 0.9],
                     [0.0, 1.3, 0.0, -0.7]])
    x = ddl.tensor(vals, requires_grad=True)
    check_grad(lambda a: a.prod(dims, keepdim=keepdim), x)
    assert np.isfinite(x.grad.numpy()).all()
    if dims == 1:
        np.testing.assert_allclose(x.grad.numpy()[1] != 0, [False, True, False, False])
        np.testing.assert_array_equal(x.grad.numpy()[2], 0.0)


def test_prod_grad_with_zeros_float32():
    x = ddl.tensor([[1.0, 0.0, 3.0], [2.0, 5.0, 4.0]], requires_grad=True)
    x.prod(0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0, 5.0, 4.0], [1.0, 0.0, 3.0]])
    assert x.grad.dtype is F32


def test_pow_grad_at_zero():
    # d/dx x**0 = 0 everywhere (PyTorch too), not 0 * 0**-1 = NaN at x = 0
    x = ddl.tensor([0.0, 1.5, -2.0], dtype=F64, requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])
    # a tensor exponent that is 0 in places
    x.grad = None
    e = ddl.tensor([0.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    (x ** e).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 3.0, 12.0])
    # d/de 0**e = 0 for e >= 0 (0 * log 0 would be NaN); elsewhere x**e log x
    np.testing.assert_allclose(e.grad.numpy(), [0.0, 1.5 ** 2 * np.log(1.5), np.nan])
    x2 = ddl.tensor([0.0, 0.0, 2.0], dtype=F64, requires_grad=True)
    e2 = ddl.tensor([2.0, 0.0, 0.5], dtype=F64, requires_grad=True)
    (x2 ** e2).sum().backward()
    np.testing.assert_allclose(e2.grad.numpy(), [0.0, 0.0, 2 ** 0.5 * np.log(2)], rtol=1e-15)
    np.testing.assert_allclose(x2.grad.numpy(), [0.0, 0.0, 0.5 * 2 ** -0.5], rtol=1e-15)
    # the scalar-exponent fast path still handles x ** 2 at 0
    x3 = ddl.tensor([0.0, -1.0], dtype=F64, requires_grad=True)
    (x3 ** 2).sum().backward()
    np.testing.assert_array_equal(x3.grad.numpy(), [0.0, -2.0])


def test_max_min_reduction_ties_split_evenly():
    x = ddl.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], dtype=F64, requires_grad=True)
    x.amax(1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    x.grad = None
    x.max().backward()  # 3.0 twice
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [0, 0, 0]])
    x.grad = None
    (x * -1).amin(0).sum().backward()  # column 0 has no tie, columns 1 and 2 do
    np.testing.assert_allclose(x.grad.numpy(), [[0, -1, -1], [-1, 0, 0]])


def test_maximum_minimum_ties_go_to_first_operand():
    a = ddl.tensor([1.0, 2.0, 5.0], dtype=F64, requires_grad=True)
    b = ddl.tensor([1.0, 3.0, 4.0], dtype=F64, requires_grad=True)
    ddl.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 1.0, 0.0])
    assert not np.signbit(b.grad.numpy()).any()  # no -0.0
    a.grad = b.grad = None
    ddl.minimum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0, 1.0])
    assert not np.signbit(b.grad.numpy()).any()


SCALAR_FWD = [
    lambda t: t + 0.1, lambda t: 0.3 - t, lambda t: t * 0.1, lambda t: t / 3.0,
    lambda t: 1.7 / t, lambda t: t ** 1.3, lambda t: 1.1 ** t, lambda t: t ** 2,
    lambda t: ddl.maximum(t, 0.7), lambda t: ddl.minimum(0.7, t),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("k", range(len(SCALAR_FWD)))
def test_scalar_op_values_do_not_depend_on_requires_grad(k, dtype):
    # recording a node must not change the forward: bitwise equal to the no-grad result
    f = SCALAR_FWD[k]
    v = np.random.RandomState(k).uniform(0.1, 2.0, 257)
    plain = f(ddl.tensor(v, dtype=dtype)).numpy()
    x = ddl.tensor(v, dtype=dtype, requires_grad=True)
    rec = f(x)
    assert rec.requires_grad and rec.dtype is dtype
    np.testing.assert_array_equal(rec.detach().numpy(), plain)
    with ddl.no_grad():
        np.testing.assert_array_equal(f(x).numpy(), plain)


MIXED = [
    ("f32_times_f64", lambda a, b: a * b, [mk((3, 4), dtype=F32), mk((4,))]),
    ("f64_times_int", lambda a: a + ddl.tensor([1, 2, 3, 4]) * a, [mk((3, 4))]),
    ("mask_bool", lambda a: a * (a > 0) + a.exp() * (a <= 0), [mk((3, 4), "nz")]),
]


@_cases(MIXED)
def test_mixed_dtype_grad(request, fn, builders):
    _run(request.node.callspec.id, fn, builders, rtol=1e-4, atol=1e-4)
