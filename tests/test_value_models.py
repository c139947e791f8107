"""Tests of the customer-lifetime-value maths: BG/NBD, Gamma-Gamma, CLV, transaction summaries.

Three kinds of evidence:

* simulation: customers drawn from each model's generative process with known parameters are
  fitted back, and the predictions are compared with what the simulated customers really did;
* publication: the CDNOW 1/10th sample (tests/data/cdnow_sample.csv) reproduces the fits of
  Fader, Hardie & Lee (2005) and Fader & Hardie (2013);
* independent arithmetic: the closed forms are checked against numerical integration.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

from ciclovita.errors import InputError
from ciclovita.value.bgnbd import (
    CONVERGED_GRADIENT,
    BgNbdFit,
    BgNbdParams,
    bgnbd_log_likelihood,
    expected_purchases,
    expected_purchases_new_customer,
    fit_bgnbd,
    p_alive,
)
from ciclovita.value.clv import DAYS_PER_MONTH, monthly_discount_rate, predicted_clv
from ciclovita.value.gamma_gamma import (
    GammaGammaParams,
    expected_order_value,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from ciclovita.value.transactions import fit_transaction_log, summarise_transactions

DATA = Path(__file__).parent / "data"
CDNOW = DATA / "cdnow_sample.csv"

TRUE_BG = BgNbdParams(r=0.25, alpha=4.0, a=0.8, b=2.5)
# Published BG/NBD fit to the CDNOW sample, weeks (Fader, Hardie & Lee 2005).
CDNOW_BG = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_BG_LOGLIK = -9582.4
# Published Gamma-Gamma fit to the 946 CDNOW repeat buyers (Fader & Hardie 2013).
CDNOW_GG = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)


# ------------------------------------------------------------------------------------------
# simulation helpers


def simulate_bgnbd(
    rng: np.random.Generator,
    params: BgNbdParams,
    age: np.ndarray,
    holdout: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw customers from the BG/NBD process, observed over (0, T] and then (T, T + holdout].

    Each customer has lambda ~ Gamma(r, rate alpha) and p ~ Beta(a, b); purchases arrive as a
    Poisson process with rate lambda from the first purchase at time 0, and after each repeat
    purchase the customer dies with probability p. The purchase opportunities in (0, T + h] are
    N ~ Poisson(lambda (T + h)) uniform points, of which Binomial(N, T / (T + h)) fall in the
    calibration period; the customer makes the first J ~ Geometric(p) of them and then dies.
    Given n calibration arrivals the x-th one is at T * Beta(x, n - x + 1). ``age`` is T.

    Returns (x, t_x, T, purchases in the holdout, alive at T).
    """
    n = len(age)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    total = rng.poisson(lam * (age + holdout))
    n_cal = rng.binomial(total, age / (age + holdout)) if holdout > 0 else total
    death = rng.geometric(p)
    x = np.minimum(n_cal, death)
    future = np.maximum(np.minimum(death, total) - n_cal, 0)
    tx = np.zeros(n)
    pos = x > 0
    tx[pos] = age[pos] * rng.beta(x[pos], n_cal[pos] - x[pos] + 1)
    return x.astype(float), tx, age.astype(float), future.astype(float), death > n_cal


def reference_expected_purchases(
    params: BgNbdParams, t: float, x: float, tx: float, age: float
) -> float:
    """E[purchases in (T, T + t] | x, t_x, T] by adaptive quadrature, independently of FHL eq. 10.

    ``age`` is T. Given alive at T the posterior is lambda ~ Gamma(r + x, alpha + T) and
    p ~ Beta(a, b + x); an alive customer with (lambda, p) makes (1 - exp(-lambda p t)) / p
    purchases on average in the next t. Integrating lambda out leaves an integral over p.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    big_r, s, bx = r + x, t / (alpha + age), b + x

    def integrand(p: float) -> float:
        log_density = (a - 1) * math.log(p) + (bx - 1) * math.log1p(-p) - special.betaln(a, bx)
        return math.exp(log_density) * -math.expm1(-big_r * math.log1p(p * s)) / p

    # piecewise, with the pieces' edges where the beta density and g(p) change
    mean = a / (a + bx)
    scales = {mean * k for k in (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)} | {1 / s}
    edges = sorted({0.0, 1.0} | {min(v, 0.5) for v in scales})
    value = sum(
        integrate.quad(integrand, lo, hi, limit=500, epsabs=0.0, epsrel=1e-12)[0]
        for lo, hi in itertools.pairwise(edges)
    )
    odds_dead = a / (bx - 1) * ((alpha + age) / (alpha + tx)) ** big_r if x > 0 else 0.0
    return float(value / (1.0 + odds_dead))


# ------------------------------------------------------------------------------------------
# BG/NBD: fitting


def test_bgnbd_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(20240501)
    age = rng.integers(7, 78 * 7 + 1, 50_000) / 7.0  # 1 to 78 weeks, whole days
    x, tx, age, _, _ = simulate_bgnbd(rng, TRUE_BG, age)

    fit = fit_bgnbd(x, tx, age)

    assert isinstance(fit, BgNbdFit)
    assert fit.converged
    assert fit.n_customers == 50_000
    got, want = fit.params.as_dict(), TRUE_BG.as_dict()
    # Sampling spread at this size (30 seeds): about 1% (r), 2% (alpha), 4% (a), 5% (b).
    for name, tolerance in (("r", 0.05), ("alpha", 0.07), ("a", 0.15), ("b", 0.15)):
        assert got[name] == pytest.approx(want[name], rel=tolerance), name
    # It is the maximum: the true parameters fit the sample no better.
    assert fit.log_likelihood >= bgnbd_log_likelihood(TRUE_BG, x, tx, age).sum()
    assert fit.log_likelihood == pytest.approx(bgnbd_log_likelihood(fit.params, x, tx, age).sum())


def test_bgnbd_weights_are_counts() -> None:
    rng = np.random.default_rng(7)
    age = rng.integers(1, 40, 3_000).astype(float)
    x, tx, age, _, _ = simulate_bgnbd(rng, TRUE_BG, age)
    rows = pd.DataFrame({"x": x, "tx": tx, "T": age})
    counted = rows.value_counts().reset_index()

    expanded = fit_bgnbd(x, tx, age)
    weighted = fit_bgnbd(counted["x"], counted["tx"], counted["T"], weights=counted["count"])

    assert weighted.converged and expanded.converged
    for name, value in expanded.params.as_dict().items():
        assert weighted.params.as_dict()[name] == pytest.approx(value, rel=1e-5), name
    assert weighted.log_likelihood == pytest.approx(expanded.log_likelihood, rel=1e-9)


def test_bgnbd_fit_of_200k_customers_finishes(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    # continuous ages: nothing to merge, the worst case for the fit
    x, tx, age, _, _ = simulate_bgnbd(rng, TRUE_BG, rng.uniform(0.1, 104.0, n))

    started = time.perf_counter()
    fit = fit_bgnbd(x, tx, age)
    elapsed = time.perf_counter() - started

    with capsys.disabled():
        print(f"\nBG/NBD fit of {n:,} simulated customers: {elapsed:.2f} s -> {fit.params}")
    assert fit.converged
    assert fit.params.r == pytest.approx(TRUE_BG.r, rel=0.05)


@pytest.mark.parametrize(
    ("frequency", "recency", "age", "message"),
    [
        ([1, 2], [0.5], [1, 2], "same length"),
        ([], [], [], "empty"),
        ([-1], [0], [5], ">= 0"),
        ([1], [-0.5], [5], ">= 0"),
        ([1], [6], [5], "must not exceed T"),
        ([1.5], [1], [5], "whole number"),
        ([1], [float("nan")], [5], "finite"),
        ([1], [1], [float("inf")], "finite"),
    ],
)
def test_bgnbd_rejects_bad_input(frequency, recency, age, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_bgnbd(frequency, recency, age)
    with pytest.raises(ValueError, match=message):
        expected_purchases(CDNOW_BG, 10.0, frequency, recency, age)


def test_bgnbd_params_must_be_positive() -> None:
    with pytest.raises(ValueError, match="alpha"):
        BgNbdParams(r=0.2, alpha=0.0, a=1.0, b=1.0)
    assert CDNOW_BG.as_dict() == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def test_bgnbd_fit_without_repeat_purchases_reports_no_convergence() -> None:
    # With no repeat purchase at all the dropout process is not identified.
    fit = fit_bgnbd(np.zeros(500), np.zeros(500), np.linspace(1, 50, 500))
    assert not fit.converged
    assert math.isfinite(fit.log_likelihood)


# ------------------------------------------------------------------------------------------
# BG/NBD: predictions


def test_expected_purchases_matches_the_fhl_paper_example() -> None:
    # FHL (2005): a customer with x = 2, t_x = 30.43, T = 38.86 (weeks) is expected to make
    # 1.226 purchases in the next 39 weeks.
    value = expected_purchases(CDNOW_BG, 39.0, [2], [30.43], [38.86])
    assert value[0] == pytest.approx(1.226, abs=5e-4)


@pytest.mark.parametrize(
    ("params", "t", "x", "tx", "age"),
    [
        (CDNOW_BG, 39.0, 2, 30.43, 38.86),
        (CDNOW_BG, 39.0, 0, 0.0, 38.86),
        (CDNOW_BG, 1000.0, 0, 0.0, 1.0),
        (CDNOW_BG, 39.0, 10, 5.0, 50.0),
        (CDNOW_BG, 10.0, 50, 40.0, 50.0),
        (CDNOW_BG, 3.0, 1, 0.0, 0.5),
        (BgNbdParams(2.0, 1.0, 3.0, 0.5), 39.0, 2, 30.43, 38.86),
        (BgNbdParams(0.3, 2.0, 0.2, 0.3), 100.0, 5, 5.0, 5.0),
        (BgNbdParams(0.5, 10.0, 1.0, 1.0), 39.0, 3, 20.0, 38.0),  # a == 1: 0/0 in eq. 10
        (CDNOW_BG, 1.0, 1_000_000, 52.0, 52.0),
        (CDNOW_BG, 39.0, 2_000, 51.0, 52.0),
        # parameters where scipy's hyp2f1 returns NaN (exercise the quadrature fallback)
        (BgNbdParams(1.0, 5.0, 2.0, 300.0), 52.0, 0, 0.0, 0.0),
        (BgNbdParams(1.0, 5.0, 2.0, 10.0), 520.0, 100, 50.0, 52.0),
        (BgNbdParams(0.3, 5.0, 0.5, 300.0), 5200.0, 0, 0.0, 0.0),
    ],
)
def test_expected_purchases_agrees_with_numerical_integration(params, t, x, tx, age) -> None:
    value = expected_purchases(params, t, [x], [tx], [age])[0]
    assert value == pytest.approx(reference_expected_purchases(params, t, x, tx, age), rel=1e-6)


def test_expected_purchases_known_high_precision_value() -> None:
    # 9.748808055744298: FHL eq. 10 evaluated with mpmath at 50 digits (x = 0, so P(alive) = 1).
    # scipy's hyp2f1 returns NaN for these arguments.
    value = expected_purchases(BgNbdParams(1.0, 5.0, 2.0, 300.0), 52.0, [0], [0.0], [0.0])
    assert value[0] == pytest.approx(9.748808055744298, rel=1e-9)


def test_predictions_match_simulated_customers() -> None:
    rng = np.random.default_rng(11)
    age = rng.integers(7, 52 * 7 + 1, 50_000) / 7.0
    x, tx, age, future, alive = simulate_bgnbd(rng, TRUE_BG, age, holdout=39.0)

    expected = expected_purchases(TRUE_BG, 39.0, x, tx, age)
    alive_probability = p_alive(TRUE_BG, x, tx, age)

    # Spread over seeds at this size: 0.9% (holdout purchases), 0.2% and 0.7% (alive).
    assert expected.sum() == pytest.approx(future.sum(), rel=0.035)
    assert alive_probability.sum() == pytest.approx(alive.sum(), rel=0.01)
    repeat = x > 0
    assert alive_probability[repeat].sum() == pytest.approx(alive[repeat].sum(), rel=0.03)
    heavy = x >= 5
    assert expected[heavy].sum() == pytest.approx(future[heavy].sum(), rel=0.06)


def test_expected_purchases_new_customer_matches_simulation() -> None:
    rng = np.random.default_rng(5)
    for horizon in (10.0, 52.0, 200.0):
        x, *_ = simulate_bgnbd(rng, TRUE_BG, np.full(200_000, horizon))
        expected = expected_purchases_new_customer(TRUE_BG, horizon)
        assert isinstance(expected, float)
        assert expected == pytest.approx(x.mean(), rel=0.03)
    # the same as a customer with x = 0 observed for T = 0
    many = expected_purchases_new_customer(TRUE_BG, np.array([0.0, 5.0, 50.0]))
    assert isinstance(many, np.ndarray)
    assert many[0] == 0.0
    assert many[2] == pytest.approx(expected_purchases(TRUE_BG, 50.0, [0], [0], [0])[0])


def test_p_alive_edge_values() -> None:
    x = np.array([0, 0, 1, 3, 30])
    tx = np.array([0.0, 0.0, 10.0, 10.0, 1.0])
    age = np.array([0.0, 50.0, 10.0, 10.0, 50.0])
    alive = p_alive(CDNOW_BG, x, tx, age)
    assert alive[0] == 1.0 and alive[1] == 1.0  # exactly: no repeat purchase, no dropout
    # recency == T: alive with probability 1 / (1 + a / (b + x - 1))
    assert alive[2] == pytest.approx(1 / (1 + CDNOW_BG.a / CDNOW_BG.b))
    assert alive[3] == pytest.approx(1 / (1 + CDNOW_BG.a / (CDNOW_BG.b + 2)))
    assert 0.0 < alive[4] < 1e-20  # bought often, then silent for a long time
    alive_x30 = 1 / (
        1
        + CDNOW_BG.a
        / (CDNOW_BG.b + 29)
        * ((CDNOW_BG.alpha + 50) / (CDNOW_BG.alpha + 1)) ** (CDNOW_BG.r + 30)
    )
    assert alive[4] == pytest.approx(alive_x30, rel=1e-12)
    # a stray recency with frequency 0 (two orders on the first day) is ignored
    assert p_alive(CDNOW_BG, [0], [0.2], [5.0])[0] == 1.0


def test_predictions_are_finite_at_the_edges() -> None:
    x = np.array([0, 0, 1, 1, 1, 5, 1_000, 1_000_000, 1_000_000, 40])
    tx = np.array([0, 0, 0, 30, 1e-9, 30, 50, 52, 1, 0])
    age = np.array([0, 52, 52, 30, 52, 30, 52, 52, 52, 52])
    for params in (CDNOW_BG, TRUE_BG, BgNbdParams(3.0, 0.5, 5.0, 0.2), BgNbdParams(1, 5, 2, 300)):
        for t in (0.0, 1e-6, 1.0, 39.0, 520.0, 1e6):
            expected = expected_purchases(params, t, x, tx, age)
            assert np.all(np.isfinite(expected)), (params, t, expected)
            assert np.all(expected >= 0), (params, t, expected)
            # never more than the posterior mean purchase rate allows
            assert np.all(expected <= (params.r + x) * t / (params.alpha + age) * (1 + 1e-9))
        alive = p_alive(params, x, tx, age)
        assert np.all((alive >= 0) & (alive <= 1))
        assert np.all(np.isfinite(bgnbd_log_likelihood(params, x, tx, age)))
    assert np.all(expected_purchases(CDNOW_BG, 0.0, x, tx, age) == 0.0)
    # heavy recent buyer: about (r + x) / (alpha + T) purchases a week, less ~1% of dropout
    heavy = expected_purchases(CDNOW_BG, 1.0, [1_000_000], [52], [52])[0]
    assert heavy == pytest.approx((CDNOW_BG.r + 1_000_000) / (CDNOW_BG.alpha + 52), rel=0.01)


def test_expected_purchases_grows_with_the_horizon_and_broadcasts() -> None:
    horizons = np.array([0.0, 1.0, 4.0, 13.0, 52.0, 520.0])
    values = expected_purchases(
        CDNOW_BG, horizons, np.full(6, 3.0), np.full(6, 20.0), np.full(6, 38.0)
    )
    assert np.all(np.diff(values) > 0)
    assert values[0] == 0.0


# ------------------------------------------------------------------------------------------
# Gamma-Gamma


def simulate_gamma_gamma(
    rng: np.random.Generator, params: GammaGammaParams, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """x ~ 1 + Poisson(4) repeat transactions each ~ Gamma(p, rate nu), nu ~ Gamma(q, rate gamma).

    Returns (x, mean transaction value).
    """
    x = 1 + rng.poisson(4.0, n)
    nu = rng.gamma(params.q, 1.0 / params.gamma, n)
    owner = np.repeat(np.arange(n), x)
    values = rng.gamma(params.p, 1.0 / nu[owner])
    zbar = np.bincount(owner, weights=values, minlength=n) / x
    return x.astype(float), zbar


def test_gamma_gamma_recovers_simulated_parameters() -> None:
    true = GammaGammaParams(p=6.0, q=3.5, gamma=20.0)
    rng = np.random.default_rng(99)
    x, zbar = simulate_gamma_gamma(rng, true, 50_000)
    # customers without repeat purchases are ignored whatever their value
    x = np.concatenate([x, np.zeros(1_000)])
    zbar = np.concatenate([zbar, np.zeros(1_000)])

    fit = fit_gamma_gamma(x, zbar)

    assert fit.converged
    assert fit.n_customers == 50_000
    # Sampling spread at this size: about 4% (p, gamma), 1% (q), 1% (population mean).
    assert fit.params.p == pytest.approx(true.p, rel=0.15)
    assert fit.params.q == pytest.approx(true.q, rel=0.05)
    assert fit.params.gamma == pytest.approx(true.gamma, rel=0.15)
    assert fit.params.population_mean == pytest.approx(true.population_mean, rel=0.03)
    assert fit.log_likelihood >= gamma_gamma_log_likelihood(true, x, zbar).sum()


def test_gamma_gamma_input_checks() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        fit_gamma_gamma([0, 0, 3], [0.0, 0.0, 10.0])
    with pytest.raises(ValueError, match="at least 2"):
        fit_gamma_gamma([1, 2, 3], [0.0, 0.0, 10.0])  # only free repeat orders: no spend data
    with pytest.raises(ValueError, match="monetary_value"):
        fit_gamma_gamma([1, 2, 3], [5.0, -1.0, 10.0])
    with pytest.raises(ValueError, match="monetary_value"):
        fit_gamma_gamma([1, 2, 3], [5.0, float("nan"), 10.0])
    with pytest.raises(ValueError, match="same length"):
        fit_gamma_gamma([1, 2, 3], [5.0, 10.0])
    with pytest.raises(ValueError, match="whole number"):
        fit_gamma_gamma([1.5, 2, 3], [5.0, 10.0, 10.0])


def test_expected_order_value() -> None:
    params = CDNOW_GG
    population_mean = params.p * params.gamma / (params.q - 1)
    x = np.array([0, 1, 5, 100])
    zbar = np.array([0.0, 10.0, 10.0, 10.0])
    value = expected_order_value(params, x, zbar)
    assert value[0] == pytest.approx(population_mean)
    assert value[1] == pytest.approx((params.gamma + 10.0) * params.p / (params.p + params.q - 1))
    # shrinks from the population mean towards the customer's own mean as x grows
    assert value[0] > value[1] > value[2] > value[3] > 10.0
    assert value[3] == pytest.approx(10.0, rel=0.05)


def test_expected_order_value_without_a_finite_population_mean() -> None:
    params = GammaGammaParams(p=0.1, q=0.8, gamma=10.0)  # q <= 1: infinite population mean
    value = expected_order_value(params, [0, 1, 4], [0.0, 30.0, 50.0])
    assert np.all(np.isfinite(value))
    assert value[0] == pytest.approx(40.0)  # mean of the repeat buyers' values passed in
    assert value[1] == pytest.approx(30.0)  # p x + q - 1 <= 0: own mean
    assert value[2] == pytest.approx((10.0 + 4 * 50.0) * 0.1 / (0.1 * 4 + 0.8 - 1))
    assert expected_order_value(params, [0, 0], [0.0, 0.0]).tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------------------
# CLV


def _clv(**overrides: Any) -> np.ndarray:
    arguments: dict[str, Any] = {
        "bgnbd": CDNOW_BG,
        "expected_value": np.array([40.0, 40.0, 25.0, 60.0, 40.0]),
        "frequency": np.array([0, 2, 2, 10, 1_000_000]),
        "recency": np.array([0.0, 30.43, 5.0, 38.0, 38.86]),
        "T": np.array([38.86, 38.86, 38.86, 38.86, 38.86]),
        "horizon_months": 12,
        "annual_discount_rate": 0.10,
        "time_unit_days": 7.0,
    }
    arguments.update(overrides)
    return predicted_clv(**arguments)


def test_predicted_clv_is_finite_and_non_negative() -> None:
    clv = _clv()
    assert clv.shape == (5,)
    assert np.all(np.isfinite(clv)) and np.all(clv >= 0)
    assert clv[3] > clv[2]  # frequent, recent buyer is worth more
    assert np.all(_clv(horizon_months=0) == 0.0)
    assert np.all(_clv(expected_value=0.0) == 0.0)


def test_predicted_clv_discounting_and_horizon() -> None:
    low, high = _clv(annual_discount_rate=0.0), _clv(annual_discount_rate=0.5)
    assert np.all(high < low)
    assert np.all(_clv(horizon_months=24) > _clv(horizon_months=12))
    # without discounting it is the expected purchases over the horizon times the value
    months = 12 * DAYS_PER_MONTH / 7.0
    purchases = expected_purchases(
        CDNOW_BG, months, [0, 2, 2, 10, 1_000_000], [0.0, 30.43, 5.0, 38.0, 38.86], [38.86] * 5
    )
    assert low == pytest.approx(purchases * np.array([40.0, 40.0, 25.0, 60.0, 40.0]), rel=1e-9)
    assert monthly_discount_rate(0.10) == pytest.approx(1.10 ** (1 / 12) - 1)


def test_predicted_clv_one_month_by_hand() -> None:
    rate = monthly_discount_rate(0.12)
    month = DAYS_PER_MONTH / 7.0
    one = predicted_clv(
        CDNOW_BG,
        np.array([50.0]),
        [2],
        [30.43],
        [38.86],
        horizon_months=1,
        annual_discount_rate=0.12,
        time_unit_days=7.0,
    )
    expected = expected_purchases(CDNOW_BG, month, [2], [30.43], [38.86])[0] * 50.0 / (1 + rate)
    assert one[0] == pytest.approx(expected, rel=1e-12)


def test_predicted_clv_does_not_depend_on_the_time_unit() -> None:
    # alpha is a rate parameter: the same model in days has alpha * 7.
    in_days = BgNbdParams(CDNOW_BG.r, CDNOW_BG.alpha * 7, CDNOW_BG.a, CDNOW_BG.b)
    frequency, recency, age = np.array([0, 2, 7]), np.array([0.0, 30.43, 20.0]), np.full(3, 38.86)
    weeks = _clv(expected_value=30.0, frequency=frequency, recency=recency, T=age)
    days = _clv(
        bgnbd=in_days,
        expected_value=30.0,
        frequency=frequency,
        recency=recency * 7,
        T=age * 7,
        time_unit_days=1.0,
    )
    assert days == pytest.approx(weeks, rel=1e-9)


def test_predicted_clv_input_checks() -> None:
    with pytest.raises(ValueError, match="expected_value"):
        _clv(expected_value=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="expected_value"):
        _clv(expected_value=-1.0)
    with pytest.raises(ValueError, match="horizon_months"):
        _clv(horizon_months=-1)
    with pytest.raises(ValueError, match="time_unit_days"):
        _clv(time_unit_days=0.0)
    with pytest.raises(ValueError, match="annual_discount_rate"):
        _clv(annual_discount_rate=float("nan"))


# ------------------------------------------------------------------------------------------
# transaction logs


def _log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer": ["a", "a", "a", "a", "b", "c", "c", "d"],
            "date": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 17:30",  # same day as the first: merged
                    "2024-01-15",
                    "2024-01-29",
                    "2024-01-10",
                    "2024-01-05",
                    "2024-02-20",  # after the observation end used below
                    "2024-03-01",  # first purchase after it: customer dropped
                ],
                format="ISO8601",
            ),
            "amount": [10.0, 5.0, 20.0, 30.0, 7.0, 8.0, 9.0, 1.0],
        }
    )


def test_summarise_transactions() -> None:
    summary = summarise_transactions(
        _log(),
        customer_col="customer",
        date_col="date",
        amount_col="amount",
        observation_end=date(2024, 2, 12),
    )
    assert list(summary.columns) == [
        "frequency",
        "recency",
        "T",
        "monetary_value",
        "n_transactions",
    ]
    assert summary.index.name == "customer"
    assert list(summary.index) == ["a", "b", "c"]
    a, b, c = (summary.loc[k] for k in "abc")
    assert (a.frequency, a.recency, a["T"], a.monetary_value) == (2, 28.0, 42.0, 25.0)
    assert a.n_transactions == 4
    assert (b.frequency, b.recency, b["T"], b.monetary_value) == (0, 0.0, 33.0, 0.0)
    assert (c.frequency, c.recency, c["T"], c.n_transactions) == (0, 0.0, 38.0, 1)

    weeks = summarise_transactions(
        _log(),
        customer_col="customer",
        date_col="date",
        amount_col="amount",
        observation_end=datetime(2024, 2, 12, 23, 59),
        time_unit="weeks",
    )
    assert weeks.loc["a", "recency"] == pytest.approx(4.0)
    assert weeks.loc["a", "T"] == pytest.approx(6.0)


def test_summarise_transactions_defaults_and_no_amounts() -> None:
    summary = summarise_transactions(
        _log(), customer_col="customer", date_col="date", amount_col=None
    )
    # observation end defaults to the last date (2024-03-01)
    assert list(summary.index) == ["a", "b", "c", "d"]
    assert summary.loc["d", "T"] == 0.0
    assert summary.loc["c", "frequency"] == 1
    assert summary.loc["c", "T"] == (date(2024, 3, 1) - date(2024, 1, 5)).days
    assert summary["monetary_value"].isna().all()
    with pytest.raises(ValueError, match="missing column"):
        summarise_transactions(_log(), customer_col="who", date_col="date", amount_col=None)
    with pytest.raises(ValueError, match="time_unit"):
        summarise_transactions(
            _log(),
            customer_col="customer",
            date_col="date",
            amount_col=None,
            time_unit="months",  # type: ignore[arg-type]
        )


def test_cdnow_summary_matches_the_published_data() -> None:
    log = pd.read_csv(CDNOW, dtype={"customer_id": str, "date": str})
    log["date"] = pd.to_datetime(log["date"], format="%Y%m%d")
    summary = summarise_transactions(
        log,
        customer_col="customer_id",
        date_col="date",
        amount_col="amount",
        observation_end=date(1997, 9, 30),
        time_unit="weeks",
    )
    assert len(summary) == 2357
    assert int((summary["frequency"] > 0).sum()) == 946
    # customer 1 in FHL's data: x = 2, t_x = 30.43, T = 38.86, mean repeat spend 22.35 (all
    # rounded to 2 decimals there): 1997-01-01, then 1997-01-18 ($29.73) and 1997-08-02 ($14.96)
    first = summary.loc["1"]
    assert first.frequency == 2
    assert first.recency == pytest.approx(213 / 7)
    assert first["T"] == pytest.approx(272 / 7)
    assert first.monetary_value == pytest.approx((29.73 + 14.96) / 2)


# ------------------------------------------------------------------------------------------
# the published CDNOW fits, through the CSV entry point


def test_fit_transaction_log_reproduces_the_published_cdnow_fits() -> None:
    # Calibration: the first 39 weeks of 1997, ending 1997-09-30; T and recency are whole days
    # / 7 from the first purchase day to the end of that day, exactly as in FHL's data set, so
    # no boundary adjustment is needed: the fit matches to the published 3-4 digits.
    result = fit_transaction_log(CDNOW, observation_end=date(1997, 9, 30), time_unit="weeks")

    assert set(result) == {
        "r",
        "alpha",
        "a",
        "b",
        "p",
        "q",
        "gamma",
        "bgnbd_loglik",
        "gg_loglik",
        "time_unit",
        "n_customers",
        "n_repeat_buyers",
    }
    assert result["time_unit"] == "weeks"
    assert result["n_customers"] == 2357
    assert result["n_repeat_buyers"] == 946
    for name, published in CDNOW_BG.as_dict().items():
        assert result[name] == pytest.approx(published, rel=0.01), name
    assert result["bgnbd_loglik"] == pytest.approx(CDNOW_BG_LOGLIK, abs=0.1)
    for name, published in CDNOW_GG.as_dict().items():
        assert result[name] == pytest.approx(published, rel=0.01), name
    # The paper's example customer, with the parameters we estimated.
    ours = BgNbdParams(
        _number(result["r"]), _number(result["alpha"]), _number(result["a"]), _number(result["b"])
    )
    assert expected_purchases(ours, 39.0, [2], [30.43], [38.86])[0] == pytest.approx(
        1.226, abs=1e-3
    )


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "log.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _small_log(rows: int = 60, date_style: str = "iso") -> str:
    rng = np.random.default_rng(1)
    lines = ["customer_id,date,amount"]
    for customer in range(rows):
        start = date(2023, 1, 1).toordinal() + int(rng.integers(0, 60))
        for k in range(1 + int(rng.poisson(2))):
            day = date.fromordinal(start + 9 * k + int(rng.integers(0, 5)))
            text = day.strftime("%Y%m%d") if date_style == "compact" else day.isoformat()
            if date_style == "custom":
                text = day.strftime("%d/%m/%Y")
            lines.append(f"c{customer},{text},{rng.gamma(5, 4):.2f}")
    return "\n".join(lines) + "\n"


def _repeat_purchases(log: str) -> int:
    """Sum over customers of distinct purchase days after the first (BG/NBD's x)."""
    days: dict[str, set[str]] = {}
    for line in log.splitlines()[1:]:
        customer, day, _amount = line.split(",")
        days.setdefault(customer, set()).add(day)
    return sum(len(d) - 1 for d in days.values())


def test_fit_transaction_log_date_styles(tmp_path: Path) -> None:
    iso = fit_transaction_log(_write(tmp_path, _small_log()), time_unit="days")
    compact = fit_transaction_log(_write(tmp_path, _small_log(date_style="compact")))
    custom = fit_transaction_log(
        _write(tmp_path, _small_log(date_style="custom")), date_format="%d/%m/%Y"
    )
    assert iso["time_unit"] == "days" and compact["time_unit"] == "weeks"
    assert compact == custom
    assert iso["n_customers"] == compact["n_customers"] == 60
    # The same data in days and in weeks: t -> t / 7 and alpha -> alpha / 7 leave the model
    # unchanged, and each customer's likelihood density picks up 7 ** -x (x repeat purchases).
    # So the two maxima differ by exactly sum(x) * ln 7. The parameters themselves need not
    # agree: this small log puts the optimum on a flat ridge (a, b large), where the optimiser
    # stops anywhere its gradient test holds. Its tolerance bounds the gap: each fit stops with
    # a mean-log-likelihood gradient below CONVERGED_GRADIENT (per log-parameter), so within
    # about that much per customer of the supremum.
    repeat_purchases = _repeat_purchases(_small_log())
    tolerance = _number(iso["n_customers"]) * CONVERGED_GRADIENT
    assert _number(iso["bgnbd_loglik"]) == pytest.approx(
        _number(compact["bgnbd_loglik"]) - repeat_purchases * math.log(7), abs=tolerance
    )
    # Gamma-Gamma sees only amounts: the time unit changes nothing.
    assert iso["gg_loglik"] == compact["gg_loglik"]
    assert all(math.isfinite(_number(v)) for k, v in iso.items() if k != "time_unit")


def test_fit_transaction_log_reports_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing_file:
        fit_transaction_log(tmp_path / "nope.csv")
    assert "file not found" in str(missing_file.value)

    path = _write(tmp_path, "customer,when,amount\n1,2024-01-01,5\n")
    with pytest.raises(InputError) as missing_columns:
        fit_transaction_log(path)
    problems = missing_columns.value.problems
    assert [p.column for p in problems] == ["customer_id", "date"]
    assert "customer, when, amount" in problems[0].message

    path = _write(
        tmp_path,
        "customer_id,date,amount\n"
        "1,2024-01-01,5\n"
        "\n"
        "2,2024-13-01,5\n"
        "3,yesterday,5\n"
        "4,2024-01-02,five\n"
        "5,2024-01-02,-3\n"
        ",2024-01-02,4\n"
        "6,,4\n"
        "7,2024-01-02T10:00:00+02:00,\n",
    )
    with pytest.raises(InputError) as bad_rows:
        fit_transaction_log(path)
    found = [(p.line, p.column, p.value) for p in bad_rows.value.problems]
    assert found == [
        (4, "date", "2024-13-01"),
        (5, "date", "yesterday"),
        (6, "amount", "five"),
        (7, "amount", "-3"),
        (8, "customer_id", ""),
        (9, "date", ""),
        (10, "amount", ""),
    ]
    assert all(p.source == str(path) for p in bad_rows.value.problems)

    with pytest.raises(InputError, match="no purchases on or before"):
        fit_transaction_log(_write(tmp_path, _small_log()), observation_end=date(2000, 1, 1))
    free_repeats = re.sub(r",[0-9.]+$", ",0", _small_log(), flags=re.MULTILINE)
    with pytest.raises(InputError, match="Gamma-Gamma"):
        fit_transaction_log(_write(tmp_path, free_repeats))
    with pytest.raises(InputError, match="empty"):
        fit_transaction_log(_write(tmp_path, ""))
