"""Time and chance: the history window, its seasons, the random streams, and the vectorised
ways every concern draws from them.

Times are days since the start of the history (``t``, floats) until written, when
``Timeline.seconds`` turns them into Unix seconds, never after ``as_of``. Every random draw
comes from ``Timeline.rng(concern)``: one independent numpy stream per concern, seeded from
the seed and the concern's number, so changing how one concern draws never shifts another.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ciclovita.ingest.demo.parameters import HOUR_ACTIVITY, MONTH_ACTIVITY

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
Indices = npt.NDArray[np.intp]

DAY_S: Final = 86_400

# One independent random stream per concern: changing one never shifts the others.
STREAMS: Final = {
    name: number
    for number, name in enumerate(
        (
            "customers",
            "names",
            "behaviour",
            "orders",
            "pilot",
            "recent",
            "amounts",
            "statuses",
            "events",
            "consents",
            "satisfaction",
            "surveys",
            "referrals",
        )
    )
}


class SeasonalClock:
    """Maps real time to "operational" time, in which activity is uniform.

    Times are days since the start of the history. Activity per hour is the month's factor
    times the hour-of-day factor, so a process with a constant rate in operational time has
    more events in November and December, fewer in August and at night.
    """

    def __init__(self, start_s: int, horizon_days: float) -> None:
        first_hour = start_s // 3600
        hours = np.arange(first_hour, first_hour + math.ceil(horizon_days * 24) + 49)
        months = hours.astype("datetime64[h]").astype("datetime64[M]").astype(np.int64) % 12
        month_activity = np.asarray(MONTH_ACTIVITY) / np.mean(MONTH_ACTIVITY)
        hour_activity = np.asarray(HOUR_ACTIVITY) / np.mean(HOUR_ACTIVITY)
        activity = month_activity[months] * hour_activity[hours % 24]
        self._real: F64 = (hours * 3600 - start_s).astype(np.float64) / DAY_S
        operational = np.concatenate(([0.0], np.cumsum(activity[:-1]) / 24.0))
        self._operational: F64 = operational - np.interp(0.0, self._real, operational)

    def operational(self, t: F64) -> F64:
        return np.interp(t, self._real, self._operational)

    def real(self, tau: F64) -> F64:
        """The real time of operational time ``tau``; ``inf`` past the end of the grid."""
        t = np.interp(tau, self._operational, self._real)
        return np.where(tau > self._operational[-1], np.inf, t)


@dataclass(frozen=True)
class Timeline:
    """The seed and the history window: ``horizon`` days ending at ``end_s`` (as_of)."""

    seed: int
    start_s: int
    end_s: int
    horizon: float
    clock: SeasonalClock

    @classmethod
    def create(cls, seed: int, as_of: datetime, history_days: int) -> Timeline:
        end_s = math.floor(as_of.timestamp())
        start_s = end_s - history_days * DAY_S
        return cls(seed, start_s, end_s, float(history_days), SeasonalClock(start_s, history_days))

    def rng(self, concern: str) -> np.random.Generator:
        """The random stream of one concern; streams are independent of each other."""
        entropy = [self.seed % (1 << 64), STREAMS[concern]]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))

    def seconds(self, t: F64) -> I64:
        """Unix seconds of ``t`` days since the start (never after as_of)."""
        return np.minimum(self.start_s + np.floor(t * DAY_S).astype(np.int64), self.end_s)

    def spread(self, rng: np.random.Generator, start: F64, end: F64) -> F64:
        """One random time between ``start`` and ``end`` each, following the seasons."""
        a = self.clock.operational(start)
        b = self.clock.operational(end)
        return np.clip(self.clock.real(a + rng.random(len(a)) * (b - a)), start, end)


def choice(rng: np.random.Generator, n: int, weights: Sequence[float]) -> Indices:
    """``n`` indices drawn with probabilities proportional to ``weights``."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    picked = np.searchsorted(cdf, rng.random(n), side="right")
    return np.minimum(picked, len(cdf) - 1).astype(np.intp)


def render_text(codes: Sequence[npt.NDArray[Any]], render: Callable[..., str]) -> Objects:
    """``render(*row)`` for every row of the parallel non-negative integer ``codes``,
    computed once per distinct combination (JSON properties and other small strings)."""
    n = len(codes[0])
    if n == 0:
        return np.empty(0, dtype=object)
    columns = [np.asarray(c, dtype=np.int64) for c in codes]
    radix = [int(c.max()) + 1 for c in columns]
    key = np.zeros(n, dtype=np.int64)
    for column, base in zip(columns, radix, strict=True):
        key = key * base + column
    unique, inverse = np.unique(key, return_inverse=True)
    parts: list[list[int]] = []
    rest = unique.copy()
    for base in reversed(radix):
        parts.append((rest % base).tolist())
        rest //= base
    rows = zip(*reversed(parts), strict=True)
    rendered = np.array([render(*row) for row in rows], dtype=object)
    return rendered[inverse.reshape(-1)]


def or_none(keep: Bools, values: Objects) -> Objects:
    """``values`` where ``keep``, None (NULL) elsewhere."""
    out = values.copy()
    out[~keep] = None
    return out


def render_json(codes: Sequence[npt.NDArray[Any]], build: Callable[..., dict[str, Any]]) -> Objects:
    """JSON text of ``build(*row)`` for every row of ``codes`` (see ``render_text``)."""
    return render_text(codes, lambda *row: json.dumps(build(*row)))
