"""Earlier runs, read back from ``cycle_runs``: the stage counts to compare a run with.

Every run that recomputes stages (``lifecycle-cycle``, ``recompute-segments``) stores its
summary, with ``stages``, in ``cycle_runs``; the change "since the last run" and the funnel
over time are read from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from ciclovita.db.models import CycleRun
from ciclovita.vocabulary import CycleStatus


@dataclass(frozen=True)
class StageSnapshot:
    """Customers per stage at the end of one earlier run."""

    cycle_id: int
    as_of: datetime
    stages: dict[str, int]


def stage_history(
    engine: Engine, *, before_cycle: int | None = None, limit: int = 30
) -> list[StageSnapshot]:
    """The last ``limit`` completed runs with stage counts, oldest first."""
    query = (
        select(CycleRun.id, CycleRun.as_of, CycleRun.summary)
        .where(CycleRun.status == CycleStatus.COMPLETED)
        .order_by(CycleRun.id.desc())
        .execution_options(yield_per=200)  # runs without stages (run-campaigns) are skipped
    )
    if before_cycle is not None:
        query = query.where(CycleRun.id < before_cycle)
    snapshots: list[StageSnapshot] = []
    with engine.connect() as connection:
        for cycle_id, as_of, summary in connection.execute(query):
            stages = (summary or {}).get("stages")
            if isinstance(stages, dict) and stages:
                counts = {str(k): int(v) for k, v in stages.items()}
                snapshots.append(StageSnapshot(int(cycle_id), as_of, counts))
            if len(snapshots) == limit:
                break
    return snapshots[::-1]


def previous_stages(engine: Engine, cycle_id: int) -> StageSnapshot | None:
    """The stage counts of the last completed run before ``cycle_id``, if any."""
    history = stage_history(engine, before_cycle=cycle_id, limit=1)
    return history[-1] if history else None
