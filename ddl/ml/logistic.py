"""LogisticRegression: Spark ML's estimator (binomial and multinomial, elastic net) with
scikit-learn's method names, fitted by L-BFGS / OWL-QN over rows that may be spread over the
ranks of a process group.

Objective (Spark's, without standardization), over all N rows of all ranks:

    mean log-loss + reg_param * ((1 - a) / 2 * ||W||_2^2 + a * ||W||_1),  a = elastic_net_param

with the intercepts not penalized. Each evaluation runs one C pass over the local rows (summed
loss and gradient in float64) and one allreduce of [loss, gradient]; every rank then takes the
same optimizer step, so 1 and N ranks reach the same coefficients up to rounding.
"""
import numpy as np

from .. import _C
from ..sparse import CSRMatrix, issparse
from ._collective import allgather_json, allreduce_, world
from .optimize import minimize

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class _Rows:
    """X as the C kernels take it: (indptr, indices, values, n_cols) with indptr None when
    dense."""

    def __init__(self, X, who):
        if isinstance(X, CSRMatrix) or issparse(X):
            m = X if isinstance(X, CSRMatrix) else CSRMatrix.from_scipy(X)
            self.indptr, self.indices, self.values = m.indptr, m.indices, m.data
            self.n, self.d = m.shape
            return
        if hasattr(X, "numpy") and callable(X.numpy):  # a ddl.Tensor
            X = X.numpy()
        a = np.asarray(X)
        if a.ndim != 2:
            raise ValueError(f"{who}: X must be 2-D (n_samples, n_features), got shape {a.shape}")
        if a.dtype not in _FLOATS:
            a = a.astype(np.float64)
        self.values = np.ascontiguousarray(a)
        self.indptr = self.indices = None
        self.n, self.d = a.shape

    def args(self):
        return self.indptr, self.indices, self.values, self.d


def _labels_json(classes):
    """Local class labels as JSON values (numbers or strings)."""
    out = []
    for c in classes.tolist():
        if isinstance(c, float) and not np.isfinite(c):
            raise ValueError(f"LogisticRegression: label {c} is not finite")
        out.append(c)
    return out


class LogisticRegression:
    """Logistic regression (Spark ML's objective, scikit-learn's interface).

    max_iter: optimizer iterations (L-BFGS, or OWL-QN when there is an L1 part).
    reg_param: the regularization strength (Spark's regParam, lambda).
    elastic_net_param: the L1 share alpha in [0, 1] (0: L2 / ridge, 1: L1 / lasso).
    fit_intercept: fit an unpenalized intercept per class.
    tol: stop when a step lowers the objective by <= tol relatively, or when the largest
        (pseudo-)gradient entry is <= tol.
    family: "auto" (binomial for 2 classes, multinomial for more), "binomial" or
        "multinomial" (one coefficient row per class, as Spark; also for 2 classes).
    distributed: with a process group of > 1 ranks, fit() is collective: every rank calls it
        with its own rows, and the model is fitted on the union of them (the same model on
        every rank). False: fit on the local rows only.

    Attributes after fit: coef_ (1, d) binomial or (K, d) multinomial, intercept_ (1,) or
    (K,), classes_, n_iter_, n_features_in_, converged_, objective_history_.
    """

    def __init__(self, max_iter=100, reg_param=0.0, elastic_net_param=0.0, fit_intercept=True,
                 tol=1e-6, family="auto", *, distributed=True):
        if int(max_iter) != max_iter or max_iter < 0:
            raise ValueError(f"LogisticRegression: max_iter must be an int >= 0, got {max_iter}")
        if not reg_param >= 0:
            raise ValueError(f"LogisticRegression: reg_param must be >= 0, got {reg_param}")
        if not 0 <= elastic_net_param <= 1:
            raise ValueError("LogisticRegression: elastic_net_param must be in [0, 1], got "
                             f"{elastic_net_param}")
        if not tol >= 0:
            raise ValueError(f"LogisticRegression: tol must be >= 0, got {tol}")
        if family not in ("auto", "binomial", "multinomial"):
            raise ValueError(f"LogisticRegression: family must be 'auto', 'binomial' or "
                             f"'multinomial', got {family!r}")
        self.max_iter, self.reg_param = int(max_iter), float(reg_param)
        self.elastic_net_param, self.fit_intercept = float(elastic_net_param), bool(fit_intercept)
        self.tol, self.family, self.distributed = float(tol), family, bool(distributed)

    def get_params(self):
        return {"max_iter": self.max_iter, "reg_param": self.reg_param,
                "elastic_net_param": self.elastic_net_param,
                "fit_intercept": self.fit_intercept, "tol": self.tol, "family": self.family}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LogisticRegression({args})"

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, X, y):
        active = self.distributed and world()[2]
        error = None
        try:  # local checks first: with ranks, every rank must reach the first collective
            rows = _Rows(X, "LogisticRegression.fit")
            y = np.asarray(y)
            if y.ndim != 1 or len(y) != rows.n:
                raise ValueError(f"LogisticRegression.fit: y has shape {y.shape}, expected "
                                 f"({rows.n},)")
            if y.dtype.kind == "f" and len(y) and not np.all(np.isfinite(y)):
                raise ValueError("LogisticRegression.fit: y holds NaN or infinite labels")
            local = np.unique(y) if len(y) else y
            local_json = _labels_json(local) if active else None
        except (ValueError, TypeError) as e:
            if not active:
                raise
            error = e
        if active:
            # the same column count everywhere, and no rank left behind by a local error
            d = rows.d if error is None else 0
            hdr = allreduce_(np.array([d, -d, error is not None], dtype=np.int64), "max")
            if error is not None:
                raise error
            if hdr[2]:
                raise ValueError("LogisticRegression.fit: another rank's data failed the "
                                 "checks (its error says why)")
            if hdr[0] != -hdr[1]:
                raise ValueError(f"LogisticRegression.fit: ranks disagree on the number of "
                                 f"features ({-hdr[1]} to {hdr[0]}, this rank {d}); pass "
                                 "n_features= to load_libsvm")
            union = set()
            for part in allgather_json(local_json):
                union.update(part)
            try:
                classes = np.array(sorted(union))
            except TypeError:
                raise ValueError("LogisticRegression.fit: ranks hold labels of different kinds "
                                 "(numbers and strings)") from None
        else:
            classes = local
        d = rows.d
        k_classes = len(classes)
        if k_classes < 2:
            raise ValueError(f"LogisticRegression.fit: needs samples of at least 2 classes, "
                             f"got {k_classes}")
        if self.family == "binomial" and k_classes > 2:
            raise ValueError(f"LogisticRegression: family='binomial' needs 2 classes, found "
                             f"{k_classes}; use family='multinomial' or 'auto'")
        multinomial = self.family == "multinomial" or k_classes > 2
        yi = np.searchsorted(classes, y).astype(np.float64)
        counts = allreduce_(np.bincount(yi.astype(np.int64), minlength=k_classes)
                            .astype(np.float64)) if active else np.bincount(
            yi.astype(np.int64), minlength=k_classes).astype(np.float64)
        total = float(counts.sum())

        k = k_classes if multinomial else 1
        nw = k * d
        n_params = nw + (k if self.fit_intercept else 0)
        lam, alpha = self.reg_param, self.elastic_net_param
        l2, l1 = lam * (1 - alpha), lam * alpha
        theta0 = np.zeros(n_params)
        if self.fit_intercept:  # start from the class priors (Spark's choice)
            if multinomial:
                b0 = np.log1p(counts)
                theta0[nw:] = b0 - b0.mean()
            else:
                theta0[nw] = np.log(counts[1] / counts[0])
        buf = np.zeros(1 + n_params)  # [summed loss, gradient]: one allreduce per evaluation
        ip, ix, vals, _ = rows.args()
        evals = [0]

        def fg(theta):
            buf[:] = 0.0
            W = theta[:nw].reshape(k, d)
            b = theta[nw:] if self.fit_intercept else None
            db = buf[1 + nw:] if self.fit_intercept else None
            buf[0] = _C.logistic_loss_grad(ip, ix, vals, d, yi, W, b, buf[1:1 + nw], db,
                                           multinomial)
            if active:
                allreduce_(buf)
            evals[0] += 1
            f = buf[0] / total
            g = buf[1:] / total
            if l2:
                w = theta[:nw]
                f += 0.5 * l2 * float(w @ w)
                g[:nw] += l2 * w
            return f, g

        l1w = None
        if l1:
            l1w = np.zeros(n_params)
            l1w[:nw] = l1
        res = minimize(fg, theta0, l1=l1w, max_iter=self.max_iter, tol=self.tol)
        W = res.x[:nw].reshape(k, d).copy()
        b = res.x[nw:].copy() if self.fit_intercept else np.zeros(k)
        if multinomial:  # the softmax is unchanged by a shift per feature: report centered
            if self.fit_intercept:
                b -= b.mean()
            if lam == 0:
                W -= W.mean(axis=0, keepdims=True)
        self.coef_, self.intercept_, self.classes_ = W, b, classes
        self.n_iter_, self.converged_ = res.n_iter, res.converged
        self.objective_history_ = res.history
        self.n_features_in_, self.multinomial_ = d, multinomial
        self.n_evaluations_ = evals[0]
        return self

    # ---- prediction ----------------------------------------------------------------------
    def _check_fitted(self, X, who):
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"LogisticRegression.{who}: call fit() first")
        rows = _Rows(X, f"LogisticRegression.{who}")
        if rows.d != self.n_features_in_:
            raise ValueError(f"LogisticRegression.{who}: X has {rows.d} features, the model "
                             f"{self.n_features_in_}")
        return rows

    def decision_function(self, X):
        """Margins: (n,) for a binomial model, (n, K) for a multinomial one."""
        rows = self._check_fitted(X, "decision_function")
        m = _C.linear_margins(*rows.args(), self.coef_, self.intercept_).numpy()
        return m if self.multinomial_ else m[:, 0]

    def predict_proba(self, X):
        """(n, n_classes) class probabilities, columns in classes_ order."""
        m = self.decision_function(X)
        if not self.multinomial_:
            p1 = np.empty_like(m)
            pos = m >= 0
            p1[pos] = 1.0 / (1.0 + np.exp(-m[pos]))
            e = np.exp(m[~pos])
            p1[~pos] = e / (1.0 + e)
            return np.stack([1.0 - p1, p1], axis=1)
        e = np.exp(m - m.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        m = self.decision_function(X)
        if not self.multinomial_:
            return self.classes_[(m > 0).astype(np.int64)]
        return self.classes_[np.argmax(m, axis=1)]

    def score(self, X, y):
        """Accuracy on (X, y) (these rows only; sum counts over ranks for a global figure)."""
        y = np.asarray(y)
        pred = self.predict(X)
        if len(y) != len(pred):
            raise ValueError(f"LogisticRegression.score: {len(pred)} rows but {len(y)} labels")
        return float(np.mean(pred == y)) if len(y) else float("nan")
