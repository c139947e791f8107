"""Planning: who is due which message, written to the outbox with every guard applied.

For one campaign, one query finds the trigger occurrences that are due (event, stage or
segment entry, anniversary, schedule), inside the audience, and not yet in the outbox. The
guards then decide each row's fate, recorded on the outbox row:

* ``planned`` — due now, or held until the customer's send window opens (``due_at`` later);
* ``skipped`` with a reason — no_email, suppressed, no_consent, holdout, resend_rule,
  frequency_cap. Skipped is not failed: the reason is data, kept so results can be compared.

The unique key (campaign, customer, occurrence) makes planning idempotent: planning twice, or
two cycles at once, never makes a second row. Campaigns are planned in priority order, so when
the global frequency cap bites, the higher-priority campaign wins.
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim
from sqlalchemy import (
    Connection,
    Row,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign
from ciclovita.campaigns.guards import in_holdout, next_allowed, pick_variant, zone
from ciclovita.campaigns.spec import (
    DateTrigger,
    EventTrigger,
    EveryDays,
    ScheduleTrigger,
    SegmentTrigger,
    StageTrigger,
    localized,
)
from ciclovita.db.models import (
    Consent,
    Coupon,
    Customer,
    CustomerScore,
    Event,
    Message,
    Order,
    Referral,
    SegmentMembership,
    SegmentRun,
    StageHistory,
    Suppression,
    SurveyResponse,
    table_of,
)
from ciclovita.db.sqlfunctions import month_day
from ciclovita.segments.conditions import InSegment, compile_condition

SKIP_REASONS = (
    "no_email",
    "suppressed",
    "no_consent",
    "holdout",
    "resend_rule",
    "frequency_cap",
)
ACTIVE_STATUSES = ("planned", "claimed", "sending", "sent", "ambiguous")
CHUNK = 5_000
UID_NAMESPACE = uuid.UUID("5b0e8a52-8c1c-4a4e-9a55-7c1c0f1e2d11")
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass
class CampaignPlan:
    """What planning one campaign found and decided."""

    campaign: str
    priority: int
    kind: str
    active: bool = True
    inactive_reason: str | None = None
    candidates: int = 0
    planned: int = 0
    held_window: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    drivers: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "priority": self.priority,
            "kind": self.kind,
            "active": self.active,
            "inactive_reason": self.inactive_reason,
            "candidates": self.candidates,
            "planned": self.planned,
            "held_window": self.held_window,
            "skipped": dict(self.skipped),
            "drivers": dict(self.drivers),
            "variants": dict(self.variants),
        }


@dataclass(frozen=True)
class TriggerQuery:
    query: Any
    details: Callable[[Row[Any]], dict[str, Any]]
    driver: str


def message_uid(campaign: str, customer_id: int, occurrence: str) -> str:
    """Stable id of a logical message: the same occurrence always has the same uid."""
    return uuid.uuid5(UID_NAMESPACE, f"{campaign}|{customer_id}|{occurrence}").hex


def _key(prefix: str, column: Any) -> Any:
    return (literal(prefix, String) + cast(column, String)).label("occurrence_key")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _base(*columns: Any) -> Any:
    return select(
        Customer.id.label("customer_id"),
        Customer.email,
        Customer.locale,
        Customer.timezone,
        CustomerScore.stage.label("current_stage"),
        *columns,
    )


def _window(column: Any, as_of: datetime, delay: timedelta, expires: timedelta) -> Any:
    return and_(column > as_of - delay - expires, column <= as_of - delay)


def trigger_query(campaign: LoadedCampaign, as_of: datetime, timezone: str) -> TriggerQuery | None:
    """The due occurrences of a campaign's trigger (None: nothing can be due now)."""
    trigger = campaign.spec.trigger
    score_join = CustomerScore.customer_id == Customer.id
    if isinstance(trigger, EventTrigger):
        delay, expires = trigger.delay, trigger.expires_after
        if trigger.event == "order_placed":
            query = (
                _base(
                    _key("order:", Order.id),
                    Order.placed_at.label("trigger_at"),
                    Order.external_id.label("order_ref"),
                    Order.amount_cents,
                    Order.currency,
                )
                .select_from(Order)
                .join(Customer, Customer.id == Order.customer_id)
                .outerjoin(CustomerScore, score_join)
                .where(Order.status == "completed", _window(Order.placed_at, as_of, delay, expires))
            )

            def order_details(row: Row[Any]) -> dict[str, Any]:
                return {
                    "order": {
                        "id": row.order_ref,
                        "amount_cents": int(row.amount_cents),
                        "currency": row.currency,
                        "placed_at": _iso(row.trigger_at),
                    }
                }

            return TriggerQuery(query, order_details, "order_placed")
        if trigger.event == "survey_answered":
            query = (
                _base(
                    _key("survey:", SurveyResponse.id),
                    SurveyResponse.answered_at.label("trigger_at"),
                    SurveyResponse.score,
                )
                .select_from(SurveyResponse)
                .join(Customer, Customer.id == SurveyResponse.customer_id)
                .outerjoin(CustomerScore, score_join)
                .where(_window(SurveyResponse.answered_at, as_of, delay, expires))
            )
            return TriggerQuery(
                query,
                lambda row: {
                    "event": {
                        "type": "survey_answered",
                        "score": int(row.score),
                        "occurred_at": _iso(row.trigger_at),
                    }
                },
                "survey_answered",
            )
        if trigger.event == "referral_converted":
            query = (
                _base(
                    _key("referral:", Referral.id),
                    Referral.converted_at.label("trigger_at"),
                    Referral.code,
                )
                .select_from(Referral)
                .join(Customer, Customer.id == Referral.referrer_id)
                .outerjoin(CustomerScore, score_join)
                .where(_window(Referral.converted_at, as_of, delay, expires))
            )
            return TriggerQuery(
                query,
                lambda row: {
                    "event": {
                        "type": "referral_converted",
                        "code": row.code,
                        "occurred_at": _iso(row.trigger_at),
                    }
                },
                "referral_converted",
            )
        if trigger.event == "signup":
            query = (
                _base(
                    literal("signup").label("occurrence_key"),
                    Customer.created_at.label("trigger_at"),
                )
                .select_from(Customer)
                .outerjoin(CustomerScore, score_join)
                .where(_window(Customer.created_at, as_of, delay, expires))
            )
            return TriggerQuery(
                query,
                lambda row: {"event": {"type": "signup", "occurred_at": _iso(row.trigger_at)}},
                "signup",
            )
        query = (
            _base(_key("event:", Event.id), Event.occurred_at.label("trigger_at"), Event.properties)
            .select_from(Event)
            .join(Customer, Customer.id == Event.customer_id)
            .outerjoin(CustomerScore, score_join)
            .where(Event.type == trigger.event, _window(Event.occurred_at, as_of, delay, expires))
        )
        event_name = trigger.event
        return TriggerQuery(
            query,
            lambda row: {
                "event": {
                    "type": event_name,
                    "properties": dict(row.properties or {}),
                    "occurred_at": _iso(row.trigger_at),
                }
            },
            f"event:{event_name}",
        )
    if isinstance(trigger, StageTrigger):
        h = StageHistory
        query = (
            _base(_key("stage:", h.id), h.entered_at.label("trigger_at"), h.previous_stage)
            .select_from(h)
            .join(Customer, Customer.id == h.customer_id)
            .outerjoin(CustomerScore, score_join)
            .where(
                h.stage == trigger.stage_entered,
                h.exited_at.is_(None),
                _window(h.entered_at, as_of, trigger.delay, trigger.expires_after),
            )
        )
        stage = trigger.stage_entered
        return TriggerQuery(
            query,
            lambda row: {
                "stage": {
                    "name": stage,
                    "previous": row.previous_stage,
                    "entered_at": _iso(row.trigger_at),
                }
            },
            f"stage_entered:{stage}",
        )
    if isinstance(trigger, SegmentTrigger):
        m = SegmentMembership
        conditions = [
            m.segment == trigger.segment_entered,
            m.exited_at.is_(None),
            _window(m.entered_at, as_of, trigger.delay, trigger.expires_after),
        ]
        if not trigger.include_initial_members:
            first_run = (
                select(func.min(SegmentRun.computed_at))
                .where(SegmentRun.segment == trigger.segment_entered)
                .scalar_subquery()
            )
            conditions.append(m.entered_at > first_run)
        query = (
            _base(_key("segment:", m.id), m.entered_at.label("trigger_at"))
            .select_from(m)
            .join(Customer, Customer.id == m.customer_id)
            .outerjoin(CustomerScore, score_join)
            .where(*conditions)
        )
        segment = trigger.segment_entered
        return TriggerQuery(
            query,
            lambda row: {"segment": {"name": segment, "entered_at": _iso(row.trigger_at)}},
            f"segment_entered:{segment}",
        )
    if isinstance(trigger, DateTrigger):
        return _date_query(trigger, as_of, timezone)
    if isinstance(trigger, ScheduleTrigger):
        slot = last_slot(trigger.schedule, as_of, timezone)
        if slot is None or slot <= as_of - trigger.expires_after:
            return None
        query = (
            _base(
                literal(f"schedule:{slot.isoformat()}").label("occurrence_key"),
                literal(slot).label("trigger_at"),
            )
            .select_from(Customer)
            .outerjoin(CustomerScore, score_join)
        )
        edition = {"schedule": {"at": _iso(slot), "expression": trigger.schedule}}
        return TriggerQuery(query, lambda row: edition, f"schedule:{trigger.schedule}")
    raise TypeError(f"unknown trigger {trigger!r}")


def last_slot(expression: str, as_of: datetime, timezone: str) -> datetime | None:
    """The most recent time the cron expression fired at or before ``as_of`` (UTC)."""
    tz = zone(timezone)
    start = (as_of - timedelta(days=8)).astimezone(tz)
    latest: datetime | None = None
    for moment in CronSim(expression, start):
        if moment > as_of.astimezone(tz):
            break
        latest = moment
    return latest.astimezone(UTC) if latest else None


def _anniversary_days(as_of: datetime, timezone: str, trigger: DateTrigger) -> dict[str, str]:
    """``MM-DD`` → year, for the anniversaries whose message is due now.

    The message for an anniversary is due ``days_before`` days ahead of it and stays due for
    ``expires_after`` (a missed cycle still sends). 29 February counts on 28 February in
    years without it.
    """
    today = as_of.astimezone(zone(timezone)).date()
    days: dict[str, str] = {}
    for back in range(max(trigger.expires_after.days, 0) + 1):
        anniversary = today - timedelta(days=back) + timedelta(days=trigger.days_before)
        days[anniversary.strftime("%m-%d")] = str(anniversary.year)
        if anniversary.month == 2 and anniversary.day == 28 and not _leap(anniversary.year):
            days["02-29"] = str(anniversary.year)
    return days


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date_query(trigger: DateTrigger, as_of: datetime, timezone: str) -> TriggerQuery:
    column: Any = {
        "birth_date": Customer.birth_date,
        "first_order": CustomerScore.first_order_at,
        "signup": Customer.created_at,
    }[trigger.date]
    days = _anniversary_days(as_of, timezone, trigger)
    key = case(
        *(
            (month_day(column) == md, literal(f"{trigger.date}:{year}"))
            for md, year in days.items()
        ),
        else_=literal("none"),
    ).label("occurrence_key")
    query = (
        _base(key, literal(as_of).label("trigger_at"))
        .select_from(Customer)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(column.is_not(None), month_day(column).in_(list(days)))
    )
    if trigger.date != "birth_date":  # the day itself is not an anniversary
        query = query.where(column < as_of - timedelta(days=300))
    name = trigger.date
    return TriggerQuery(
        query,
        lambda row: {"date": {"kind": name, "year": int(row.occurrence_key.rsplit(":", 1)[1])}},
        f"date:{name}",
    )


def audience_clause(campaign: LoadedCampaign, as_of: datetime) -> Any:
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


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _suppressed(connection: Connection, emails: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in _chunks(sorted(set(emails))):
        found.update(
            connection.execute(
                select(Suppression.email).where(Suppression.email.in_(part))
            ).scalars()
        )
    return found


def _consented(connection: Connection, topic: str, ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for part in _chunks(sorted(set(ids))):
        found.update(
            connection.execute(
                select(Consent.customer_id).where(
                    Consent.topic == topic, Consent.granted.is_(True), Consent.customer_id.in_(part)
                )
            ).scalars()
        )
    return found


def _last_sent(connection: Connection, campaign: str, ids: Sequence[int]) -> dict[int, datetime]:
    found: dict[int, datetime] = {}
    stamp = func.max(func.coalesce(Message.sent_at, Message.due_at))
    for part in _chunks(sorted(set(ids))):
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


def _parse_time(value: str | None) -> datetime | None:
    return _aware(value) if value else None


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _cap_counts(connection: Connection, ids: Sequence[int], since: datetime) -> Counter[int]:
    counts: Counter[int] = Counter()
    for part in _chunks(sorted(set(ids))):
        rows = connection.execute(
            select(Message.customer_id, func.count())
            .where(
                Message.kind == "marketing",
                Message.status.in_(ACTIVE_STATUSES),
                func.coalesce(Message.sent_at, Message.due_at) > since,
                Message.customer_id.in_(part),
            )
            .group_by(Message.customer_id)
        )
        counts.update({customer_id: int(n) for customer_id, n in rows})
    return counts


def _code(prefix: str, length: int = 8) -> str:
    return f"{prefix}-{''.join(secrets.choice(CODE_ALPHABET) for _ in range(length))}"


def _insert_ignoring_duplicates(
    connection: Connection, table: Any, rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).on_conflict_do_nothing()
    for part in _chunks(rows, 1_000):
        connection.execute(statement, list(part))


def offer_details(
    campaign: LoadedCampaign, locale: str, as_of: datetime, code: str
) -> tuple[str, dict[str, Any]]:
    """The outbox details of a generated offer: ``("offer" | "referral", {code, …})``."""
    spec = campaign.spec
    assert spec.offer is not None
    expires = as_of + timedelta(days=spec.offer.valid_days) if spec.offer.valid_days else None
    key = "offer" if spec.offer.type == "coupon" else "referral"
    text = localized(spec.offer.description, locale, spec.content.fallback_locale)
    return key, {"code": code, "description": text, "expires_at": _iso(expires)}


def campaign_inactive_reason(campaign: LoadedCampaign, as_of: datetime) -> str | None:
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
    timezone: str = "Europe/Rome",
    cycle_id: int | None = None,
    dry_run: bool = False,
    cap_usage: Counter[int] | None = None,
) -> CampaignPlan:
    """Plan one campaign into the outbox (or only count, with ``dry_run``)."""
    spec = campaign.spec
    plan = CampaignPlan(campaign.name, spec.priority, spec.kind)
    reason = campaign_inactive_reason(campaign, as_of)
    if reason:
        plan.active, plan.inactive_reason = False, reason
        return plan
    found = trigger_query(campaign, as_of, timezone)
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
    emails = [row.email.lower() for row in rows if row.email]
    suppressed = _suppressed(connection, emails)
    topic = spec.required_consent
    consented = _consented(connection, topic, ids) if topic else set()
    resend = spec.guards.resend
    last_sent = (
        _last_sent(connection, campaign.name, ids) if resend != "once_per_occurrence" else {}
    )
    capped = spec.kind == "marketing" and spec.guards.frequency_cap
    cap = catalog.policy.frequency_cap
    counts = (
        _cap_counts(connection, ids, as_of - timedelta(days=cap.per_days)) if capped else Counter()
    )
    if cap_usage is not None:
        counts.update(cap_usage)
    quiet = spec.guards.quiet_hours or (
        catalog.policy.quiet_hours if spec.kind == "marketing" else None
    )
    window = spec.guards.send_window
    delay = getattr(spec.trigger, "delay", timedelta(0))

    messages: list[dict[str, Any]] = []
    offers: list[tuple[str, dict[str, Any]]] = []
    skipped: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    seen_this_run: set[int] = set()
    for row in rows:
        trigger_at = _aware(row.trigger_at)
        due = max(trigger_at + delay, trigger_at)
        uid = message_uid(campaign.name, row.customer_id, row.occurrence_key)
        email = row.email.lower() if row.email else None
        locale = row.locale if row.locale in spec.content.locales else spec.content.fallback_locale
        variant = pick_variant(campaign.name, row.customer_id, spec.variants)
        skip: str | None = None
        if not email:
            skip = "no_email"
        elif email in suppressed:
            skip = "suppressed"
        elif topic and row.customer_id not in consented:
            skip = "no_consent"
        elif spec.kind == "marketing" and in_holdout(
            campaign.name, row.customer_id, spec.guards.holdout
        ):
            skip = "holdout"
        elif (
            resend == "once_ever"
            and (row.customer_id in last_sent or row.customer_id in seen_this_run)
        ) or (
            isinstance(resend, EveryDays)
            and (
                row.customer_id in seen_this_run
                or (
                    row.customer_id in last_sent
                    and last_sent[row.customer_id] > as_of - timedelta(days=resend.every_days)
                )
            )
        ):
            skip = "resend_rule"
        elif capped and counts[row.customer_id] >= cap.max_messages:
            skip = "frequency_cap"
        details = found.details(row)
        record: dict[str, Any] = {
            "uid": uid,
            "campaign": campaign.name,
            "customer_id": row.customer_id,
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
                    "status": "skipped",
                    "skip_reason": skip,
                    "due_at": due,
                    "details": details,
                }
            )
            continue
        send_at = next_allowed(max(due, as_of), row.timezone, window, quiet)
        if send_at > as_of:
            plan.held_window += 1
        seen_this_run.add(row.customer_id)
        if capped:
            counts[row.customer_id] += 1
            if cap_usage is not None:
                cap_usage[row.customer_id] += 1
        variants[variant] += 1
        if spec.offer is not None:
            key, offer = offer_details(campaign, locale, as_of, _code(spec.offer.prefix))
            details[key] = offer
            offers.append((uid, offer))
        messages.append(
            {
                **record,
                "status": "planned",
                "skip_reason": None,
                "due_at": send_at,
                "details": details,
            }
        )
    plan.planned = sum(1 for m in messages if m["status"] == "planned")
    plan.skipped = {reason: skipped[reason] for reason in SKIP_REASONS if skipped[reason]}
    plan.variants = dict(variants)
    if not dry_run:
        _insert_ignoring_duplicates(connection, table_of(Message), messages)
        _store_offers(connection, campaign, offers, as_of)
    return plan


def _store_offers(
    connection: Connection,
    campaign: LoadedCampaign,
    offers: list[tuple[str, dict[str, Any]]],
    as_of: datetime,
) -> None:
    """Coupons or referral codes of the messages that were really inserted."""
    if not offers or campaign.spec.offer is None:
        return
    by_uid = dict(offers)
    ids: dict[str, tuple[int, int]] = {}
    for part in _chunks(list(by_uid)):
        for uid, message_id, customer_id in connection.execute(
            select(Message.uid, Message.id, Message.customer_id).where(Message.uid.in_(part))
        ):
            ids[uid] = (message_id, customer_id)
    if campaign.spec.offer.type == "coupon":
        rows = [
            {
                "code": by_uid[uid]["code"],
                "campaign": campaign.name,
                "customer_id": customer_id,
                "message_id": message_id,
                "description": by_uid[uid]["description"][:200],
                "created_at": as_of,
                "expires_at": _parse_time(by_uid[uid]["expires_at"]),
            }
            for uid, (message_id, customer_id) in ids.items()
        ]
        _insert_ignoring_duplicates(connection, table_of(Coupon), rows)
    else:
        rows = [
            {
                "code": by_uid[uid]["code"],
                "referrer_id": customer_id,
                "campaign": campaign.name,
                "created_at": as_of,
                "visits": 0,
            }
            for uid, (_message_id, customer_id) in ids.items()
        ]
        _insert_ignoring_duplicates(connection, table_of(Referral), rows)


def plan_all(
    connection: Connection,
    catalog: Catalog,
    as_of: datetime,
    *,
    timezone: str = "Europe/Rome",
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


def summarise_plans(plans: Sequence[CampaignPlan]) -> dict[str, Any]:
    totals: defaultdict[str, int] = defaultdict(int)
    for plan in plans:
        totals["candidates"] += plan.candidates
        totals["planned"] += plan.planned
        totals["held_window"] += plan.held_window
        for reason, count in plan.skipped.items():
            totals[f"skipped:{reason}"] += count
    return dict(totals)
