"""RFM: recency, frequency and monetary quintile scores (1-5) and the named RFM segments.

Scores are rank quintiles over the buyers scored together: a customer's score is
``ceil(5 × rank / n)`` where the rank is one more than the buyers strictly worse (ties take the
lowest rank, so equal values always share a score, whatever the row order). Higher is better:
recent, frequent, big spenders score 5.

Named segments come from R and the rounded mean of F and M on the grid below (rows R 5→1,
columns FM 1→5); every cell is named, so every buyer has exactly one segment.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from ciclovita.lifecycle import RFM_SEGMENTS

SEGMENT_GRID: Final[dict[int, tuple[str, str, str, str, str]]] = {
    5: ("New Customers", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Champions"),
    3: ("Promising", "About to Sleep", "Need Attention", "Loyal", "Loyal"),
    2: ("Hibernating", "About to Sleep", "Need Attention", "At Risk", "Cannot Lose Them"),
    1: ("Lost", "Hibernating", "At Risk", "At Risk", "Cannot Lose Them"),
}
assert {name for row in SEGMENT_GRID.values() for name in row} == set(RFM_SEGMENTS)


def quintile_scores(goodness: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Scores 1-5 by rank of ``goodness`` (higher is better); ties share the lower score."""
    values = pd.Series(np.asarray(goodness, dtype=float))
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    rank = values.rank(method="min").to_numpy()  # 1 + buyers strictly worse
    scores = np.ceil(5.0 * rank / n)
    return np.clip(scores, 1, 5).astype(np.int8)


def rfm_scores(
    recency_days: npt.ArrayLike, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """R, F, M scores for buyers: fewer days since the last order is better."""
    r = quintile_scores(-np.asarray(recency_days, dtype=float))
    f = quintile_scores(frequency)
    m = quintile_scores(monetary)
    return r, f, m


def rfm_segments(
    r: npt.NDArray[np.integer], f: npt.NDArray[np.integer], m: npt.NDArray[np.integer]
) -> npt.NDArray[np.object_]:
    """The named segment of each (R, F, M), from ``SEGMENT_GRID``."""
    fm = np.floor((f.astype(float) + m.astype(float)) / 2.0 + 0.5).astype(int)
    table = np.array([SEGMENT_GRID[row] for row in (1, 2, 3, 4, 5)], dtype=object)
    if len(r) == 0:
        return np.zeros(0, dtype=object)
    names: npt.NDArray[np.object_] = table[r.astype(int) - 1, np.clip(fm, 1, 5) - 1]
    return names


def quintile_breakpoints(goodness: npt.ArrayLike) -> list[float | None]:
    """Thresholds for scores 2-5: the lowest value that earned each score (None: nobody did).

    Scoring new values with ``scores_from_breakpoints`` gives exactly ``quintile_scores`` on
    the population the breakpoints came from, and depends on nothing but the value itself
    afterwards, so a customer's score changes only when their own figures do.
    """
    values = np.asarray(goodness, dtype=float)
    scores = quintile_scores(values)
    out: list[float | None] = []
    for score in (2, 3, 4, 5):
        reached = values[scores >= score]
        out.append(float(reached.min()) if reached.size else None)
    return out


def scores_from_breakpoints(
    goodness: npt.ArrayLike, breakpoints: list[float | None]
) -> npt.NDArray[np.int8]:
    """Score 1 plus one for every breakpoint the value reaches."""
    values = np.asarray(goodness, dtype=float)
    scores = np.ones(values.shape, dtype=np.int8)
    for threshold in breakpoints:
        if threshold is not None:
            scores += (values >= threshold).astype(np.int8)
    return scores
