"""Backtest of the value models: fit on the past, predict a period already seen, compare.

This module owns the model-quality check behind ``ciclovita value fit``: how far to trust the
BG/NBD purchase predictions (and so P(alive) and CLV) on *this* shop's data.

With the transaction log observed up to ``T`` and a holdout of ``h`` days:

1. :func:`~ciclovita.value.transactions.summarise_transactions` summarises the log up to the
   calibration end ``T - h``; BG/NBD (:mod:`~ciclovita.value.bgnbd`) and Gamma-Gamma
   (:mod:`~ciclovita.value.gamma_gamma`) are fitted on that summary alone;
2. for each customer of the calibration period (first purchase on or before ``T - h``) the
   model predicts the purchases in ``(T - h, T]``, ``E[X(h) | x, t_x, T_cal]``
   (:func:`~ciclovita.value.bgnbd.expected_purchases`), and, times the conditional expected
   order value, the revenue;
3. these are compared with what each customer really did in ``(T - h, T]`` (purchase days,
   all purchases on one day counting as one, as in the fit):

   * ``aggregate_error = (sum predicted - sum actual) / sum actual``: the bias of the total;
   * ``mean_absolute_error = mean_i |predicted_i - actual_i|``: purchases per customer (it
     cannot be near 0 -- purchases are random even when the model is right -- so read it
     beside ``mean_actual``);
   * calibration by decile of prediction: customers sorted by their prediction and cut into
     ten groups of equal size, the mean predicted beside the mean actual in each. A well
     calibrated model has the two close in every decile; a model that ranks well but is off
     in level has them apart by the same factor.

The default holdout (:func:`default_holdout_days`) is a quarter of the observed span, at least
:data:`MIN_HOLDOUT_DAYS` and at most :data:`MAX_HOLDOUT_DAYS`: long enough for purchases to
happen, short enough to leave three quarters of the history for the fit. Customers who first
bought during the holdout are not in the backtest (the model has nothing to say about them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from ciclovita.value.bgnbd import BgNbdParams, expected_purchases, fit_bgnbd
from ciclovita.value.gamma_gamma import GammaGammaParams, expected_order_value, fit_gamma_gamma
from ciclovita.value.transactions import (
    TimeUnit,
    _days_per_unit,
    _to_days,
    summarise_transactions,
)

__all__ = [
    "DECILES",
    "MAX_HOLDOUT_DAYS",
    "MIN_HOLDOUT_DAYS",
    "Backtest",
    "BacktestUnavailable",
    "DecileCalibration",
    "backtest_transactions",
    "calibration_by_decile",
    "default_holdout_days",
]

MIN_HOLDOUT_DAYS = 7
MAX_HOLDOUT_DAYS = 365
DECILES = 10


class BacktestUnavailable(ValueError):  # noqa: N818 - a state of the data, not a bug
    """The backtest cannot be run on this log (too short, or the calibration fit fails)."""


@dataclass(frozen=True)
class DecileCalibration:
    """One decile of customers by predicted purchases: mean predicted and mean actual."""

    decile: int
    customers: int
    mean_predicted: float
    mean_actual: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "decile": self.decile,
            "customers": self.customers,
            "mean_predicted": self.mean_predicted,
            "mean_actual": self.mean_actual,
        }


@dataclass(frozen=True)
class Backtest:
    """The result of :func:`backtest_transactions` (see the module docstring)."""

    holdout_days: int
    calibration_end: date
    observation_end: date
    time_unit: str
    customers: int
    bgnbd: BgNbdParams
    predicted_purchases: float
    actual_purchases: int
    aggregate_error: float | None
    mean_absolute_error: float
    mean_actual: float
    deciles: tuple[DecileCalibration, ...]
    gamma_gamma: GammaGammaParams | None
    predicted_revenue: float | None
    actual_revenue: float | None
    revenue_error: float | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "holdout_days": self.holdout_days,
            "calibration_end": self.calibration_end.isoformat(),
            "observation_end": self.observation_end.isoformat(),
            "time_unit": self.time_unit,
            "customers": self.customers,
            "calibration_fit": {
                **self.bgnbd.as_dict(),
                **(self.gamma_gamma.as_dict() if self.gamma_gamma is not None else {}),
            },
            "predicted_purchases": self.predicted_purchases,
            "actual_purchases": self.actual_purchases,
            "aggregate_error": self.aggregate_error,
            "mean_absolute_error": self.mean_absolute_error,
            "mean_actual_purchases": self.mean_actual,
            "deciles": [d.as_dict() for d in self.deciles],
            "predicted_revenue": self.predicted_revenue,
            "actual_revenue": self.actual_revenue,
            "revenue_error": self.revenue_error,
        }


def default_holdout_days(first: date, last: date) -> int:
    """A quarter of the span from ``first`` to ``last``, within the min and max holdout."""
    span = (last - first).days
    return int(min(MAX_HOLDOUT_DAYS, max(MIN_HOLDOUT_DAYS, round(span / 4))))


def backtest_transactions(
    log: pd.DataFrame,
    *,
    customer_col: str,
    date_col: str,
    amount_col: str | None,
    observation_end: date | None = None,
    holdout_days: int | None = None,
    time_unit: TimeUnit = "weeks",
) -> Backtest:
    """Fit on the log up to ``observation_end - holdout_days``, predict the rest, compare.

    ``log`` is one row per transaction with dates as datetimes (as
    :func:`~ciclovita.value.transactions.summarise_transactions` takes it);
    ``observation_end`` defaults to the last date, ``holdout_days`` to
    :func:`default_holdout_days`. Without ``amount_col`` the revenue figures are None.

    Raises BacktestUnavailable when the calibration period is empty or too short, nobody
    could buy in it twice, or the calibration fit does not converge; ValueError for a bad
    ``holdout_days``.
    """
    unit_days = _days_per_unit(time_unit)
    days = _to_days(log[date_col])
    end = pd.Timestamp(observation_end) if observation_end is not None else days.max()
    first = days.min()
    if holdout_days is None:
        holdout_days = default_holdout_days(first.date(), end.date())
    if isinstance(holdout_days, bool) or not isinstance(holdout_days, int) or holdout_days < 1:
        raise ValueError(f"holdout_days must be a whole number >= 1, got {holdout_days!r}")
    calibration_end = end - pd.Timedelta(days=holdout_days)
    if calibration_end <= first:
        raise BacktestUnavailable(
            f"a {holdout_days}-day holdout leaves no calibration period: the log runs from "
            f"{first.date()} to {end.date()}"
        )

    summary = summarise_transactions(
        log,
        customer_col=customer_col,
        date_col=date_col,
        amount_col=amount_col,
        observation_end=calibration_end.date(),
        time_unit=time_unit,
    )
    x = summary["frequency"].to_numpy(dtype=np.float64)
    tx = summary["recency"].to_numpy(dtype=np.float64)
    t_cal = summary["T"].to_numpy(dtype=np.float64)
    if len(summary) == 0 or not np.any(x > 0):
        raise BacktestUnavailable(
            f"no customer bought twice by the calibration end {calibration_end.date()}"
        )
    fit = fit_bgnbd(x, tx, t_cal)
    if not fit.converged:
        raise BacktestUnavailable(
            f"the BG/NBD fit on the data up to {calibration_end.date()} did not converge"
        )
    predicted = expected_purchases(fit.params, holdout_days / unit_days, x, tx, t_cal)

    # what the calibration customers really did in (calibration_end, end]
    window = (days > calibration_end) & (days <= end)
    holdout = pd.DataFrame(
        {
            "customer": log.loc[window, customer_col].to_numpy(),
            "day": days[window].to_numpy(),
            "amount": (
                pd.to_numeric(log.loc[window, amount_col]).to_numpy(dtype=np.float64)
                if amount_col is not None
                else np.zeros(int(window.sum()))
            ),
        }
    )
    per_customer = holdout.groupby("customer").agg(
        purchases=("day", "nunique"), revenue=("amount", "sum")
    )
    per_customer = per_customer.reindex(summary.index, fill_value=0)
    actual = per_customer["purchases"].to_numpy(dtype=np.float64)

    gg: GammaGammaParams | None = None
    predicted_revenue = actual_revenue = revenue_error = None
    if amount_col is not None:
        monetary = summary["monetary_value"].to_numpy(dtype=np.float64)
        spenders = (x > 0) & (monetary > 0)
        if int(spenders.sum()) >= 2:
            gg_fit = fit_gamma_gamma(x[spenders], monetary[spenders])
            if gg_fit.converged:
                gg = gg_fit.params
                value = expected_order_value(gg, x, np.where(x > 0, monetary, 0.0))
                predicted_revenue = float(np.sum(predicted * value))
                actual_revenue = float(per_customer["revenue"].sum())
                revenue_error = (
                    (predicted_revenue - actual_revenue) / actual_revenue
                    if actual_revenue > 0
                    else None
                )

    total_predicted = float(predicted.sum())
    total_actual = int(actual.sum())
    return Backtest(
        holdout_days=holdout_days,
        calibration_end=calibration_end.date(),
        observation_end=end.date(),
        time_unit=time_unit,
        customers=len(summary),
        bgnbd=fit.params,
        predicted_purchases=total_predicted,
        actual_purchases=total_actual,
        aggregate_error=(total_predicted - total_actual) / total_actual if total_actual else None,
        mean_absolute_error=float(np.mean(np.abs(predicted - actual))),
        mean_actual=float(np.mean(actual)),
        deciles=calibration_by_decile(predicted, actual),
        gamma_gamma=gg,
        predicted_revenue=predicted_revenue,
        actual_revenue=actual_revenue,
        revenue_error=revenue_error,
    )


def calibration_by_decile(
    predicted: np.ndarray[Any, np.dtype[np.float64]],
    actual: np.ndarray[Any, np.dtype[np.float64]],
    groups: int = DECILES,
) -> tuple[DecileCalibration, ...]:
    """Customers sorted by prediction (ties in their given order), cut into equal groups."""
    order = np.argsort(predicted, kind="stable")
    parts = np.array_split(order, min(groups, len(order)))
    return tuple(
        DecileCalibration(
            decile=i + 1,
            customers=len(part),
            mean_predicted=float(predicted[part].mean()),
            mean_actual=float(actual[part].mean()),
        )
        for i, part in enumerate(parts)
        if len(part)
    )
