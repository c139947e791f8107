"""Tasks that recompute customer scores, stages and segment memberships."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task

from ciclovita import cycle
from ciclovita.runtime import get_runtime
from tasks.retry import retry_transient_only


@task(
    name="recompute-scores",
    task_run_name="recompute scores and stages as of {as_of:%Y-%m-%d %H:%M}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient_only,
)
def recompute_scores(as_of: datetime, cycle_id: int) -> dict[str, Any]:
    runtime = get_runtime()
    report = cycle.recompute(runtime.engine, runtime.catalog, as_of, cycle_id)
    get_run_logger().info(
        "%d customers scored; %d rows written; stages %s; phases %s",
        report.customers,
        report.rows_written,
        report.stage_counts,
        report.timings,
    )
    return cycle.report_dict(report)


@task(
    name="recompute-segment",
    task_run_name="segment {segment}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient_only,
)
def recompute_segment(segment: str, as_of: datetime, cycle_id: int) -> dict[str, Any]:
    runtime = get_runtime()
    (change,) = cycle.recompute_segments(
        runtime.engine, runtime.catalog, as_of, cycle_id, only=segment
    )
    get_run_logger().info(
        "segment %s: %d members (+%d −%d)", segment, change.size, change.entered, change.exited
    )
    return {
        "segment": change.segment,
        "size": change.size,
        "entered": change.entered,
        "exited": change.exited,
        "previous_size": change.previous_size,
    }


@task(
    name="close-removed-segments",
    task_run_name="close segments no longer defined",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient_only,
)
def close_removed_segments(as_of: datetime) -> int:
    """Members of segments deleted from segments.yaml leave them (history kept)."""
    runtime = get_runtime()
    closed = cycle.close_removed_segments(runtime.engine, runtime.catalog, as_of)
    if closed:
        get_run_logger().info("%d memberships of removed segments closed", closed)
    return closed
