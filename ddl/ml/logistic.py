"""LogisticRegression: Spark ML's estimator (binomial and multinomial, elastic net) with
scikit-learn's method names, fitted as Spark fits it, over rows that may be spread over the
ranks of a process group.

Objective (Spark's), over all rows of all ranks, with row weights w_i (1 by default):

    sum_i w_i logloss_i / sum_i w_i + reg_param * ((1 - a) / 2 * ||W'||_2^2 + a * ||W'||_1)

a = elastic_net_param, intercepts not penalized; W' = W * std (each feature's coefficients
times the feature's standard deviation) when standardization=True (Spark's default), W itself
when False. Either way the optimizer works in Spark's scaled space (features divided by their
std and, with an intercept, centered on their mean, done inside the margins: sparse rows stay
sparse), starts from the log odds of the classes, and runs Spark's L-BFGS / OWL-QN (ddl/ml/
optimize.py); the coefficients are mapped back to the original scale. Features of std 0 get
coefficient 0, as in Spark.

Each evaluation is one C pass over the local rows with compensated (hi, lo) totals and one
allgather of them, added in rank order (_collective.fixed_sum): 1, 2 or 3 ranks see the same
loss and gradient bits, so they take the same steps and end with identical coefficients.
"""
import math

import numpy as np

from .. import _C
from ..sparse import CSRMatrix, issparse
from ._collective import allgather_json, allreduce_, fixed_sum, world
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


def _col_minmax(rows):
    """(min, max) of each column, the implicit zeros of sparse rows included."""
    d = rows.d
    if rows.indptr is None:
        if rows.n == 0:
            return np.full(d, np.inf), np.full(d, -np.inf)
        return rows.values.min(axis=0).astype(np.float64), rows.values.max(axis=0).astype(
            np.float64)
    lo, hi = np.full(d, np.inf), np.full(d, -np.inf)
    ix = np.asarray(rows.indices)[:int(rows.indptr[-1])]
    v = np.asarray(rows.values)[:len(ix)].astype(np.float64)
    np.minimum.at(lo, ix, v)
    np.maximum.at(hi, ix, v)
    nnz = np.bincount(ix, minlength=d)
    hole = nnz < rows.n  # an implicit zero in the column
    lo[hole] = np.minimum(lo[hole], 0.0)
    hi[hole] = np.maximum(hi[hole], 0.0)
    return lo, hi


def _exact_pair(values):
    """(hi, lo): math.fsum of values and the exact remainder, for fixed_sum."""
    vals = [float(v) for v in values]
    hi = math.fsum(vals)
    return hi, math.fsum(vals + [-hi])


def _labels_json(classes):
    """Local class labels as JSON values (numbers or strings)."""
    out = []
    for c in classes.tolist():
        if isinstance(c, float) and not np.isfinite(c):
            raise ValueError(f"LogisticRegression: label {c} is not finite")
        out.append(c)
    return out


def _check_unit(name, v):
    if not 0 <= v <= 1:
        raise ValueError(f"LogisticRegression: {name} must be in [0, 1], got {v}")


class LogisticRegression:
    """Logistic regression: Spark ML's objective, optimizer and defaults, scikit-learn's methods.

    max_iter: optimizer iterations (Spark's maxIter; L-BFGS, or OWL-QN with an L1 part).
    reg_param: the regularization strength (Spark's regParam, lambda).
    elastic_net_param: the L1 share alpha in [0, 1] (0: L2 / ridge, 1: L1 / lasso).
    fit_intercept: fit an unpenalized intercept per class.
    tol: Spark's tol (stop when the objective is within tol * |F(x0)| of the largest of the last
        20 values, or ||gradient|| <= tol * |F|).
    family: "auto" (binomial for 2 classes, multinomial for more), "binomial" or
        "multinomial" (one coefficient row per class, as Spark; also for 2 classes).
    standardization: penalize the coefficients of the standardized features (Spark's default)
        rather than the raw ones. The fit is done in scaled space either way.
    threshold: a binomial model predicts classes_[1] when P(classes_[1]) > threshold.
    distributed: with a process group of > 1 ranks, fit() is collective: every rank calls it
        with its own rows, and the model is fitted on the union of them (the same model, to the
        bit, on every rank). False: fit on the local rows only.

    fit(X, y, sample_weight=None): sample_weight is Spark's weightCol (>= 0 per row).
    Attributes after fit: coef_ (1, d) binomial or (K, d) multinomial, intercept_ (1,) or
    (K,), classes_, n_iter_ (Spark's totalIterations), n_features_in_, converged_,
    objective_history_ (Spark's objectiveHistory), stop_reason_, feature_std_, feature_mean_.
    """

    def __init__(self, max_iter=100, reg_param=0.0, elastic_net_param=0.0, fit_intercept=True,
                 tol=1e-6, family="auto", standardization=True, threshold=0.5, *,
                 distributed=True):
        if int(max_iter) != max_iter or max_iter < 0:
            raise ValueError(f"LogisticRegression: max_iter must be an int >= 0, got {max_iter}")
        if not reg_param >= 0:
            raise ValueError(f"LogisticRegression: reg_param must be >= 0, got {reg_param}")
        _check_unit("elastic_net_param", elastic_net_param)
        _check_unit("threshold", threshold)
        if not tol >= 0:
            raise ValueError(f"LogisticRegression: tol must be >= 0, got {tol}")
        if family not in ("auto", "binomial", "multinomial"):
            raise ValueError(f"LogisticRegression: family must be 'auto', 'binomial' or "
                             f"'multinomial', got {family!r}")
        self.max_iter, self.reg_param = int(max_iter), float(reg_param)
        self.elastic_net_param, self.fit_intercept = float(elastic_net_param), bool(fit_intercept)
        self.tol, self.family, self.distributed = float(tol), family, bool(distributed)
        self.standardization, self.threshold = bool(standardization), float(threshold)

    def get_params(self):
        return {"max_iter": self.max_iter, "reg_param": self.reg_param,
                "elastic_net_param": self.elastic_net_param,
                "fit_intercept": self.fit_intercept, "tol": self.tol, "family": self.family,
                "standardization": self.standardization, "threshold": self.threshold}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LogisticRegression({args})"

    # ---- fitting -------------------------------------------------------------------------
    def _check_local(self, X, y, sample_weight):
        rows = _Rows(X, "LogisticRegression.fit")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != rows.n:
            raise ValueError(f"LogisticRegression.fit: y has shape {y.shape}, expected "
                             f"({rows.n},)")
        if y.dtype.kind == "f" and len(y) and not np.all(np.isfinite(y)):
            raise ValueError("LogisticRegression.fit: y holds NaN or infinite labels")
        w = None
        if sample_weight is not None:
            w = np.ascontiguousarray(sample_weight, dtype=np.float64)
            if w.shape != (rows.n,):
                raise ValueError(f"LogisticRegression.fit: sample_weight has shape {w.shape}, "
                                 f"expected ({rows.n},)")
            if not np.all(np.isfinite(w) & (w >= 0)):
                raise ValueError("LogisticRegression.fit: sample_weight must be finite and >= 0")
        return rows, y, w

    def _classes(self, rows, y, w, active):
        """The sorted union of the labels with weight > 0 on every rank."""
        local = np.unique(y[w > 0] if w is not None else y) if len(y) else y
        if not active:
            return local
        union = set()
        for part in allgather_json(_labels_json(local)):
            union.update(part)
        try:
            return np.array(sorted(union))
        except TypeError:
            raise ValueError("LogisticRegression.fit: ranks hold labels of different kinds "
                             "(numbers and strings)") from None

    def fit(self, X, y, sample_weight=None):
        active = self.distributed and world()[2]
        error, rows = None, None
        try:  # local checks first: with ranks, every rank must reach the first collective
            rows, y, w = self._check_local(X, y, sample_weight)
            if active:
                _labels_json(np.unique(y) if len(y) else y)
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
        classes = self._classes(rows, y, w, active)
        d, k_classes = rows.d, len(classes)
        if k_classes < 2:
            raise ValueError(f"LogisticRegression.fit: needs samples of at least 2 classes, "
                             f"got {k_classes}")
        if self.family == "binomial" and k_classes > 2:
            raise ValueError(f"LogisticRegression: family='binomial' needs 2 classes, found "
                             f"{k_classes}; use family='multinomial' or 'auto'")
        multinomial = self.family == "multinomial" or k_classes > 2
        yi = np.ascontiguousarray(np.searchsorted(classes, y), dtype=np.float64)
        if w is not None:  # rows of weight 0 may carry labels outside the classes
            yi[w == 0] = 0.0

        # ---- the summary Spark takes first: weights, class histogram, mean and std ----
        ip, ix, vals, _ = rows.args()
        mom = np.zeros((2, 2 + 2 * d))
        _C.column_moments(ip, ix, vals, d, w, mom)
        hist = np.zeros((2, k_classes))
        for c in range(k_classes):
            sel = yi == c
            hist[:, c] = _exact_pair(w[sel] if w is not None else [1.0] * int(sel.sum()))
        tot = fixed_sum(np.concatenate([mom, hist], axis=1))
        W, Sww, Sx, Sxx = tot[0], tot[1], tot[2:2 + d], tot[2 + d:2 + 2 * d]
        counts = tot[2 + 2 * d:]
        if not W > 0:
            raise ValueError("LogisticRegression.fit: the sample weights sum to 0")
        cmin, cmax = _col_minmax(rows)
        if active:
            cmax = allreduce_(np.concatenate([cmax, -cmin]), "max")
            cmin, cmax = -cmax[d:], cmax[:d]
        mean = Sx / W
        denom = W - Sww / W
        var = np.maximum(Sxx - Sx * mean, 0.0) / denom if denom > 0 else np.zeros(d)
        var[cmin == cmax] = 0.0  # a constant column (Spark's online variance gives exactly 0)
        std = np.sqrt(var)
        inv_std = np.where(std != 0, 1.0 / np.where(std != 0, std, 1.0), 0.0)
        with_mean = self.fit_intercept
        scaled_mean = inv_std * mean if with_mean else np.zeros(d)

        # ---- the objective in scaled space, parameters in Spark's (column-major) order ----
        k = k_classes if multinomial else 1
        nw = k * d
        n_params = nw + (k if self.fit_intercept else 0)
        lam, alpha = self.reg_param, self.elastic_net_param
        l2, l1 = lam * (1 - alpha), lam * alpha
        theta0 = np.zeros(n_params)
        if self.fit_intercept:  # start from the class priors (Spark's choice)
            if multinomial:
                b0 = np.log1p(counts)
                theta0[nw:] = b0 - b0.sum() / len(b0)
            else:
                theta0[nw] = math.log(counts[1] / counts[0])
        l2_scale = None if self.standardization else np.where(std != 0, inv_std * inv_std, 0.0)
        acc = np.zeros((2, 1 + nw + k))
        zero_b = np.zeros(k)

        def fg(theta):
            B = theta[:nw].reshape(d, k).T  # (k, d) scaled coefficients
            b = theta[nw:] if self.fit_intercept else zero_b
            Weff = np.ascontiguousarray(B * inv_std)
            beff = np.ascontiguousarray(b - B @ scaled_mean)
            acc[:] = 0.0
            _C.logistic_sums(ip, ix, vals, d, yi, w, Weff, beff, acc, multinomial)
            t = fixed_sum(acc)
            f = t[0] / W
            G, Gb = t[1:1 + nw].reshape(k, d), t[1 + nw:]
            gB = inv_std * (G - Gb[:, None] * mean) if with_mean else inv_std * G
            g = np.empty(n_params)
            g[:nw] = gB.T.ravel() / W
            if self.fit_intercept:
                g[nw:] = Gb / W
            if l2:
                Bt = theta[:nw]
                if l2_scale is None:
                    f += 0.5 * l2 * float(Bt @ Bt)
                    g[:nw] += l2 * Bt
                else:
                    sc = np.repeat(l2_scale, k)
                    f += 0.5 * l2 * float(Bt @ (Bt * sc))
                    g[:nw] += l2 * Bt * sc
            return f, g

        l1w = None
        if l1:
            l1w = np.zeros(n_params)
            l1w[:nw] = l1 if self.standardization else np.repeat(np.where(
                std != 0, l1 * inv_std, 0.0), k)
        res = minimize(fg, theta0, l1=l1w, max_iter=self.max_iter, tol=self.tol)

        # ---- back to the original scale ----
        B = res.x[:nw].reshape(d, k).T
        W_orig = B * inv_std
        b = (res.x[nw:] - B @ scaled_mean) if self.fit_intercept else np.zeros(k)
        if multinomial:  # the softmax is unchanged by a shift per feature: report centered
            if lam == 0:
                W_orig = W_orig - W_orig.sum(axis=0, keepdims=True) / k
            if self.fit_intercept:
                b = b - b.sum() / k
        self.coef_, self.intercept_, self.classes_ = np.ascontiguousarray(W_orig), b, classes
        self.n_iter_, self.converged_ = len(res.history) - 1, res.converged
        self.objective_history_, self.stop_reason_ = res.history, res.message
        self.n_features_in_, self.multinomial_ = d, multinomial
        self.feature_mean_, self.feature_std_ = mean, std
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
        """(n, n_classes) class probabilities, columns in classes_ order (Spark's formulas)."""
        m = self.decision_function(X)
        if not self.multinomial_:
            p1 = 1.0 / (1.0 + np.exp(-m))
            return np.stack([1.0 - p1, p1], axis=1)
        e = np.exp(m - m.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Spark's prediction: binomial P(classes_[1]) > threshold, else the most likely class."""
        p = self.predict_proba(X)
        if not self.multinomial_:
            return self.classes_[(p[:, 1] > self.threshold).astype(np.int64)]
        return self.classes_[np.argmax(p, axis=1)]

    def score(self, X, y):
        """Accuracy on (X, y) (these rows only; sum counts over ranks for a global figure)."""
        y = np.asarray(y)
        pred = self.predict(X)
        if len(y) != len(pred):
            raise ValueError(f"LogisticRegression.score: {len(pred)} rows but {len(y)} labels")
        return float(np.mean(pred == y)) if len(y) else float("nan")
