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

**Score interval.** For a hypothesised difference ``delta`` the group levels are restricted
to ``m_T - m_C = delta`` at the values that maximise the quasi-likelihood of the working
variance, i.e. solve ``sum_g N_g (mean_g - m_g) / v(m_g) = 0`` (:func:`constrained_levels`;
for a rate, where ``v`` is the binomial variance, these are Miettinen & Nurminen's 1985
restricted estimates), and ::

    V(delta) = v(m_T(delta)) / N_T + v(m_C(delta)) / N_C

The interval is every ``delta`` with ``(d - delta)**2 <= z**2 V(delta)``, ``d`` the observed
difference; each end is a root found numerically, from the closed-form ends of a simpler
restriction (the overall mean held fixed, which makes the equation a quadratic, and which
agrees within a few percent of the width while both groups have revenue) as the first
guess. It is the Wilson / Miettinen-Nurminen construction for a difference of rates,
extended to revenue. What makes it honest on heavy-tailed revenue: at ``delta = 0`` the
variance is the pooled one, so a holdout that by chance saw none of the rare large orders
does not also shrink its own variance (the failure of every interval built from each group's
own variance: Welch's, and the bootstraps), while away from 0 the variance follows each
group's level, which the pooled t-test's does not. The restricted levels never leave the
range where ``v >= 0``, so even a comparison group without a single order gets an interval
that is wide on the side where it is ignorant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

__all__ = [
    "GroupMoments",
    "WorkingVariance",
    "constrained_levels",
    "restricted_variance",
    "score_interval",
    "z_value",
]


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

    Each end solves ``(d - delta)**2 = z**2 V(delta)`` with the restricted levels of
    :func:`constrained_levels`, starting from the closed-form ends of the simpler restriction
    that holds the overall mean fixed (:func:`_quadratic_ends`). ``bounds`` clips the
    interval to the differences that are possible at all (a rate difference lies in
    [-1, 1]).
    """
    z2 = z_value(level) ** 2
    d = treatment.level - comparison.level
    guesses = _quadratic_ends(treatment, comparison, variance, z2)
    low = _end(treatment, comparison, variance, z2, -1, guesses[0])
    high = _end(treatment, comparison, variance, z2, 1, guesses[1])
    low, high = float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
    return min(low, d), max(high, d)


def _quadratic_ends(
    treatment: GroupMoments, comparison: GroupMoments, variance: WorkingVariance, z2: float
) -> tuple[float | None, float | None]:
    """The ends with the levels restricted to ``m_C = a - b delta``, ``m_T = a + (1 - b) delta``.

    (``a`` the overall mean, ``b = N_T / N``.) ``V(delta)`` is then a quadratic, and so is the
    equation: a close first guess, or None where a restricted level leaves ``v >= 0``.
    """
    n_t, n_c = treatment.n, comparison.n
    n = n_t + n_c
    a = (n_t * treatment.level + n_c * comparison.level) / n
    b = n_t / n
    d = treatment.level - comparison.level
    phi, omega = variance.phi, variance.omega
    c0 = (phi * a - a * a + omega) * (1.0 / n_t + 1.0 / n_c)
    c1 = (phi - 2.0 * a) * ((1.0 - b) / n_t - b / n_c)
    c2 = -((1.0 - b) ** 2 / n_t + b * b / n_c)
    qa = 1.0 - z2 * c2
    qb = -2.0 * d - z2 * c1
    qc = d * d - z2 * c0
    disc = qb * qb - 4.0 * qa * qc
    if disc < 0.0 or qa <= 0.0:
        return None, None
    root = math.sqrt(disc)
    ends = ((-qb - root) / (2.0 * qa), (-qb + root) / (2.0 * qa))
    feasible = [
        end if variance(a + (1.0 - b) * end) >= 0.0 and variance(a - b * end) >= 0.0 else None
        for end in ends
    ]
    return feasible[0], feasible[1]


def restricted_variance(
    treatment: GroupMoments, comparison: GroupMoments, variance: WorkingVariance, delta: float
) -> float:
    """``V(delta) = v(m_T) / N_T + v(m_C) / N_C`` at the levels of :func:`constrained_levels`."""
    levels = constrained_levels(treatment, comparison, variance, delta)
    if levels is None:
        return 0.0
    m_t, m_c = levels
    return max(variance(m_t), 0.0) / treatment.n + max(variance(m_c), 0.0) / comparison.n


def constrained_levels(
    treatment: GroupMoments, comparison: GroupMoments, variance: WorkingVariance, delta: float
) -> tuple[float, float] | None:
    """The group levels ``(m_T, m_C)`` with ``m_T - m_C = delta`` that solve the quasi-score.

    ``sum_g N_g (mean_g - m_g) / v(m_g) = 0``: the Miettinen-Nurminen restricted estimates
    for a rate (where ``v`` is the binomial variance), generalised to the working variance.
    Both levels stay where ``v > 0`` (on its edge when the maximum lies there, as for a group
    without any revenue); None if ``delta`` leaves no room for them.
    """
    phi, omega = variance.phi, variance.omega
    spread = math.sqrt(phi * phi + 4.0 * omega)
    r1, r2 = (phi - spread) / 2.0, (phi + spread) / 2.0  # v(m) > 0 exactly on (r1, r2)
    lo, hi = max(r1, r1 - delta), min(r2, r2 - delta)
    if not hi > lo:
        return None
    pad = 1e-12 * (hi - lo)

    n_t, n_c = treatment.n, comparison.n
    y_t, y_c = treatment.level, comparison.level

    def score(m_c: float) -> float:
        m_t = m_c + delta
        return n_t * (y_t - m_t) / variance(m_t) + n_c * (y_c - m_c) / variance(m_c)

    left, right = lo + pad, hi - pad
    if score(left) <= 0.0:  # the quasi-likelihood is highest on the edge of the range
        return left + delta, left
    if score(right) >= 0.0:
        return right + delta, right
    # Newton's method from the overall mean, kept inside a bracket that bisection shrinks
    # when a step would leave it (it converges in a few steps; the bracket makes it safe)
    m_c = min(max((n_t * (y_t - delta) + n_c * y_c) / (n_t + n_c), left), right)
    tolerance = 1e-12 * max(1.0, abs(left), abs(right))
    for _ in range(100):
        f = score(m_c)
        if f > 0.0:
            left = m_c
        else:
            right = m_c
        m_t = m_c + delta
        v_t, v_c = variance(m_t), variance(m_c)
        slope = -n_t * (v_t + (y_t - m_t) * (phi - 2.0 * m_t)) / (v_t * v_t) - n_c * (
            v_c + (y_c - m_c) * (phi - 2.0 * m_c)
        ) / (v_c * v_c)
        step = f / slope if slope < 0.0 else math.inf
        candidate = m_c - step
        if not left < candidate < right:
            candidate = (left + right) / 2.0
        if abs(candidate - m_c) <= tolerance or right - left <= tolerance:
            m_c = candidate
            break
        m_c = candidate
    return m_c + delta, m_c


def _end(
    treatment: GroupMoments,
    comparison: GroupMoments,
    variance: WorkingVariance,
    z2: float,
    side: int,
    guess: float | None,
) -> float:
    """One end (``side`` -1 or +1) of the score interval, bracketed around ``guess``."""
    d = treatment.level - comparison.level

    def excess(delta: float) -> float:
        return (d - delta) ** 2 - z2 * restricted_variance(treatment, comparison, variance, delta)

    wald = variance(treatment.level) / treatment.n + variance(comparison.level) / comparison.n
    scale = math.sqrt(max(wald, 0.0)) or max(abs(d), 1.0)
    inner, outer = d, d + side * scale
    if guess is not None and side * (guess - d) > 0.0:
        margin = 0.01 * abs(guess - d)
        near, far = guess - side * margin, guess + side * margin
        if excess(near) < 0.0:
            inner = near
        outer = far
    for _ in range(60):
        if excess(outer) > 0.0:
            break
        inner, outer = outer, d + 2.0 * (outer - d)
    lo, hi = (outer, inner) if side < 0 else (inner, outer)
    return float(optimize.brentq(excess, lo, hi, xtol=1e-9 * max(1.0, abs(d), scale)))
