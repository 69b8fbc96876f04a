"""L-BFGS and OWL-QN (L-BFGS for f(x) + sum_i l1_i |x_i|) in NumPy float64.

Deterministic: the same (f, g) values give the same iterates, line-search trials and stopping
decision, so ranks that allreduce f and g (bitwise identical on every rank) stay in lockstep
without talking about anything else.

OWL-QN is Andrew & Gao (2007): the pseudo-gradient of the L1 term, a quasi-Newton direction
from the smooth part's curvature pairs, clipped to the pseudo-gradient's orthant, and a
backtracking line search whose trial points are projected onto the orthant of the current
point, so coefficients cross zero only by landing on it.
"""
from collections import deque

import numpy as np


class Result:
    __slots__ = ("converged", "fun", "history", "message", "n_iter", "x")

    def __init__(self, x, fun, n_iter, converged, message, history):
        self.x, self.fun, self.n_iter = x, fun, n_iter
        self.converged, self.message, self.history = converged, message, history


def _pseudo_gradient(x, g, l1):
    """The minimum-norm subgradient of f + sum l1|x| (Andrew & Gao)."""
    pg = g + l1 * np.sign(x)
    at0 = (x == 0) & (l1 > 0)
    right, left = g[at0] + l1[at0], g[at0] - l1[at0]
    pg[at0] = np.where(right < 0, right, np.where(left > 0, left, 0.0))
    return pg


def _two_loop(q, S, Y, rho):
    """-H q for the L-BFGS inverse-Hessian estimate H built from (S, Y)."""
    q = q.copy()
    alphas = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
        a = r * (s @ q)
        alphas.append(a)
        q -= a * y
    if S:
        q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
    for (s, y, r), a in zip(zip(S, Y, rho), reversed(alphas)):
        b = r * (y @ q)
        q += (a - b) * s
    return -q


def minimize(fg, x0, l1=None, max_iter=100, tol=1e-6, history=10, c1=1e-4, max_ls=40):
    """Minimize F(x) = f(x) + sum(l1 * |x|) from x0.

    fg(x) -> (f, g): the smooth part and its gradient. l1: per-coordinate L1 weights (None or
    all zero: plain L-BFGS). Stops when the (pseudo-)gradient's largest entry is <= tol, or a
    step lowers F by <= tol * max(|F|, 1) relatively, or after max_iter iterations.
    """
    x = np.array(x0, dtype=np.float64)
    l1 = None if l1 is None or not np.any(l1) else np.asarray(l1, dtype=np.float64)

    def total(x, f):
        return f + (float(l1 @ np.abs(x)) if l1 is not None else 0.0)

    f, g = fg(x)
    F = total(x, f)
    hist = [F]
    S, Y, rho = deque(maxlen=history), deque(maxlen=history), deque(maxlen=history)
    it, converged, message = 0, False, "max_iter reached"
    while True:
        pg = _pseudo_gradient(x, g, l1) if l1 is not None else g
        if not np.isfinite(F) or not np.all(np.isfinite(pg)):
            message = "the objective or its gradient is not finite"
            break
        if pg.size == 0 or np.max(np.abs(pg)) <= tol:
            converged, message = True, "gradient below tol"
            break
        if it >= max_iter:
            break
        it += 1
        d = _two_loop(pg, S, Y, rho)
        if l1 is not None:
            d[d * pg >= 0] = 0.0  # keep to the orthant the pseudo-gradient points away from
        slope = float(pg @ d)
        if not slope < 0:  # not a descent direction (stale curvature): restart from steepest
            S.clear(), Y.clear(), rho.clear()
            d, slope = -pg, -float(pg @ pg)
        step = 1.0 if S else min(1.0, 1.0 / float(np.linalg.norm(pg)))
        orthant = np.where(x != 0, np.sign(x), -np.sign(pg)) if l1 is not None else None
        for _ in range(max_ls):
            xn = x + step * d
            if orthant is not None:
                xn[np.sign(xn) != orthant] = 0.0
            fn, gn = fg(xn)
            Fn = total(xn, fn)
            # Armijo; for OWL-QN along the projected path, with pg . (xn - x)
            decrease = float(pg @ (xn - x)) if orthant is not None else step * slope
            if np.isfinite(Fn) and Fn <= F + c1 * decrease:
                break
            step *= 0.5
        else:
            # no trial lowered F: at the floor of float64 precision when the gradient is small
            message = "line search found no decrease"
            converged = bool(np.max(np.abs(pg)) <= max(tol, 1e-6))
            break
        s, y = xn - x, gn - g
        sy = float(s @ y)
        if sy > 1e-12 * float(y @ y):  # keep only pairs with positive curvature
            S.append(s), Y.append(y), rho.append(1.0 / sy)
        rel = (F - Fn) / max(abs(F), abs(Fn), 1.0)
        x, f, g, F = xn, fn, gn, Fn
        hist.append(F)
        if rel <= tol:
            converged, message = True, "relative decrease below tol"
            break
    return Result(x, F, it, converged, message, hist)
