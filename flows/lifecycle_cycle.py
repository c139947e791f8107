"""The ``lifecycle-cycle`` flow: recompute stages, value and segments, then run campaigns.

recompute scores → segments → reconcile ambiguous sends → plan campaigns (priority order, so
the global cap favours the higher priority) → deliver due messages in parallel batches (each
batch claims its own rows) → summary artifact. A run that stops half-way can simply be run
again: planning is idempotent and delivery only takes rows still due.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from ciclovita import cycle
from ciclovita.runtime import get_runtime
from ciclovita.vocabulary import CycleStatus
from flows.artifacts import publish_campaigns, publish_stages
from flows.batches import deliver_due, delivered_by_campaign, merge_deliveries
from flows.naming import flow_run_namer
from flows.provenance import versions
from flows.report import cycle_markdown, dry_run_markdown
from flows.runners import configured_task_runner
from tasks.campaigns import dry_run_cycle, plan_campaign
from tasks.delivery import reconcile_sends
from tasks.scoring import close_removed_segments, recompute_scores, recompute_segment
from tasks.secrets import ensure_sendgrid_key


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
    dry_run: bool = False,
) -> dict[str, Any]:
    """One full cycle. ``as_of`` defaults to now; ``campaigns`` limits which are planned.

    ``dry_run``: the same cycle rehearsed in a transaction that is rolled back — stages,
    segments, plans and every due message rendered (up to the send cap) — reported in the
    run's artifact; nothing is written and no provider is called."""
    runtime = get_runtime()
    now = (as_of or datetime.now(UTC)).astimezone(UTC)
    if dry_run:
        rehearsal = dry_run_cycle(now, campaigns)
        create_markdown_artifact(
            key="cycle-dry-run",
            markdown=dry_run_markdown(rehearsal),
            description=f"Dry run as of {now:%Y-%m-%d %H:%M} UTC (nothing sent or kept)",
        )
        return rehearsal
    ensure_sendgrid_key()
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
        deliveries, cap_reached = deliver_due(now, batch_size) if send else ([], False)
        summary: dict[str, Any] = {
            "cycle_id": cycle_id,
            "as_of": now.isoformat(),
            "stages": scores["stage_counts"],
            "transitions": scores["transitions"],
            "scores": {k: scores[k] for k in ("customers", "rows_written", "timings", "model")},
            "segments": segments,
            "plans": plans,
            "delivery": merge_deliveries(deliveries),
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
        cycle.finish_cycle(
            runtime.engine, cycle_id, {"error": "see the flow run logs"}, CycleStatus.FAILED
        )
        raise
    create_markdown_artifact(
        key="cycle-summary",
        markdown=cycle_markdown(summary),
        description=f"Lifecycle cycle {cycle_id} as of {now:%Y-%m-%d %H:%M} UTC",
    )
    publish_stages(runtime.engine, summary)
    publish_campaigns(runtime.engine, summary)
    return summary
