"""A/B variants: the probability that each is best, and a winner only when it is earned.

This module owns the comparison of a campaign's variants with one another (all treated: the
holdout is compared with the campaign as a whole in :mod:`ciclovita.results.lift`).

**Probability of being best.** Each variant's mean gets an approximate posterior, and
``P(best)`` is the share of 20,000 joint draws in which the variant has the highest mean
(seeded: the same data give the same figures).

* Revenue per customer: ``m_g ~ Normal(mean_g, v / N_g)`` -- the flat-prior posterior of a
  mean, normal by the Bernstein-von Mises theorem at the sizes where a winner may be named.
  ``v`` is the working variance of :mod:`ciclovita.results.score` at the overall mean, fitted
  on all variants together: as in the lift's score interval, a variant that by chance saw
  none of the rare large orders does not also look more certain than the others.
* Conversion rate: ``p_g ~ Beta(1 + c_g / d, 1 + (N_g - c_g) / d)``, the uniform-prior
  posterior on effective counts, ``d >= 1`` the design effect of repeat customers measured on
  the hash buckets (``d = 1`` when each customer enters once).

**Winner** (on revenue per customer, the measure of the verdict) only when both hold:

1. every variant has at least ``required_per_variant`` occurrences, the size at which a
   two-variant comparison detects the target lift (default +10% of the overall mean) with
   80% power in a two-sided 5% test::

       n = (z_{0.975} + z_{0.80})**2 * 2 v / (target_lift * overall mean)**2

2. the leading variant's ``P(best) >= 0.95``.

Why both. ``P(best)`` alone can be read at any time, and early on -- a few dozen orders, one
large order deciding everything -- the normal posterior is not yet trustworthy and every
look is a new chance to crown noise. The size rule fixes one honest moment, the size that the
target lift needs anyway; the probability rule then names a winner only if the data clearly
favour it. In normal theory, at that size and with two variants: when they are equal a
winner is named 10% of the time (5% each way; harmless, either is as good); when one is
better by the target lift it is named 88% of the time (``Phi(2.80 - 1.645)``) and the worse
one practically never (``Phi(-1.645 - 2.80)``, about 5e-6). Simulated on heavy-tailed revenue
(``tests/test_results_statistics.py``): equal variants got a winner in 8.3-8.4% of
experiments; a variant better by the target was named in 67% (+20% target) to 78% (+50%),
the worse one in none. A threshold of 0.975 would match the campaign verdict's two-sided 5%
test but cost a further eight points of that power; since naming one of two equal variants
costs nothing, 0.95 is the better trade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ciclovita.results.buckets import ArmBuckets
from ciclovita.results.lift import NotEnoughData, group_moments
from ciclovita.results.score import WorkingVariance, z_value
from ciclovita.results.verdict import DEFAULT_POWER, DEFAULT_TARGET_LIFT, SIGNIFICANCE

__all__ = [
    "DEFAULT_DRAWS",
    "WINNER_PROBABILITY",
    "VariantComparison",
    "VariantResult",
    "compare_variants",
]

WINNER_PROBABILITY = 0.95
"""The ``P(best)`` a variant needs, on revenue per customer, to be named the winner."""
DEFAULT_DRAWS = 20_000
"""Posterior draws behind each ``P(best)`` (its Monte Carlo error is below 0.002)."""


@dataclass(frozen=True)
class VariantResult:
    """One variant's totals, means and probabilities of being best."""

    name: str
    occurrences: int
    conversions: int
    revenue_cents: int
    conversion_rate: float
    revenue_per_customer_cents: float
    p_best_revenue: float
    p_best_conversion: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "variant": self.name,
            "occurrences": self.occurrences,
            "conversions": self.conversions,
            "revenue_cents": self.revenue_cents,
            "conversion_rate": self.conversion_rate,
            "revenue_per_customer_cents": self.revenue_per_customer_cents,
            "p_best_revenue": self.p_best_revenue,
            "p_best_conversion": self.p_best_conversion,
        }


@dataclass(frozen=True)
class VariantComparison:
    """The variants, the size each needs, and the winner (None, with the reason, if none)."""

    variants: tuple[VariantResult, ...]
    required_per_variant: int | None
    winner: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "variants": [v.as_dict() for v in self.variants],
            "required_per_variant": self.required_per_variant,
            "winner": self.winner,
            "reason": self.reason,
        }


def compare_variants(
    variants: Mapping[str, ArmBuckets],
    *,
    target_lift: float = DEFAULT_TARGET_LIFT,
    power: float = DEFAULT_POWER,
    winner_probability: float = WINNER_PROBABILITY,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> VariantComparison:
    """P(best) of each variant on revenue and conversion, and the winner (module docstring).

    Raises NotEnoughData for fewer than two variants, a variant without occurrences, or no
    conversion in any variant; ValueError for variants with different bucket counts.
    """
    names = list(variants)
    arms = [variants[name] for name in names]
    if len(arms) < 2:
        raise NotEnoughData(f"need at least two variants to compare, got {len(arms)}")
    if len({arm.buckets for arm in arms}) != 1:
        raise ValueError("the variants must be aggregated over the same hash buckets")
    empty = [name for name, arm in zip(names, arms, strict=True) if arm.occurrences == 0]
    if empty:
        raise NotEnoughData(f"variant(s) without occurrences: {', '.join(empty)}")
    if sum(arm.total_conversions for arm in arms) == 0:
        raise NotEnoughData("no occurrence converted in any variant: nothing to compare yet")

    n = np.array([arm.occurrences for arm in arms], dtype=np.float64)
    revenue = [group_moments(arm, "revenue") for arm in arms]
    conversion = [group_moments(arm, "conversion") for arm in arms]
    overall = float(sum(g.n * g.level for g in revenue) / n.sum())
    v = max(WorkingVariance.fit(revenue)(overall), 0.0)
    rate_variance = sum(g.n * g.level * (1.0 - g.level) for g in conversion)
    design_effect = 1.0
    if rate_variance > 0:
        design_effect = max(1.0, sum(g.residual_ss for g in conversion) / rate_variance)
    rng = np.random.default_rng(seed)

    means = np.array([g.level for g in revenue])
    revenue_draws = means + rng.standard_normal((draws, len(arms))) * np.sqrt(v / n)
    conversions = np.array([arm.total_conversions for arm in arms], dtype=np.float64)
    rate_draws = rng.beta(
        1.0 + conversions / design_effect,
        1.0 + (n - conversions) / design_effect,
        size=(draws, len(arms)),
    )
    p_revenue = _p_best(revenue_draws)
    p_conversion = _p_best(rate_draws)

    target = target_lift * overall
    required = None
    if target > 0 and v > 0:
        z = z_value(1.0 - SIGNIFICANCE) + z_value(2.0 * power - 1.0)
        required = math.ceil(z * z * 2.0 * v / (target * target))
    results = tuple(
        VariantResult(
            name=name,
            occurrences=arm.occurrences,
            conversions=arm.total_conversions,
            revenue_cents=arm.total_revenue,
            conversion_rate=arm.total_conversions / arm.occurrences,
            revenue_per_customer_cents=arm.total_revenue / arm.occurrences,
            p_best_revenue=float(p_revenue[i]),
            p_best_conversion=float(p_conversion[i]),
        )
        for i, (name, arm) in enumerate(zip(names, arms, strict=True))
    )
    leader = int(np.argmax(p_revenue))
    smallest = int(n.min())
    if required is None:
        return VariantComparison(results, None, None, "no revenue yet: nothing to compare")
    if smallest < required:
        reason = (
            f"too early: each variant needs {required:,} occurrences to detect a "
            f"{target_lift:+.0%} difference; the smallest has {smallest:,}"
        )
        return VariantComparison(results, required, None, reason)
    if p_revenue[leader] < winner_probability:
        reason = (
            f"no clear winner: the leader, {names[leader]}, is best with probability "
            f"{p_revenue[leader]:.2f} (a winner needs {winner_probability:.2f})"
        )
        return VariantComparison(results, required, None, reason)
    reason = f"{names[leader]} is best with probability {p_revenue[leader]:.3f}"
    return VariantComparison(results, required, names[leader], reason)


def _p_best(draws: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Share of draws (rows) in which each column is the largest."""
    best = np.argmax(draws, axis=1)
    counts = np.bincount(best, minlength=draws.shape[1]).astype(np.float64)
    return np.asarray(counts / draws.shape[0], dtype=np.float64)
