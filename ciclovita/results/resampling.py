"""The bucket bootstrap: resampled sums, and intervals from them (percentile, BCa, bootstrap-t).

This module owns the bucket bootstrap behind ``estimate_lift(method="percentile" | "bca" |
"studentized")`` and the linearised variance behind ``method="normal"`` (the alternatives the
default score interval was chosen over; see :mod:`ciclovita.results.lift`); it knows sums and
statistics, not campaigns.

**Sums.** A group's non-empty buckets become the rows of a ``(K, 15)`` matrix (see
:data:`COLUMNS`): the seven sums of :class:`~ciclovita.results.buckets.ArmBuckets`, then the
bucket-level products (``n_b**2``, ``y_b n_b``, ``y_b**2`` ...) that a studentized
bootstrap needs for the variance of each resample. A resample draws ``K`` buckets with
replacement (multinomial counts ``c``, vectorised as integer draws and one ``bincount``) and
its sums are ``c @ matrix`` -- every statistic below is a smooth function of such sums, so
2,000 resamples of both groups cost about ten milliseconds.

**Linearised variance of a group mean.** The mean per occurrence of an outcome ``z`` is the
ratio ``Z / N`` of bucket totals; treating buckets as i.i.d. clusters, its variance is
estimated by ::

    V = K / (K - 1) * sum_b (z_b - m n_b)**2 / N**2,    m = Z / N
      = K / (K - 1) * (S_zz - 2 m S_zn + m**2 S_nn) / N**2

(the cluster-robust, or delta-method, variance of a ratio estimator). For CUPED's
``z = y - theta x`` the sums expand to ``S_zz = S_yy - 2 theta S_xy + theta**2 S_xx`` and
``S_zn = S_yn - theta S_xn``.

**Intervals** from the estimate ``t``, its bootstrap replicates ``t*_r`` and (for
bootstrap-t) the standard errors ``se`` and ``se*_r``; ``Phi`` is the standard normal CDF,
``q_p(.)`` the empirical ``p`` quantile:

* percentile: ``[q_{a/2}(t*), q_{1-a/2}(t*)]``;
* BCa (Efron 1987): the percentile interval at the levels
  ``Phi(z0 + (z0 + z_p) / (1 - acc (z0 + z_p)))`` with the bias correction
  ``z0 = Phi^-1(share of t* below t)`` and the acceleration from the jackknife (one bucket
  left out at a time in each group; the several-sample form of Davison & Hinkley 1997, ch. 5)
  ``acc = sum_g sum_i l_gi**3 / K_g**3 / (6 (sum_g sum_i l_gi**2 / K_g**2)**1.5)`` with
  ``l_gi = (K_g - 1)(mean_j t_(gj) - t_(gi))``;
* bootstrap-t: ``[t - q_{1-a/2}(T*) se, t - q_{a/2}(T*) se]`` with ``T*_r = (t*_r - t)/se*_r``;
* normal: ``t -+ z_{1-a/2} se`` (the linearised variance, no resampling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from ciclovita.results.buckets import ArmBuckets

__all__ = [
    "ALL",
    "COLUMNS",
    "LINEAR",
    "BootstrapMethod",
    "Resampled",
    "bucket_matrix",
    "interval",
    "jackknife_acceleration",
    "resample",
]

FloatArray = npt.NDArray[np.float64]
BootstrapMethod = Literal["percentile", "bca", "studentized", "normal"]

COLUMNS = (
    # the seven occurrence-level sums of ArmBuckets
    "n",
    "conv",
    "y",
    "y2",
    "x",
    "x2",
    "xy",
    # bucket-level products, for the linearised variance of each resample
    "n_n",
    "y_n",
    "y_y",
    "x_n",
    "x_y",
    "x_x",
    "c_n",
    "c_c",
)
_CHUNK = 256

N, CONV, Y, Y2, X, X2, XY, N_N, Y_N, Y_Y, X_N, X_Y, X_X, C_N, C_C = range(len(COLUMNS))


def bucket_matrix(arm: ArmBuckets) -> FloatArray:
    """The ``(K, 15)`` matrix of :data:`COLUMNS` over the group's ``K`` non-empty buckets."""
    keep = arm.n > 0
    n = arm.n[keep].astype(np.float64)
    c = arm.conversions[keep].astype(np.float64)
    y = arm.revenue[keep].astype(np.float64)
    x = arm.pre[keep].astype(np.float64)
    return np.column_stack(
        (
            n,
            c,
            y,
            arm.revenue_sq[keep].astype(np.float64),
            x,
            arm.pre_sq[keep].astype(np.float64),
            arm.pre_revenue[keep].astype(np.float64),
            n * n,
            y * n,
            y * y,
            x * n,
            x * y,
            x * x,
            c * n,
            c * c,
        )
    )


LINEAR = (N, CONV, Y, X, X2, XY)
"""The columns the point statistics need (means, rates and CUPED's slope)."""
ALL = tuple(range(len(COLUMNS)))
"""Every column: the studentized interval also needs each resample's variance."""


@dataclass(frozen=True)
class Resampled:
    """One group's sums: ``full`` ``(15,)`` over all buckets, ``draws`` ``(R, 15)`` resampled.

    Columns not asked of :func:`resample` hold NaN in ``draws``, so that a statistic reading
    them cannot go unnoticed.
    """

    matrix: FloatArray
    full: FloatArray
    draws: FloatArray

    @property
    def clusters(self) -> int:
        """``K``, the number of non-empty buckets."""
        return int(self.matrix.shape[0])


def resample(
    arm: ArmBuckets,
    resamples: int,
    rng: np.random.Generator,
    *,
    columns: tuple[int, ...] = LINEAR,
) -> Resampled:
    """Sums of ``resamples`` bootstrap resamples of the group's non-empty buckets.

    Each resample draws ``K`` of the ``K`` buckets with replacement (multinomial counts);
    only ``columns`` are summed.
    """
    matrix = bucket_matrix(arm)
    k = matrix.shape[0]
    cols = list(columns)
    sums = np.full((resamples, len(COLUMNS)), np.nan)
    offsets = (k * np.arange(min(_CHUNK, resamples), dtype=np.int64))[:, None]
    # in chunks: small temporaries are reused instead of page-faulted in for every call
    for start in range(0, resamples, _CHUNK):
        r = min(_CHUNK, resamples - start)
        draws = rng.integers(0, k, size=(r, k))
        draws += offsets[:r]
        weights = np.bincount(draws.ravel(), minlength=r * k).reshape(r, k).astype(np.float64)
        # einsum's own loop, not BLAS: OpenBLAS worker threads spin, and on a busy machine a
        # (R x K) @ (K x 6) product is several times slower through them
        sums[start : start + r, cols] = np.einsum("rk,kc->rc", weights, matrix[:, cols])
    return Resampled(matrix=matrix, full=matrix.sum(axis=0), draws=sums)


def residual_ss(
    s: FloatArray, k: int, z: int, z_n: int, z_z: int, theta: FloatArray | float = 0.0
) -> FloatArray:
    """``K / (K - 1) sum_b (z_b - m n_b)**2`` along the last axis of ``s`` (module docstring).

    ``z``, ``z_n`` and ``z_z`` index the outcome's total and its bucket-level products; with
    ``theta`` != 0 the outcome is CUPED's ``y - theta x`` (then ``z`` must be :data:`Y`).
    """
    n = s[..., N]
    total = s[..., z] - theta * s[..., X]
    szn = s[..., z_n] - theta * s[..., X_N]
    szz = s[..., z_z] - 2.0 * theta * s[..., X_Y] + np.square(theta) * s[..., X_X]
    m = total / n
    ss = np.maximum(szz - 2.0 * m * szn + m * m * s[..., N_N], 0.0)
    factor = k / (k - 1.0) if k > 1 else np.inf
    return np.asarray(factor * ss, dtype=np.float64)


def difference_variance(
    t: FloatArray,
    c: FloatArray,
    kt: int,
    kc: int,
    z: int,
    z_n: int,
    z_z: int,
    theta: FloatArray | float = 0.0,
) -> FloatArray:
    """Linearised variance ``SS_T / N_T**2 + SS_C / N_C**2`` of a difference of group means."""
    ss_t = residual_ss(t, kt, z, z_n, z_z, theta)
    ss_c = residual_ss(c, kc, z, z_n, z_z, theta)
    n_t, n_c = t[..., N], c[..., N]
    return np.asarray(ss_t / (n_t * n_t) + ss_c / (n_c * n_c), dtype=np.float64)


Statistic = Callable[[FloatArray, FloatArray], FloatArray]


def jackknife_acceleration(
    statistic: Statistic, treatment: Resampled, comparison: Resampled
) -> float:
    """BCa's acceleration from the two-sample bucket jackknife (module docstring)."""
    numerator = 0.0
    denominator = 0.0
    for leave_out_treatment in (True, False):
        group = treatment if leave_out_treatment else comparison
        k = group.clusters
        if k < 2:
            continue
        left = group.full[None, :] - group.matrix
        if leave_out_treatment:
            values = statistic(left, np.broadcast_to(comparison.full, left.shape))
        else:
            values = statistic(np.broadcast_to(treatment.full, left.shape), left)
        values = values[np.isfinite(values)]
        if len(values) < 2:
            continue
        influence = (k - 1.0) * (values.mean() - values)
        numerator += float(np.sum(influence**3)) / k**3
        denominator += float(np.sum(influence**2)) / k**2
    if denominator <= 0.0:
        return 0.0
    return float(numerator / (6.0 * denominator**1.5))


def interval(
    method: BootstrapMethod,
    level: float,
    estimate: float,
    replicates: FloatArray,
    *,
    se: float = float("nan"),
    replicate_se: FloatArray | None = None,
    acceleration: float = 0.0,
) -> tuple[float, float]:
    """The two-sided ``level`` interval by ``method`` (module docstring)."""
    alpha = 1.0 - level
    if method == "normal":
        half = float(special.ndtri(1.0 - alpha / 2.0)) * se
        return estimate - half, estimate + half
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return float("-inf"), float("inf")
    if method == "percentile":
        low, high = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
        return float(low), float(high)
    if method == "bca":
        below = np.mean(finite < estimate) + 0.5 * np.mean(finite == estimate)
        z0 = float(special.ndtri(np.clip(below, 0.5 / len(finite), 1 - 0.5 / len(finite))))
        levels = []
        for p in (alpha / 2.0, 1.0 - alpha / 2.0):
            zp = float(special.ndtri(p))
            shifted = z0 + zp
            levels.append(float(special.ndtr(z0 + shifted / (1.0 - acceleration * shifted))))
        low, high = np.quantile(finite, levels)
        return float(low), float(high)
    if method == "studentized":
        if replicate_se is None:
            raise ValueError("the studentized interval needs the replicates' standard errors")
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (replicates - estimate) / replicate_se
        # a resample without spread (se* = 0) is an infinitely extreme one, or 0 if it did
        # not move either; quantiles without interpolation, so that infinities stay in order
        t = np.where(np.isnan(t), 0.0, t)
        q_low, q_high = np.quantile(t, [alpha / 2.0, 1.0 - alpha / 2.0], method="inverted_cdf")
        return float(estimate - q_high * se), float(estimate - q_low * se)
    raise ValueError(f"not a bootstrap interval method: {method!r}")
