"""ddl.ml: the C loss/gradient kernel against NumPy, L-BFGS/OWL-QN, LogisticRegression against
a direct optimization of the same objective (KKT conditions in NumPy; SciPy's L-BFGS-B) and
against scikit-learn when installed, Pipeline, and the distributed fit: 1, 2 and 3 ranks give
bitwise identical coefficients and iteration counts (compensated sums added in rank order)."""
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from ddl import _C
from ddl.features import HashingTF, RegexTokenizer, Tokenizer
from ddl.ml import LogisticRegression, Pipeline
from ddl.ml.optimize import minimize
from ddl.sparse import CSRMatrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- a NumPy float64 reference of the objective ----------------------------------------------


def ref_loss_grad(X, yi, W, b, multinomial):
    """Summed log-loss of rows X (dense float64) and its gradient (dW, db)."""
    M = X @ W.T + b
    if not multinomial:
        m = M[:, 0]
        loss = np.sum(np.logaddexp(0.0, m) - yi * m)
        r = 1.0 / (1.0 + np.exp(-m)) - yi
        return loss, (r @ X)[None, :], np.array([r.sum()])
    top = M.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(M - top).sum(axis=1))
    rows = np.arange(len(yi))
    loss = np.sum(lse - M[rows, yi.astype(int)])
    P = np.exp(M - lse[:, None])
    P[rows, yi.astype(int)] -= 1.0
    return loss, P.T @ X, P.sum(axis=0)


def smooth_objective(theta, X, yi, k, fit_intercept, l2, multinomial):
    """mean loss + l2/2 ||W||^2 and its gradient, over theta = [W.ravel(), b]."""
    n, d = X.shape
    W = theta[:k * d].reshape(k, d)
    b = theta[k * d:] if fit_intercept else np.zeros(k)
    loss, dW, db = ref_loss_grad(X, yi, W, b, multinomial)
    f = loss / n + 0.5 * l2 * np.sum(W * W)
    g = np.concatenate([(dW / n + l2 * W).ravel(), db / n if fit_intercept else []])
    return f, g


def problem(n=150, d=6, k=2, sparse=False, seed=0):
    """Noisy (not separable) data from a linear model: X dense float64, labels 0..k-1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if sparse:
        X *= rng.random((n, d)) < 0.4
    W = rng.normal(size=(k, d))
    M = X @ W.T + rng.gumbel(size=(n, k)) * 1.5
    y = np.argmax(M, axis=1) if k > 2 else (M[:, 0] > M[:, 1]).astype(int)
    return X, y


def as_input(X, sparse):
    return CSRMatrix.from_dense(X) if sparse else X


# ---- the C kernel ----------------------------------------------------------------------------


@pytest.mark.parametrize("multinomial", [False, True])
@pytest.mark.parametrize("layout", ["dense32", "dense64", "csr32", "csr64"])
@pytest.mark.parametrize("intercept", [True, False])
def test_kernel_matches_numpy(multinomial, layout, intercept):
    rng = np.random.default_rng(1)
    n, d, k = 37, 9, 4 if multinomial else 1
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    dt = np.float32 if layout.endswith("32") else np.float64
    X = X.astype(dt).astype(np.float64)  # the values the kernel sees
    yi = rng.integers(0, 4 if multinomial else 2, size=n).astype(np.float64)
    W = rng.normal(size=(k, d))
    b = rng.normal(size=k) if intercept else None
    if layout.startswith("csr"):
        m = CSRMatrix.from_dense(X.astype(dt))
        args = (m.indptr, m.indices, m.data, d)
    else:
        args = (None, None, np.ascontiguousarray(X.astype(dt)), d)
    dW, db = np.zeros((k, d)), np.zeros(k) if intercept else None
    loss = _C.logistic_loss_grad(*args, yi, W, b, dW, db, multinomial)
    rl, rdW, rdb = ref_loss_grad(X, yi, W, b if intercept else np.zeros(k), multinomial)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dW, rdW, rtol=1e-10, atol=1e-12)
    if intercept:
        np.testing.assert_allclose(db, rdb, rtol=1e-10, atol=1e-12)
    # the gradient accumulates: a second call doubles it, the loss is set
    assert _C.logistic_loss_grad(*args, yi, W, b, dW, db, multinomial) == loss
    np.testing.assert_allclose(dW, 2 * rdW, rtol=1e-10, atol=1e-12)
    margins = _C.linear_margins(*args, W, b).numpy()
    np.testing.assert_allclose(margins, X @ W.T + (b if intercept else 0), rtol=1e-12,
                               atol=1e-12)


def test_kernel_extreme_margins_stay_finite():
    X = np.array([[1000.0], [-1000.0]])
    for multinomial, W in ((False, np.ones((1, 1))), (True, np.array([[1.0], [-1.0]]))):
        k = W.shape[0]
        dW = np.zeros((k, 1))
        loss = _C.logistic_loss_grad(None, None, X, 1, np.array([0.0, 0.0]), W, None, dW, None,
                                     multinomial)
        assert np.isfinite(loss) and np.all(np.isfinite(dW))
        assert loss == pytest.approx(1000.0 if not multinomial else 2000.0)


def test_kernel_errors():
    X = np.ones((3, 2))
    W, dW, y = np.zeros((1, 2)), np.zeros((1, 2)), np.array([0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="label 2"):
        _C.logistic_loss_grad(None, None, X, 2, np.array([0.0, 1.0, 2.0]), W, None, dW, None,
                              False)
    with pytest.raises(ValueError, match="label 0.5"):
        _C.logistic_loss_grad(None, None, X, 2, np.array([0.0, 0.5, 1.0]), W, None, dW, None,
                              False)
    with pytest.raises(IndexError, match="column index 5"):
        _C.logistic_loss_grad(np.array([0, 1, 2, 2]), np.array([0, 5]), np.ones(2), 2, y, W,
                              None, dW, None, False)
    with pytest.raises(ValueError, match="indptr"):
        _C.logistic_loss_grad(np.array([0, 2, 1, 2]), np.array([0, 1]), np.ones(2), 2, y, W,
                              None, dW, None, False)
    with pytest.raises(ValueError, match="coef"):
        _C.logistic_loss_grad(None, None, X, 2, y, np.zeros((1, 3)), None, dW, None, False)
    with pytest.raises(ValueError, match="multinomial"):
        _C.logistic_loss_grad(None, None, X, 2, y, W, None, dW, None, True)
    with pytest.raises(TypeError):
        _C.logistic_loss_grad(None, None, X.astype(np.int64), 2, y, W, None, dW, None, False)


# ---- the optimizers --------------------------------------------------------------------------


def test_lbfgs_on_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    H = A @ A.T + np.eye(8)
    c = rng.normal(size=8)
    res = minimize(lambda x: (0.5 * x @ H @ x - c @ x, H @ x - c), np.zeros(8), max_iter=200,
                   tol=1e-12)
    np.testing.assert_allclose(res.x, np.linalg.solve(H, c), rtol=1e-6, atol=1e-8)
    assert res.converged and res.n_iter < 100


def test_owlqn_soft_threshold():
    # argmin 0.5||x - a||^2 + l1|x| is the soft threshold of a: exact zeros included
    a = np.array([3.0, -0.5, 0.2, -2.0, 0.0, 1.0])
    l1 = np.full(6, 0.7)
    res = minimize(lambda x: (0.5 * np.sum((x - a) ** 2), x - a), np.zeros(6), l1=l1,
                   max_iter=100, tol=1e-14)
    want = np.sign(a) * np.maximum(np.abs(a) - 0.7, 0)
    np.testing.assert_allclose(res.x, want, atol=1e-9)
    assert np.all(res.x[want == 0] == 0)


# ---- LogisticRegression against direct optimization --------------------------------------------

CASES = [(fam, pen, icpt, sparse) for fam in ("binomial", "multinomial")
         for pen in ("l2", "l1", "elasticnet") for icpt in (True, False)
         for sparse in (False, True)]
PENALTY = {"l2": (0.05, 0.0), "l1": (0.02, 1.0), "elasticnet": (0.03, 0.5)}


def fit_case(fam, pen, icpt, sparse, **kw):
    X, y = problem(k=2 if fam == "binomial" else 3, sparse=sparse)
    lam, alpha = PENALTY[pen]
    opts = {"max_iter": 1000, "reg_param": lam, "elastic_net_param": alpha,
            "fit_intercept": icpt, "tol": 1e-14, "standardization": False}
    opts.update(kw)
    model = LogisticRegression(**opts).fit(as_input(X, sparse), y)
    return model, X, y, lam, alpha


def theta_of(model):
    parts = [model.coef_.ravel()]
    if model.fit_intercept:
        parts.append(model.intercept_)
    return np.concatenate(parts)


@pytest.mark.parametrize("fam,pen,icpt,sparse", CASES)
def test_kkt_conditions_hold(fam, pen, icpt, sparse):
    """NumPy only: the fitted point is a minimum of the objective (zero gradient of the smooth
    part on nonzero coefficients, within the L1 slack on zero ones, zero on intercepts)."""
    model, X, y, lam, alpha = fit_case(fam, pen, icpt, sparse)
    k = model.coef_.shape[0]
    assert model.coef_.shape == (1 if fam == "binomial" else 3, X.shape[1])
    theta = theta_of(model)
    _, g = smooth_objective(theta, X, y.astype(float), k, icpt, lam * (1 - alpha),
                            fam == "multinomial")
    l1 = lam * alpha
    w, gw = theta[:k * X.shape[1]], g[:k * X.shape[1]]
    nz = w != 0
    np.testing.assert_allclose(gw[nz] + l1 * np.sign(w[nz]), 0, atol=1e-6)
    assert np.all(np.abs(gw[~nz]) <= l1 + 1e-6)
    np.testing.assert_allclose(g[k * X.shape[1]:], 0, atol=1e-6)
    if pen == "l1":
        assert np.any(~nz)  # the lasso zeroed something out on this problem
    assert model.converged_


@pytest.mark.parametrize("fam,pen,icpt,sparse", CASES)
def test_matches_scipy_lbfgsb(fam, pen, icpt, sparse):
    opt = pytest.importorskip("scipy.optimize")
    model, X, y, lam, alpha = fit_case(fam, pen, icpt, sparse)
    k, d = model.coef_.shape
    nw, l1 = k * d, lam * alpha
    multinomial = fam == "multinomial"

    # split W = P - N with P, N >= 0 so the L1 term is smooth: L-BFGS-B with bounds
    def fun(z):
        w = z[:nw] - z[nw:2 * nw]
        f, g = smooth_objective(np.concatenate([w, z[2 * nw:]]), X, y.astype(float), k, icpt,
                                lam * (1 - alpha), multinomial)
        f += l1 * np.sum(z[:2 * nw])
        return f, np.concatenate([g[:nw] + l1, -g[:nw] + l1, g[nw:]])

    z0 = np.zeros(2 * nw + (k if icpt else 0))
    bounds = [(0, None)] * (2 * nw) + [(None, None)] * (k if icpt else 0)
    r = opt.minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 30})
    W = (r.x[:nw] - r.x[nw:2 * nw]).reshape(k, d)
    b = r.x[2 * nw:] if icpt else np.zeros(k)
    if multinomial and icpt:
        b = b - b.mean()
    np.testing.assert_allclose(model.coef_, W, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(model.intercept_, b, rtol=1e-4, atol=2e-5)
    ours = fun(np.concatenate([np.maximum(model.coef_.ravel(), 0),
                               np.maximum(-model.coef_.ravel(), 0),
                               model.intercept_ if icpt else []]))[0]
    assert ours <= r.fun + 1e-10


def _sklearn_model(lam, alpha, n, icpt):
    lm = pytest.importorskip("sklearn.linear_model")
    sig = inspect.signature(lm.LogisticRegression)
    kw = {"C": 1.0 / (lam * n), "fit_intercept": icpt, "tol": 1e-12, "max_iter": 100000,
          "solver": "lbfgs" if alpha == 0 else "saga"}
    if sig.parameters["penalty"].default == "deprecated":  # scikit-learn >= 1.8
        kw["l1_ratio"] = alpha
    else:
        kw.update(penalty="l2" if alpha == 0 else "elasticnet")
        if alpha:
            kw["l1_ratio"] = alpha
    return lm.LogisticRegression(**kw)


@pytest.mark.parametrize("fam", ["binomial", "multinomial"])
@pytest.mark.parametrize("pen", ["l2", "l1", "elasticnet"])
@pytest.mark.parametrize("sparse", [False, True])
def test_matches_scikit_learn(fam, pen, sparse):
    pytest.importorskip("sklearn")
    model, X, y, lam, alpha = fit_case(fam, pen, True, sparse)
    sk = _sklearn_model(lam, alpha, len(y), True)
    Xs = X
    if sparse:
        sp = pytest.importorskip("scipy.sparse")
        Xs = sp.csr_matrix(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarning / ConvergenceWarning chatter
        sk.fit(Xs, y)
    b = sk.intercept_ - (sk.intercept_.mean() if fam == "multinomial" else 0)
    np.testing.assert_allclose(model.coef_, sk.coef_, rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(model.intercept_, b, rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(model.predict_proba(X), sk.predict_proba(Xs), atol=1e-4)
    assert np.mean(model.predict(X) == sk.predict(Xs)) > 0.98


def test_dense_and_sparse_give_the_same_model():
    X, y = problem(k=3, sparse=True)
    a = LogisticRegression(reg_param=0.01, tol=1e-12, max_iter=300).fit(X, y)
    b = LogisticRegression(reg_param=0.01, tol=1e-12, max_iter=300).fit(
        CSRMatrix.from_dense(X), y)
    c = LogisticRegression(reg_param=0.01, tol=1e-12, max_iter=300).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(a.coef_ - c.coef_)) < 1e-4  # float32 rounding of X only


def test_unregularized_multinomial_is_centered():
    X, y = problem(k=3)
    m = LogisticRegression(max_iter=200, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(m.coef_.sum(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(m.intercept_.sum(), 0, atol=1e-9)


# ---- predictions and the estimator interface -------------------------------------------------


def test_predictions_and_labels():
    X, y01 = problem(k=2)
    y = np.where(y01 == 1, "spam", "ham")
    m = LogisticRegression(reg_param=0.01).fit(X, y)
    assert m.classes_.tolist() == ["ham", "spam"]
    P = m.predict_proba(X)
    assert P.shape == (len(y), 2) and np.allclose(P.sum(axis=1), 1)
    margins = m.decision_function(X)
    np.testing.assert_allclose(P[:, 1], 1 / (1 + np.exp(-margins)), rtol=1e-12)
    assert (m.predict(X) == np.where(margins > 0, "spam", "ham")).all()
    assert m.score(X, y) == np.mean(m.predict(X) == y) > 0.6
    assert m.n_iter_ >= 1 and m.n_features_in_ == X.shape[1]
    assert m.objective_history_[-1] <= m.objective_history_[0]

    Xm, ym = problem(k=3)
    labels = np.array([-1.5, 2.0, 7.0])[ym]
    mm = LogisticRegression(reg_param=0.01, family="auto").fit(Xm, labels)
    assert mm.classes_.tolist() == [-1.5, 2.0, 7.0] and mm.coef_.shape == (3, Xm.shape[1])
    assert set(mm.predict(Xm).tolist()) <= {-1.5, 2.0, 7.0}
    P = mm.predict_proba(Xm)
    assert (mm.classes_[P.argmax(axis=1)] == mm.predict(Xm)).all()
    two = LogisticRegression(reg_param=0.01, family="multinomial").fit(X, y01)
    assert two.coef_.shape == (2, X.shape[1])
    assert np.mean(two.predict(X) == (m.predict(X) == "spam")) > 0.95


def test_max_iter_limits_iterations():
    X, y = problem()
    m = LogisticRegression(max_iter=3, tol=0).fit(X, y)
    assert m.n_iter_ == 3 and not m.converged_
    m0 = LogisticRegression(max_iter=0).fit(X, y)
    assert m0.n_iter_ == 0 and np.all(m0.coef_ == 0)


def test_estimator_errors():
    X, y = problem()
    with pytest.raises(ValueError, match="2 classes"):
        LogisticRegression().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="binomial"):
        LogisticRegression(family="binomial").fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="shape"):
        LogisticRegression().fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        LogisticRegression().fit(X, np.where(y == 1, np.nan, 0.0))
    with pytest.raises(RuntimeError, match="fit"):
        LogisticRegression().predict(X)
    m = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :3])
    for bad in ({"reg_param": -1}, {"elastic_net_param": 1.5}, {"family": "poisson"},
                {"max_iter": -1}, {"tol": -1}):
        with pytest.raises(ValueError):
            LogisticRegression(**bad)
    assert "reg_param" in repr(m)


# ---- Pipeline ----------------------------------------------------------------------------------

TEXTS = ["the team won the match", "a late goal won the game", "the striker scored a goal",
         "bake the bread in the oven", "simmer the soup with garlic", "the chef baked bread",
         "the server crashed again", "compile the code and run the tests",
         "the kernel leaked memory"]
TOPICS = ["sport"] * 3 + ["food"] * 3 + ["tech"] * 3


def test_pipeline_text_classification():
    model = Pipeline([Tokenizer(), HashingTF(num_features=1 << 10),
                      LogisticRegression(max_iter=100, reg_param=0.001)])
    model.fit(TEXTS, TOPICS)
    assert model.predict(["the goal won the game", "bread in the oven",
                          "the code crashed"]).tolist() == ["sport", "food", "tech"]
    assert model.score(TEXTS, TOPICS) == 1.0
    assert model.predict_proba(TEXTS).shape == (9, 3)
    X = model.transform(TEXTS)
    assert isinstance(X, CSRMatrix) and X.shape == (9, 1 << 10)
    same = Pipeline([RegexTokenizer(), HashingTF(num_features=1 << 10),
                     LogisticRegression(max_iter=100, reg_param=0.001)]).fit(TEXTS, TOPICS)
    np.testing.assert_allclose(same.stages[-1].coef_, model.stages[-1].coef_)
    with pytest.raises(TypeError, match="transform"):
        Pipeline([LogisticRegression(), HashingTF()])
    with pytest.raises(ValueError):
        Pipeline([])
    assert "HashingTF" in repr(model)


# ---- distributed: 1 vs 2 vs 3 ranks ------------------------------------------------------------

CONFIGS = {
    "binomial_l2": {"max_iter": 500, "reg_param": 0.01, "tol": 1e-14},
    "article": {"max_iter": 10, "reg_param": 0.01},
    "multinomial_en": {"max_iter": 500, "reg_param": 0.02, "elastic_net_param": 0.5,
                       "tol": 1e-14},
    "multinomial_l1_noicpt": {"max_iter": 500, "reg_param": 0.01, "elastic_net_param": 1.0,
                              "fit_intercept": False, "tol": 1e-14},
}

WORKER = """
import json, sys
import numpy as np
import ddl.distributed as dist
from ddl.datasets import load_libsvm
from ddl.ml import LogisticRegression

dist.init_process_group("gloo")
rank = dist.get_rank()
configs = json.loads(sys.argv[3])
out = {}
for path_key, path in (("bin", sys.argv[1]), ("multi", sys.argv[2])):
    X, y = load_libsvm(path, dtype=np.float64)   # this rank's byte range
    out[path_key + "_shape"] = list(X.shape)
    for name, kw in configs.items():
        if (name.startswith("binomial") or name == "article") == (path_key == "bin"):
            m = LogisticRegression(**kw).fit(X, y)
            out[name] = {"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(),
                         "n_iter": m.n_iter_, "classes": m.classes_.tolist()}
with open(sys.argv[4] + f".{rank}.json", "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def _uses(name, key):
    return (name.startswith("binomial") or name == "article") == (key == "bin")


def _libsvm_files(tmp_path):
    paths = {}
    for key, k in (("bin", 2), ("multi", 3)):
        X, y = problem(n=240, d=12, k=k, sparse=True, seed=11 + k)
        if k == 3:  # class 2 only at the end: the first ranks never see it locally
            order = np.argsort(y == 2, kind="stable")
            X, y = X[order], y[order]
        lines = ["# test data"]
        for row, label in zip(X, y):
            cols = np.flatnonzero(row)
            lines.append(f"{label} " + " ".join(f"{c + 1}:{row[c]:.6g}" for c in cols))
        lines[5] += "  # a comment"
        p = tmp_path / f"{key}.svm"  # LF with a last newline; CRLF without one
        p.write_bytes(("\n".join(lines) + "\n").encode() if k == 2 else
                      "\r\n".join(lines).encode())
        paths[key] = str(p)
    return paths


ERROR_WORKER = """
import sys
import numpy as np
import ddl.distributed as dist
from ddl.datasets import load_libsvm
from ddl.ml import LogisticRegression

dist.init_process_group("gloo", timeout=30)
rank = dist.get_rank()
try:
    load_libsvm(sys.argv[1])   # the malformed line is in the last rank's share only
    print("LOAD ok")
except ValueError as e:
    print("LOAD", e)
X, y = load_libsvm(sys.argv[2])
if rank == 1:
    y[0] = np.nan
try:
    LogisticRegression().fit(X, y)
    print("FIT ok")
except ValueError as e:
    print("FIT", e)
m = LogisticRegression(max_iter=5).fit(X, np.nan_to_num(y))  # the group still works
print("AFTER", m.n_iter_)
dist.destroy_process_group()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path, world, source, args, timeout=60):
    """Run `source` as `world` ranks; [stdout of each rank] (every process killed at the end)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(source))
    port = _free_port()
    procs = []
    try:
        for r in range(world):
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
            env.update(RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), PYTHONPATH=ROOT, OMP_NUM_THREADS="1",
                       OPENBLAS_NUM_THREADS="1", DDL_NUM_THREADS="1")
            procs.append(subprocess.Popen(
                [sys.executable, str(script), *args], env=env, cwd=str(tmp_path),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True))
        deadline = time.monotonic() + timeout
        outs, errs = [], []
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outs.append(o.decode(errors="replace"))
            errs.append(e.decode(errors="replace"))
        for r, p in enumerate(procs):
            assert p.returncode == 0, f"rank {r} failed:\n{errs[r]}"
    finally:
        for p in procs:  # however the test ends, no worker outlives it
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.communicate()
    return outs


def _run_world(tmp_path, world, paths):
    out = str(tmp_path / f"w{world}")
    _spawn(tmp_path, world, WORKER, [paths["bin"], paths["multi"], json.dumps(CONFIGS), out])
    results = []
    for r in range(world):
        with open(f"{out}.{r}.json") as f:
            results.append(json.load(f))
    return results


def _close(a, b, what):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, what
    scale = max(np.max(np.abs(b)), 1e-12)
    assert np.max(np.abs(a - b)) <= 1e-6 * scale, (what, np.max(np.abs(a - b)) / scale)


@pytest.mark.timeout(120)
def test_one_two_three_ranks_fit_the_same_model(tmp_path):
    from ddl.datasets import load_libsvm

    paths = _libsvm_files(tmp_path)
    single = {}
    for key in ("bin", "multi"):
        X, y = load_libsvm(paths[key], dtype=np.float64)
        single[key + "_shape"] = list(X.shape)
        for name, kw in CONFIGS.items():
            if _uses(name, key):
                m = LogisticRegression(**kw).fit(X, y)
                single[name] = {"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(),
                                "classes": m.classes_.tolist(), "n_iter": m.n_iter_}
    for world in (2, 3):
        results = _run_world(tmp_path, world, paths)
        for r, res in enumerate(results):
            for key in ("bin_shape", "multi_shape"):  # n_features agreed across ranks
                assert res[key][1] == single[key][1], (world, r, key)
            assert sum(x[key][0] for x in results) == single[key][0]
            for name in CONFIGS:
                assert res[name]["classes"] == single[name]["classes"]
                _close(res[name]["coef"], single[name]["coef"], (world, r, name))
                # 1, 2 and 3 ranks: the same bits and the same number of iterations
                assert res[name]["coef"] == single[name]["coef"], (world, r, name)
                assert res[name]["intercept"] == single[name]["intercept"], (world, r, name)
                assert res[name]["n_iter"] == single[name]["n_iter"], (world, r, name)
                # every rank holds the same model, bit for bit
                assert res[name]["coef"] == results[0][name]["coef"]


@pytest.mark.timeout(120)
def test_examples_run_on_one_and_two_ranks(tmp_path):
    script = os.path.join(ROOT, "examples", "logistic_regression_libsvm.py")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = ROOT

    def run(argv):
        p = subprocess.run(argv, check=False, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                           timeout=90)
        assert p.returncode == 0, p.stderr
        return p.stdout

    one = run([sys.executable, script])
    two = run([sys.executable, "-m", "ddl.run", "--nproc-per-node", "2", script])

    def summary(out):
        return [re.sub(r"^\[rank\d+\]: ", "", line) for line in out.splitlines()
                if "coefficients" in line or "accuracy" in line]

    assert summary(one) and summary(one) == summary(two)
    assert "1000 rows" in one and "training accuracy" in one
    text = run([sys.executable, os.path.join(ROOT, "examples", "text_classification.py")])
    acc = float(re.search(r"test accuracy on 72 held-out sentences: ([0-9.]+)", text).group(1))
    assert acc > 0.9


@pytest.mark.timeout(120)
def test_errors_on_one_rank_reach_every_rank(tmp_path):
    """A malformed line in one rank's share, or bad labels on one rank, is a ValueError on
    every rank (not a hang in the next collective), and the group stays usable."""
    paths = _libsvm_files(tmp_path)
    bad = tmp_path / "bad.svm"
    bad.write_text("".join(f"{i % 2} 1:{i}\n" for i in range(50)) + "1 2:1 1:1\n")
    outs = _spawn(tmp_path, 2, ERROR_WORKER, [str(bad), paths["bin"]])
    assert f"LOAD {bad}:51: index 1 after index 2" in outs[1]
    assert "LOAD load_libsvm: another rank failed" in outs[0]
    assert "FIT LogisticRegression.fit: y holds NaN" in outs[1]
    assert "FIT LogisticRegression.fit: another rank" in outs[0]
    assert all("AFTER 5" in o for o in outs)


# ---- the compensated kernels the fit uses ----------------------------------------------------


@pytest.mark.parametrize("multinomial", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_compensated_sums_match_plain_kernel(multinomial, sparse):
    X, y = problem(n=40, d=5, k=3 if multinomial else 2, sparse=sparse, seed=3)
    k = 3 if multinomial else 1
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(k, 5)), rng.normal(size=k)
    m = CSRMatrix.from_dense(X) if sparse else None
    args = (m.indptr, m.indices, m.data, 5) if sparse else (None, None, X, 5)
    yi = y.astype(np.float64)
    dW, db = np.zeros((k, 5)), np.zeros(k)
    loss = _C.logistic_loss_grad(*args, yi, W, b, dW, db, multinomial)
    w = 1.0 + (np.arange(40) % 2)
    acc = np.zeros((2, 1 + 5 * k + k))
    _C.logistic_sums(*args, yi, None, W, b, acc, multinomial)
    tot = acc[0] + acc[1]
    np.testing.assert_allclose(tot, np.concatenate([[loss], dW.ravel(), db]), rtol=1e-12)
    acc[:] = 0
    _C.logistic_sums(*args, yi, w, W, b, acc, multinomial)
    ref = ref_loss_grad(np.repeat(X, w.astype(int), axis=0), np.repeat(yi, w.astype(int)), W, b,
                        multinomial)
    np.testing.assert_allclose(acc[0] + acc[1], np.concatenate(
        [[ref[0]], np.ravel(ref[1]), np.ravel(ref[2])]), rtol=1e-12, atol=1e-12)
    mom = np.zeros((2, 12))
    _C.column_moments(*args, w, mom)
    want = np.concatenate([[w.sum(), (w * w).sum()], w @ X, w @ (X * X)])
    np.testing.assert_allclose(mom[0] + mom[1], want, rtol=1e-13)
    with pytest.raises(ValueError, match="weight -1 of row 0"):
        _C.logistic_sums(*args, yi, -w, W, b, acc, multinomial)
    with pytest.raises(ValueError, match=r"acc must be a contiguous \(2, "):
        _C.logistic_sums(*args, yi, None, W, b, np.zeros((2, 3)), multinomial)


def test_compensated_sums_do_not_depend_on_the_split():
    """The same rows, summed whole or in three pieces whose (hi, lo) pairs are then added in
    order, give the same bits (a plain sum does not)."""
    from ddl.ml._collective import fixed_sum

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 4)) * np.array([1e-3, 1.0, 1e3, 1e6])
    y = (rng.random(3000) < 0.5).astype(np.float64)
    W, b = rng.normal(size=(1, 4)) * 1e-4, np.array([0.3])

    def acc_of(rows):
        a = np.zeros((2, 6))
        _C.logistic_sums(None, None, np.ascontiguousarray(X[rows]), 4, y[rows], None, W, b, a,
                         False)
        return a

    whole = fixed_sum(acc_of(slice(None)))
    parts = [acc_of(slice(a, c)) for a, c in ((0, 1234), (1234, 2001), (2001, 3000))]
    hi, lo = np.zeros(6), np.zeros(6)
    for p in parts:  # what fixed_sum does with the ranks' pairs
        s = hi + p[0]
        bv = s - hi
        lo += (hi - (s - bv)) + (p[0] - bv) + p[1]
        hi = s
    assert np.array_equal(whole, hi + lo)
