"""Tests of the value-model backtest (``ciclovita.value.backtest``) and ``value fit``'s report.

* publication: on the CDNOW sample, the 39-week calibration / 39-week holdout split of Fader,
  Hardie & Lee (2005) -- the calibration fit is the published one, and the holdout forecast is
  what that fit implies;
* simulation: on transaction logs drawn from the BG/NBD and Gamma-Gamma processes themselves,
  the backtest finds the totals right and every decile calibrated;
* the command: ``ciclovita value fit`` prints it under the parameters and adds it to --json.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ciclovita.value.backtest import (
    MAX_HOLDOUT_DAYS,
    MIN_HOLDOUT_DAYS,
    Backtest,
    BacktestUnavailable,
    backtest_transactions,
    calibration_by_decile,
    default_holdout_days,
)
from ciclovita.value.transactions import fit_transaction_log, read_transaction_log
from tests.test_value_cli import CDNOW, ROOT, run_cli

CDNOW_PATH = ROOT / CDNOW


def cdnow_log() -> pd.DataFrame:
    return read_transaction_log(CDNOW_PATH)


def cdnow_backtest(holdout_days: int | None, end: date = date(1998, 6, 30)) -> Backtest:
    return backtest_transactions(
        cdnow_log(),
        customer_col="customer_id",
        date_col="date",
        amount_col="amount",
        observation_end=end,
        holdout_days=holdout_days,
    )


# ------------------------------------------------------------------------------------------
# CDNOW


def test_cdnow_39_week_calibration_and_39_week_holdout() -> None:
    backtest = cdnow_backtest(273)
    # the calibration period is FHL's: weeks 1-39, ending 1997-09-30, and so is the fit
    assert backtest.calibration_end == date(1997, 9, 30)
    assert backtest.customers == 2357
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert getattr(backtest.bgnbd, name) == pytest.approx(value, abs=0.0005), name
    # weeks 40-78: 1,882 repeat purchase days; the published fit's conditional expectations
    # sum to 1,653 (the unconditional cohort forecast gives 1,669: the same under-forecast,
    # 4% of the cumulative 4,339 repeat purchases by week 78, as FHL's tracking plot shows)
    assert backtest.actual_purchases == 1882
    assert backtest.predicted_purchases == pytest.approx(1653.4, abs=0.5)
    assert backtest.aggregate_error == pytest.approx(-0.1215, abs=0.001)
    assert backtest.mean_actual == pytest.approx(1882 / 2357)
    assert 0.5 < backtest.mean_absolute_error < 1.0
    # calibrated where most of the purchases are: the top decile within 5%
    top = backtest.deciles[-1]
    assert top.mean_predicted == pytest.approx(top.mean_actual, rel=0.05)
    assert [d.customers for d in backtest.deciles] == [236] * 7 + [235] * 3
    predicted = [d.mean_predicted for d in backtest.deciles]
    assert predicted == sorted(predicted)
    assert backtest.revenue_error is not None and backtest.actual_revenue is not None
    assert backtest.actual_revenue == pytest.approx(70976.39)


def test_cdnow_default_holdout_is_a_quarter_of_the_span() -> None:
    backtest = cdnow_backtest(None)
    assert backtest.holdout_days == round(545 / 4) == 136
    assert backtest.calibration_end == date(1998, 2, 14)
    assert backtest.aggregate_error is not None and abs(backtest.aggregate_error) < 0.05
    assert backtest.revenue_error is not None and abs(backtest.revenue_error) < 0.05


def test_default_holdout_days() -> None:
    start = date(2024, 1, 1)
    assert default_holdout_days(start, start + timedelta(days=400)) == 100
    assert default_holdout_days(start, start + timedelta(days=10)) == MIN_HOLDOUT_DAYS
    assert default_holdout_days(start, start + timedelta(days=3000)) == MAX_HOLDOUT_DAYS


def test_backtest_unavailable_says_why() -> None:
    with pytest.raises(BacktestUnavailable, match="leaves no calibration period"):
        cdnow_backtest(600)
    # a calibration period of the first day alone: nobody has bought twice yet
    with pytest.raises(BacktestUnavailable, match="no customer bought twice"):
        cdnow_backtest(544)
    with pytest.raises(ValueError, match="holdout_days"):
        cdnow_backtest(0)


def test_calibration_by_decile_cuts_equal_groups_in_prediction_order() -> None:
    predicted = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    actual = np.array([50.0, 10.0, 30.0, 20.0, 40.0])
    deciles = calibration_by_decile(predicted, actual, groups=2)
    assert [(d.customers, d.mean_predicted, d.mean_actual) for d in deciles] == [
        (3, 2.0, 20.0),
        (2, 4.5, 45.0),
    ]


# ------------------------------------------------------------------------------------------
# simulation: the model's own data


def simulate_log(
    rng: np.random.Generator,
    customers: int,
    *,
    r: float = 0.25,
    alpha: float = 4.0,
    a: float = 0.8,
    b: float = 2.5,
    p: float = 6.0,
    q: float = 4.0,
    gamma: float = 15.0,
    weeks: int = 78,
    acquisition_weeks: int = 12,
) -> tuple[pd.DataFrame, date]:
    """A transaction log drawn from BG/NBD (time in weeks) and Gamma-Gamma spend.

    First purchases are spread over the first ``acquisition_weeks``; then each customer buys
    at Poisson rate lambda ~ Gamma(r, alpha) and drops out after each repeat purchase with
    probability p ~ Beta(a, b) (so makes at most J ~ Geometric(p) repeat purchases); every
    purchase is worth Gamma(p, nu), nu ~ Gamma(q, gamma). Times are floored to whole days.
    """
    start = date(2024, 1, 1)
    lam = rng.gamma(r, 1.0 / alpha, customers)
    drop = rng.beta(a, b, customers)
    first = rng.integers(0, acquisition_weeks * 7, customers)
    horizon = (weeks * 7 - first) / 7.0
    arrivals = rng.poisson(lam * horizon)
    made = np.minimum(arrivals, rng.geometric(drop))
    who = np.repeat(np.arange(customers), arrivals)
    when = rng.random(len(who)) * horizon[who]
    order = np.lexsort((when, who))
    who, when = who[order], when[order]
    rank = np.arange(len(who)) - np.repeat(np.cumsum(arrivals) - arrivals, arrivals)
    kept = rank < made[who]
    who, when = who[kept], when[kept]
    nu = rng.gamma(q, 1.0 / gamma, customers)
    customer = np.concatenate([np.arange(customers), who])
    day = np.concatenate([first, first[who] + np.floor(when * 7).astype(np.int64)])
    amount = rng.gamma(p, 1.0 / nu[customer])
    log = pd.DataFrame(
        {
            "customer_id": customer,
            "date": pd.Timestamp(start) + pd.to_timedelta(day, unit="D"),
            "amount": amount.round(2),
        }
    )
    return log, start + timedelta(days=weeks * 7 - 1)


def test_backtest_on_the_models_own_data_is_calibrated_in_every_decile() -> None:
    log, end = simulate_log(np.random.default_rng(1), 20_000)
    backtest = backtest_transactions(
        log,
        customer_col="customer_id",
        date_col="date",
        amount_col="amount",
        observation_end=end,
        holdout_days=273,
    )
    assert backtest.aggregate_error is not None and abs(backtest.aggregate_error) < 0.03
    assert backtest.revenue_error is not None and abs(backtest.revenue_error) < 0.05
    for decile in backtest.deciles:
        # purchases are overdispersed counts: allow 4 standard errors at variance 3 x mean
        tolerance = 4 * math.sqrt(3 * max(decile.mean_actual, 0.05) / decile.customers)
        assert abs(decile.mean_predicted - decile.mean_actual) < tolerance, decile


# ------------------------------------------------------------------------------------------
# the command


def test_fit_prints_the_backtest_under_the_parameters() -> None:
    result = run_cli("value", "fit", "--transactions", str(CDNOW), "--backtest-days", "273")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert out.index("Gamma-Gamma") < out.index("Backtest: refitted on the data up to 1997-09-30")
    assert "predicted the 273 days to 1998-06-30" in out
    assert "purchases: predicted 1,653.4, actual 1,882 (aggregate error -12.1%)" in out
    assert "Calibration by decile of predicted purchases" in out
    assert "mean predicted" in out and "mean actual" in out


def test_fit_json_has_a_backtest_object_by_default_and_none_with_zero() -> None:
    result = run_cli("value", "fit", "--transactions", str(CDNOW), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    backtest = data["backtest"]
    assert backtest["holdout_days"] == 136
    assert set(backtest) >= {
        "calibration_end",
        "observation_end",
        "customers",
        "predicted_purchases",
        "actual_purchases",
        "aggregate_error",
        "mean_absolute_error",
        "deciles",
    }
    assert len(backtest["deciles"]) == 10
    off = run_cli("value", "fit", "--transactions", str(CDNOW), "--backtest-days", "0", "--json")
    assert off.returncode == 0, off.stderr
    assert "backtest" not in json.loads(off.stdout)


def test_a_backtest_that_cannot_run_does_not_fail_the_fit(tmp_path: Path) -> None:
    result = fit_transaction_log(CDNOW_PATH, backtest_days=600)
    assert result["backtest"] == {
        "holdout_days": 600,
        "skipped": "a 600-day holdout leaves no calibration period: the log runs from "
        "1997-01-01 to 1998-06-30",
    }
    printed = run_cli("value", "fit", "--transactions", str(CDNOW), "--backtest-days", "600")
    assert printed.returncode == 0, printed.stderr
    assert "Backtest (600 days) skipped" in printed.stdout
