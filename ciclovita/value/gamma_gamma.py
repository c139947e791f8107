"""The Gamma-Gamma model of spend per transaction: fitting and conditional expected order value.

This module owns the Gamma-Gamma model of Colombo & Jiang (1999), "A stochastic RFM model",
*Journal of Interactive Marketing* 13(3), in the formulation of Fader & Hardie (2013), "The
Gamma-Gamma Model of Monetary Value" (http://www.brucehardie.com/notes/025/), written on scipy.

The model: a customer's transaction values are i.i.d. ``Gamma(shape=p, rate=nu)``, so their
mean transaction value is ``p / nu``; across customers ``nu ~ Gamma(shape=q, rate=gamma)``. For
a customer with ``x`` repeat transactions of mean value ``zbar`` (``monetary_value``), ``x zbar``
is ``Gamma(p x, nu)`` and integrating ``nu`` out gives the likelihood used here. Only customers
with at least one repeat transaction (``x > 0``) carry information; the first purchase is left
out, as in the literature, because it is often atypical.

The value unit is whatever the caller passes (the rest of ciclovita stores integer cents and
converts); ``gamma`` is in that unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from ciclovita.value.bgnbd import CONVERGED_GRADIENT, OPTIMISER_OPTIONS, as_1d

__all__ = [
    "GammaGammaFit",
    "GammaGammaParams",
    "expected_order_value",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
]

FloatArray = npt.NDArray[np.float64]

_LOG_BOUND = 18.0
_MIN_REPEAT_BUYERS = 2


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: values ``~ Gamma(p, nu)``, ``nu ~ Gamma(q, gamma)`` (rates)."""

    p: float
    q: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("p", "q", "gamma"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(
                    f"Gamma-Gamma parameter {name} must be finite and > 0, got {value!r}"
                )

    def as_dict(self) -> dict[str, float]:
        """The parameters as a plain ``{"p": ..., "q": ..., "gamma": ...}`` dict."""
        return {"p": self.p, "q": self.q, "gamma": self.gamma}

    @property
    def population_mean(self) -> float:
        """Mean transaction value across customers, ``p gamma / (q - 1)``; ``inf`` if q <= 1."""
        if self.q <= 1.0:
            return float("inf")
        return self.p * self.gamma / (self.q - 1.0)


@dataclass(frozen=True)
class GammaGammaFit:
    """The result of :func:`fit_gamma_gamma`.

    ``n_customers`` counts the customers the fit used (those with ``frequency > 0``);
    ``log_likelihood`` is their (weighted) total.
    """

    params: GammaGammaParams
    log_likelihood: float
    converged: bool
    n_customers: int


def _validate(
    frequency: npt.ArrayLike, monetary_value: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Check and return (x, zbar); raise ValueError on bad input."""
    x = as_1d("frequency", frequency)
    m = as_1d("monetary_value", monetary_value)
    if len(x) != len(m):
        raise ValueError(
            f"frequency and monetary_value must have the same length, got {len(x)} and {len(m)}"
        )
    if len(x) == 0:
        raise ValueError("no customers: frequency and monetary_value are empty")
    bad = ~np.isfinite(x) | (x < 0) | (x != np.floor(x))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"frequency must be a whole number >= 0; element {i} is {x[i]!r}")
    repeat = x > 0
    bad = repeat & ~(np.isfinite(m) & (m >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            "monetary_value must be finite and >= 0 for customers with frequency > 0; "
            f"element {i} has frequency {x[i]:g} and monetary_value {m[i]!r}"
        )
    return x, m


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, frequency: npt.ArrayLike, monetary_value: npt.ArrayLike
) -> FloatArray:
    """Per-customer log-density of the mean repeat value ``zbar`` given ``x`` (x > 0 only).

    ``log f(zbar | p, q, gamma, x)`` with ``x zbar ~ Gamma(p x, nu)``, ``nu ~ Gamma(q, gamma)``::

        lgamma(p x + q) - lgamma(p x) - lgamma(q) + q log(gamma)
        + (p x - 1) log(zbar) + p x log(x) - (p x + q) log(gamma + x zbar)

    Customers left out of the fit (``x == 0``, or ``zbar == 0``: see :func:`fit_gamma_gamma`)
    get 0.
    """
    x, m = _validate(frequency, monetary_value)
    out = np.zeros(len(x), dtype=np.float64)
    pos = (x > 0) & (m > 0)
    out[pos] = _log_lik(params.p, params.q, params.gamma, x[pos], m[pos])
    return out


def _log_lik(p: float, q: float, gamma: float, x: FloatArray, m: FloatArray) -> FloatArray:
    px = p * x
    value = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(gamma + x * m)
    )
    return np.asarray(value, dtype=np.float64)


class _Objective:
    """Weighted mean negative log-likelihood and analytic gradient, on log-parameters."""

    def __init__(self, x: FloatArray, m: FloatArray, w: FloatArray) -> None:
        self.x = x
        self.m = m
        self.total_weight = float(w.sum())
        self.w = w / self.total_weight
        self.log_m = np.log(m)
        self.log_x = np.log(x)
        self.xm = x * m

    def __call__(self, theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, gamma = (float(v) for v in np.exp(theta))
        x, w = self.x, self.w
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            px = p * x
            log_gx = np.log(gamma + self.xm)
            psi_pxq = special.digamma(px + q)
            ll = (
                special.gammaln(px + q)
                - special.gammaln(px)
                - special.gammaln(q)
                + q * np.log(gamma)
                + (px - 1.0) * self.log_m
                + px * self.log_x
                - (px + q) * log_gx
            )
            d_p = x * (psi_pxq - special.digamma(px) + self.log_m + self.log_x - log_gx)
            d_q = psi_pxq - special.digamma(q) + np.log(gamma) - log_gx
            d_gamma = q / gamma - (px + q) / (gamma + self.xm)
        value = -_wsum(w, ll)
        grad = -np.array(
            [_wsum(w, d_p) * p, _wsum(w, d_q) * q, _wsum(w, d_gamma) * gamma],
            dtype=np.float64,
        )
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return float("inf"), np.zeros(3, dtype=np.float64)
        return value, grad


def _wsum(w: FloatArray, v: FloatArray) -> float:
    """``sum(w * v)`` without BLAS (see ``ciclovita.value.bgnbd._wdot`` for why)."""
    return float(np.add.reduce(w * v))


def fit_gamma_gamma(
    frequency: npt.ArrayLike,
    monetary_value: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
) -> GammaGammaFit:
    """Fit the Gamma-Gamma model by maximum likelihood on the customers with frequency > 0.

    ``monetary_value`` is each customer's mean repeat-transaction value (ignored where
    ``frequency == 0``). Repeat buyers whose mean value is exactly 0 (only free orders) are
    left out too: a gamma distribution puts no mass at 0, so they cannot be fitted.
    Identical ``(x, zbar)`` rows are merged before optimising; the fit never raises on
    non-convergence but returns ``converged=False``.

    Raises ValueError for mismatched or empty input, a negative or fractional frequency, a
    negative or non-finite monetary value for a repeat buyer, or fewer than two repeat buyers
    with a positive monetary value.
    """
    x, m = _validate(frequency, monetary_value)
    if weights is None:
        w = np.ones(len(x), dtype=np.float64)
    else:
        w = as_1d("weights", weights)
        if len(w) != len(x):
            raise ValueError(f"weights has length {len(w)} but there are {len(x)} customers")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
    use = (x > 0) & (m > 0) & (w > 0)
    n_used = int(use.sum())
    if n_used < _MIN_REPEAT_BUYERS:
        raise ValueError(
            f"the Gamma-Gamma model needs at least {_MIN_REPEAT_BUYERS} customers with "
            f"frequency > 0 (repeat buyers) and a positive monetary value, got {n_used}"
        )
    xu, mu, wu = _collapse(x[use], m[use], w[use])
    objective = _Objective(xu, mu, wu)

    # Start from p = 1, q = 2 and gamma matching the observed mean value.
    mean_value = float(np.average(mu, weights=wu))
    base = np.log(np.array([1.0, 2.0, mean_value], dtype=np.float64))
    starts = [base, base + np.log([5.0, 2.0, 10.0]), base + np.log([0.2, 1.0, 0.2])]

    best: Any = None
    best_converged = False
    for theta0 in starts:
        result = optimize.minimize(
            objective,
            np.clip(theta0, -_LOG_BOUND + 1, _LOG_BOUND - 1),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 3,
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

    p, q, gamma = (float(v) for v in np.exp(best.x))
    return GammaGammaFit(
        params=GammaGammaParams(p=p, q=q, gamma=gamma),
        log_likelihood=-float(best.fun) * objective.total_weight,
        converged=best_converged,
        n_customers=n_used,
    )


def _collapse(
    x: FloatArray, m: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    order = np.lexsort((m, x))
    xs, ms, ws = x[order], m[order], w[order]
    starts = np.ones(len(xs), dtype=bool)
    starts[1:] = (xs[1:] != xs[:-1]) | (ms[1:] != ms[:-1])
    first = np.flatnonzero(starts)
    return xs[first], ms[first], np.asarray(np.add.reduceat(ws, first), dtype=np.float64)


def _on_boundary(result: Any) -> bool:
    """Did the optimiser stop on the edge of the log-parameter box?"""
    return bool(np.any(np.abs(np.asarray(result.x, dtype=np.float64)) >= _LOG_BOUND - 1e-6))


def _converged(result: Any, objective: _Objective) -> bool:
    theta = np.asarray(result.x, dtype=np.float64)
    if not np.isfinite(result.fun) or not np.all(np.isfinite(theta)):
        return False
    if _on_boundary(result):
        return False
    if bool(result.success):
        return True
    _, grad = objective(theta)
    return bool(np.max(np.abs(grad)) < CONVERGED_GRADIENT)


def expected_order_value(
    params: GammaGammaParams, frequency: npt.ArrayLike, monetary_value: npt.ArrayLike
) -> FloatArray:
    """Conditional expected mean transaction value per customer (Fader & Hardie 2013).

    ``E[M | x, zbar] = (gamma + x zbar) p / (p x + q - 1)``: a weighted average of the
    population mean ``p gamma / (q - 1)`` and the customer's own ``zbar``. For ``x == 0`` this
    is the population mean. When ``q <= 1`` the population mean is infinite (and for small
    ``p x`` the formula breaks down), so those customers get their own ``zbar`` if they have
    repeat purchases, and customers without repeat purchases get the mean of the
    ``monetary_value`` passed in over the customers with ``frequency > 0`` (0 if there are
    none). Never NaN.
    """
    x, m = _validate(frequency, monetary_value)
    p, q, gamma = params.p, params.q, params.gamma
    repeat = x > 0
    denominator = p * x + q - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (gamma + x * np.where(repeat, m, 0.0)) * p / denominator
    fine = (denominator > 0) & np.isfinite(value)
    if fine.all():
        return np.asarray(value, dtype=np.float64)
    observed_mean = float(m[repeat].mean()) if repeat.any() else 0.0
    fallback = np.where(repeat, m, observed_mean)
    return np.asarray(np.where(fine, value, fallback), dtype=np.float64)
