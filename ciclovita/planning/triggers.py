"""Due trigger occurrences: one small query builder per kind of trigger, registered by kind.

A builder answers, for one campaign's trigger at ``as_of``, the query of the occurrences that
are due (one row per customer and occurrence, with a stable ``occurrence_key``), how to turn
a row into the details stored on the outbox row (what templates see: ``order``, ``event``,
``stage``…), and the name of what drove it. ``None``: nothing can be due now.

Adding a kind of trigger is one function: a pydantic model in ``ciclovita.campaigns.spec``
and here a builder decorated with ``@builds(ThatTrigger)``. Events a campaign can wait for
come from their own tables (``BuiltInEvent``, one ``@event_source`` each) or, under any
other name, from the engagement events table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from cronsim import CronSim
from pydantic import BaseModel
from sqlalchemy import Row, String, and_, case, cast, func, literal, select

from ciclovita.campaigns.spec import (
    DateAttribute,
    DateTrigger,
    EventTrigger,
    ScheduleTrigger,
    SegmentTrigger,
    StageTrigger,
)
from ciclovita.db.models import (
    Customer,
    CustomerScore,
    Event,
    Order,
    Referral,
    SegmentMembership,
    SegmentRun,
    StageHistory,
    SurveyResponse,
)
from ciclovita.db.sqlfunctions import month_day
from ciclovita.planning.guards import zone
from ciclovita.vocabulary import BuiltInEvent, OrderStatus

Details = Callable[[Row[Any]], dict[str, Any]]


@dataclass(frozen=True)
class TriggerQuery:
    """The due occurrences of one trigger: ``query`` selects the customer's columns
    (``customer_id``, ``email``, ``locale``, ``timezone``, ``current_stage``) with
    ``occurrence_key`` and ``trigger_at``; ``details`` turns a row into what the message
    stores; ``driver`` names the trigger in plan reports."""

    query: Any
    details: Details
    driver: str


TriggerT = TypeVar("TriggerT", bound=BaseModel)
Builder = Callable[[TriggerT, datetime, str], TriggerQuery | None]
EventSource = Callable[[EventTrigger, datetime], TriggerQuery]

_BUILDERS: dict[type[BaseModel], Builder[Any]] = {}
_EVENT_SOURCES: dict[str, EventSource] = {}


def builds(kind: type[TriggerT]) -> Callable[[Builder[TriggerT]], Builder[TriggerT]]:
    """Register the query builder of a kind of trigger (a kind is registered once)."""

    def register(builder: Builder[TriggerT]) -> Builder[TriggerT]:
        if kind in _BUILDERS:
            raise ValueError(f"a builder for {kind.__name__} is already registered")
        _BUILDERS[kind] = builder
        return builder

    return register


def event_source(event: BuiltInEvent) -> Callable[[EventSource], EventSource]:
    """Register the query of a built-in event that has its own table (registered once)."""

    def register(source: EventSource) -> EventSource:
        if event in _EVENT_SOURCES:
            raise ValueError(f"a source for the {event} event is already registered")
        _EVENT_SOURCES[event] = source
        return source

    return register


def registered_kinds() -> frozenset[type[BaseModel]]:
    """The kinds of trigger the planner can plan."""
    return frozenset(_BUILDERS)


def registered_events() -> frozenset[BuiltInEvent]:
    """The built-in events the planner reads from their own tables."""
    return frozenset(BuiltInEvent(event) for event in _EVENT_SOURCES)


def trigger_query(trigger: BaseModel, as_of: datetime, timezone: str) -> TriggerQuery | None:
    """The due occurrences of ``trigger`` at ``as_of`` (None: nothing can be due now)."""
    builder = _BUILDERS.get(type(trigger))
    if builder is None:
        raise TypeError(f"no query builder for the trigger {trigger!r}")
    return builder(trigger, as_of, timezone)


# ---------------------------------------------------------------------------- shared pieces


def iso_utc(value: datetime | None) -> str | None:
    """A moment as the ISO text stored in the outbox details (naive values are UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _key(prefix: str, column: Any) -> Any:
    return (literal(prefix, String) + cast(column, String)).label("occurrence_key")


def _base(*columns: Any) -> Any:
    return select(
        Customer.id.label("customer_id"),
        Customer.email,
        Customer.locale,
        Customer.timezone,
        CustomerScore.stage.label("current_stage"),
        *columns,
    )


_SCORE_JOIN = CustomerScore.customer_id == Customer.id


def _window(column: Any, as_of: datetime, delay: timedelta, expires: timedelta) -> Any:
    return and_(column > as_of - delay - expires, column <= as_of - delay)


def _occurrences(
    rows: Any,
    owner: Any,
    key: Any,
    at: Any,
    *columns: Any,
    due: tuple[datetime, timedelta, timedelta],
    where: tuple[Any, ...] = (),
) -> Any:
    """The rows of table ``rows`` (each an occurrence of the customer ``owner`` names, at
    ``at``) that are due: ``due`` is (as_of, delay, expires_after)."""
    return (
        _base(key, at.label("trigger_at"), *columns)
        .select_from(rows)
        .join(Customer, Customer.id == owner)
        .outerjoin(CustomerScore, _SCORE_JOIN)
        .where(*where, _window(at, *due))
    )


# ---------------------------------------------------------------------------------- events


@builds(EventTrigger)
def _event(trigger: EventTrigger, as_of: datetime, timezone: str) -> TriggerQuery:
    """Each event of the kind, ``delay`` after it (one message per event)."""
    return _EVENT_SOURCES.get(trigger.event, _engagement_event)(trigger, as_of)


@event_source(BuiltInEvent.ORDER_PLACED)
def _order_placed(trigger: EventTrigger, as_of: datetime) -> TriggerQuery:
    query = _occurrences(
        Order,
        Order.customer_id,
        _key("order:", Order.id),
        Order.placed_at,
        Order.external_id.label("order_ref"),
        Order.amount_cents,
        Order.currency,
        due=(as_of, trigger.delay, trigger.expires_after),
        where=(Order.status == OrderStatus.COMPLETED,),
    )

    def details(row: Row[Any]) -> dict[str, Any]:
        return {
            "order": {
                "id": row.order_ref,
                "amount_cents": int(row.amount_cents),
                "currency": row.currency,
                "placed_at": iso_utc(row.trigger_at),
            }
        }

    return TriggerQuery(query, details, BuiltInEvent.ORDER_PLACED)


@event_source(BuiltInEvent.SURVEY_ANSWERED)
def _survey_answered(trigger: EventTrigger, as_of: datetime) -> TriggerQuery:
    query = _occurrences(
        SurveyResponse,
        SurveyResponse.customer_id,
        _key("survey:", SurveyResponse.id),
        SurveyResponse.answered_at,
        SurveyResponse.score,
        due=(as_of, trigger.delay, trigger.expires_after),
    )
    name = BuiltInEvent.SURVEY_ANSWERED

    def details(row: Row[Any]) -> dict[str, Any]:
        return {
            "event": {"type": name, "score": int(row.score), "occurred_at": iso_utc(row.trigger_at)}
        }

    return TriggerQuery(query, details, name)


@event_source(BuiltInEvent.REFERRAL_CONVERTED)
def _referral_converted(trigger: EventTrigger, as_of: datetime) -> TriggerQuery:
    query = _occurrences(
        Referral,
        Referral.referrer_id,
        _key("referral:", Referral.id),
        Referral.converted_at,
        Referral.code,
        due=(as_of, trigger.delay, trigger.expires_after),
    )
    name = BuiltInEvent.REFERRAL_CONVERTED

    def details(row: Row[Any]) -> dict[str, Any]:
        return {"event": {"type": name, "code": row.code, "occurred_at": iso_utc(row.trigger_at)}}

    return TriggerQuery(query, details, name)


@event_source(BuiltInEvent.SIGNUP)
def _signup(trigger: EventTrigger, as_of: datetime) -> TriggerQuery:
    name = BuiltInEvent.SIGNUP
    query = (
        _base(literal(name.value).label("occurrence_key"), Customer.created_at.label("trigger_at"))
        .select_from(Customer)
        .outerjoin(CustomerScore, _SCORE_JOIN)
        .where(_window(Customer.created_at, as_of, trigger.delay, trigger.expires_after))
    )

    def details(row: Row[Any]) -> dict[str, Any]:
        return {"event": {"type": name, "occurred_at": iso_utc(row.trigger_at)}}

    return TriggerQuery(query, details, name)


def _engagement_event(trigger: EventTrigger, as_of: datetime) -> TriggerQuery:
    """Any other event name: an engagement event type in the events table."""
    query = _occurrences(
        Event,
        Event.customer_id,
        _key("event:", Event.id),
        Event.occurred_at,
        Event.properties,
        due=(as_of, trigger.delay, trigger.expires_after),
        where=(Event.type == trigger.event,),
    )
    name = trigger.event

    def details(row: Row[Any]) -> dict[str, Any]:
        return {
            "event": {
                "type": name,
                "properties": dict(row.properties or {}),
                "occurred_at": iso_utc(row.trigger_at),
            }
        }

    return TriggerQuery(query, details, f"event:{name}")


# ------------------------------------------------------------------------ stages, segments


@builds(StageTrigger)
def _stage_entered(trigger: StageTrigger, as_of: datetime, timezone: str) -> TriggerQuery:
    """``delay`` after the customer entered the stage (while they are still in it)."""
    h = StageHistory
    query = _occurrences(
        h,
        h.customer_id,
        _key("stage:", h.id),
        h.entered_at,
        h.previous_stage,
        due=(as_of, trigger.delay, trigger.expires_after),
        where=(h.stage == trigger.stage_entered, h.exited_at.is_(None)),
    )
    stage = trigger.stage_entered

    def details(row: Row[Any]) -> dict[str, Any]:
        return {
            "stage": {
                "name": stage,
                "previous": row.previous_stage,
                "entered_at": iso_utc(row.trigger_at),
            }
        }

    return TriggerQuery(query, details, f"stage_entered:{stage}")


@builds(SegmentTrigger)
def _segment_entered(trigger: SegmentTrigger, as_of: datetime, timezone: str) -> TriggerQuery:
    """``delay`` after the customer entered the segment (while they are still in it); the
    members of its first computation only with ``include_initial_members``."""
    m = SegmentMembership
    conditions = [m.segment == trigger.segment_entered, m.exited_at.is_(None)]
    if not trigger.include_initial_members:
        first_run = (
            select(func.min(SegmentRun.computed_at))
            .where(SegmentRun.segment == trigger.segment_entered)
            .scalar_subquery()
        )
        conditions.append(m.entered_at > first_run)
    query = _occurrences(
        m,
        m.customer_id,
        _key("segment:", m.id),
        m.entered_at,
        due=(as_of, trigger.delay, trigger.expires_after),
        where=tuple(conditions),
    )
    segment = trigger.segment_entered

    def details(row: Row[Any]) -> dict[str, Any]:
        return {"segment": {"name": segment, "entered_at": iso_utc(row.trigger_at)}}

    return TriggerQuery(query, details, f"segment_entered:{segment}")


# ------------------------------------------------------------------ anniversaries, schedules

_DATE_COLUMNS: dict[DateAttribute, Any] = {
    "birth_date": Customer.birth_date,
    "first_order": CustomerScore.first_order_at,
    "signup": Customer.created_at,
}
"""The column each date a campaign can celebrate is read from."""


@builds(DateTrigger)
def _anniversary(trigger: DateTrigger, as_of: datetime, timezone: str) -> TriggerQuery:
    """Every year on the anniversary of a date, ``days_before`` ahead of it."""
    column = _DATE_COLUMNS[trigger.date]
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
        .outerjoin(CustomerScore, _SCORE_JOIN)
        .where(column.is_not(None), month_day(column).in_(list(days)))
    )
    if trigger.date != "birth_date":  # the day itself is not an anniversary
        query = query.where(column < as_of - timedelta(days=300))
    name = trigger.date

    def details(row: Row[Any]) -> dict[str, Any]:
        return {"date": {"kind": name, "year": int(row.occurrence_key.rsplit(":", 1)[1])}}

    return TriggerQuery(query, details, f"date:{name}")


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


@builds(ScheduleTrigger)
def _schedule(trigger: ScheduleTrigger, as_of: datetime, timezone: str) -> TriggerQuery | None:
    """The whole audience, once per edition of the schedule (its latest, until it expires)."""
    slot = last_slot(trigger.schedule, as_of, timezone)
    if slot is None or slot <= as_of - trigger.expires_after:
        return None
    query = (
        _base(
            literal(f"schedule:{slot.isoformat()}").label("occurrence_key"),
            literal(slot).label("trigger_at"),
        )
        .select_from(Customer)
        .outerjoin(CustomerScore, _SCORE_JOIN)
    )
    edition = {"schedule": {"at": iso_utc(slot), "expression": trigger.schedule}}
    return TriggerQuery(query, lambda row: edition, f"schedule:{trigger.schedule}")


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
