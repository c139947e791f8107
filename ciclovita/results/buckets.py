"""The input of the results statistics: one experiment group's sums per customer hash bucket.

This module owns :class:`ArmBuckets`, the typed form of what SQL hands to the estimators, and
the aggregation that produces it from per-occurrence arrays (what the SQL ``GROUP BY`` does,
used by the simulations and by small callers).

For one campaign and one group (``treatment``, ``holdout`` or ``global_control``), each of
``B`` buckets (:data:`DEFAULT_BUCKETS`) holds sums over the occurrences of the customers whose
stable hash falls in that bucket; the bucket depends only on the customer id, never on the
group drawn::

    n           = count(*)                      occurrences
    conversions = sum(converted)                occurrences that converted within the window
    revenue     = sum(y)                        y: revenue in the goal window, integer cents
    revenue_sq  = sum(y * y)
    pre         = sum(x)                        x: pre-period spend of the customer, cents
    pre_sq      = sum(x * x)
    pre_revenue = sum(x * y)

Because every occurrence of a customer lands in the same bucket, the buckets are independent
clusters even when customers have several occurrences; resampling buckets is a cluster
bootstrap (see :mod:`ciclovita.results.lift`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["DEFAULT_BUCKETS", "SUM_COLUMNS", "ArmBuckets", "Group"]

IntArray = npt.NDArray[np.int64]
WholeNumbers = npt.ArrayLike | Sequence[Any]
"""Whole numbers in any form a query returns: numpy arrays, lists of ints or Decimals."""
FloatArray = npt.NDArray[np.float64]

DEFAULT_BUCKETS = 256
"""Hash buckets per group: enough clusters for the bootstrap, few enough for a fast query."""

SUM_COLUMNS = ("n", "conversions", "revenue", "revenue_sq", "pre", "pre_sq", "pre_revenue")
"""The per-bucket sums, in the order of :class:`ArmBuckets`' fields."""


class Group(StrEnum):
    """The experiment group an occurrence is assigned to, once, at entry."""

    TREATMENT = "treatment"
    HOLDOUT = "holdout"
    GLOBAL_CONTROL = "global_control"


@dataclass(frozen=True, eq=False)
class ArmBuckets:
    """One group's sums per hash bucket: seven int64 arrays of the same length ``B``.

    Build with :meth:`from_sums` (any array-likes of whole numbers), :meth:`from_frame` (the
    rows of an SQL aggregate) or :meth:`from_occurrences` (per-occurrence arrays). The
    constructor checks shapes and the inequalities the sums of real data obey
    (``0 <= conversions <= n``, ``revenue**2 <= n * revenue_sq``, ...), so that a wrong query
    fails loudly here instead of yielding a plausible interval.
    """

    n: IntArray
    conversions: IntArray
    revenue: IntArray
    revenue_sq: IntArray
    pre: IntArray
    pre_sq: IntArray
    pre_revenue: IntArray

    def __post_init__(self) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self)}
        length = None
        for name, value in arrays.items():
            if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.ndim != 1:
                raise ValueError(f"{name} must be a one-dimensional int64 array; use from_sums()")
            if length is None:
                length = len(value)
            elif len(value) != length:
                raise ValueError(
                    f"every sum needs one value per bucket; n has {length}, {name} {len(value)}"
                )
            value.setflags(write=False)
        if length == 0:
            raise ValueError("there must be at least one bucket")
        n, conv = self.n, self.conversions
        _check(n >= 0, "n must be >= 0", n)
        _check((conv >= 0) & (conv <= n), "conversions must be between 0 and n", conv)
        for name in ("revenue", "revenue_sq", "pre", "pre_sq"):
            _check(arrays[name] >= 0, f"{name} must be >= 0", arrays[name])
        _check(self.pre_revenue >= 0, "pre_revenue must be >= 0", self.pre_revenue)
        empty = n == 0
        for name in SUM_COLUMNS[1:]:
            _check(~empty | (arrays[name] == 0), f"{name} must be 0 where n is 0", arrays[name])
        # Cauchy-Schwarz on the occurrences of a bucket (with a rounding slack for huge sums)
        nf = n.astype(np.float64)
        for total, squares in (("revenue", "revenue_sq"), ("pre", "pre_sq")):
            t = arrays[total].astype(np.float64)
            s = arrays[squares].astype(np.float64)
            _check(
                t * t <= nf * s * (1 + 1e-9) + 0.5,
                f"{total}**2 must be <= n * {squares} (is {squares} the sum of squares?)",
                arrays[squares],
            )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_sums(
        cls,
        *,
        n: WholeNumbers,
        conversions: WholeNumbers,
        revenue: WholeNumbers,
        revenue_sq: WholeNumbers,
        pre: WholeNumbers | None = None,
        pre_sq: WholeNumbers | None = None,
        pre_revenue: WholeNumbers | None = None,
    ) -> ArmBuckets:
        """Sums per bucket from array-likes of whole numbers (ints, integral floats, Decimals).

        Without a pre-period (``pre`` None) the three pre-period sums are zeros, and CUPED
        then has nothing to adjust with.
        """
        base = _as_int64("n", n)
        zeros = np.zeros(len(base), dtype=np.int64)
        return cls(
            n=base,
            conversions=_as_int64("conversions", conversions),
            revenue=_as_int64("revenue", revenue),
            revenue_sq=_as_int64("revenue_sq", revenue_sq),
            pre=zeros.copy() if pre is None else _as_int64("pre", pre),
            pre_sq=zeros.copy() if pre_sq is None else _as_int64("pre_sq", pre_sq),
            pre_revenue=zeros.copy()
            if pre_revenue is None
            else _as_int64("pre_revenue", pre_revenue),
        )

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, *, buckets: int = DEFAULT_BUCKETS, bucket_col: str = "bucket"
    ) -> ArmBuckets:
        """From the rows of an SQL aggregate: one row per non-empty bucket.

        ``frame`` has the column ``bucket_col`` (0 to ``buckets - 1``, each at most once) and
        the columns of :data:`SUM_COLUMNS` (the pre-period ones may be missing); buckets
        without a row are empty.
        """
        missing = [c for c in (bucket_col, *SUM_COLUMNS[:4]) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"missing column(s) {', '.join(missing)}; the frame has: "
                f"{', '.join(map(str, frame.columns))}"
            )
        index = _as_int64(bucket_col, frame[bucket_col].to_numpy())
        if len(index) and (index.min() < 0 or index.max() >= buckets):
            raise ValueError(f"{bucket_col} must be between 0 and {buckets - 1}")
        if len(np.unique(index)) != len(index):
            raise ValueError(f"{bucket_col} must not repeat: one row per bucket")
        sums: dict[str, Any] = {}
        for name in SUM_COLUMNS:
            full = np.zeros(buckets, dtype=np.int64)
            if name in frame.columns:
                full[index] = _as_int64(name, frame[name].to_numpy())
            sums[name] = full
        return cls(**sums)

    @classmethod
    def from_occurrences(
        cls,
        bucket: npt.ArrayLike,
        converted: npt.ArrayLike,
        revenue_cents: npt.ArrayLike,
        pre_cents: npt.ArrayLike | None = None,
        *,
        buckets: int = DEFAULT_BUCKETS,
    ) -> ArmBuckets:
        """Aggregate one group's occurrences into bucket sums, as the SQL ``GROUP BY`` does.

        ``bucket`` is each occurrence's customer bucket (0 to ``buckets - 1``), ``converted``
        booleans, ``revenue_cents`` and ``pre_cents`` whole non-negative cents.
        """
        b = _as_int64("bucket", bucket)
        if len(b) and (b.min() < 0 or b.max() >= buckets):
            raise ValueError(f"bucket must be between 0 and {buckets - 1}")
        c = np.asarray(converted)
        if c.dtype != np.bool_:
            c = _as_int64("converted", c)
            if np.any((c != 0) & (c != 1)):
                raise ValueError("converted must hold booleans (or 0 and 1)")
        y = _as_int64("revenue_cents", revenue_cents)
        x = np.zeros(len(b), dtype=np.int64) if pre_cents is None else _as_int64("pre", pre_cents)
        if not (len(b) == len(c) == len(y) == len(x)):
            raise ValueError("bucket, converted, revenue_cents and pre_cents differ in length")

        def total(values: npt.NDArray[Any]) -> IntArray:
            return np.bincount(b, weights=values, minlength=buckets).round().astype(np.int64)

        def exact(values: IntArray) -> IntArray:
            # bincount sums in float64; past 2**53 fall back to exact integer sums
            if len(values) and float(np.abs(values).max()) * len(values) >= 2.0**53:
                out = np.zeros(buckets, dtype=np.int64)
                np.add.at(out, b, values)
                return out
            return total(values)

        return cls(
            n=np.bincount(b, minlength=buckets).astype(np.int64),
            conversions=np.bincount(b, weights=c.astype(np.float64), minlength=buckets)
            .round()
            .astype(np.int64),
            revenue=exact(y),
            revenue_sq=exact(y * y),
            pre=exact(x),
            pre_sq=exact(x * x),
            pre_revenue=exact(x * y),
        )

    # -- views ----------------------------------------------------------------------------

    @property
    def buckets(self) -> int:
        """The number of buckets ``B``."""
        return len(self.n)

    @property
    def occurrences(self) -> int:
        """Total occurrences in the group."""
        return int(self.n.sum())

    @property
    def total_conversions(self) -> int:
        """Total converted occurrences in the group."""
        return int(self.conversions.sum())

    @property
    def total_revenue(self) -> int:
        """Total revenue in the goal window, in cents."""
        return int(self.revenue.sum())

    @property
    def has_pre_period(self) -> bool:
        """Whether any pre-period spend was recorded (else CUPED cannot help)."""
        return bool(self.pre_sq.any())

    def matrix(self) -> FloatArray:
        """The seven sums as a ``(B, 7)`` float64 matrix, columns in :data:`SUM_COLUMNS` order."""
        return np.column_stack([getattr(self, name) for name in SUM_COLUMNS]).astype(np.float64)

    def __add__(self, other: ArmBuckets) -> ArmBuckets:
        """Bucket-wise sum of two groups (e.g. all the treatment variants together)."""
        if not isinstance(other, ArmBuckets):
            return NotImplemented
        if other.buckets != self.buckets:
            raise ValueError(f"cannot add {self.buckets} buckets to {other.buckets}")
        return ArmBuckets(**{k: getattr(self, k) + getattr(other, k) for k in SUM_COLUMNS})


def _as_int64(name: str, values: WholeNumbers) -> IntArray:
    """Whole numbers as a 1-d int64 array; ValueError for fractions, NaN or overflow."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = np.atleast_1d(arr)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == np.int64:
        return arr.copy()
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold whole numbers") from None
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must hold whole numbers; element {i} is {arr[i]!r}")
    if np.any(np.abs(as_float) >= 2.0**63):
        raise ValueError(f"{name} does not fit in 64-bit integers")
    if arr.dtype == object:  # Decimals and Python ints: convert one by one, exactly
        return np.array([int(v) for v in arr], dtype=np.int64)
    return as_float.astype(np.int64)


def _check(ok: npt.NDArray[np.bool_], message: str, values: npt.NDArray[Any]) -> None:
    if not bool(np.all(ok)):
        i = int(np.argmin(ok))
        raise ValueError(f"{message}; bucket {i} has {values[i]!r}")
