"""Tasks that plan campaigns into the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task

from ciclovita import cycle
from ciclovita.runtime import get_runtime
from tasks.retry import retry_transient_only


@task(
    name="plan-campaign",
    task_run_name="plan {campaign}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient_only,
)
def plan_campaign(campaign: str, as_of: datetime, cycle_id: int) -> dict[str, Any]:
    runtime = get_runtime()
    result = cycle.plan(
        runtime.engine,
        runtime.catalog,
        campaign,
        as_of,
        timezone=runtime.settings.timezone,
        cycle_id=cycle_id,
    )
    get_run_logger().info(
        "campaign %s: %d candidates, %d planned (%d held for the send window), skipped %s",
        campaign,
        result.candidates,
        result.planned,
        result.held_window,
        result.skipped or "none",
    )
    return result.as_dict()
