"""Tasks that plan campaigns into the outbox, or rehearse a whole cycle (dry run)."""

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
    """Plan one campaign into the outbox; returns its ``CampaignPlan`` in JSON form (the
    flows' summaries index it by name)."""
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
        ", ".join(f"{reason} {n}" for reason, n in result.skipped.items()) or "none",
    )
    return result.model_dump(mode="json")


@task(name="dry-run-cycle", task_run_name="dry run: recompute, plan and render, keep nothing")
def dry_run_cycle(as_of: datetime, campaigns: list[str] | None = None) -> dict[str, Any]:
    """The cycle ``as_of`` would run, in a transaction rolled back: stages, segments, plans
    and every due message rendered (up to the send cap); no provider call, nothing written."""
    runtime = get_runtime()
    result = cycle.dry_run(
        runtime.engine,
        runtime.catalog,
        as_of,
        timezone=runtime.settings.timezone,
        builder=runtime.builder,
        render_limit=runtime.settings.send_cap_per_run or None,
        only=campaigns,
    )
    delivery = result.delivery
    assert delivery is not None
    logger = get_run_logger()
    logger.info(
        "dry run: %d due messages rendered, %d would fail, %d held by a late guard%s",
        delivery.rendered,
        delivery.failed,
        delivery.skipped,
        " (the send cap leaves the rest for a later run)" if delivery.cap_reached else "",
    )
    for error in delivery.errors[:10]:
        logger.error(error)
    return result.as_dict()
