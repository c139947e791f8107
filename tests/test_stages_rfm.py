"""Lifecycle stage rules and RFM scoring, on hand-made customers (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ciclovita.lifecycle import RFM_SEGMENTS, LifecycleConfig
from ciclovita.scoring.rfm import SEGMENT_GRID, quintile_scores, rfm_scores, rfm_segments
from ciclovita.scoring.stages import DAY, assign_stages, estimate_entered

AS_OF = datetime(2026, 6, 15, 12, tzinfo=UTC)
NOW = AS_OF.timestamp()


def customer(
    *,
    orders: int = 0,
    first_days_ago: float | None = None,
    last_days_ago: float | None = None,
    purchase_days: int | None = None,
    engaged_days_ago: float | None = None,
    nps: int | None = None,
    referrals: int = 0,
    rfm: str | None = None,
    p_alive: float | None = None,
) -> dict[str, object]:
    return {
        "order_count": orders,
        "purchase_days": purchase_days if purchase_days is not None else orders,
        "first_order_s": None if first_days_ago is None else NOW - first_days_ago * DAY,
        "last_order_s": None if last_days_ago is None else NOW - last_days_ago * DAY,
        "last_engaged_s": None if engaged_days_ago is None else NOW - engaged_days_ago * DAY,
        "created_s": NOW - 400 * DAY,
        "nps": nps,
        "converted_referrals": referrals,
        "rfm_segment": rfm,
        "p_alive": p_alive,
    }


def stages_of(*rows: dict[str, object], config: LifecycleConfig | None = None) -> list[str]:
    frame = pd.DataFrame(list(rows))
    for column in ("first_order_s", "last_order_s", "last_engaged_s", "nps"):
        frame[column] = frame[column].astype("Float64")
    frame["p_alive"] = frame["p_alive"].astype("float64")
    return list(assign_stages(frame, config or LifecycleConfig(), AS_OF))


def test_each_stage_from_its_rule() -> None:
    assert stages_of(
        customer(),
        customer(engaged_days_ago=3),
        customer(engaged_days_ago=45),
        customer(orders=1, first_days_ago=10, last_days_ago=10),
        customer(orders=1, first_days_ago=60, last_days_ago=60),
        customer(orders=5, first_days_ago=300, last_days_ago=20, rfm="Champions", p_alive=0.9),
        customer(
            orders=5, first_days_ago=300, last_days_ago=20, rfm="Champions", p_alive=0.9, nps=10
        ),
        customer(
            orders=4, first_days_ago=300, last_days_ago=20, rfm="Loyal", p_alive=0.8, referrals=1
        ),
        customer(orders=2, first_days_ago=400, last_days_ago=130),
        customer(orders=3, first_days_ago=900, last_days_ago=400),
    ) == [
        "prospect",
        "engaged",
        "prospect",
        "new_customer",
        "active",
        "loyal",
        "advocate",
        "advocate",
        "at_risk",
        "lapsed",
    ]


def test_loyal_needs_value_and_life() -> None:
    # enough orders but a weak RFM profile, or probably gone: not loyal
    assert stages_of(
        customer(orders=5, first_days_ago=300, last_days_ago=20, rfm="Need Attention", p_alive=0.9),
        customer(orders=5, first_days_ago=300, last_days_ago=20, rfm="Champions", p_alive=0.4),
    ) == ["active", "active"]


def test_at_risk_from_own_rhythm_and_from_p_alive() -> None:
    # buys every ~10 days, silent for 40: past 2.5 × its own gap
    rhythm = customer(orders=10, purchase_days=10, first_days_ago=130, last_days_ago=40)
    # a repeat buyer the model thinks is probably gone
    fading = customer(orders=3, first_days_ago=200, last_days_ago=50, p_alive=0.1)
    # a one-time buyer's P(alive) is 1 by the model, never a reason
    once = customer(orders=1, first_days_ago=50, last_days_ago=50, p_alive=0.1)
    assert stages_of(rhythm, fading, once) == ["at_risk", "at_risk", "active"]


def test_thresholds_come_from_the_config() -> None:
    config = LifecycleConfig.model_validate(
        {"lapsed": {"after_days": 200}, "at_risk": {"after_days": 100}}
    )
    assert stages_of(customer(orders=2, first_days_ago=400, last_days_ago=250), config=config) == [
        "lapsed"
    ]


def test_config_rejects_crossed_windows() -> None:
    with pytest.raises(ValueError, match=r"at_risk.after_days \(400\) must be smaller"):
        LifecycleConfig.model_validate({"at_risk": {"after_days": 400}})


def test_first_entry_is_estimated_from_history() -> None:
    rows = [
        customer(orders=1, first_days_ago=10, last_days_ago=10),
        customer(orders=3, first_days_ago=900, last_days_ago=400),
        customer(),
    ]
    frame = pd.DataFrame(rows)
    for column in ("first_order_s", "last_order_s", "last_engaged_s"):
        frame[column] = frame[column].astype("Float64")
    entered = estimate_entered(
        frame, np.array(["new_customer", "lapsed", "prospect"]), LifecycleConfig(), AS_OF
    )
    assert entered[0] == pytest.approx(NOW - 10 * DAY)
    assert entered[1] == pytest.approx(NOW - 400 * DAY + 365 * DAY)
    assert entered[2] == pytest.approx(NOW - 400 * DAY)
    assert (entered <= NOW).all()


def test_quintiles_are_deterministic_and_tie_aware() -> None:
    values = np.array([1, 1, 1, 1, 2, 3, 4, 5, 6, 100], dtype=float)
    scores = quintile_scores(values)
    assert scores.tolist() == [1, 1, 1, 1, 3, 3, 4, 4, 5, 5]
    shuffled = np.random.default_rng(3).permutation(len(values))
    assert quintile_scores(values[shuffled]).tolist() == scores[shuffled].tolist()
    assert quintile_scores(np.array([])).tolist() == []


def test_recency_scores_reward_recent_buyers() -> None:
    r, f, m = rfm_scores([1, 10, 100, 400, 1000], [9, 5, 3, 2, 1], [9000, 500, 300, 200, 100])
    assert r.tolist() == [5, 4, 3, 2, 1]
    assert f.tolist() == [5, 4, 3, 2, 1]
    assert m.tolist() == [5, 4, 3, 2, 1]


def test_every_rfm_cell_is_named() -> None:
    r, f = np.repeat(np.arange(1, 6), 5), np.tile(np.arange(1, 6), 5)
    names = rfm_segments(r, f, f)
    assert set(names) == set(RFM_SEGMENTS)
    assert rfm_segments(np.array([5]), np.array([5]), np.array([5]))[0] == "Champions"
    assert rfm_segments(np.array([1]), np.array([1]), np.array([1]))[0] == "Lost"
    assert rfm_segments(np.array([1]), np.array([5]), np.array([5]))[0] == "Cannot Lose Them"
    assert len(SEGMENT_GRID) == 5
