"""Predicted customer lifetime value: BG/NBD purchase counts times expected order value, discounted.

This module owns the CLV arithmetic that combines :mod:`ciclovita.value.bgnbd` (how many
purchases to expect) with an expected value per purchase (usually
:func:`ciclovita.value.gamma_gamma.expected_order_value`). For each customer it sums, over the
months ``m = 1..H`` of the horizon,

    (E[purchases by the end of month m] - E[purchases by the end of month m - 1])
    * expected_value / (1 + monthly_rate) ** m,

with ``monthly_rate = (1 + annual_discount_rate) ** (1 / 12) - 1`` and a month of 30.4375 days
(365.25 / 12) converted to the model's time unit. Amounts are floats in whatever unit the
caller uses; ciclovita's integer cents are converted by the caller.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ciclovita.value.bgnbd import BgNbdParams, expected_purchases

__all__ = ["DAYS_PER_MONTH", "monthly_discount_rate", "predicted_clv"]

FloatArray = npt.NDArray[np.float64]

DAYS_PER_MONTH = 30.4375
"""365.25 / 12: the average month, in days."""


def monthly_discount_rate(annual_discount_rate: float) -> float:
    """The monthly rate equivalent to ``annual_discount_rate``: ``(1 + annual)^(1/12) - 1``."""
    if not np.isfinite(annual_discount_rate) or annual_discount_rate <= -1.0:
        raise ValueError(
            f"annual_discount_rate must be finite and > -1, got {annual_discount_rate!r}"
        )
    return float((1.0 + annual_discount_rate) ** (1.0 / 12.0) - 1.0)


def predicted_clv(
    bgnbd: BgNbdParams,
    expected_value: npt.ArrayLike,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,  # noqa: N803 - T is the model's name for it
    *,
    horizon_months: int,
    annual_discount_rate: float,
    time_unit_days: float,
) -> FloatArray:
    """Discounted expected value of each customer's purchases over the next ``horizon_months``.

    ``expected_value`` is the expected value per purchase, per customer (or one number for
    all); ``frequency``, ``recency`` and ``T`` are in the BG/NBD model's time unit, which is
    ``time_unit_days`` days long (1 for a model fitted in days, 7 for weeks). Vectorised over
    customers; customers with identical ``(frequency, recency, T)`` are computed once.
    The result is finite and >= 0 for valid input (a negative or non-finite expected value is
    rejected); ``horizon_months == 0`` gives zeros.
    """
    if isinstance(horizon_months, bool) or not isinstance(horizon_months, int | np.integer):
        raise ValueError(f"horizon_months must be a whole number, got {horizon_months!r}")
    if horizon_months < 0:
        raise ValueError(f"horizon_months must be >= 0, got {horizon_months}")
    if not np.isfinite(time_unit_days) or time_unit_days <= 0:
        raise ValueError(f"time_unit_days must be finite and > 0, got {time_unit_days!r}")
    rate = monthly_discount_rate(annual_discount_rate)

    x = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    tx = np.atleast_1d(np.asarray(recency, dtype=np.float64))
    t_obs = np.atleast_1d(np.asarray(T, dtype=np.float64))
    if not (x.shape == tx.shape == t_obs.shape) or x.ndim != 1:
        raise ValueError(
            "frequency, recency and T must be one-dimensional and of the same length, got "
            f"shapes {x.shape}, {tx.shape} and {t_obs.shape}"
        )
    value = np.asarray(expected_value, dtype=np.float64)
    try:
        value = np.broadcast_to(value, x.shape)
    except ValueError:
        raise ValueError(
            f"expected_value has shape {value.shape}, which does not match the {len(x)} customers"
        ) from None
    bad = ~np.isfinite(value) | (value < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"expected_value must be finite and >= 0; element {i} is {value[i]!r}")
    if len(x) == 0:
        return np.zeros(0, dtype=np.float64)

    # Purchases depend only on (x, t_x, T): compute them once per distinct triple.
    rows = np.column_stack((x, tx, t_obs))
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ux, utx, ut = unique[:, 0], unique[:, 1], unique[:, 2]

    month = DAYS_PER_MONTH / time_unit_days
    discounted_purchases = np.zeros(len(unique), dtype=np.float64)
    previous = np.zeros(len(unique), dtype=np.float64)
    for m in range(1, horizon_months + 1):
        cumulative = expected_purchases(bgnbd, m * month, ux, utx, ut)
        # the cumulative expectation is non-decreasing; clip rounding noise
        cumulative = np.maximum(cumulative, previous)
        discounted_purchases += (cumulative - previous) / (1.0 + rate) ** m
        previous = cumulative
    return np.asarray(discounted_purchases[inverse] * value, dtype=np.float64)
