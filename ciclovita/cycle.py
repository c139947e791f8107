"""One lifecycle cycle, step by step, without Prefect: the functions the tasks call.

recompute scores and stages → recompute segments → reconcile ambiguous sends → plan each
campaign (priority order) → deliver due messages in batches → summary. Each step is its own
transaction, so a cycle that stops half-way resumes without duplicates: planning is
idempotent by its unique key and delivery only takes rows still due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from ciclovita.campaigns.catalog import Catalog
from ciclovita.db.models import CustomerScore, CycleRun, Message, table_of
from ciclovita.delivery.dispatch import render_due
from ciclovita.delivery.reports import DeliveryReport
from ciclovita.planning.planner import CampaignPlan, plan_all, plan_campaign
from ciclovita.referrals import convert_referrals
from ciclovita.rendering.builder import MessageBuilder
from ciclovita.scoring.recompute import RecomputeReport, recompute_scores, recompute_scores_on
from ciclovita.segments.membership import SegmentChange, recompute_segment
from ciclovita.segments.membership import close_removed_segments as close_removed
from ciclovita.vocabulary import CycleStatus, MessageStatus


def start_cycle(engine: Engine, as_of: datetime, flow_run_id: str | None = None) -> int:
    with engine.begin() as connection:
        result = connection.execute(
            table_of(CycleRun)
            .insert()
            .values(
                as_of=as_of,
                started_at=datetime.now(UTC),
                status=CycleStatus.RUNNING,
                flow_run_id=flow_run_id,
                summary={},
            )
            .returning(table_of(CycleRun).c.id)
        )
        return int(result.scalar_one())


def finish_cycle(
    engine: Engine,
    cycle_id: int,
    summary: dict[str, Any],
    status: CycleStatus = CycleStatus.COMPLETED,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(CycleRun)
            .where(CycleRun.id == cycle_id)
            .values(finished_at=datetime.now(UTC), status=status, summary=summary)
        )


def recompute(
    engine: Engine, catalog: Catalog, as_of: datetime, cycle_id: int | None = None
) -> RecomputeReport:
    """Convert referral codes used in orders, then recompute scores and stages."""
    with engine.begin() as connection:
        convert_referrals(connection, as_of)
    return recompute_scores(engine, catalog.lifecycle, as_of, cycle_id=cycle_id)


def recompute_segments(
    engine: Engine,
    catalog: Catalog,
    as_of: datetime,
    cycle_id: int | None = None,
    only: str | None = None,
) -> list[SegmentChange]:
    with engine.begin() as connection:
        return recompute_segments_on(connection, catalog, as_of, cycle_id, only)


def recompute_segments_on(
    connection: Connection,
    catalog: Catalog,
    as_of: datetime,
    cycle_id: int | None = None,
    only: str | None = None,
) -> list[SegmentChange]:
    changes = []
    for segment in catalog.segments:
        if only is None or segment.name == only:
            changes.append(recompute_segment(connection, segment, as_of, cycle_id))
    if only is None:
        close_removed(connection, [s.name for s in catalog.segments], as_of)
    return changes


def close_removed_segments(engine: Engine, catalog: Catalog, as_of: datetime) -> int:
    """Close the open memberships of segments no longer in segments.yaml."""
    with engine.begin() as connection:
        return close_removed(connection, [s.name for s in catalog.segments], as_of)


@dataclass
class DryRun:
    """What the next cycle would do; nothing of it is kept. ``delivery``: the due messages
    rendered (when asked), what would fail to render and what a late guard would hold."""

    as_of: datetime
    stage_counts: dict[str, int]
    transitions: dict[str, int]
    segments: list[SegmentChange]
    plans: list[CampaignPlan]
    delivery: DeliveryReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "as_of": self.as_of.isoformat(),
            "stages": dict(self.stage_counts),
            "transitions": dict(self.transitions),
            "segments": [
                {
                    "segment": s.segment,
                    "size": s.size,
                    "entered": s.entered,
                    "exited": s.exited,
                    "previous_size": s.previous_size,
                }
                for s in self.segments
            ],
            "plans": [p.model_dump(mode="json") for p in self.plans],
            "delivery": self.delivery.model_dump(mode="json") if self.delivery else None,
        }


def dry_run(
    engine: Engine,
    catalog: Catalog,
    as_of: datetime,
    *,
    timezone: str,
    builder: MessageBuilder | None = None,
    render_limit: int | None = None,
    only: Sequence[str] | None = None,
) -> DryRun:
    """Recompute, segment and plan exactly as a cycle would, inside a transaction that is
    rolled back: the report is real, the database is left as it was. With ``builder``, the
    messages due at ``as_of`` (at most ``render_limit``, in the order a delivery takes
    them) are rendered too, and the late guards applied; no provider is called. ``only``
    limits planning to the named campaigns."""
    delivery: DeliveryReport | None = None
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            report = recompute_scores_on(connection, catalog.lifecycle, as_of)
            segments = recompute_segments_on(connection, catalog, as_of)
            plans = plan_all(connection, catalog, as_of, timezone=timezone, only=only)
            if builder is not None:
                delivery = render_due(connection, builder, as_of=as_of, limit=render_limit)
        finally:
            transaction.rollback()
    return DryRun(as_of, report.stage_counts, report.transitions, segments, plans, delivery)


def plan(
    engine: Engine,
    catalog: Catalog,
    campaign: str,
    as_of: datetime,
    *,
    timezone: str,
    cycle_id: int | None = None,
) -> CampaignPlan:
    with engine.begin() as connection:
        return plan_campaign(
            connection,
            catalog,
            catalog.campaign(campaign),
            as_of,
            timezone=timezone,
            cycle_id=cycle_id,
        )


def stage_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(CustomerScore.stage, func.count()).group_by(CustomerScore.stage)
        )
        return {stage: int(n) for stage, n in rows}


def outbox_counts(engine: Engine, cycle_id: int | None = None) -> dict[str, dict[str, int]]:
    """Per campaign: messages by status (and skip reason), for one cycle or all time."""
    query = select(Message.campaign, Message.status, Message.skip_reason, func.count()).group_by(
        Message.campaign, Message.status, Message.skip_reason
    )
    if cycle_id is not None:
        query = query.where(Message.cycle_id == cycle_id)
    out: dict[str, Counter[str]] = {}
    with engine.connect() as connection:
        for campaign, status, reason, n in connection.execute(query):
            key = f"skipped:{reason}" if status == MessageStatus.SKIPPED else status
            out.setdefault(campaign, Counter())[key] += int(n)
    return {k: dict(v) for k, v in sorted(out.items())}


def report_dict(report: RecomputeReport) -> dict[str, Any]:
    data = asdict(report)
    data["as_of"] = report.as_of.isoformat()
    data["rows_written"] = report.rows_written
    return data
