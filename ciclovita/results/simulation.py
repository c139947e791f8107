"""Simulated campaign experiments with a known effect, aggregated into buckets as SQL would.

This module owns the data-generating process behind the coverage proofs (the tests and
``benchmarks/results_coverage.py``); it lives in the package so that both use one copy.

Customers ``i`` have a latent propensity ``u_i ~ N(0, 1)``; each has ``1 + Poisson(repeat)``
occurrences (entries into the campaign), all in the customer's group (the draw is per customer
and campaign) and in the customer's hash bucket (uniform on ``0..B-1``, independent of the
group, as a stable hash is). Per occurrence, in the comparison group::

    converted ~ Bernoulli(p(u)),     p(u) = p0 exp(beta u - beta**2 / 2)
    revenue   = converted * V,       V = v0 exp(gamma u - gamma**2 / 2) exp(sigma e - sigma**2 / 2)
    pre       = sum of Poisson(k0 exp(beta u - beta**2 / 2)) orders valued like V

(``e ~ N(0, 1)``; revenue rounded to whole cents). So most occurrences bring 0, order values
are lognormal (``sigma = 1``: a heavy right tail), customers differ, and the pre-period spend
is correlated with the outcome through ``u`` -- what CUPED feeds on. The treatment multiplies
``p(u)`` by ``1 + conversion_lift`` and ``V`` by ``1 + order_value_lift``. In closed form::

    E[converted]      = p0
    E[revenue]        = p0 v0 exp(beta gamma)                      (comparison)
    true revenue lift = ((1 + conversion_lift)(1 + order_value_lift) - 1) p0 v0 exp(beta gamma)

(``p(u)`` is capped at 1, which moves these by less than 1e-6 relative for the defaults.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ciclovita.results.buckets import DEFAULT_BUCKETS, ArmBuckets
from ciclovita.results.lift import DEFAULT_METHOD, Estimate, IntervalMethod, estimate_lift

__all__ = [
    "CUPED_SCENARIO",
    "Coverage",
    "CoverageReport",
    "Scenario",
    "measure_coverage",
    "simulate_experiment",
    "simulate_groups",
]


@dataclass(frozen=True)
class Scenario:
    """One campaign experiment's population and effect (see the module docstring)."""

    occurrences: int = 3000
    comparison_share: float = 0.15
    conversion_rate: float = 0.10
    mean_order_cents: float = 5000.0
    order_sigma: float = 1.0
    conversion_lift: float = 0.0
    order_value_lift: float = 0.0
    heterogeneity: float = 0.5
    value_loading: float = 0.3
    pre_orders: float = 1.0
    repeat: float = 0.2
    buckets: int = DEFAULT_BUCKETS

    @property
    def comparison_revenue_per_occurrence(self) -> float:
        """``E[revenue]`` per occurrence in the comparison group, cents."""
        return (
            self.conversion_rate
            * self.mean_order_cents
            * float(np.exp(self.heterogeneity * self.value_loading))
        )

    @property
    def true_revenue_lift(self) -> float:
        """Revenue per occurrence, treatment minus comparison, cents (expected)."""
        factor = (1.0 + self.conversion_lift) * (1.0 + self.order_value_lift) - 1.0
        return factor * self.comparison_revenue_per_occurrence

    @property
    def true_conversion_rate_lift(self) -> float:
        """Conversion rate, treatment minus comparison (expected)."""
        return self.conversion_lift * self.conversion_rate

    def with_lift(self, relative_revenue_lift: float) -> Scenario:
        """This scenario with a relative revenue lift carried by the conversion rate."""
        return replace(self, conversion_lift=relative_revenue_lift, order_value_lift=0.0)


def simulate_groups(
    rng: np.random.Generator,
    scenario: Scenario,
    shares: Sequence[float],
    conversion_lifts: Sequence[float],
    order_value_lifts: Sequence[float] | None = None,
) -> list[ArmBuckets]:
    """Draw one experiment with several groups; their bucket sums, in the order given.

    ``shares`` are the groups' probabilities (summing to 1); group ``g`` multiplies the
    conversion probability by ``1 + conversion_lifts[g]`` and order values by
    ``1 + order_value_lifts[g]``.
    """
    shares_arr = np.asarray(shares, dtype=np.float64)
    if not np.isclose(shares_arr.sum(), 1.0) or np.any(shares_arr < 0):
        raise ValueError(f"shares must be >= 0 and sum to 1, got {list(shares)}")
    if len(conversion_lifts) != len(shares_arr):
        raise ValueError("one conversion lift per group")
    value_lifts = np.zeros(len(shares_arr)) if order_value_lifts is None else order_value_lifts
    s = scenario
    beta, gamma, sigma = s.heterogeneity, s.value_loading, s.order_sigma

    customers = max(2, round(s.occurrences / (1.0 + s.repeat)))
    u = rng.standard_normal(customers)
    group = rng.choice(len(shares_arr), size=customers, p=shares_arr)
    bucket = rng.integers(0, s.buckets, size=customers)
    visits = 1 + rng.poisson(s.repeat, size=customers)
    who = np.repeat(np.arange(customers), visits)
    occ_u, occ_group = u[who], group[who]

    propensity = np.exp(beta * occ_u - beta * beta / 2.0)
    value_scale = s.mean_order_cents * np.exp(gamma * occ_u - gamma * gamma / 2.0)
    conv_lift = np.asarray(conversion_lifts, dtype=np.float64)[occ_group]
    val_lift = np.asarray(value_lifts, dtype=np.float64)[occ_group]

    p = np.minimum(s.conversion_rate * propensity * (1.0 + conv_lift), 1.0)
    converted = rng.random(len(who)) < p
    noise = np.exp(sigma * rng.standard_normal(len(who)) - sigma * sigma / 2.0)
    revenue = np.where(converted, np.rint(value_scale * (1.0 + val_lift) * noise), 0.0)

    pre_count = rng.poisson(s.pre_orders * propensity)
    owner = np.repeat(np.arange(len(who)), pre_count)
    pre_noise = np.exp(sigma * rng.standard_normal(len(owner)) - sigma * sigma / 2.0)
    pre_values = np.rint(value_scale[owner] * pre_noise)
    pre = np.bincount(owner, weights=pre_values, minlength=len(who))

    occ_bucket = bucket[who]
    return [
        ArmBuckets.from_occurrences(
            occ_bucket[occ_group == g],
            converted[occ_group == g],
            revenue[occ_group == g].astype(np.int64),
            pre[occ_group == g].astype(np.int64),
            buckets=s.buckets,
        )
        for g in range(len(shares_arr))
    ]


def simulate_experiment(
    rng: np.random.Generator, scenario: Scenario
) -> tuple[ArmBuckets, ArmBuckets]:
    """One treatment-versus-comparison experiment: ``(treatment, comparison)`` bucket sums."""
    treatment, comparison = simulate_groups(
        rng,
        scenario,
        [1.0 - scenario.comparison_share, scenario.comparison_share],
        [scenario.conversion_lift, 0.0],
        [scenario.order_value_lift, 0.0],
    )
    return treatment, comparison


CUPED_SCENARIO = Scenario(heterogeneity=1.0, value_loading=0.5, pre_orders=4.0)
"""Customers who differ more, with a longer history: pre-period spend correlates with the
outcome (pooled correlation about 0.35), as CUPED needs."""


@dataclass(frozen=True)
class Coverage:
    """How often intervals caught the true value over simulated experiments.

    ``below`` counts intervals entirely below the truth (the lift underestimated), ``above``
    intervals entirely above it (a lift claimed that is not there).
    """

    runs: int
    covered: int
    below: int
    above: int
    mean_width: float
    mean_estimate: float
    sd_estimate: float

    @property
    def rate(self) -> float:
        """The share of intervals that covered the truth."""
        return self.covered / self.runs

    def describe(self) -> str:
        """One line: coverage, the misses on each side, the mean width."""
        return (
            f"{self.rate:.1%} covered ({self.below / self.runs:.1%} below the truth, "
            f"{self.above / self.runs:.1%} above), mean width {self.mean_width:,.1f}"
        )


@dataclass(frozen=True)
class CoverageReport:
    """Coverage of the reported revenue lift, the raw and CUPED ones, and the rate lift."""

    scenario: Scenario
    revenue: Coverage
    revenue_raw: Coverage
    revenue_cuped: Coverage | None
    conversion_rate: Coverage
    cuped_used: float
    mean_narrowing: float
    seconds: float


def measure_coverage(
    scenario: Scenario,
    runs: int,
    *,
    seed: int,
    method: IntervalMethod = DEFAULT_METHOD,
    level: float = 0.95,
) -> CoverageReport:
    """Simulate ``runs`` experiments and count how often each interval covers the truth.

    Every experiment goes through :func:`ciclovita.results.lift.estimate_lift` exactly as the
    results command calls it (bucket sums in, intervals out).
    """
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[float, float, float]]] = {
        "revenue": [],
        "raw": [],
        "cuped": [],
        "rate": [],
    }
    used = 0
    narrowing = 0.0
    start = time.perf_counter()
    for run in range(runs):
        treatment, comparison = simulate_experiment(rng, scenario)
        lift = estimate_lift(treatment, comparison, method=method, seed=run)

        def row(e: Estimate) -> tuple[float, float, float]:
            ci = e.ci95 if level == 0.95 else e.ci80
            return e.estimate, ci.low, ci.high

        rows["revenue"].append(row(lift.revenue_per_customer_lift_cents))
        rows["raw"].append(row(lift.revenue_per_customer_lift_raw_cents))
        if lift.revenue_per_customer_lift_cuped_cents is not None:
            rows["cuped"].append(row(lift.revenue_per_customer_lift_cuped_cents))
        rows["rate"].append(row(lift.conversion_rate_lift))
        used += lift.cuped.used
        narrowing += 1.0 - lift.cuped.adjusted_width / lift.cuped.raw_width
    seconds = time.perf_counter() - start

    def tally(values: list[tuple[float, float, float]], truth: float) -> Coverage:
        arr = np.asarray(values, dtype=np.float64)
        below = int(np.sum(arr[:, 2] < truth))
        above = int(np.sum(arr[:, 1] > truth))
        return Coverage(
            runs=len(arr),
            covered=len(arr) - below - above,
            below=below,
            above=above,
            mean_width=float(np.mean(arr[:, 2] - arr[:, 1])),
            mean_estimate=float(np.mean(arr[:, 0])),
            sd_estimate=float(np.std(arr[:, 0], ddof=1)),
        )

    revenue_truth = scenario.true_revenue_lift
    return CoverageReport(
        scenario=scenario,
        revenue=tally(rows["revenue"], revenue_truth),
        revenue_raw=tally(rows["raw"], revenue_truth),
        revenue_cuped=tally(rows["cuped"], revenue_truth) if rows["cuped"] else None,
        conversion_rate=tally(rows["rate"], scenario.true_conversion_rate_lift),
        cuped_used=used / runs,
        mean_narrowing=narrowing / runs,
        seconds=seconds,
    )
