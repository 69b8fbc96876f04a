"""L-BFGS and OWL-QN in NumPy float64, with the iteration, line searches and stopping rule of
the optimizer behind Spark ML (Breeze's FirstOrderMinimizer), so that the same objective gives
Spark's iterates, iteration counts and objective history.

Deterministic: the same (f, g) values give the same iterates, line-search trials and stopping
decision, so ranks that combine f and g into bitwise identical values stay in lockstep without
talking about anything else.

The pieces, as Breeze does them (re-derived here, not translated):
- L-BFGS direction: the two-loop recursion over the last m (step, gradient change) pairs, the
  newest pair's s.y / y.y as the initial diagonal; a pair with s.y < 0 is a failure.
- L-BFGS step: a strong-Wolfe line search (c1 = 1e-4, c2 = 0.9, at most 10 bracketing and 10
  zoom steps, cubic interpolation kept inside [10%, 90%] of the bracket), starting at
  1 / ||d|| on the first iteration and 1 after; a step with step * ||g|| < 1e-10 is a failure.
- OWL-QN (f + sum_i l1_i |x_i|): the pseudo-gradient, the direction clipped to the
  pseudo-gradient's orthant, trial points projected onto the orthant of x (or of -pseudo-
  gradient where x is 0), a backtracking line search on the full objective (start 0.5 / ||g||
  with shrink 0.1 on the first iteration, then 1 and 0.5, grow 2.1, Wolfe checks).
- A failure resets the history once (the state repeats in the history of values); a second
  failure in a row ends the run.
- Stopping, checked on every state (the first included), in this order: iterations >= max_iter;
  the objective within tol * |F(x0)| of the largest of the last 20 values (so never before 20
  iterations); ||pseudo-gradient||_2 <= max(tol * |F|, 1e-8); a failed search.
"""
import numpy as np

_C1, _C2 = 1e-4, 0.9
_FVAL_MEMORY = 20


class Result:
    __slots__ = ("converged", "fun", "history", "message", "n_iter", "x")

    def __init__(self, x, fun, n_iter, converged, message, history):
        self.x, self.fun, self.n_iter = x, fun, n_iter
        self.converged, self.message, self.history = converged, message, history


class _Failure(Exception):
    """A step the optimizer could not take (Breeze's FirstOrderException)."""


class _Cached:
    """fg with the last point remembered (an evaluation may be a collective over ranks)."""

    def __init__(self, fg):
        self.fg, self.x, self.out, self.calls = fg, None, None, 0

    def __call__(self, x):
        if self.x is None or not np.array_equal(x, self.x):
            f, g = self.fg(x)
            self.x, self.out = x.copy(), (float(f), np.array(g, dtype=np.float64))
            self.calls += 1
        return self.out


def _adjust(x, g, f, l1):
    """(F, pseudo-gradient) of f + sum l1 |x| from the smooth part's (f, g)."""
    if l1 is None:
        return f, g
    on = l1 != 0
    F = f + float(np.sum(np.abs(l1[on] * x[on])))
    pg = g.copy()
    nz = on & (x != 0)
    pg[nz] = g[nz] + np.sign(x[nz]) * l1[nz]
    z = on & (x == 0)
    right, left = g[z] + l1[z], g[z] - l1[z]
    pg[z] = np.where(left > 0, left, np.where(right < 0, right, 0.0))
    return F, pg


def _direction(pairs, grad):
    """-H grad for the inverse-Hessian estimate of (s, y) pairs, newest first."""
    if pairs:
        s0, y0 = pairs[0]
        sy, yy = float(s0 @ y0), float(y0 @ y0)
        if sy < 0 or np.isnan(sy):
            raise _Failure("negative curvature in the history")
        diag = sy / yy
    else:
        diag = 1.0
    q = grad.copy()
    alphas, rhos = [], []
    for s, y in pairs:
        rho = float(s @ y)
        a = float(s @ q) / rho
        if np.isnan(a):
            raise _Failure("NaN in the history")
        alphas.append(a), rhos.append(rho)
        q -= a * y
    q *= diag
    for (s, y), a, rho in zip(reversed(pairs), reversed(alphas), reversed(rhos)):
        beta = float(y @ q) / rho
        q += (a - beta) * s
    return -q


def _interp(lo, hi):
    """Cubic minimizer between brackets (t, f, df), kept inside 10%..90% of the interval."""
    (lt, lf, ld), (rt, rf, rd) = lo, hi
    d1 = ld + rd - 3 * (lf - rf) / (lt - rt)
    d2 = np.sqrt(d1 * d1 - ld * rd)
    t = rt - (rt - lt) * (rd + d2 - d1) / (rd - ld + 2 * d2)
    lb, ub = lt + 0.1 * (rt - lt), lt + 0.9 * (rt - lt)
    return lb if t < lb else min(t, ub)


def _strong_wolfe(phi, init, max_zoom=10, max_iter=10):
    t = init
    low = phi(0.0)
    f0, d0 = low[1], low[2]
    if d0 > 0:
        raise _Failure("line search along an ascent direction")

    def zoom(low, hi):
        for _ in range(max_zoom):
            t = _interp(hi, low) if low[0] > hi[0] else _interp(low, hi)
            c = phi(t)
            if c[1] > f0 + _C1 * c[0] * d0 or c[1] >= low[1]:
                hi = c
            else:
                if abs(c[2]) <= _C2 * abs(d0):
                    return c[0]
                if c[2] * (hi[0] - low[0]) >= 0:
                    hi = low
                low = c
        raise _Failure("line search zoom failed")

    for i in range(max_iter):
        c = phi(t)
        if not np.isfinite(c[1]):
            t /= 2.0
            continue
        if c[1] > f0 + _C1 * t * d0 or (c[1] >= low[1] and i > 0):
            return zoom(low, c)
        if abs(c[2]) <= _C2 * abs(d0):
            return c[0]
        if c[2] >= 0:
            return zoom(c, low)
        low = c
        t *= 1.5
    raise _Failure("line search failed")


def _backtracking(phi, init, fval_x, shrink, grow=2.1, max_iter=20, min_alpha=1e-10,
                  max_alpha=1e10):
    """Breeze's backtracking search; its first trial is judged with the value at x (fval_x,
    the smooth part only) and the derivative at the trial, as Breeze does."""
    _, f0, d0 = phi(0.0)
    alpha, fval, deriv = init, fval_x, phi(init)[2]
    for it in range(max_iter):
        if fval > f0 + alpha * d0 * _C1:
            mult = shrink
        elif deriv < _C2 * d0:
            mult = grow
        elif deriv > -_C2 * d0:
            mult = shrink
        else:
            return alpha
        new = alpha * mult
        if new < min_alpha:
            raise _Failure("step size underflow")
        if new > max_alpha:
            raise _Failure("step size overflow")
        if it + 1 >= max_iter:
            return alpha
        alpha = new
        _, fval, deriv = phi(alpha)
    return alpha


def minimize(fg, x0, l1=None, max_iter=100, tol=1e-6, history=10):
    """Minimize F(x) = f(x) + sum(l1 * |x|) from x0 (Spark's L-BFGS, or OWL-QN with l1).

    fg(x) -> (f, g): the smooth part and its gradient. l1: per-coordinate L1 weights (None or
    all zero: L-BFGS). Result.history holds F of every state, the first included (Spark's
    objectiveHistory); n_iter = len(history) - 1.
    """
    x = np.array(x0, dtype=np.float64)
    l1 = None if l1 is None or not np.any(l1) else np.asarray(l1, dtype=np.float64)
    fgc = _Cached(fg)
    f, g = fgc(x)
    F, ag = _adjust(x, g, f, l1)
    F0 = F
    it, pairs, fvals = 0, [], [np.inf]
    hist, failed_once, search_failed = [F], False, False

    def stop():
        if it >= max_iter:
            return False, "max_iter reached"
        if len(fvals) >= 2 and abs(F - max(fvals)) <= tol * abs(F0):
            return True, "objective values converged"
        if float(np.linalg.norm(ag)) <= max(tol * abs(F), 1e-8):
            return True, "gradient converged"
        if search_failed:
            return False, "line search failed"
        return None

    while (why := stop()) is None:
        try:
            if not (np.isfinite(F) and np.all(np.isfinite(ag))):
                raise _Failure("the objective or its gradient is not finite")
            d = _direction(pairs, ag)
            if l1 is None:
                def phi(t, d=d, x=x):
                    fv, gv = fgc(x + d * t)
                    return t, fv, float(gv @ d)

                step = _strong_wolfe(phi, 1.0 / np.linalg.norm(d) if it == 0 else 1.0)
                if step * np.linalg.norm(g) < 1e-10:
                    raise _Failure("step size underflow")
                xn = x + d * step
            else:
                d = np.where(d * ag < 0, d, 0.0)
                orth = np.where(x != 0, np.sign(x), np.sign(-ag))

                def take(t, d=d, orth=orth, x=x):
                    xs = x + d * t
                    return np.where(np.sign(xs) == orth, xs, 0.0)

                def phi(t, d=d, take=take):
                    xt = take(t)
                    fv, gv = fgc(xt)
                    Fv, agv = _adjust(xt, gv, fv, l1)
                    return t, Fv, float(agv @ d)

                step = _backtracking(phi, 0.5 / np.linalg.norm(g) if it < 1 else 1.0, f,
                                     0.1 if it < 1 else 0.5)
                xn = take(step)
            fn, gn = fgc(xn)
            Fn, agn = _adjust(xn, gn, fn, l1)
            pairs = ([(xn - x, gn - g)] + pairs)[:history]
            fvals = (fvals + [Fn])[-_FVAL_MEMORY:]
            x, f, g, F, ag = xn, fn, gn, Fn, agn
            it += 1
            failed_once = False
        except _Failure:
            if failed_once:
                search_failed = True
            else:
                failed_once, pairs = True, []
        except FloatingPointError:
            search_failed = True
        hist.append(F)
    converged, message = why
    return Result(x, F, it, converged, message, hist)
