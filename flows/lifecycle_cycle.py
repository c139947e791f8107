"""The ``lifecycle-cycle`` flow: recompute stages, value and segments, then run campaigns.

recompute scores → segments → reconcile ambiguous sends → plan campaigns (priority order, so
the global cap favours the higher priority) → deliver due messages in parallel batches (each
batch claims its own rows) → summary artifact. A run that stops half-way can simply be run
again: planning is idempotent and delivery only takes rows still due.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from ciclovita import cycle
from ciclovita.delivery.outbox import count_due
from ciclovita.runtime import get_runtime
from flows.artifacts import publish_campaigns, publish_stages
from flows.batches import delivered_by_campaign, submit_batches
from flows.naming import flow_run_namer
from flows.provenance import versions
from flows.report import cycle_markdown
from flows.runners import configured_task_runner
from flows.secrets import ensure_sendgrid_key
from tasks.campaigns import plan_campaign
from tasks.delivery import reconcile_sends
from tasks.scoring import close_removed_segments, recompute_scores, recompute_segment


@flow(
    name="lifecycle-cycle",
    flow_run_name=flow_run_namer("cycle"),
    task_runner=configured_task_runner(max_workers=4),
    log_prints=True,
)
def lifecycle_cycle(
    as_of: datetime | None = None,
    campaigns: list[str] | None = None,
    send: bool = True,
    batch_size: int = 500,
) -> dict[str, Any]:
    """One full cycle. ``as_of`` defaults to now; ``campaigns`` limits which are planned."""
    logger = get_run_logger()
    ensure_sendgrid_key()
    runtime = get_runtime()
    now = (as_of or datetime.now(UTC)).astimezone(UTC)
    catalog = runtime.catalog
    cycle_id = cycle.start_cycle(runtime.engine, now, str(flow_run.get_id() or ""))
    try:
        scores = recompute_scores(now, cycle_id)
        segments = [recompute_segment(segment.name, now, cycle_id) for segment in catalog.segments]
        close_removed_segments(now)
        reconciled = reconcile_sends(now)
        plans = [
            plan_campaign(c.name, now, cycle_id)
            for c in catalog.by_priority
            if not campaigns or c.name in campaigns
        ]
        deliveries: list[dict[str, Any]] = []
        cap_reached = False
        if send:
            with runtime.engine.connect() as connection:
                due = count_due(connection, now)
            cap = runtime.settings.send_cap_per_run or due
            to_send = min(due, cap)
            cap_reached = due > cap
            if cap_reached:
                logger.warning(
                    "send cap: %d messages are due but CICLOVITA_SEND_CAP_PER_RUN=%d; "
                    "the rest wait for the next run",
                    due,
                    cap,
                )
            batches = math.ceil(to_send / batch_size)
            sizes = [min(batch_size, to_send - i * batch_size) for i in range(batches)]
            futures = submit_batches(sizes, now)
            deliveries = [f.result() for f in futures]
        summary: dict[str, Any] = {
            "cycle_id": cycle_id,
            "as_of": now.isoformat(),
            "stages": scores["stage_counts"],
            "transitions": scores["transitions"],
            "scores": {k: scores[k] for k in ("customers", "rows_written", "timings", "model")},
            "segments": segments,
            "plans": plans,
            "delivery": _merge(deliveries),
            "delivered": delivered_by_campaign(deliveries),
            "reconciled": reconciled,
            "cap_reached": cap_reached,
            "outbox": cycle.outbox_counts(runtime.engine, cycle_id),
            "versions": versions(
                catalog, runtime.settings.templates_dir, [p["campaign"] for p in plans]
            ),
        }
        cycle.finish_cycle(runtime.engine, cycle_id, summary)
    except BaseException:
        cycle.finish_cycle(runtime.engine, cycle_id, {"error": "see the flow run logs"}, "failed")
        raise
    create_markdown_artifact(
        key="cycle-summary",
        markdown=cycle_markdown(summary),
        description=f"Lifecycle cycle {cycle_id} as of {now:%Y-%m-%d %H:%M} UTC",
    )
    publish_stages(runtime.engine, summary)
    publish_campaigns(runtime.engine, summary)
    return summary


def _merge(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"sent": 0, "failed": 0, "retried": 0, "ambiguous": 0, "claimed": 0}
    for part in deliveries:
        for key in total:
            total[key] += part.get(key, 0)
    total["batches"] = len(deliveries)
    return total
