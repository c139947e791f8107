"""The ``recompute-segments`` flow (nightly): scores, stages, value and segment memberships.

The same tasks as the full cycle, without campaigns: ``recompute-scores`` (RFM, CLV, stages,
one transaction) then one ``recompute-segment`` task per segment. Its run is a row in
``cycle_runs`` with the stage counts, so the next run can show what changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from ciclovita import cycle
from ciclovita.runtime import get_runtime
from ciclovita.vocabulary import CycleStatus
from flows.artifacts import publish_stages
from flows.naming import flow_run_namer, resolve_as_of
from tasks.scoring import close_removed_segments, recompute_scores, recompute_segment
from tasks.secrets import ensure_sendgrid_key


@flow(
    name="recompute-segments",
    flow_run_name=flow_run_namer("recompute stages and segments"),
    log_prints=True,
)
def recompute_segments(as_of: datetime | None = None) -> dict[str, Any]:
    """Recompute every customer's scores and stage, then every segment, as of ``as_of``."""
    ensure_sendgrid_key()
    runtime = get_runtime()
    now = resolve_as_of(as_of)
    cycle_id = cycle.start_cycle(runtime.engine, now, str(flow_run.get_id() or ""))
    try:
        scores = recompute_scores(now, cycle_id)
        segments = [
            recompute_segment(segment.name, now, cycle_id) for segment in runtime.catalog.segments
        ]
        close_removed_segments(now)
        summary: dict[str, Any] = {
            "flow": "recompute-segments",
            "cycle_id": cycle_id,
            "as_of": now.isoformat(),
            "stages": scores["stage_counts"],
            "transitions": scores["transitions"],
            "scores": {k: scores[k] for k in ("customers", "rows_written", "timings", "model")},
            "segments": segments,
        }
        cycle.finish_cycle(runtime.engine, cycle_id, summary)
    except BaseException:
        cycle.finish_cycle(
            runtime.engine, cycle_id, {"error": "see the flow run logs"}, CycleStatus.FAILED
        )
        raise
    publish_stages(runtime.engine, summary)
    return summary
