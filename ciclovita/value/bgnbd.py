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
first one; 0 when ``x == 0``) and ``T`` (the time from the first purchase to the end of the
observation period), all in one time unit of the caller's choosing (days, weeks...). ``alpha``
is expressed in that same unit.

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
# Relative slack allowed when checking recency <= T (rounding in the caller's arithmetic).
_RECENCY_SLACK = 1e-9
# expected_purchases divides by (a - 1); at a == 1 exactly the limit is finite but the formula
# is 0/0, so a is moved this far away from 1 (a relative change far below any estimation error).
_A_NUDGE = 1e-7


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
    values. ``converged`` is False when the optimiser stopped without meeting its convergence
    test or ended on the boundary of the search box (a degenerate, non-identified fit).
    """

    params: BgNbdParams
    log_likelihood: float
    converged: bool
    n_customers: int


# --------------------------------------------------------------------------------------------
# input handling


def _as_1d(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _validate_rfm(
    frequency: npt.ArrayLike, recency: npt.ArrayLike, T: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Check and return (x, t_x, T) as float arrays; raise ValueError on bad input."""
    x = _as_1d("frequency", frequency)
    tx = _as_1d("recency", recency)
    t_obs = _as_1d("T", T)
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
    stray = (x == 0) & (tx > 0)
    if stray.any():
        i = int(np.argmax(stray))
        raise ValueError(
            f"recency must be 0 when frequency is 0; element {i} has recency {tx[i]!r}"
        )
    return x, np.minimum(tx, t_obs), t_obs


def _validate_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = _as_1d("weights", weights)
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
    """Merge identical rows of ``columns`` into unique rows, summing their weights."""
    stacked = np.column_stack(columns)
    unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
    summed = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(unique))
    keep = summed > 0
    unique = unique[keep]
    return tuple(np.ascontiguousarray(unique[:, j]) for j in range(unique.shape[1])), summed[keep]


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
    """FHL (2005) eq. 6 in log space: ``ll = A1 + log(exp(A2) + [x > 0] exp(A3))``.

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
    T: npt.ArrayLike,
) -> FloatArray:
    """Per-customer log-likelihood of ``(x, t_x, T)`` under ``params`` (FHL 2005, eq. 6)."""
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    a1, a2, a3, _ = _log_terms(params.r, params.alpha, params.a, params.b, x, tx, t_obs)
    return np.asarray(a1 + np.logaddexp(a2, a3), dtype=np.float64)


class _Objective:
    """Weighted mean negative log-likelihood and its gradient, on log-parameters.

    The special functions depend on the data only through ``x``, so they are evaluated once
    per distinct ``x`` and gathered; only logs and exps run over all (unique) rows.
    """

    def __init__(self, x: FloatArray, tx: FloatArray, t_obs: FloatArray, w: FloatArray) -> None:
        self.xu, inverse = np.unique(x, return_inverse=True)
        self.inv = inverse.reshape(-1)
        self.pos_u = self.xu > 0
        self.x = x
        self.tx = tx
        self.t_obs = t_obs
        self.pos = x > 0
        self.w = w / w.sum()
        self.total_weight = float(w.sum())

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = (float(v) for v in np.exp(theta))
        xu, pos_u, inv = self.xu, self.pos_u, self.inv
        with np.errstate(invalid="ignore", divide="ignore"):
            # per distinct x
            beta_ab = float(special.betaln(a, b))
            c1 = special.gammaln(r + xu) - special.gammaln(r) + r * np.log(alpha)
            c2 = special.betaln(a, b + xu) - beta_ab
            c3 = np.where(pos_u, special.betaln(a + 1.0, b + xu - 1.0) - beta_ab, -np.inf)
            psi_ab = float(special.digamma(a + b))
            psi_abx = special.digamma(a + b + xu)
            d1_r = special.digamma(r + xu) - special.digamma(r) + np.log(alpha)
            d2_a = psi_ab - psi_abx
            d2_b = special.digamma(b + xu) - psi_abx - special.digamma(b) + psi_ab
            d3_a = 1.0 / a + psi_ab - psi_abx  # digamma(a + 1) - digamma(a) == 1 / a
            d3_b = np.where(
                pos_u,
                special.digamma(b + xu - 1.0) - psi_abx - special.digamma(b) + psi_ab,
                0.0,
            )
            # per row
            rx = r + self.x
            log_at = np.log(alpha + self.t_obs)
            log_atx = np.log(alpha + self.tx)
            a2 = c2[inv] - rx * log_at
            a3 = np.where(self.pos, c3[inv] - rx * log_atx, -np.inf)
            mix = np.logaddexp(a2, a3)
            ll = c1[inv] + mix
            w2 = np.exp(a2 - mix)
            w3 = np.where(self.pos, np.exp(a3 - mix), 0.0)

        w = self.w
        value = -float(np.dot(w, ll))
        g_r = np.dot(w, d1_r[inv] - w2 * log_at - w3 * log_atx)
        g_alpha = np.dot(
            w, r / alpha - w2 * rx / (alpha + self.t_obs) - w3 * rx / (alpha + self.tx)
        )
        g_a = np.dot(w, w2 * d2_a[inv] + w3 * d3_a[inv])
        g_b = np.dot(w, w2 * d2_b[inv] + w3 * d3_b[inv])
        grad = -np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b], dtype=np.float64)
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return float("inf"), np.zeros(4, dtype=np.float64)
        return value, grad


def _initial_theta(x: FloatArray, t_obs: FloatArray, w: FloatArray) -> FloatArray:
    """A scale-aware starting point: r = 1, alpha from the mean purchase rate, a = b = 1."""
    rate = float(np.dot(w, x) / max(np.dot(w, t_obs), 1e-12))
    alpha = 1.0 / rate if rate > 0 else max(float(np.average(t_obs, weights=w)), 1.0)
    return np.log(np.array([1.0, alpha, 1.0, 1.0], dtype=np.float64))


def fit_bgnbd(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,
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
    (recency > T, non-integer frequency, recency > 0 with frequency 0).
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
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8},
        )
        converged = _converged(result, objective)
        if (
            best is None
            or (converged and not best_converged)
            or (converged == best_converged and result.fun < best.fun)
        ):
            best, best_converged = result, converged
        if converged:
            break

    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    total = -float(best.fun) * objective.total_weight
    return BgNbdFit(
        params=BgNbdParams(r=r, alpha=alpha, a=a, b=b),
        log_likelihood=total,
        converged=best_converged,
        n_customers=len(x),
    )


def _theta_of(params: BgNbdParams) -> FloatArray:
    return np.log(np.array([params.r, params.alpha, params.a, params.b], dtype=np.float64))


def _converged(result: Any, objective: _Objective) -> bool:
    """Did the optimiser reach an interior optimum?

    L-BFGS-B sometimes stops with an "abnormal termination in line search" at the optimum when
    the objective is flat to machine precision; accept that if the gradient is tiny.
    """
    theta = np.asarray(result.x, dtype=np.float64)
    if not np.isfinite(result.fun) or not np.all(np.isfinite(theta)):
        return False
    if np.any(np.abs(theta) >= _LOG_BOUND - 1e-6):
        return False
    if bool(result.success):
        return True
    _, grad = objective(theta)
    return bool(np.max(np.abs(grad)) < 1e-5)


# --------------------------------------------------------------------------------------------
# predictions


def _log_odds_dead(
    params: BgNbdParams, x: FloatArray, tx: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """``log[(a / (b + x - 1)) ((alpha + T) / (alpha + t_x))^(r + x)]``, ``-inf`` at x == 0.

    P(alive) is ``1 / (1 + exp(this))`` (FHL 2005, eq. 13, written in log space so that very
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
    T: npt.ArrayLike,
) -> FloatArray:
    """Probability that each customer is still active at ``T`` (FHL 2005, eq. 13).

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

    This is FHL (2005) eq. 10 without its P(alive) factor:

        (a + b + x - 1) / (a - 1) * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
                                     * 2F1(r + x, b + x; a + b + x - 1; z)],
        z = t / (alpha + T + t).

    The hypergeometric function there grows without bound with ``x`` (it diverges as z -> 1 like
    (1 - z)^(a - 1 - r - x)), which overflows for heavy buyers. Euler's transformation
    2F1(A, B; C; z) = (1 - z)^(C - A - B) 2F1(C - A, C - B; C; z) folds the power in front into
    it: the bracket becomes ``1 - (1 - z)^(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z)``,
    whose upper parameters no longer depend on ``x`` and whose value tends to a modest limit
    as ``x`` grows.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < _A_NUDGE:
        a = 1.0 + _A_NUDGE
    c = a + b + x - 1.0
    # c is a + b - 1 at x == 0, which the hypergeometric function cannot take near 0 (or a
    # negative integer); the limit is finite, so step just off it.
    c = np.where(np.abs(c) < _A_NUDGE, _A_NUDGE, c)
    z = t / (alpha + t_obs + t)
    log1mz = np.log1p(-z)
    with np.errstate(invalid="ignore", over="ignore"):
        hyp = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        bracket = -np.expm1((a - 1.0) * log1mz) - np.exp((a - 1.0) * log1mz) * (hyp - 1.0)
        value = c / (a - 1.0) * bracket
    return np.asarray(value, dtype=np.float64)


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
    T: npt.ArrayLike,
) -> FloatArray:
    """Expected number of purchases in the next ``t`` time units, per customer (FHL eq. 10).

    ``t`` is a scalar or an array broadcastable against the customers. The result is finite
    and non-negative for every valid input (frequency 0, recency 0 or T, very large frequency).
    """
    x, tx, t_obs = _validate_rfm(frequency, recency, T)
    horizon = _as_horizon(t)
    alive = p_alive(params, x, tx, t_obs)
    value = _expected_alive(params, horizon, x, t_obs) * alive
    value = np.where(horizon == 0, 0.0, value)
    return np.asarray(np.maximum(np.nan_to_num(value, nan=0.0, posinf=0.0), 0.0))


def expected_purchases_new_customer(params: BgNbdParams, t: npt.ArrayLike) -> FloatArray | float:
    """Unconditional expected number of repeat purchases by a new customer within ``t``.

    FHL (2005) eq. 9; a float for scalar ``t``, an array otherwise.
    """
    horizon = _as_horizon(t)
    zero = np.zeros_like(horizon)
    value = _expected_alive(params, horizon, zero, zero)
    value = np.maximum(np.where(horizon == 0, 0.0, value), 0.0)
    if value.ndim == 0:
        return float(value)
    return np.asarray(value, dtype=np.float64)
