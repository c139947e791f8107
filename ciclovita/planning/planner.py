"""Planning: who is due which message, written to the outbox with every guard applied.

For one campaign, one query finds the trigger occurrences that are due (``triggers``: event,
stage or segment entry, anniversary, schedule), inside the audience, and not yet in the
outbox. Each occurrence's facts are then gathered in bulk (``eligibility``, the campaign's
earlier messages, the frequency cap) and ``decision.skip_reason`` decides its fate, recorded
on the outbox row:

* ``planned`` — due now, or held until the customer's send window opens (``due_at`` later);
* ``skipped`` with a reason — no_email, suppressed, no_consent, holdout, resend_rule,
  frequency_cap. Skipped is not failed: the reason is data, kept so results can be compared.

The unique key (campaign, customer, occurrence) makes planning idempotent: planning twice, or
two cycles at once, never makes a second row. Campaigns are planned in priority order, so when
the global frequency cap bites, the higher-priority campaign wins.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Connection, and_, exists, func, literal, not_, or_, select

from ciclovita.batching import IN_LIST_SIZE, chunks
from ciclovita.campaigns.catalog import Catalog, LoadedCampaign
from ciclovita.db.inserts import insert_ignoring_duplicates
from ciclovita.db.models import Customer, Message, table_of
from ciclovita.planning.decision import OccurrenceFacts, resend_blocked, skip_reason
from ciclovita.planning.eligibility import read_eligibility
from ciclovita.planning.guards import in_holdout, next_allowed, pick_variant
from ciclovita.planning.offers import new_code, offer_details, store_offers
from ciclovita.planning.triggers import trigger_query
from ciclovita.segments.conditions import InSegment, compile_condition
from ciclovita.vocabulary import (
    ACTIVE_STATUSES,
    DEFAULT_TIMEZONE,
    MessageKind,
    MessageStatus,
    SkipReason,
)

UID_NAMESPACE = uuid.UUID("5b0e8a52-8c1c-4a4e-9a55-7c1c0f1e2d11")


class CampaignPlan(BaseModel):
    """What planning one campaign found and decided."""

    campaign: str
    priority: int
    kind: MessageKind
    active: bool = True
    inactive_reason: str | None = None
    candidates: int = 0
    """Due occurrences in the audience, not yet in the outbox."""
    planned: int = 0
    held_window: int = 0
    """Of the planned, those held until the customer's send window opens."""
    skipped: dict[SkipReason, int] = Field(default_factory=dict)
    drivers: dict[str, int] = Field(default_factory=dict)
    """Candidates per trigger (``TriggerQuery.driver``)."""
    variants: dict[str, int] = Field(default_factory=dict)


def message_uid(campaign: str, customer_id: int, occurrence: str) -> str:
    """Stable id of a logical message: the same occurrence always has the same uid."""
    return uuid.uuid5(UID_NAMESPACE, f"{campaign}|{customer_id}|{occurrence}").hex


def audience_clause(campaign: LoadedCampaign, as_of: datetime) -> Any:
    """SQL: the customer is in the campaign's audience (segments, ``where``, exclusions)."""
    audience = campaign.spec.audience
    parts: list[Any] = []
    if audience.segments:
        parts.append(or_(*(compile_condition(InSegment(s), as_of) for s in audience.segments)))
    if campaign.where is not None:
        parts.append(compile_condition(campaign.where, as_of))
    for segment in audience.exclude_segments:
        parts.append(not_(compile_condition(InSegment(segment), as_of)))
    if campaign.exclude is not None:
        parts.append(not_(compile_condition(campaign.exclude, as_of)))
    return and_(literal(True), *parts)


def _last_sent(connection: Connection, campaign: str, ids: Sequence[int]) -> dict[int, datetime]:
    """When each customer last got (or is due) a message of ``campaign``."""
    found: dict[int, datetime] = {}
    stamp = func.max(func.coalesce(Message.sent_at, Message.due_at))
    for part in chunks(sorted(set(ids)), IN_LIST_SIZE):
        rows = connection.execute(
            select(Message.customer_id, stamp)
            .where(
                Message.campaign == campaign,
                Message.status.in_(ACTIVE_STATUSES),
                Message.customer_id.in_(part),
            )
            .group_by(Message.customer_id)
        )
        for customer_id, when in rows:
            if when is not None:
                found[customer_id] = _aware(when)
    return found


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _cap_counts(connection: Connection, ids: Sequence[int], since: datetime) -> Counter[int]:
    """Marketing messages each customer got (or is due) since ``since``."""
    counts: Counter[int] = Counter()
    for part in chunks(sorted(set(ids)), IN_LIST_SIZE):
        rows = connection.execute(
            select(Message.customer_id, func.count())
            .where(
                Message.kind == MessageKind.MARKETING,
                Message.status.in_(ACTIVE_STATUSES),
                func.coalesce(Message.sent_at, Message.due_at) > since,
                Message.customer_id.in_(part),
            )
            .group_by(Message.customer_id)
        )
        counts.update({customer_id: int(n) for customer_id, n in rows})
    return counts


def campaign_inactive_reason(campaign: LoadedCampaign, as_of: datetime) -> str | None:
    """Why the campaign plans nothing at ``as_of`` (disabled, not started, ended), or None."""
    spec = campaign.spec
    today = as_of.date()
    if not spec.enabled:
        return "disabled"
    if spec.start and today < spec.start:
        return f"starts {spec.start}"
    if spec.end and today > spec.end:
        return f"ended {spec.end}"
    return None


def plan_campaign(
    connection: Connection,
    catalog: Catalog,
    campaign: LoadedCampaign,
    as_of: datetime,
    *,
    timezone: str = DEFAULT_TIMEZONE,
    cycle_id: int | None = None,
    dry_run: bool = False,
    cap_usage: Counter[int] | None = None,
) -> CampaignPlan:
    """Plan one campaign into the outbox (or only count, with ``dry_run``)."""
    spec = campaign.spec
    plan = CampaignPlan(campaign=campaign.name, priority=spec.priority, kind=spec.kind)
    reason = campaign_inactive_reason(campaign, as_of)
    if reason:
        plan.active, plan.inactive_reason = False, reason
        return plan
    found = trigger_query(spec.trigger, as_of, timezone)
    if found is None:
        return plan
    already = exists(
        select(Message.id).where(
            Message.campaign == campaign.name,
            Message.customer_id == Customer.id,
            Message.occurrence_key == found.query.selected_columns.occurrence_key,
        )
    )
    query = found.query.where(audience_clause(campaign, as_of), ~already).order_by(
        Customer.id, found.query.selected_columns.occurrence_key
    )
    rows = connection.execute(query).all()
    plan.candidates = len(rows)
    plan.drivers[found.driver] = len(rows)
    if not rows:
        return plan

    ids = [row.customer_id for row in rows]
    topic = spec.required_consent
    eligibility = read_eligibility(
        connection, (row.email for row in rows), {topic: ids} if topic else {}
    )
    resend = spec.guards.resend
    last_sent = (
        _last_sent(connection, campaign.name, ids) if resend != "once_per_occurrence" else {}
    )
    marketing = spec.kind == MessageKind.MARKETING
    capped = marketing and spec.guards.frequency_cap
    cap = catalog.policy.frequency_cap
    counts = (
        _cap_counts(connection, ids, as_of - timedelta(days=cap.per_days)) if capped else Counter()
    )
    if cap_usage is not None:
        counts.update(cap_usage)
    quiet = spec.guards.quiet_hours or (catalog.policy.quiet_hours if marketing else None)
    window = spec.guards.send_window
    delay = getattr(spec.trigger, "delay", timedelta(0))

    messages: list[dict[str, Any]] = []
    offers: list[tuple[str, dict[str, Any]]] = []
    skipped: Counter[SkipReason] = Counter()
    variants: Counter[str] = Counter()
    seen_this_run: set[int] = set()
    for row in rows:
        customer_id = row.customer_id
        trigger_at = _aware(row.trigger_at)
        due = max(trigger_at + delay, trigger_at)
        uid = message_uid(campaign.name, customer_id, row.occurrence_key)
        email = row.email.lower() if row.email else None
        locale = row.locale if row.locale in spec.content.locales else spec.content.fallback_locale
        variant = pick_variant(campaign.name, customer_id, spec.variants)
        skip = skip_reason(
            OccurrenceFacts(
                refusal=eligibility.refusal(email, customer_id, topic),
                in_holdout=marketing
                and in_holdout(campaign.name, customer_id, spec.guards.holdout),
                resend_blocked=resend_blocked(
                    resend, last_sent.get(customer_id), customer_id in seen_this_run, as_of
                ),
                over_cap=capped and counts[customer_id] >= cap.max_messages,
            )
        )
        details = found.details(row)
        record: dict[str, Any] = {
            "uid": uid,
            "campaign": campaign.name,
            "customer_id": customer_id,
            "occurrence_key": row.occurrence_key,
            "kind": spec.kind,
            "stage": row.current_stage,
            "variant": variant,
            "locale": locale,
            "to_email": email,
            "priority": spec.priority,
            "planned_at": as_of,
            "cycle_id": cycle_id,
            "attempts": 0,
        }
        if skip:
            skipped[skip] += 1
            messages.append(
                {
                    **record,
                    "status": MessageStatus.SKIPPED,
                    "skip_reason": skip,
                    "due_at": due,
                    "details": details,
                }
            )
            continue
        send_at = next_allowed(max(due, as_of), row.timezone, window, quiet)
        if send_at > as_of:
            plan.held_window += 1
        seen_this_run.add(customer_id)
        if capped:
            counts[customer_id] += 1
            if cap_usage is not None:
                cap_usage[customer_id] += 1
        variants[variant] += 1
        if spec.offer is not None:
            key, offer = offer_details(campaign, locale, as_of, new_code(spec.offer.prefix))
            details[key] = offer
            offers.append((uid, offer))
        messages.append(
            {
                **record,
                "status": MessageStatus.PLANNED,
                "skip_reason": None,
                "due_at": send_at,
                "details": details,
            }
        )
    plan.planned = sum(1 for m in messages if m["status"] == MessageStatus.PLANNED)
    plan.skipped = {reason: skipped[reason] for reason in SkipReason if skipped[reason]}
    plan.variants = dict(variants)
    if not dry_run:
        insert_ignoring_duplicates(connection, table_of(Message), messages)
        store_offers(connection, campaign, offers, as_of)
    return plan


def plan_all(
    connection: Connection,
    catalog: Catalog,
    as_of: datetime,
    *,
    timezone: str = DEFAULT_TIMEZONE,
    cycle_id: int | None = None,
    dry_run: bool = False,
    only: Sequence[str] | None = None,
) -> list[CampaignPlan]:
    """Plan every campaign, highest priority first."""
    usage: Counter[int] | None = Counter() if dry_run else None
    plans = []
    for campaign in sorted(catalog.campaigns, key=lambda c: (-c.spec.priority, c.name)):
        if only and campaign.name not in only:
            continue
        plans.append(
            plan_campaign(
                connection,
                catalog,
                campaign,
                as_of,
                timezone=timezone,
                cycle_id=cycle_id,
                dry_run=dry_run,
                cap_usage=usage,
            )
        )
    return plans
