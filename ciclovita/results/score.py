"""The score interval for a difference of group means, under a compound working variance.

This module owns the interval ciclovita reports for every lift (see
:mod:`ciclovita.results.lift` for why it beat the bootstraps), and the working variance that
the power calculation and the variant comparison share with it.

**Working variance.** An occurrence's outcome is ``y = B V``: whether it converted (``B``)
times what the conversion brought (``V``, an order value; ``V = 1`` for the conversion rate
itself). If a campaign changes how many convert but not the distribution of ``V`` -- the
usual way a message works -- then in a group with mean ``m = E[y]``::

    Var(y) = E[B] E[V**2] - m**2 = phi m - m**2,      phi = E[V**2] / E[V]

one constant ``phi`` for both groups (``phi = 1`` and ``Var = p (1 - p)`` for a rate). With
CUPED's ``z = y - theta x`` a term ``omega = theta**2 Var(x)`` joins it (the pre-period is
the same in both groups): ``v(m) = phi m - m**2 + omega``. ``phi`` is fitted so that the
working variances add up to the observed dispersion of both groups together::

    phi = (SS_T + SS_C + N_T m_T**2 + N_C m_C**2 - N omega) / (N_T m_T + N_C m_C)

where ``SS_g = K_g / (K_g - 1) sum_b (z_b - m_g n_b)**2`` is the cluster-robust residual sum of
squares over the group's hash buckets (so repeat occurrences of one customer are accounted
for: ``phi`` then carries the design effect) and ``omega`` uses the same for ``x``.

**Score interval.** For a hypothesised difference ``delta`` the group means are restricted to
``m_C(delta) = a - b delta`` and ``m_T(delta) = a + (1 - b) delta``, ``a = (N_T m_T + N_C m_C) / N``
and ``b = N_T / N`` (the overall mean kept, the difference set to ``delta``), and ::

    V(delta) = v(m_T(delta)) / N_T + v(m_C(delta)) / N_C = c0 + c1 delta + c2 delta**2

The interval is every ``delta`` with ``(d - delta)**2 <= z**2 V(delta)``, ``d`` the observed
difference: the roots of a quadratic. It is the Wilson / Miettinen-Nurminen construction for
a difference of rates, extended to revenue. What makes it honest on heavy-tailed revenue: at
``delta = 0`` the variance is the pooled one, so a holdout that by chance saw none of the rare
large orders does not also shrink its own variance (the failure of every interval built from
each group's own variance: Welch's, and the bootstraps), while away from 0 the variance
follows each group's level, which the pooled t-test's does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["GroupMoments", "WorkingVariance", "score_interval", "z_value"]


def z_value(level: float) -> float:
    """The two-sided standard normal quantile ``z_{1 - (1 - level) / 2}``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level must be between 0 and 1, got {level!r}")
    return float(special.ndtri(0.5 + level / 2.0))


@dataclass(frozen=True)
class GroupMoments:
    """One group's summary for one outcome: occurrences, mean, cluster-robust residual SS."""

    n: float
    level: float
    residual_ss: float


@dataclass(frozen=True)
class WorkingVariance:
    """``v(m) = phi m - m**2 + omega`` per occurrence (module docstring)."""

    phi: float
    omega: float = 0.0

    @classmethod
    def fit(cls, groups: list[GroupMoments], omega: float = 0.0) -> WorkingVariance:
        """The ``phi`` that makes the groups' working variances add up to their residual SS."""
        total_level = sum(g.n * g.level for g in groups)
        n = sum(g.n for g in groups)
        dispersion = sum(g.residual_ss + g.n * g.level**2 for g in groups) - n * omega
        if total_level <= 0.0:
            raise ValueError("no outcome at all in either group: nothing to estimate from")
        return cls(phi=dispersion / total_level, omega=omega)

    def __call__(self, level: float) -> float:
        """The working variance per occurrence at mean ``level``."""
        return self.phi * level - level * level + self.omega

    def of_difference(self, n_treatment: float, n_comparison: float, level: float) -> float:
        """``V(0)``: the variance of a difference of means when both groups sit at ``level``."""
        return self(level) * (1.0 / n_treatment + 1.0 / n_comparison)


def score_interval(
    treatment: GroupMoments,
    comparison: GroupMoments,
    variance: WorkingVariance,
    level: float,
    *,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """The score interval for ``treatment.level - comparison.level`` (module docstring).

    ``bounds`` clips it to the differences that are possible at all (e.g. a rate difference
    lies in [-1, 1]). Falls back to the Wald interval with the working variance at the
    observed levels if the quadratic has no real roots (it always has when the working
    variance is positive at the observed levels).
    """
    z2 = z_value(level) ** 2
    n_t, n_c = treatment.n, comparison.n
    n = n_t + n_c
    a = (n_t * treatment.level + n_c * comparison.level) / n
    b = n_t / n
    d = treatment.level - comparison.level
    phi, omega = variance.phi, variance.omega
    base = phi * a - a * a + omega
    c0 = base * (1.0 / n_t + 1.0 / n_c)
    c1 = (phi - 2.0 * a) * ((1.0 - b) / n_t - b / n_c)
    c2 = -((1.0 - b) ** 2 / n_t + b * b / n_c)
    qa = 1.0 - z2 * c2
    qb = -2.0 * d - z2 * c1
    qc = d * d - z2 * c0
    disc = qb * qb - 4.0 * qa * qc
    if disc >= 0.0 and qa > 0.0:
        root = math.sqrt(disc)
        low, high = (-qb - root) / (2.0 * qa), (-qb + root) / (2.0 * qa)
    else:  # pragma: no cover - needs a negative working variance at the observed levels
        wald = variance(treatment.level) / n_t + variance(comparison.level) / n_c
        half = math.sqrt(max(wald, 0.0) * z2)
        low, high = d - half, d + half
    low, high = float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
    return min(low, d), max(high, d)
