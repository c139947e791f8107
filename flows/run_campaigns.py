"""The ``run-campaigns`` flow (hourly): plan every campaign, then deliver what is due.

Reconcile ambiguous sends → plan each campaign in priority order (the global frequency cap
favours the higher priority) → deliver due messages in parallel batches (threads, or Dask when
``CICLOVITA_DASK_ADDRESS`` is set) → artifacts. It reads the stages and segments the last
``recompute-segments`` run wrote. Stopped half-way, it is simply run again: planning is
idempotent (one outbox row per campaign, customer and occurrence) and delivery only takes
rows still due.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from ciclovita import cycle
from ciclovita.runtime import get_runtime
from ciclovita.vocabulary import CycleStatus
from flows.artifacts import publish_campaigns
from flows.batches import deliver_due, delivered_by_campaign, merge_deliveries
from flows.naming import flow_run_namer, resolve_as_of
from flows.provenance import versions
from flows.runners import configured_task_runner
from tasks.campaigns import plan_campaign
from tasks.delivery import reconcile_sends
from tasks.secrets import ensure_sendgrid_key


@flow(
    name="run-campaigns",
    flow_run_name=flow_run_namer("campaigns", with_campaigns=True),
    task_runner=configured_task_runner(max_workers=4),
    log_prints=True,
)
def run_campaigns(
    as_of: datetime | None = None,
    campaigns: list[str] | None = None,
    send: bool = True,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Plan the campaigns (all enabled, or those named) and deliver due messages."""
    ensure_sendgrid_key()
    runtime = get_runtime()
    now = resolve_as_of(as_of)
    catalog = runtime.catalog
    cycle_id = cycle.start_cycle(runtime.engine, now, str(flow_run.get_id() or ""))
    try:
        reconciled = reconcile_sends(now)
        chosen = [c for c in catalog.by_priority if not campaigns or c.name in campaigns]
        plans = [plan_campaign(c.name, now, cycle_id) for c in chosen]
        deliveries, cap_reached = deliver_due(now, batch_size) if send else ([], False)
        summary: dict[str, Any] = {
            "flow": "run-campaigns",
            "cycle_id": cycle_id,
            "as_of": now.isoformat(),
            "plans": plans,
            "delivery": merge_deliveries(deliveries),
            "delivered": delivered_by_campaign(deliveries),
            "reconciled": reconciled,
            "cap_reached": cap_reached,
            "outbox": cycle.outbox_counts(runtime.engine, cycle_id),
            "versions": versions(catalog, runtime.settings.templates_dir, [c.name for c in chosen]),
        }
        cycle.finish_cycle(runtime.engine, cycle_id, summary)
    except BaseException:
        cycle.finish_cycle(
            runtime.engine, cycle_id, {"error": "see the flow run logs"}, CycleStatus.FAILED
        )
        raise
    publish_campaigns(runtime.engine, summary)
    return summary
