"""The BG/NBD model of repeat purchasing: fitting, likelihood and per-customer predictions.

This module owns the beta-geometric/negative-binomial distribution model of Fader, Hardie & Lee
(2005), "Counting Your Customers the Easy Way: An Alternative to the Pareto/NBD Model",
*Marketing Science* 24(2), 275-284, written on scipy (no ``lifetimes`` / ``pymc-marketing``).

The model, for one customer observed from their first purchase (time 0) to time ``T``:

* while active, the customer buys as a Poisson process with rate ``lambda``;
* after each *repeat* purchase the customer drops out for good with probability ``p``;
* across customers, ``lambda ~ Gamma(shape=r, rate=alpha)`` and ``p ~ Beta(a, b)``.

The data per customer are ``frequency`` (``x``, the number of repeat purchases, i.e. purchases
after the first one), ``recency`` (``t_x``, the time of the last purchase measured from the
first one; ignored, i.e. taken as 0, when ``x == 0``) and ``T`` (the time from the first
purchase to the end of the observation period), all in one time unit of the caller's choosing
(days, weeks...). ``alpha`` is expressed in that same unit.

Everything is vectorised over customers with numpy; the fit collapses identical
``(x, t_x, T)`` rows into weighted unique rows and evaluates the special functions once per
distinct ``x``, so that hundreds of thousands of customers fit in a second or two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

__all__ = [
    "BgNbdFit",
    "BgNbdParams",
    "bgnbd_log_likelihood",
    "expected_purchases",
    "expected_purchases_new_customer",
    "fit_bgnbd",
    "p_alive",
]

FloatArray = npt.NDArray[np.float64]

# The optimiser works on log-parameters, boxed in so that exp() can neither overflow nor
# underflow to zero. A fit that ends on this box is reported as not converged.
_LOG_BOUND = 18.0
# The optimiser's stopping rules (L-BFGS-B on the mean negative log-likelihood of
# log-parameters): relative change of the objective, projected gradient, and the largest
# gradient accepted as an optimum when the line search ends "abnormally" on a flat objective.
OPTIMISER_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8}
CONVERGED_GRADIENT = 1e-5
# Relative slack allowed when checking recency <= T (rounding in the caller's arithmetic).
_RECENCY_SLACK = 1e-9
# expected_purchases divides by (a - 1); at a == 1 exactly the limit is finite but the formula
# is 0/0, so a is moved this far away from 1 (a relative change far below any estimation error).
_A_NUDGE = 1e-7
# Beyond this z = t / (alpha + T + t) scipy's hyp2f1 loses accuracy; use quadrature instead.
_Z_QUAD = 1.0 - 1e-6
_P_TOP = 1.0 - 1e-10
# Composite Gauss-Legendre rule on [0, _PANELS]: _PANELS panels of 16 nodes each (4 panels
# already reach the accuracy the tail approximations allow; 8 leave a margin).
_PANELS = 8
_QUAD_BLOCK = 4096
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
_PANEL_NODES: FloatArray = (np.arange(_PANELS)[:, None] + (_GL_NODES[None, :] + 1.0) / 2.0).ravel()
_PANEL_WEIGHTS: FloatArray = np.tile(_GL_WEIGHTS / 2.0, _PANELS)


@dataclass(frozen=True)
class BgNbdParams:
    """BG/NBD parameters: ``lambda ~ Gamma(r, alpha)`` (rate), ``p ~ Beta(a, b)``."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"BG/NBD parameter {name} must be finite and > 0, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        """The parameters as a plain ``{"r": ..., "alpha": ..., "a": ..., "b": ...}`` dict."""
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class BgNbdFit:
    """The result of :func:`fit_bgnbd`.

    ``log_likelihood`` is the (weighted) total over all customers, comparable with published
    values; ``n_customers`` is the number of rows passed (customers, or groups of customers
    when ``weights`` are counts). ``converged`` is False when the optimiser stopped without
    meeting its convergence test, ended on the boundary of the search box, or there was no
    repeat purchase at all (the likelihood then has no maximum and says nothing about ``a``
    and ``b``).

    A fit can converge to a near-degenerate point when the data show no sign of one of the
    processes, e.g. ``a -> 0, b -> inf`` when nobody seems to drop out; the parameters then
    wander along a flat ridge, but the predictions they give are sound.
    """

    params: BgNbdParams
    log_likelihood: float
    converged: bool
    n_customers: int


# --------------------------------------------------------------------------------------------
# input handling


def as_1d(name: str, values: npt.ArrayLike) -> FloatArray:
    """``values`` as a one-dimensional float array (a scalar becomes one element)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _validate_rfm(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Check and return (x, t_x, T) as float arrays; raise ValueError on bad input."""
    x = as_1d("frequency", frequency)
    tx = as_1d("recency", recency)
    t_obs = as_1d("T", T)
    if not (len(x) == len(tx) == len(t_obs)):
        raise ValueError(
            "frequency, recency and T must have the same length, got "
            f"{len(x)}, {len(tx)} and {len(t_obs)}"
        )
    if len(x) == 0:
        raise ValueError("no customers: frequency, recency and T are empty")
    for name, arr in (("frequency", x), ("recency", tx), ("T", t_obs)):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name} must be finite; element {i} is {arr[i]!r}")
        neg = arr < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise ValueError(f"{name} must be >= 0; element {i} is {arr[i]!r}")
    non_int = x != np.floor(x)
    if non_int.any():
        i = int(np.argmax(non_int))
        raise ValueError(
            f"frequency counts repeat purchases and must be a whole number; element {i} is {x[i]!r}"
        )
    late = tx > t_obs * (1.0 + _RECENCY_SLACK) + _RECENCY_SLACK
    if late.any():
        i = int(np.argmax(late))
        raise ValueError(
            f"recency must not exceed T; element {i} has recency {tx[i]!r} > T {t_obs[i]!r}"
        )
    # With no repeat purchase the model has no t_x (the likelihood and predictions ignore it);
    # callers measuring recency from timestamps may see a few hours between two orders placed
    # on the same purchase day, so a stray positive recency is set to 0 rather than rejected.
    tx = np.where(x == 0, 0.0, np.minimum(tx, t_obs))
    return x, tx, t_obs


def _validate_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = as_1d("weights", weights)
    if len(w) != n:
        raise ValueError(f"weights has length {len(w)} but there are {n} customers")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return w


def _collapse(
    columns: tuple[FloatArray, ...], weights: FloatArray
) -> tuple[tuple[FloatArray, ...], FloatArray]:
    """Merge identical rows of ``columns`` into unique rows, summing their weights.

    (A lexsort and a scan: several times faster than ``np.unique(axis=0)``.)
    """
    order = np.lexsort(columns[::-1])
    cols = [c[order] for c in columns]
    w = weights[order]
    starts = np.ones(len(w), dtype=bool)
    for c in cols:
        starts[1:] &= c[1:] == c[:-1]
    starts = ~starts
    starts[0] = True
    first = np.flatnonzero(starts)
    summed = np.add.reduceat(w, first)
    keep = summed > 0
    unique = tuple(np.ascontiguousarray(c[first][keep]) for c in cols)
    return unique, np.asarray(summed[keep], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# likelihood


def _log_terms(
    r: float,
    alpha: float,
    a: float,
    b: float,
    x: FloatArray,
    tx: FloatArray,
    t_obs: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """The FHL (2005) likelihood in log space: ``ll = A1 + log(exp(A2) + [x > 0] exp(A3))``.

    Returns ``(A1, A2, A3, x > 0)``; ``A3`` is ``-inf`` where ``x == 0``.
    """
    pos = x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
        beta_ab = special.betaln(a, b)
        a2 = special.betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + t_obs)
        a3 = np.where(
            pos,
            special.betaln(a + 1.0, b + x - 1.0) - beta_ab - (r + x) * np.log(alpha + tx),
            -np.inf,
        )
    return (
        np.asarray(a1, dtype=np.float64),
        np.asarray(a2, dtype=np.float64),
        np.asarray(a3, dtype=np.float64),
        pos,
    )


def bgnbd_log_likelihood(
    params: BgNbdParams,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
) -> FloatArray:
    """Per-customer log-likelihood of ``(x, t_x, T)`` under ``params`` (FHL 2005)."""
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    a1, a2, a3, _ = _log_terms(params.r, params.alpha, params.a, params.b, x, tx, t_obs)
    return np.asarray(a1 + np.logaddexp(a2, a3), dtype=np.float64)


class _Objective:
    """Weighted mean negative log-likelihood and its gradient, on log-parameters.

    The special functions depend on the data only through ``x``, so they are evaluated once
    per distinct ``x`` and gathered. Customers without repeat purchases (usually the majority)
    have a one-term likelihood and are handled apart; for the others the two terms are mixed
    with one exp and one log1p. The gradient is analytic (digamma functions).
    """

    def __init__(self, x: FloatArray, tx: FloatArray, t_obs: FloatArray, w: FloatArray) -> None:
        total = float(w.sum())
        self.total_weight = total
        zero = x == 0
        # customers with x == 0: only T matters
        self.t0 = t_obs[zero]
        self.w0 = w[zero] / total
        self.w0_sum = float(self.w0.sum())
        # customers with x > 0
        pos = ~zero
        self.xu, inverse = np.unique(x[pos], return_inverse=True)
        self.inv = inverse.reshape(-1)
        self.x1 = x[pos]
        self.tx1 = tx[pos]
        self.t1 = t_obs[pos]
        self.w1 = w[pos] / total

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            value, grad = self._evaluate(r, alpha, a, b)
        grad *= -np.array([r, alpha, a, b])
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return float("inf"), np.zeros(4, dtype=np.float64)
        return -value, grad

    def _evaluate(self, r: float, alpha: float, a: float, b: float) -> tuple[float, FloatArray]:
        """Weighted mean log-likelihood and its gradient in (r, alpha, a, b)."""
        log_alpha = float(np.log(alpha))
        psi_r = float(special.digamma(r))
        psi_ab = float(special.digamma(a + b))
        grad = np.zeros(4, dtype=np.float64)
        value = 0.0

        # x == 0:  ll = r log(alpha) - r log(alpha + T)   (the beta terms cancel)
        if len(self.t0):
            log_at0 = np.log(alpha + self.t0)
            w0 = self.w0
            value += r * log_alpha * self.w0_sum - r * _wdot(w0, log_at0)
            grad[0] += log_alpha * self.w0_sum - _wdot(w0, log_at0)
            grad[1] += r / alpha * self.w0_sum - r * _wdot(w0, 1.0 / (alpha + self.t0))

        if len(self.x1):
            xu, inv = self.xu, self.inv
            beta_ab = float(special.betaln(a, b))
            # per distinct x
            c1 = special.gammaln(r + xu) - special.gammaln(r) + r * log_alpha
            c2 = special.betaln(a, b + xu) - beta_ab
            c3 = special.betaln(a + 1.0, b + xu - 1.0) - beta_ab
            psi_abx = special.digamma(a + b + xu)
            d1_r = special.digamma(r + xu) - psi_r + log_alpha
            d2_a = psi_ab - psi_abx
            d2_b = special.digamma(b + xu) - psi_abx - special.digamma(b) + psi_ab
            d3_a = 1.0 / a + psi_ab - psi_abx  # digamma(a + 1) - digamma(a) == 1 / a
            d3_b = special.digamma(b + xu - 1.0) - psi_abx - special.digamma(b) + psi_ab
            # per customer
            rx = r + self.x1
            log_at = np.log(alpha + self.t1)
            log_atx = np.log(alpha + self.tx1)
            a2 = c2[inv] - rx * log_at
            a3 = c3[inv] - rx * log_atx
            diff = a2 - a3
            # (capped so that e never goes subnormal: subnormal arithmetic is very slow)
            e = np.exp(-np.minimum(np.abs(diff), 600.0))
            mix = np.maximum(a2, a3) + np.log1p(e)
            w2 = np.where(diff > 0, 1.0, e) / (1.0 + e)  # exp(a2 - mix)
            w3 = 1.0 - w2
            w1 = self.w1
            value += _wdot(w1, c1[inv] + mix)
            grad[0] += _wdot(w1, d1_r[inv] - w2 * log_at - w3 * log_atx)
            grad[1] += r / alpha * float(w1.sum()) - _wdot(
                w1, rx * (w2 / (alpha + self.t1) + w3 / (alpha + self.tx1))
            )
            grad[2] += _wdot(w1, w2 * d2_a[inv] + w3 * d3_a[inv])
            grad[3] += _wdot(w1, w2 * d2_b[inv] + w3 * d3_b[inv])
        return value, grad


def _wdot(w: FloatArray, v: FloatArray) -> float:
    """``sum(w * v)`` without BLAS.

    ``np.dot`` hands long vectors to OpenBLAS, whose worker threads spin and can make each
    likelihood evaluation tens of times slower on a busy machine; a plain reduction does not.
    """
    return float(np.add.reduce(w * v))


def _initial_theta(x: FloatArray, t_obs: FloatArray, w: FloatArray) -> FloatArray:
    """A scale-aware starting point: r = 1, alpha from the mean purchase rate, a = b = 1."""
    rate = _wdot(w, x) / max(_wdot(w, t_obs), 1e-12)
    alpha = 1.0 / rate if rate > 0 else max(float(np.average(t_obs, weights=w)), 1.0)
    return np.log(np.array([1.0, alpha, 1.0, 1.0], dtype=np.float64))


def fit_bgnbd(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
    *,
    weights: npt.ArrayLike | None = None,
    initial: BgNbdParams | None = None,
) -> BgNbdFit:
    """Fit the BG/NBD model by maximum likelihood.

    ``frequency``, ``recency`` and ``T`` are per-customer arrays (see the module docstring);
    ``weights`` optionally counts how many customers each row stands for. Identical rows are
    merged before optimising. The optimiser (L-BFGS-B on log-parameters with an analytic
    gradient, restarted from other points if it fails) never raises on non-convergence: it
    returns its best point with ``converged=False``.

    Raises ValueError for empty, mismatched, negative, non-finite or inconsistent input
    (recency > T, non-integer frequency). Recency is ignored (taken as 0) where frequency is 0.
    """
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    w = _validate_weights(weights, len(x))
    (xu, txu, tu), wu = _collapse((x, tx, t_obs), w)
    objective = _Objective(xu, txu, tu, wu)

    starts = [_initial_theta(xu, tu, wu) if initial is None else _theta_of(initial)]
    # Fallback starting points, tried only if the first run fails.
    base = starts[0]
    starts += [base + np.log([0.25, 0.25, 0.5, 2.0]), base + np.log([4.0, 4.0, 2.0, 0.5])]

    best: Any = None
    best_converged = False
    for theta0 in starts:
        theta0 = np.clip(theta0, -_LOG_BOUND + 1, _LOG_BOUND - 1)
        result = optimize.minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
            options=OPTIMISER_OPTIONS,
        )
        converged = _converged(result, objective)
        if (
            best is None
            or (converged and not best_converged)
            or (converged == best_converged and result.fun < best.fun)
        ):
            best, best_converged = result, converged
        # Another start can help an optimiser that failed, not a supremum on the box edge.
        if converged or _on_boundary(result):
            break

    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    total = -float(best.fun) * objective.total_weight
    return BgNbdFit(
        params=BgNbdParams(r=r, alpha=alpha, a=a, b=b),
        log_likelihood=total,
        converged=best_converged and bool(np.any(xu > 0)),
        n_customers=len(x),
    )


def _theta_of(params: BgNbdParams) -> FloatArray:
    return np.log(np.array([params.r, params.alpha, params.a, params.b], dtype=np.float64))


def _on_boundary(result: Any) -> bool:
    """Did the optimiser stop on the edge of the log-parameter box?"""
    return bool(np.any(np.abs(np.asarray(result.x, dtype=np.float64)) >= _LOG_BOUND - 1e-6))


def _converged(result: Any, objective: _Objective) -> bool:
    """Did the optimiser reach an interior optimum?

    L-BFGS-B sometimes stops with an "abnormal termination in line search" at the optimum when
    the objective is flat to machine precision; accept that if the gradient is tiny.
    """
    theta = np.asarray(result.x, dtype=np.float64)
    if not np.isfinite(result.fun) or not np.all(np.isfinite(theta)):
        return False
    if _on_boundary(result):
        return False
    if bool(result.success):
        return True
    _, grad = objective(theta)
    return bool(np.max(np.abs(grad)) < CONVERGED_GRADIENT)


# --------------------------------------------------------------------------------------------
# predictions


def _log_odds_dead(
    params: BgNbdParams, x: FloatArray, tx: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """``log[(a / (b + x - 1)) ((alpha + T) / (alpha + t_x))^(r + x)]``, ``-inf`` at x == 0.

    P(alive) is ``1 / (1 + exp(this))`` (FHL 2005, written in log space so that very
    large frequencies cannot overflow).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    pos = x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (
            np.log(a) - np.log(b + x - 1.0) + (r + x) * (np.log(alpha + t_obs) - np.log(alpha + tx))
        )
    return np.asarray(np.where(pos, value, -np.inf), dtype=np.float64)


def p_alive(
    params: BgNbdParams,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
) -> FloatArray:
    """Probability that each customer is still active at ``T`` (FHL 2005).

    Exactly 1.0 for customers with no repeat purchase: under the model a customer can only drop
    out right after a repeat purchase.
    """
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    log_odds = _log_odds_dead(params, x, tx, t_obs)
    # 1 / (1 + e^z) = exp(-log(1 + e^z)), stable for any z (and exactly 1 at z = -inf)
    return np.asarray(np.exp(-np.logaddexp(0.0, log_odds)), dtype=np.float64)


def _expected_alive(
    params: BgNbdParams, t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """Expected purchases in ``(T, T + t]`` for a customer *known to be alive* at ``T``.

    Evaluated with the closed form (:func:`_expected_alive_closed`); the entries where scipy's
    hypergeometric function fails are recomputed by quadrature (:func:`_expected_alive_quad`).
    It fails by returning NaN for some arguments (an integer ``c - a - b``, or a large ``b``
    with ``z`` near 1: for some parameter values a tenth of the customers), and it loses
    accuracy as ``z -> 1``; results that are non-finite, outside the bounds the true value
    must satisfy, or have ``z > _Z_QUAD`` go to the quadrature.
    """
    t_b, x_b, obs_b = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(t, x, t_obs))
    shape = t_b.shape
    t_f, x_f, obs_f = t_b.ravel(), x_b.ravel(), obs_b.ravel()
    value = _expected_alive_closed(params, t_f, x_f, obs_f)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # E[purchases | alive] <= E[lambda] t = (r + x) t / (alpha + T), and <= E[1/p] if a > 1
    bound = (r + x_f) * t_f / (alpha + obs_f)
    if a > 1.0:
        bound = np.minimum(bound, (a + b + x_f - 1.0) / (a - 1.0))
    z = t_f / (alpha + obs_f + t_f)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(value) | (value < 0) | (value > bound * (1.0 + 1e-8)) | (z > _Z_QUAD)
    if bad.any():
        value = value.copy()
        value[bad] = _expected_alive_quad(params, t_f[bad], x_f[bad], obs_f[bad])
    value = np.clip(value, 0.0, bound)
    return np.asarray(value.reshape(shape), dtype=np.float64)


def _expected_alive_closed(
    params: BgNbdParams, t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """FHL (2005) eq. 10 without its P(alive) factor:

        (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
                                     * 2F1(r + x, b + x; a + b + x - 1; z)],
        z = t / (alpha + T + t).

    The hypergeometric function there grows without bound with ``x`` (it diverges as z -> 1 like
    (1 - z)^(a - 1 - r - x)), which overflows for heavy buyers. Euler's transformation
    2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z) folds the power in front into
    it: the bracket becomes ``1 - (1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z)``,
    whose upper parameters no longer depend on ``x`` and whose value tends to 1 as ``x`` grows.
    The bracket is computed as ``-expm1((a-1) log(1-z)) - (1-z)^(a-1) (2F1 - 1)`` to keep
    precision for small ``z``.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < _A_NUDGE:
        a = 1.0 + _A_NUDGE
    c = a + b + x - 1.0
    # c is a + b - 1 at x == 0, which the hypergeometric function cannot take at 0 (nor at a
    # negative integer); the limit is finite, so step just off it.
    c = np.where(np.abs(c) < _A_NUDGE, _A_NUDGE, c)
    z = t / (alpha + t_obs + t)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        log1mz = np.log1p(-z)
        hyp = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        bracket = -np.expm1((a - 1.0) * log1mz) - np.exp((a - 1.0) * log1mz) * (hyp - 1.0)
        value = c / (a - 1.0) * bracket
    return np.asarray(value, dtype=np.float64)


def _expected_alive_quad(
    params: BgNbdParams, t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """The same expectation as :func:`_expected_alive_closed`, by numerical integration.

    Given alive at ``T``, the posterior is ``lambda ~ Gamma(R = r + x, alpha + T)`` and
    ``p ~ Beta(a, b + x)``, independent, and a customer alive with (lambda, p) makes
    ``(1 - exp(-lambda p t)) / p`` purchases on average in the next ``t``. Integrating lambda out
    leaves ``E_p[g(p)]`` with ``g(p) = (1 - (1 + p s)^(-R)) / p``, ``s = t / (alpha + T)``, a
    bounded decreasing function (``g(0) = R s``). The integral over p is split into
    ``[0, p_a]`` where ``g(p) ~ R s (1 - (R + 1) p s / 2)`` (integrated exactly with
    incomplete beta functions), ``[p_b, 1]`` with ``p_b = 1 - 1e-10`` where ``g ~ g(p_b)``, and
    the rest, restricted to the central ``1 - 2e-16`` of the beta distribution and integrated
    by composite Gauss-Legendre in logit(p). Accurate to about 1e-7 relative everywhere; slower
    than the closed form, so only used where that fails.
    """
    out = np.empty(len(t), dtype=np.float64)
    # Work on blocks of rows: the quadrature needs (rows x nodes) temporaries.
    for start in range(0, len(t), _QUAD_BLOCK):
        block = slice(start, start + _QUAD_BLOCK)
        out[block] = _expected_alive_quad_block(params, t[block], x[block], t_obs[block])
    return out


def _expected_alive_quad_block(
    params: BgNbdParams, t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    big_r = r + x
    s = t / (alpha + t_obs)
    # functions of b + x alone (inverse incomplete beta is slow): once per distinct x
    xu, inverse = np.unique(x, return_inverse=True)
    inverse = inverse.reshape(-1)
    bx_u = b + xu
    with np.errstate(all="ignore"):
        q_lo = np.nan_to_num(special.betaincinv(a, bx_u, 1e-16), nan=0.0)[inverse]
        q_hi = np.nan_to_num(special.betaincinv(a, bx_u, 1.0 - 1e-16), nan=1.0)[inverse]
        p_a = np.minimum(1e-4 / (s * (big_r + 1.0)), _P_TOP)
    log_beta = special.betaln(a, bx_u)[inverse]
    bx = b + x
    p_b = np.full_like(p_a, _P_TOP)
    p_hi = np.maximum(np.minimum(p_b, q_hi), p_a)
    p_lo = np.minimum(np.maximum(p_a, q_lo), p_hi)

    cdf_a = special.betainc(a, bx, p_a)
    partial_mean_a = a / (a + bx) * special.betainc(a + 1.0, bx, p_a)
    lower = big_r * s * (cdf_a - (big_r + 1.0) * s / 2.0 * partial_mean_a)
    upper = _g(p_b, s, big_r) * special.betaincc(a, bx, p_b)

    v_lo = special.logit(p_lo)
    width = (special.logit(p_hi) - v_lo) / _PANELS
    v = v_lo[:, None] + width[:, None] * _PANEL_NODES[None, :]
    log_p = -np.logaddexp(0.0, -v)
    log_q = -np.logaddexp(0.0, v)
    # beta density times dp/dv = p (1 - p)
    density = np.exp(a * log_p + bx[:, None] * log_q - log_beta[:, None])
    g = _g(np.exp(log_p), s[:, None], big_r[:, None])
    middle = (density * g * _PANEL_WEIGHTS).sum(axis=-1) * width
    return np.asarray(lower + middle + upper, dtype=np.float64)


def _g(p: FloatArray, s: FloatArray, big_r: FloatArray) -> FloatArray:
    """``(1 - (1 + p s)^(-R)) / p``, with its series near ``p s = 0``."""
    y = p * s
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = -np.expm1(-big_r * np.log1p(y)) / p
    series = big_r * s * (1.0 - (big_r + 1.0) * y / 2.0)
    return np.asarray(np.where(y < 1e-8, series, exact), dtype=np.float64)


def _as_horizon(t: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"the prediction horizon t must be finite and >= 0, got {t!r}")
    return arr


def expected_purchases(
    params: BgNbdParams,
    t: npt.ArrayLike,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
) -> FloatArray:
    """Expected number of purchases in the next ``t`` time units, per customer (FHL eq. 10).

    ``t`` is a scalar or an array broadcastable against the customers. The result is finite
    and non-negative for every valid input (frequency 0, recency 0 or T, very large frequency).
    """
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    horizon = _as_horizon(t)
    alive = p_alive(params, x, tx, t_obs)
    value = _expected_alive(params, horizon, x, t_obs) * alive
    return np.asarray(np.where(horizon == 0, 0.0, value), dtype=np.float64)


def expected_purchases_new_customer(params: BgNbdParams, t: npt.ArrayLike) -> FloatArray | float:
    """Unconditional expected number of repeat purchases by a new customer within ``t``.

    FHL (2005); a float for scalar ``t``, an array otherwise.
    """
    horizon = _as_horizon(t)
    zero = np.zeros_like(horizon)
    value = _expected_alive(params, horizon, zero, zero)
    value = np.maximum(np.where(horizon == 0, 0.0, value), 0.0)
    if value.ndim == 0:
        return float(value)
    return np.asarray(value, dtype=np.float64)
