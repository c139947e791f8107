"""Tests of the campaign-results statistics (``ciclovita.results``), pure and by simulation.

Three kinds of evidence:

* arithmetic: bucket sums agree with a plain group-by, the estimates with their formulas
  written out on the occurrences, the interval with the equation it solves;
* simulation: experiments with a known effect, aggregated into hash buckets exactly as SQL
  does, go through the same functions the results command calls, and the 95% intervals
  cover the truth 93.5-96.5% of the time over 1,000 runs (the figures are printed: run with
  ``-s`` or see the captured output);
* decision rules: the power formula delivers its power, the variant winner rule its error
  rates.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

import ciclovita.results as results
from ciclovita.results import (
    ArmBuckets,
    Estimate,
    Interval,
    NotEnoughData,
    ProfitInputs,
    Verdict,
    analyse_campaign,
    compare_variants,
    decide_verdict,
    estimate_lift,
    power_analysis,
)
from ciclovita.results.lift import exact_sums, revenue_moments
from ciclovita.results.score import (
    GroupMoments,
    WorkingVariance,
    constrained_levels,
    restricted_variance,
    score_interval,
    z_value,
)
from ciclovita.results.simulation import (
    CUPED_SCENARIO,
    CoverageReport,
    Scenario,
    measure_coverage,
    simulate_experiment,
    simulate_groups,
)

BAND = (0.935, 0.965)
RUNS = 1000


# ------------------------------------------------------------------------------------------
# helpers


def occurrences(rng: np.random.Generator, n: int, *, rate: float = 0.1, buckets: int = 256):
    """Plain per-occurrence arrays: bucket, converted, revenue and pre-period cents."""
    bucket = rng.integers(0, buckets, n)
    converted = rng.random(n) < rate
    revenue = np.where(converted, np.rint(rng.lognormal(8.0, 1.0, n)), 0).astype(np.int64)
    pre = np.where(rng.random(n) < 0.3, np.rint(rng.lognormal(8.0, 1.0, n)), 0).astype(np.int64)
    return bucket, converted, revenue, pre


def report(name: str, coverage: CoverageReport) -> str:
    lines = [
        f"{name} ({coverage.revenue.runs} runs, {coverage.scenario.occurrences:,} occurrences, "
        f"{coverage.seconds:.1f} s):",
        f"  revenue per customer, reported: {coverage.revenue.describe()}",
        f"  revenue per customer, raw:      {coverage.revenue_raw.describe()}",
    ]
    if coverage.revenue_cuped is not None:
        lines.append(f"  revenue per customer, CUPED:    {coverage.revenue_cuped.describe()}")
    lines.append(
        f"  conversion rate:                {coverage.conversion_rate.rate:.1%} covered "
        f"({coverage.conversion_rate.below / coverage.conversion_rate.runs:.1%} below, "
        f"{coverage.conversion_rate.above / coverage.conversion_rate.runs:.1%} above)"
    )
    lines.append(
        f"  CUPED used in {coverage.cuped_used:.0%} of runs, mean narrowing "
        f"{coverage.mean_narrowing:.1%}"
    )
    return "\n".join(lines)


def in_band(rate: float) -> bool:
    return BAND[0] <= rate <= BAND[1]


# ------------------------------------------------------------------------------------------
# the public API


def test_public_api_is_pinned() -> None:
    assert sorted(results.__all__) == sorted(
        [
            "DEFAULT_BUCKETS",
            "DEFAULT_METHOD",
            "DEFAULT_POWER",
            "DEFAULT_TARGET_LIFT",
            "LEVELS",
            "SIGNIFICANCE",
            "SUM_COLUMNS",
            "WINNER_PROBABILITY",
            "ArmBuckets",
            "CampaignStatistics",
            "Cuped",
            "Estimate",
            "Group",
            "GroupSummary",
            "Interval",
            "IntervalMethod",
            "LiftEstimates",
            "NotEnoughData",
            "PowerAnalysis",
            "ProfitInputs",
            "VariantComparison",
            "VariantResult",
            "Verdict",
            "analyse_campaign",
            "compare_variants",
            "decide_verdict",
            "estimate_lift",
            "power_analysis",
        ]
    )
    for name in results.__all__:
        assert getattr(results, name) is not None


def test_the_statistics_import_no_database_and_no_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ciclovita.results, ciclovita.results.simulation; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'prefect')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------
# bucket sums


def test_from_occurrences_is_the_sql_group_by() -> None:
    rng = np.random.default_rng(1)
    bucket, converted, revenue, pre = occurrences(rng, 5000)
    arm = ArmBuckets.from_occurrences(bucket, converted, revenue, pre)
    frame = pd.DataFrame(
        {
            "bucket": bucket,
            "n": 1,
            "conversions": converted.astype(int),
            "revenue": revenue,
            "revenue_sq": revenue * revenue,
            "pre": pre,
            "pre_sq": pre * pre,
            "pre_revenue": pre * revenue,
        }
    )
    grouped = frame.groupby("bucket", as_index=False).sum()
    from_sql = ArmBuckets.from_frame(grouped)
    for name in results.SUM_COLUMNS:
        np.testing.assert_array_equal(getattr(arm, name), getattr(from_sql, name), err_msg=name)
    assert arm.buckets == 256
    assert arm.occurrences == 5000
    assert arm.total_conversions == int(converted.sum())
    assert arm.total_revenue == int(revenue.sum())
    assert arm.has_pre_period


def test_from_sums_takes_what_a_database_returns() -> None:
    arm = ArmBuckets.from_sums(
        n=[Decimal(2), Decimal(1)],
        conversions=[1, 0],
        revenue=[Decimal("12345"), 0],
        revenue_sq=[Decimal(12345**2), 0],
    )
    assert arm.n.dtype == np.int64
    assert arm.total_revenue == 12345
    assert not arm.has_pre_period
    both = arm + arm
    assert both.occurrences == 6 and both.total_revenue == 24690


@pytest.mark.parametrize(
    ("sums", "message"),
    [
        ({"conversions": [3, 0]}, "conversions must be between 0 and n"),
        ({"revenue": [-1, 0]}, "revenue must be >= 0"),
        ({"revenue": [100, 0], "revenue_sq": [10, 0]}, "revenue\\*\\*2 must be <= n"),
        ({"revenue": [0, 5], "revenue_sq": [0, 25]}, "must be 0 where n is 0"),
        ({"n": [2, 0, 1]}, "one value per bucket"),
        ({"revenue": [1.5, 0]}, "whole numbers"),
    ],
)
def test_impossible_sums_are_refused(sums: dict[str, list[float]], message: str) -> None:
    base: dict[str, list[float]] = {
        "n": [2, 0],
        "conversions": [1, 0],
        "revenue": [100, 0],
        "revenue_sq": [10000, 0],
    }
    with pytest.raises(ValueError, match=message):
        ArmBuckets.from_sums(**{**base, **sums})


def test_from_frame_checks_its_columns_and_buckets() -> None:
    frame = pd.DataFrame({"bucket": [0, 300], "n": [1, 1], "conversions": [0, 0]})
    with pytest.raises(ValueError, match="missing column"):
        ArmBuckets.from_frame(frame)
    frame["revenue"] = 0
    frame["revenue_sq"] = 0
    with pytest.raises(ValueError, match="between 0 and 255"):
        ArmBuckets.from_frame(frame)
    arm = ArmBuckets.from_frame(frame, buckets=512)
    assert arm.buckets == 512 and arm.n[300] == 1 and arm.n.sum() == 2


# ------------------------------------------------------------------------------------------
# estimates


def two_groups(seed: int = 3, n: int = 6000, share: float = 0.2):
    rng = np.random.default_rng(seed)
    bucket, converted, revenue, pre = occurrences(rng, n)
    treated = rng.random(n) >= share
    arms = [
        ArmBuckets.from_occurrences(bucket[g], converted[g], revenue[g], pre[g])
        for g in (treated, ~treated)
    ]
    return arms[0], arms[1], (converted, revenue, pre, treated)


def test_point_estimates_are_the_plain_formulas() -> None:
    treatment, comparison, (converted, revenue, pre, treated) = two_groups()
    profit = ProfitInputs(margin=0.35, discount_cents=120_000, message_cost_cents=4_321)
    lift = estimate_lift(treatment, comparison, profit=profit)
    n_t = int(treated.sum())
    rate = converted[treated].mean() - converted[~treated].mean()
    raw = revenue[treated].mean() - revenue[~treated].mean()
    assert lift.conversion_rate_lift.estimate == pytest.approx(rate, rel=1e-12)
    assert lift.revenue_per_customer_lift_raw_cents.estimate == pytest.approx(raw, rel=1e-12)
    assert lift.incremental_conversions.estimate == pytest.approx(rate * n_t, rel=1e-12)

    # CUPED: the pooled within-group slope, and Delta y - theta Delta x
    xs, ys = pre.astype(float), revenue.astype(float)
    cov = sum(np.sum((xs[g] - xs[g].mean()) * (ys[g] - ys[g].mean())) for g in (treated, ~treated))
    var = sum(np.sum((xs[g] - xs[g].mean()) ** 2) for g in (treated, ~treated))
    theta = cov / var
    assert lift.cuped.theta == pytest.approx(theta, rel=1e-9)
    adjusted = raw - theta * (xs[treated].mean() - xs[~treated].mean())
    assert lift.revenue_per_customer_lift_cuped_cents is not None
    assert lift.revenue_per_customer_lift_cuped_cents.estimate == pytest.approx(adjusted, rel=1e-9)

    used = lift.revenue_per_customer_lift_cents
    assert used is (
        lift.revenue_per_customer_lift_cuped_cents
        if lift.cuped.used
        else lift.revenue_per_customer_lift_raw_cents
    )
    assert lift.incremental_revenue_cents.estimate == pytest.approx(used.estimate * n_t)
    assert lift.incremental_profit_cents is not None
    for got, base in (
        (lift.incremental_profit_cents.estimate, lift.incremental_revenue_cents.estimate),
        (lift.incremental_profit_cents.ci95.low, lift.incremental_revenue_cents.ci95.low),
        (lift.incremental_profit_cents.ci80.high, lift.incremental_revenue_cents.ci80.high),
    ):
        assert got == pytest.approx(base * 0.35 - 120_000 - 4_321)
    assert lift.treatment.occurrences == n_t
    assert lift.comparison.revenue_cents == int(revenue[~treated].sum())


@pytest.mark.parametrize("method", ["score", "percentile", "bca", "studentized", "normal"])
def test_intervals_nest_and_contain_the_estimate(method: str) -> None:
    treatment, comparison, _ = two_groups(seed=4)
    lift = estimate_lift(treatment, comparison, method=method)  # type: ignore[arg-type]
    for estimate in (
        lift.conversion_rate_lift,
        lift.revenue_per_customer_lift_raw_cents,
        lift.revenue_per_customer_lift_cents,
        lift.incremental_revenue_cents,
    ):
        assert estimate.ci95.low <= estimate.ci80.low <= estimate.estimate
        assert estimate.estimate <= estimate.ci80.high <= estimate.ci95.high
        assert estimate.ci95.width > 0
    data = lift.as_dict()
    assert set(data["revenue_per_customer_lift_cents"]) == {
        "estimate",
        "ci_low",
        "ci_high",
        "ci80_low",
        "ci80_high",
    }
    assert data["interval_method"] == method


def test_score_interval_solves_its_equation() -> None:
    treatment, comparison, _ = two_groups(seed=5)
    g_t, g_c, variance = revenue_moments(treatment, comparison)
    d = g_t.level - g_c.level

    def v_of(delta: float) -> float:
        return restricted_variance(g_t, g_c, variance, delta)

    for level in (0.95, 0.80):
        z = z_value(level)
        low, high = score_interval(g_t, g_c, variance, level)
        for end in (low, high):
            assert (d - end) ** 2 == pytest.approx(z * z * v_of(end), rel=1e-6)
            # the restricted levels solve the quasi-score and differ by the hypothesis
            levels = constrained_levels(g_t, g_c, variance, end)
            assert levels is not None
            m_t, m_c = levels
            assert m_t - m_c == pytest.approx(end)
            score = g_t.n * (g_t.level - m_t) / variance(m_t) + g_c.n * (
                g_c.level - m_c
            ) / variance(m_c)
            assert abs(score) < 1e-6 * (g_t.n + g_c.n) / variance(g_c.level) * abs(d)
        inside = np.linspace(low, high, 11)[1:-1]
        assert all((d - x) ** 2 < z * z * v_of(x) for x in inside)
    # at delta = 0 the variance is the pooled one, v at the overall mean
    overall = (g_t.n * g_t.level + g_c.n * g_c.level) / (g_t.n + g_c.n)
    assert v_of(0.0) == pytest.approx(variance.of_difference(g_t.n, g_c.n, overall), rel=1e-6)
    # the working variance adds up to the observed dispersion
    fitted = sum(g.n * variance(g.level) for g in (g_t, g_c))
    assert fitted == pytest.approx(g_t.residual_ss + g_c.residual_ss, rel=1e-9)


def test_score_interval_for_a_rate_without_repeat_customers_is_the_binomial_one() -> None:
    # one occurrence per bucket: phi is K/(K-1) times the Bernoulli 1, and at delta = 0 the
    # variance is the pooled p(1 - p)(1/N_T + 1/N_C) of the two-proportion test
    t = GroupMoments(n=200.0, level=0.15, residual_ss=200 * 0.15 * 0.85)
    c = GroupMoments(n=100.0, level=0.10, residual_ss=100 * 0.10 * 0.90)
    variance = WorkingVariance.fit([t, c])
    assert variance.phi == pytest.approx(1.0)
    p = (30 + 10) / 300
    assert variance.of_difference(200, 100, p) == pytest.approx(p * (1 - p) * (1 / 200 + 1 / 100))
    low, high = score_interval(t, c, variance, 0.95)
    assert -0.05 < low < 0.0 < 0.05 < high < 0.15


def test_a_comparison_group_without_revenue_still_gets_an_honest_interval() -> None:
    # 20 holdout occurrences, none converted: holding the overall mean fixed would push the
    # holdout's restricted level below 0 beyond the estimate, so the upper end comes from
    # the quasi-likelihood's restricted levels instead, which stay at or above 0.
    rng = np.random.default_rng(3)
    bucket, converted, revenue, _ = occurrences(rng, 200)
    treatment = ArmBuckets.from_occurrences(bucket, converted, revenue)
    empty = ArmBuckets.from_occurrences(rng.integers(0, 256, 20), [False] * 20, [0] * 20)
    lift = estimate_lift(treatment, empty).revenue_per_customer_lift_cents
    d = lift.estimate
    assert d == pytest.approx(revenue.mean())
    assert lift.ci95.low < -2 * d  # the holdout could have had large orders
    assert lift.ci95.high > 1.5 * d  # ... and the treatment mean is itself uncertain
    assert lift.ci80.low > lift.ci95.low and lift.ci80.high < lift.ci95.high
    mirror = estimate_lift(empty, treatment).revenue_per_customer_lift_cents
    assert mirror.ci95.low == pytest.approx(-lift.ci95.high)
    assert mirror.ci95.high == pytest.approx(-lift.ci95.low)
    # at the upper end the restricted holdout level is 0 and the equation holds there
    g_t, g_c, variance = revenue_moments(treatment, empty)
    levels = constrained_levels(g_t, g_c, variance, lift.ci95.high)
    assert levels is not None
    m_t, m_c = levels
    assert m_c == pytest.approx(0.0, abs=1e-6 * d)
    z2 = z_value(0.95) ** 2
    assert (d - lift.ci95.high) ** 2 == pytest.approx(
        z2 * (variance(m_t) / g_t.n + variance(m_c) / g_c.n), rel=1e-6
    )


def test_cuped_is_left_out_without_a_pre_period() -> None:
    rng = np.random.default_rng(6)
    bucket, converted, revenue, _ = occurrences(rng, 3000)
    treated = rng.random(3000) < 0.8
    arms = [
        ArmBuckets.from_occurrences(bucket[g], converted[g], revenue[g])
        for g in (treated, ~treated)
    ]
    lift = estimate_lift(*arms)
    assert lift.revenue_per_customer_lift_cuped_cents is None
    assert not lift.cuped.used
    assert lift.cuped.theta == 0.0
    assert lift.revenue_per_customer_lift_cents is lift.revenue_per_customer_lift_raw_cents
    assert estimate_lift(*two_groups()[:2], cuped=False).cuped.used is False


def test_not_enough_data_says_why() -> None:
    one = ArmBuckets.from_occurrences([3, 3], [True, False], [100, 0])
    some = ArmBuckets.from_occurrences([1, 2, 4], [True, False, False], [100, 0, 0])
    with pytest.raises(NotEnoughData, match="comparison group has 2 occurrence"):
        estimate_lift(some, one)
    nothing = ArmBuckets.from_occurrences([1, 2, 4], [False] * 3, [0] * 3)
    with pytest.raises(NotEnoughData, match="no occurrence converted"):
        estimate_lift(nothing, nothing)
    with pytest.raises(ValueError, match="same hash buckets"):
        estimate_lift(some, ArmBuckets.from_occurrences([1, 2], [True, False], [5, 0], buckets=64))
    outcome = analyse_campaign(some, one)
    assert outcome.verdict is Verdict.INCONCLUSIVE and outcome.lift is None
    assert outcome.reason is not None and "2 occurrence" in outcome.reason
    alone = analyse_campaign(some, None)
    assert alone.verdict is Verdict.INCONCLUSIVE and alone.reason == "no comparison group"
    assert alone.as_dict()["revenue_per_customer_lift_cents"] is None


def test_the_bucket_bootstrap_is_seeded_and_fast() -> None:
    treatment, comparison = simulate_experiment(np.random.default_rng(7), Scenario())
    start = time.perf_counter()
    first = estimate_lift(treatment, comparison, method="bca", resamples=2000, seed=11)
    elapsed = time.perf_counter() - start
    again = estimate_lift(treatment, comparison, method="bca", resamples=2000, seed=11)
    other = estimate_lift(treatment, comparison, method="bca", resamples=2000, seed=12)
    assert first.revenue_per_customer_lift_cents == again.revenue_per_customer_lift_cents
    assert first.revenue_per_customer_lift_cents != other.revenue_per_customer_lift_cents
    assert elapsed < 0.5, f"2,000 resamples of both groups took {elapsed:.2f} s"


def test_bootstrap_and_score_agree_on_a_large_experiment() -> None:
    big = Scenario(occurrences=60_000, comparison_share=0.5)
    treatment, comparison = simulate_experiment(np.random.default_rng(8), big)
    score = estimate_lift(treatment, comparison, cuped=False).revenue_per_customer_lift_cents
    for method in ("percentile", "bca", "studentized", "normal"):
        boot = estimate_lift(
            treatment,
            comparison,
            cuped=False,
            method=method,
        ).revenue_per_customer_lift_cents
        assert boot.estimate == score.estimate
        assert boot.ci95.width == pytest.approx(score.ci95.width, rel=0.12), method
        assert boot.ci95.low == pytest.approx(score.ci95.low, abs=0.1 * score.ci95.width)


# ------------------------------------------------------------------------------------------
# the simulator


def test_the_simulator_has_the_expectations_it_claims() -> None:
    big = Scenario(occurrences=2_000_000, comparison_share=0.5, conversion_lift=0.2)
    treatment, comparison = simulate_experiment(np.random.default_rng(9), big)
    for arm, factor in ((treatment, 1.2), (comparison, 1.0)):
        sums = exact_sums(arm).full
        n = arm.occurrences
        mean = arm.total_revenue / n
        sd = math.sqrt(sums[3] / n - mean**2)  # revenue_sq
        expected = factor * big.comparison_revenue_per_occurrence
        assert abs(mean - expected) < 4 * sd / math.sqrt(n), (mean, expected)
        rate = arm.total_conversions / n
        expected_rate = factor * big.conversion_rate
        assert abs(rate - expected_rate) < 4 * math.sqrt(expected_rate / n)
    assert big.true_revenue_lift == pytest.approx(0.2 * big.comparison_revenue_per_occurrence)


# ------------------------------------------------------------------------------------------
# coverage, by simulation (the proof)


def test_a_a_intervals_cover_zero(capsys: pytest.CaptureFixture[str]) -> None:
    coverage = measure_coverage(Scenario(), RUNS, seed=20260)
    with capsys.disabled():
        print("\n" + report("A/A, no effect", coverage))
    assert in_band(coverage.revenue.rate), coverage.revenue.describe()
    assert in_band(coverage.revenue_raw.rate), coverage.revenue_raw.describe()
    assert in_band(coverage.conversion_rate.rate), coverage.conversion_rate.describe()
    assert coverage.seconds < 15


def test_known_lift_is_recovered_inside_the_interval(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = Scenario().with_lift(0.2)
    coverage = measure_coverage(scenario, RUNS, seed=20261)
    with capsys.disabled():
        print(
            "\n"
            + report(
                f"known lift: +20% buyers, revenue +{scenario.true_revenue_lift:.1f} cents "
                "per customer",
                coverage,
            )
        )
    assert in_band(coverage.revenue.rate), coverage.revenue.describe()
    assert in_band(coverage.revenue_raw.rate), coverage.revenue_raw.describe()
    assert in_band(coverage.conversion_rate.rate), coverage.conversion_rate.describe()
    # unbiased: the mean estimate is within 3 standard errors of the truth
    se = coverage.revenue.sd_estimate / math.sqrt(RUNS)
    assert abs(coverage.revenue.mean_estimate - scenario.true_revenue_lift) < 3 * se


def test_cuped_narrows_the_interval_without_bias(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = CUPED_SCENARIO.with_lift(0.2)
    coverage = measure_coverage(scenario, RUNS, seed=20262)
    with capsys.disabled():
        print("\n" + report("CUPED, pre-period spend correlated with the outcome", coverage))
    cuped = coverage.revenue_cuped
    assert cuped is not None
    narrowing = 1.0 - cuped.mean_width / coverage.revenue_raw.mean_width
    with capsys.disabled():
        print(
            f"  mean 95% width: raw {coverage.revenue_raw.mean_width:,.1f} -> CUPED "
            f"{cuped.mean_width:,.1f} cents ({narrowing:.1%} narrower); sd of the estimate "
            f"{coverage.revenue_raw.sd_estimate:,.1f} -> {cuped.sd_estimate:,.1f}"
        )
    assert narrowing > 0.05
    assert cuped.sd_estimate < 0.95 * coverage.revenue_raw.sd_estimate
    assert coverage.cuped_used > 0.8
    assert in_band(cuped.rate), cuped.describe()
    assert in_band(coverage.revenue.rate), coverage.revenue.describe()
    se = cuped.sd_estimate / math.sqrt(RUNS)
    assert abs(cuped.mean_estimate - scenario.true_revenue_lift) < 3 * se


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "scenario"),
    [
        ("small shop, 400 occurrences", Scenario(occurrences=400)),
        ("small shop, +20% buyers", Scenario(occurrences=400).with_lift(0.2)),
        ("50,000 occurrences", Scenario(occurrences=50_000)),
        ("heavier tail, sigma 1.5", Scenario(order_sigma=1.5)),
        ("customers entering 3 times", Scenario(repeat=2.0)),
        ("5% conversion, 10% holdout", Scenario(conversion_rate=0.05, comparison_share=0.1)),
        ("order values +20%", Scenario(order_value_lift=0.2)),
        ("campaign hurts: -20% buyers", Scenario().with_lift(-0.2)),
    ],
)
def test_coverage_holds_across_shops(
    name: str, scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    # Away from the realistic case the band is wider: a 400-occurrence shop (60 holdout
    # occurrences, 6 orders) sits at 93-94%; the working variance is conservative (96-97%)
    # when the campaign raises order values rather than buyers, or with a heavier tail.
    coverage = measure_coverage(scenario, RUNS, seed=20263)
    with capsys.disabled():
        print("\n" + report(name, coverage))
    assert 0.92 <= coverage.revenue.rate <= 0.98, coverage.revenue.describe()
    assert 0.92 <= coverage.conversion_rate.rate <= 0.98, coverage.conversion_rate.describe()


# ------------------------------------------------------------------------------------------
# verdict and power


def estimate(value: float, low95: float, high95: float, low80: float, high80: float) -> Estimate:
    return Estimate(value, Interval(0.95, low95, high95), Interval(0.80, low80, high80))


def test_verdict_order() -> None:
    treatment, comparison = simulate_experiment(np.random.default_rng(10), Scenario())
    small = power_analysis(treatment, comparison)
    large = replace(small, mde_cents=small.target_cents / 2)
    assert not small.detectable and large.detectable
    assert decide_verdict(estimate(5, 1, 9, 2, 8), small) is Verdict.SIGNIFICANT
    assert decide_verdict(estimate(-5, -9, -1, -8, -2), small) is Verdict.SIGNIFICANT
    assert decide_verdict(estimate(5, -1, 9, 2, 8), small) is Verdict.PROMISING
    assert decide_verdict(estimate(5, -1, 9, -1, 8), small) is Verdict.INCONCLUSIVE
    assert decide_verdict(estimate(5, -1, 9, -1, 8), large) is Verdict.NOT_SIGNIFICANT


def test_power_formula() -> None:
    treatment, comparison = simulate_experiment(np.random.default_rng(11), Scenario())
    analysis = power_analysis(treatment, comparison, target_lift=0.5)
    g_t, g_c, variance = revenue_moments(treatment, comparison)
    overall = (g_t.n * g_t.level + g_c.n * g_c.level) / (g_t.n + g_c.n)
    v = variance(overall)
    z = 1.959963984540054 + 0.8416212335729143
    assert analysis.variance_per_occurrence == pytest.approx(v)
    assert analysis.mde_cents == pytest.approx(z * math.sqrt(v * (1 / g_t.n + 1 / g_c.n)))
    baseline = comparison.total_revenue / comparison.occurrences
    assert analysis.target_cents == pytest.approx(0.5 * baseline)
    assert analysis.mde_relative == pytest.approx(analysis.mde_cents / baseline)
    # at the required sizes the same formula gives the target
    assert analysis.required_treatment is not None and analysis.required_comparison is not None
    at_required = z * math.sqrt(
        v * (1 / analysis.required_treatment + 1 / analysis.required_comparison)
    )
    assert at_required == pytest.approx(analysis.target_cents, rel=2e-3)
    assert analysis.required_occurrences is not None
    assert analysis.additional_occurrences == pytest.approx(
        analysis.required_occurrences - treatment.occurrences - comparison.occurrences, abs=2
    )
    with pytest.raises(ValueError, match="target_lift"):
        power_analysis(treatment, comparison, target_lift=0)


def power_at_the_planned_size(target: float, runs: int, seed: int) -> tuple[int, float]:
    """Plan on a large pilot, then run experiments of the planned size with the target true.

    Returns the planned size and the share of those experiments found ``significant``.
    """
    rng = np.random.default_rng(seed)
    pilot = simulate_experiment(rng, Scenario(occurrences=400_000))
    plan = power_analysis(*pilot, target_lift=target)
    assert plan.required_occurrences is not None
    planned = Scenario(occurrences=plan.required_occurrences).with_lift(target)
    significant = 0
    for _ in range(runs):
        outcome = analyse_campaign(*simulate_experiment(rng, planned))
        significant += outcome.verdict is Verdict.SIGNIFICANT
    return plan.required_occurrences, significant / runs


def test_power_is_close_to_planned_at_the_required_size(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The formula is the normal approximation. On heavy-tailed revenue the same large orders
    # that make a lift look big also inflate its variance, so the power delivered falls a few
    # points short of the 80% planned (documented in ciclovita/results/verdict.py).
    size, share = power_at_the_planned_size(0.5, runs=400, seed=12)
    with capsys.disabled():
        print(
            f"\npower: planned {size:,} occurrences for +50%; over 400 experiments of that "
            f"size with the lift true, significant in {share:.1%} (planned 80%)"
        )
    assert 0.68 <= share <= 0.86


@pytest.mark.slow
def test_power_at_a_realistic_target(capsys: pytest.CaptureFixture[str]) -> None:
    size, share = power_at_the_planned_size(0.2, runs=400, seed=17)
    with capsys.disabled():
        print(
            f"\npower: planned {size:,} occurrences for +20%; over 400 experiments of that "
            f"size with the lift true, significant in {share:.1%} (planned 80%)"
        )
    assert 0.68 <= share <= 0.86


def test_a_small_shop_is_told_it_is_inconclusive_and_how_many_it_needs() -> None:
    rng = np.random.default_rng(13)
    treatment, comparison = simulate_experiment(rng, Scenario(occurrences=400))
    outcome = analyse_campaign(treatment, comparison)
    assert outcome.lift is not None and outcome.power is not None
    if outcome.verdict is not Verdict.SIGNIFICANT:
        assert outcome.verdict in (Verdict.INCONCLUSIVE, Verdict.PROMISING)
    assert outcome.power.mde_relative is not None and outcome.power.mde_relative > 0.1
    assert outcome.power.additional_occurrences is not None
    assert outcome.power.additional_occurrences > 10_000
    data = outcome.as_dict()
    assert data["verdict"] == outcome.verdict.value
    assert set(data["power"]) >= {"minimum_detectable_effect_cents", "additional_occurrences"}


# ------------------------------------------------------------------------------------------
# variants


def variant_rates(target: float, lifts: list[float], runs: int, seed: int) -> dict[str, float]:
    """Share of runs naming each variant (and none), at the size the winner rule asks for."""
    rng = np.random.default_rng(seed)
    k = len(lifts)
    pilot = simulate_groups(rng, Scenario(occurrences=40_000), [1 / k] * k, [0.0] * k)
    plan = compare_variants(
        {f"v{i}": arm for i, arm in enumerate(pilot)}, target_lift=target, seed=1
    )
    assert plan.required_per_variant is not None
    size = Scenario(occurrences=math.ceil(plan.required_per_variant * k * 1.02))
    named: dict[str, int] = {f"v{i}": 0 for i in range(k)} | {"none": 0}
    for run in range(runs):
        arms = simulate_groups(rng, size, [1 / k] * k, lifts)
        comparison = compare_variants(
            {f"v{i}": arm for i, arm in enumerate(arms)}, target_lift=target, seed=run
        )
        named[comparison.winner or "none"] += 1
    return {name: count / runs for name, count in named.items()}


def test_equal_variants_rarely_get_a_winner(capsys: pytest.CaptureFixture[str]) -> None:
    rates = variant_rates(0.5, [0.0, 0.0], runs=500, seed=14)
    with capsys.disabled():
        print(
            f"\nvariants A/A at the required size (+50% target): winner named in "
            f"{1 - rates['none']:.1%} of runs (normal theory: 10%, either one)"
        )
    assert 0.05 <= 1 - rates["none"] <= 0.14


def test_a_better_variant_wins_and_a_worse_one_never(capsys: pytest.CaptureFixture[str]) -> None:
    rates = variant_rates(0.5, [0.0, 0.5], runs=500, seed=15)
    with capsys.disabled():
        print(
            f"\nvariants, v1 better by the +50% target, at the required size: v1 named in "
            f"{rates['v1']:.1%}, v0 in {rates['v0']:.1%}"
        )
    assert 0.70 <= rates["v1"] <= 0.92
    assert rates["v0"] == 0.0


@pytest.mark.slow
def test_variant_rates_at_a_realistic_target(capsys: pytest.CaptureFixture[str]) -> None:
    equal = variant_rates(0.2, [0.0, 0.0], runs=400, seed=18)
    better = variant_rates(0.2, [0.0, 0.2], runs=400, seed=19)
    with capsys.disabled():
        print(
            f"\nvariants at the required size (+20% target): equal, winner named in "
            f"{1 - equal['none']:.1%}; v1 better by 20%, v1 named in {better['v1']:.1%}, "
            f"v0 in {better['v0']:.1%}"
        )
    assert 0.05 <= 1 - equal["none"] <= 0.15
    assert 0.60 <= better["v1"] <= 0.95
    assert better["v0"] == 0.0


def test_variants_report_p_best_and_refuse_to_name_a_winner_too_early() -> None:
    rng = np.random.default_rng(16)
    arms = simulate_groups(rng, Scenario(occurrences=3000), [1 / 3] * 3, [0.0, 0.0, 1.0])
    comparison = compare_variants({"a": arms[0], "b": arms[1], "c": arms[2]})
    p_revenue = [v.p_best_revenue for v in comparison.variants]
    p_conversion = [v.p_best_conversion for v in comparison.variants]
    assert sum(p_revenue) == pytest.approx(1.0)
    assert sum(p_conversion) == pytest.approx(1.0)
    assert p_conversion[2] > 0.95  # twice the buyers
    assert comparison.winner is None
    assert comparison.reason.startswith("too early")
    assert comparison.as_dict()["variants"][0]["variant"] == "a"
    with pytest.raises(NotEnoughData):
        compare_variants({"a": arms[0]})
