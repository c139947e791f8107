"""Lifecycle stage of every customer, decided by the rules of lifecycle.yaml, vectorised.

Input is one frame of per-customer facts and scores (``facts`` joined with RFM and value);
output is the stage of each row and, for customers seen for the first time, an estimate of
when they entered it (so that a first recompute does not pretend everyone entered a stage
today). Precedence is documented in ``ciclovita.lifecycle``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from ciclovita.lifecycle import LifecycleConfig

DAY = 86_400


def assign_stages(frame: pd.DataFrame, config: LifecycleConfig, as_of: datetime) -> np.ndarray:
    """The stage name of each row of ``frame``."""
    now = as_of.timestamp()
    orders = frame["order_count"].to_numpy()
    buyer = orders > 0
    last = frame["last_order_s"].astype("float64").to_numpy()
    first = frame["first_order_s"].astype("float64").to_numpy()
    days_since_last = (now - last) / DAY
    days_since_first = (now - first) / DAY
    purchase_days = frame["purchase_days"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        average_gap = np.where(
            purchase_days >= 2, (last - first) / DAY / (purchase_days - 1), np.nan
        )
    alive = frame["p_alive"].astype("float64").to_numpy()
    repeat = purchase_days >= 2
    nps = frame["nps"].astype("float64").to_numpy()
    referrals = frame["converted_referrals"].to_numpy()
    rfm = frame["rfm_segment"].to_numpy(dtype=object)
    engaged_at = frame["last_engaged_s"].astype("float64").to_numpy()

    rules = config
    lapsed = buyer & (days_since_last > rules.lapsed.after_days)
    with np.errstate(invalid="ignore"):
        at_risk = buyer & (
            (days_since_last > rules.at_risk.after_days)
            | (repeat & (days_since_last > rules.at_risk.gap_multiplier * average_gap))
            | (repeat & (alive < rules.at_risk.max_p_alive))
        )
        loyal = (
            buyer
            & (orders >= rules.loyal.min_orders)
            & np.isin(rfm, list(rules.loyal.rfm_segments))
            & ~(alive < rules.loyal.min_p_alive)
        )
        promoter = (nps >= rules.advocate.min_nps) | (
            referrals >= rules.advocate.min_converted_referrals
        )
    advocate = loyal & promoter
    new_customer = buyer & (days_since_first <= rules.new_customer.window_days)
    engaged = ~buyer & ((now - engaged_at) / DAY <= rules.engaged.window_days)

    stages: np.ndarray = np.select(
        [lapsed, at_risk, advocate, loyal, new_customer, buyer, engaged],
        ["lapsed", "at_risk", "advocate", "loyal", "new_customer", "active", "engaged"],
        default="prospect",
    ).astype(object)
    return stages


def estimate_entered(
    frame: pd.DataFrame, stages: np.ndarray, config: LifecycleConfig, as_of: datetime
) -> np.ndarray:
    """When each customer probably entered ``stages`` (Unix seconds, never after ``as_of``).

    Used only for customers without stage history. New customers entered at their first
    order; active, loyal and advocate at their last order; lapsed and at_risk when their
    silence crossed the threshold; engaged at their last engagement; prospects when created.
    """
    now = as_of.timestamp()
    last = frame["last_order_s"].astype("float64").to_numpy()
    first = frame["first_order_s"].astype("float64").to_numpy()
    engaged_at = frame["last_engaged_s"].astype("float64").to_numpy()
    created = frame["created_s"].to_numpy(dtype=float)
    estimate = np.select(
        [
            stages == "new_customer",
            np.isin(stages, ["active", "loyal", "advocate"]),
            stages == "lapsed",
            stages == "at_risk",
            stages == "engaged",
        ],
        [
            first,
            last,
            last + config.lapsed.after_days * DAY,
            np.minimum(last + config.at_risk.after_days * DAY, now),
            engaged_at,
        ],
        default=created,
    )
    estimate = np.where(np.isnan(estimate), now, estimate)
    entered: np.ndarray = np.minimum(estimate, now).astype(np.int64)
    return entered
