"""Customer value per customer: BG/NBD + Gamma-Gamma fitted on a sample, applied to all.

The models are fitted by maximum likelihood on a seeded random sample of buyers (at most
``fit_sample_size``) and refitted only when the last fit is older than ``refit_after_days``,
so that a recompute on unchanged data changes nothing. Every customer gets well-defined
values: buyers with one purchase day get the model's prediction for x = 0; customers without
a completed order get zero predicted value and no P(alive) (NULL: not yet a customer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from ciclovita.lifecycle import ValueSettings
from ciclovita.value.bgnbd import BgNbdParams, expected_purchases, fit_bgnbd, p_alive
from ciclovita.value.clv import predicted_clv
from ciclovita.value.gamma_gamma import GammaGammaParams, expected_order_value, fit_gamma_gamma

log = logging.getLogger(__name__)

DAY_SECONDS = 86_400
UNIT_DAYS = {"days": 1.0, "weeks": 7.0}
# Model outputs are estimates: stored to two decimals (P(alive) 0.73, not 0.734129), so that
# the passing of a day does not rewrite every buyer's row, only real changes do.
PRECISION = 2
MIN_BUYERS_TO_FIT = 20
MIN_REPEAT_BUYERS_TO_FIT = 5


@dataclass(frozen=True)
class ValueModel:
    """Fitted parameters of both models, or None where the data could not support a fit."""

    bgnbd: BgNbdParams | None
    gamma_gamma: GammaGammaParams | None
    bgnbd_log_likelihood: float | None
    gg_log_likelihood: float | None
    n_customers: int
    n_fitted: int
    converged: bool
    time_unit: str
    fitted_at: datetime
    reused: bool = False
    note: str = ""
    reference: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "bgnbd": self.bgnbd.as_dict() if self.bgnbd else None,
            "gamma_gamma": self.gamma_gamma.as_dict() if self.gamma_gamma else None,
            "bgnbd_log_likelihood": self.bgnbd_log_likelihood,
            "gg_log_likelihood": self.gg_log_likelihood,
            "n_customers": self.n_customers,
            "n_fitted": self.n_fitted,
            "converged": self.converged,
            "time_unit": self.time_unit,
            "fitted_at": self.fitted_at.isoformat(),
            "reused": self.reused,
            "note": self.note,
        }

    @property
    def clv_percentiles(self) -> list[float] | None:
        value = self.reference.get("clv")
        return list(value) if value else None


@dataclass(frozen=True)
class ModelInputs:
    """BG/NBD inputs for buyers: repeat purchase days, recency and age, in the time unit."""

    frequency: np.ndarray
    recency: np.ndarray
    age: np.ndarray
    avg_order: np.ndarray


def model_inputs(facts: pd.DataFrame, as_of: datetime, time_unit: str) -> ModelInputs:
    """Inputs for every row of ``facts`` (rows without orders get zeros)."""
    # whole days, as in the literature (purchases are dated, not timed): customers with the
    # same history then share one (x, t_x, T) and the models compute it once
    unit = UNIT_DAYS[time_unit]
    as_of_day = np.floor(as_of.timestamp() / DAY_SECONDS)
    now = as_of.timestamp()
    first_s = facts["first_order_s"].astype("float64").fillna(now).to_numpy()
    last_s = facts["last_order_s"].astype("float64").fillna(now).to_numpy()
    first, last = np.floor(first_s / DAY_SECONDS), np.floor(last_s / DAY_SECONDS)
    frequency = np.maximum(facts["purchase_days"].to_numpy(dtype=float) - 1.0, 0.0)
    recency = np.maximum(last - first, 0.0) / unit
    age = np.maximum(as_of_day - first, 0.0) / unit
    recency = np.minimum(recency, age)
    orders = facts["order_count"].to_numpy(dtype=float)
    avg_order = np.divide(
        facts["monetary_cents"].to_numpy(dtype=float),
        orders,
        out=np.zeros(len(facts)),
        where=orders > 0,
    )
    return ModelInputs(frequency, recency, age, avg_order)


def buyer_sample(facts: pd.DataFrame, settings: ValueSettings) -> pd.DataFrame:
    """A seeded random sample of buyers, at most ``fit_sample_size`` (all when fewer)."""
    buyers = facts[facts["order_count"] > 0]
    if len(buyers) <= settings.fit_sample_size:
        return buyers
    rng = np.random.default_rng(settings.seed)
    chosen = np.sort(rng.choice(len(buyers), size=settings.fit_sample_size, replace=False))
    return buyers.iloc[chosen]


def fit_value_model(facts: pd.DataFrame, as_of: datetime, settings: ValueSettings) -> ValueModel:
    """Fit BG/NBD and Gamma-Gamma on a seeded sample of buyers."""
    n = int((facts["order_count"] > 0).sum())
    buyers = buyer_sample(facts, settings)
    inputs = model_inputs(buyers, as_of, settings.time_unit)
    repeaters = int((inputs.frequency > 0).sum())
    empty = ValueModel(None, None, None, None, n, len(buyers), False, settings.time_unit, as_of)
    if len(buyers) < MIN_BUYERS_TO_FIT or repeaters < MIN_REPEAT_BUYERS_TO_FIT:
        return _with_note(
            empty,
            f"too little history to fit: {len(buyers)} buyers, {repeaters} repeat buyers "
            f"(need {MIN_BUYERS_TO_FIT} and {MIN_REPEAT_BUYERS_TO_FIT})",
        )
    try:
        bg = fit_bgnbd(inputs.frequency, inputs.recency, inputs.age)
        gg = fit_gamma_gamma(inputs.frequency, inputs.avg_order)
    except ValueError as exc:
        return _with_note(empty, f"fit failed: {exc}")
    return ValueModel(
        bgnbd=bg.params,
        gamma_gamma=gg.params,
        bgnbd_log_likelihood=bg.log_likelihood,
        gg_log_likelihood=gg.log_likelihood,
        n_customers=n,
        n_fitted=len(buyers),
        converged=bg.converged and gg.converged,
        time_unit=settings.time_unit,
        fitted_at=as_of,
    )


def _with_note(model: ValueModel, note: str) -> ValueModel:
    log.warning("value model: %s", note)
    return ValueModel(**{**model.__dict__, "note": note})


def score_value(
    facts: pd.DataFrame, model: ValueModel, as_of: datetime, settings: ValueSettings
) -> pd.DataFrame:
    """Value columns for every customer in ``facts`` (same index); never NaN where defined."""
    inputs = model_inputs(facts, as_of, model.time_unit)
    buyer = facts["order_count"].to_numpy() > 0
    n = len(facts)
    expected = np.zeros(n)
    alive = np.full(n, np.nan)
    order_value = inputs.avg_order.copy()
    clv = np.zeros(n)
    if model.bgnbd is not None and model.gamma_gamma is not None and buyer.any():
        f, r, t = inputs.frequency[buyer], inputs.recency[buyer], inputs.age[buyer]
        horizon = settings.horizon_months * 30.4375 / UNIT_DAYS[model.time_unit]
        expected[buyer] = expected_purchases(model.bgnbd, horizon, f, r, t)
        alive[buyer] = p_alive(model.bgnbd, f, r, t)
        order_value[buyer] = expected_order_value(model.gamma_gamma, f, inputs.avg_order[buyer])
        clv[buyer] = predicted_clv(
            model.bgnbd,
            order_value[buyer],
            f,
            r,
            t,
            horizon_months=settings.horizon_months,
            annual_discount_rate=settings.annual_discount_rate,
            time_unit_days=UNIT_DAYS[model.time_unit],
        )
    historical = facts["monetary_cents"].to_numpy(dtype=np.int64)
    indirect = facts["indirect_value_cents"].to_numpy(dtype=np.int64)
    campaign_cost = (
        facts["messages_sent"].to_numpy(dtype=np.int64) * settings.cost_per_message_cents
    )
    # an estimate, kept to whole euros: stable from one day to the next
    predicted_cents = (np.rint(np.nan_to_num(clv, nan=0.0, posinf=0.0) / 100) * 100).astype(
        np.int64
    )
    net = (
        historical
        + predicted_cents
        + indirect
        - facts["acquisition_cost_cents"].to_numpy(dtype=np.int64)
        - campaign_cost
    )
    out = pd.DataFrame(
        {
            "expected_purchases": np.round(np.nan_to_num(expected, nan=0.0), PRECISION),
            "p_alive": np.where(buyer, np.round(alive, PRECISION), np.nan),
            "expected_order_cents": np.rint(np.nan_to_num(order_value)).astype(np.int64),
            "historical_clv_cents": historical,
            "predicted_clv_cents": predicted_cents,
            "indirect_value_cents": indirect,
            "campaign_cost_cents": campaign_cost,
            "net_value_cents": net,
        },
        index=facts.index,
    )
    if model.bgnbd is None:
        out.loc[buyer, "p_alive"] = np.nan
    # without a fitted model every predicted CLV is 0: no quantile rather than a false "top"
    out["clv_quantile"] = (
        clv_quantile(out["predicted_clv_cents"].to_numpy(), buyer, model.clv_percentiles)
        if model.bgnbd is not None
        else np.full(n, np.nan)
    )
    return out


def clv_percentile_points(clv_cents: np.ndarray) -> list[float]:
    """The 0th-100th percentiles of buyers' predicted CLV: the reference for quantiles."""
    if clv_cents.size == 0:
        return []
    return [float(v) for v in np.percentile(clv_cents, np.arange(101))]


def clv_quantile(clv: np.ndarray, buyer: np.ndarray, percentiles: list[float] | None) -> np.ndarray:
    """Where each buyer's predicted CLV falls (0-1, two decimals) in the reference
    distribution of the last fit; NaN for non-buyers. Depends only on the customer's own CLV."""
    quantile = np.full(len(clv), np.nan)
    if buyer.any():
        points = np.asarray(percentiles if percentiles else clv_percentile_points(clv[buyer]))
        share = np.linspace(0.0, 1.0, len(points))
        # the highest percentile whose value the CLV reaches (ties: the top of the tie)
        index = np.searchsorted(points, clv[buyer], side="right") - 1
        quantile[buyer] = np.round(share[np.clip(index, 0, len(points) - 1)], 2)
    return quantile
