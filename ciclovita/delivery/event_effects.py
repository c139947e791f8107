"""Applying SendGrid's events: stored once, then their effects on messages and suppressions.

:func:`ingest_events` stores and applies a batch of events in the caller's transaction, with
set operations only: one lookup of the outbox messages by our message id (the
``ciclovita_message_id`` custom arg, or SendGrid's message id as a fallback); one bulk
``INSERT … ON CONFLICT (sg_event_id) DO NOTHING RETURNING`` (SendGrid retries for 24 hours
and sends duplicates: each event is stored once, and only new events have effects); one
statement for the delivery statuses and one settling the sends in doubt
(``outbox.settle_by_events``: an event proves the provider has the message); bulk
suppression writes. On PostgreSQL the two big statements read the batch from one JSON or a
few array parameters, so a batch of any size is one short statement; on SQLite they are
executemany calls of the dialect's statements. What each event type does is decided in
``event_rules``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, Field, computed_field, field_serializer
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    String,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from ciclovita.batching import IN_LIST_SIZE, chunks
from ciclovita.db.inserts import dialect_insert
from ciclovita.db.models import DeliveryEvent, Message, Suppression, table_of
from ciclovita.delivery import event_rules as rules
from ciclovita.delivery import outbox
from ciclovita.delivery.provider_events import (
    EVENTS_PROVIDER,
    Rejection,
    WebhookEvent,
    validate_event,
)
from ciclovita.vocabulary import (
    IN_DOUBT_STATUSES,
    MessageStatus,
    ProviderEvent,
    SuppressionReason,
)

SUPPRESSION_SOURCE: Final = "sendgrid_webhook"
"""The ``source`` of the suppressions the provider's events add."""
REJECTIONS_SHOWN: Final = 100
"""Rejected items a report lists (all are counted)."""


class IngestReport(BaseModel):
    """What one batch of events did."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    matched: int = 0
    status_updates: int = 0
    reconciled: int = 0
    suppressions_added: int = 0
    suppressions_lifted: int = 0
    rejected: list[Rejection] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    @field_serializer("rejected")
    def _first_rejections(self, rejected: list[Rejection]) -> list[Rejection]:
        return rejected[:REJECTIONS_SHOWN]


@dataclass(frozen=True, slots=True)
class _Target:
    """The outbox message an event belongs to."""

    id: int
    status: MessageStatus


def _find_messages(connection: Connection, events: Sequence[WebhookEvent]) -> dict[str, _Target]:
    """Outbox messages by our uid, and by SendGrid's message id (prefixed ``sg:``)."""
    found: dict[str, _Target] = {}
    uids = sorted({e.message_uid for e in events if e.message_uid})
    for part in chunks(uids, IN_LIST_SIZE):
        for message_id, uid, state in connection.execute(
            select(Message.id, Message.uid, Message.status).where(Message.uid.in_(part))
        ):
            found[uid] = _Target(message_id, MessageStatus(state))
    orphans = sorted(
        {
            e.provider_message_id
            for e in events
            if e.provider_message_id and (e.message_uid is None or e.message_uid not in found)
        }
    )
    for part in chunks(orphans, IN_LIST_SIZE):
        for message_id, provider_id, state in connection.execute(
            select(Message.id, Message.provider_message_id, Message.status).where(
                Message.provider_message_id.in_(part)
            )
        ):
            found[f"sg:{provider_id}"] = _Target(message_id, MessageStatus(state))
    return found


def _target(event: WebhookEvent, found: Mapping[str, _Target]) -> _Target | None:
    if event.message_uid and event.message_uid in found:
        return found[event.message_uid]
    if event.provider_message_id:
        return found.get(f"sg:{event.provider_message_id}")
    return None


def ingest_events(connection: Connection, events: list[Any], received_at: datetime) -> IngestReport:
    """Store each new event once and apply it to the outbox and the suppressions.

    Runs in the caller's transaction (commit it to keep the batch; roll back to lose all of
    it). Events already stored (same ``sg_event_id``) change nothing.
    """
    report = IngestReport(received=len(events))
    valid: list[WebhookEvent] = []
    seen: set[str] = set()
    for index, item in enumerate(events):
        checked = validate_event(index, item)
        if isinstance(checked, Rejection):
            report.rejected.append(checked)
        elif checked.sg_event_id in seen:
            report.duplicates += 1
        else:
            seen.add(checked.sg_event_id)
            valid.append(checked)
    if not valid:
        return report

    found = _find_messages(connection, valid)
    targets = {e.sg_event_id: _target(e, found) for e in valid}
    rows = [
        {
            "sg_event_id": e.sg_event_id,
            "message_id": target.id if (target := targets[e.sg_event_id]) else None,
            "event": e.event,
            "email": e.email,
            "occurred_at": e.occurred_at,
            "payload": e.payload,
        }
        # one global order of unique-key locks: concurrent retries never deadlock
        for e in sorted(valid, key=lambda e: e.sg_event_id)
    ]
    inserted = _insert_events(connection, rows, received_at)
    fresh = [e for e in valid if e.sg_event_id in inserted]
    report.stored = len(fresh)
    report.duplicates += len(valid) - len(fresh)
    report.matched = sum(1 for e in fresh if targets[e.sg_event_id] is not None)

    _apply_statuses(connection, fresh, targets, report)
    _settle_sends(connection, fresh, targets, report)
    _add_suppressions(connection, fresh, report)
    _apply_group_subscriptions(connection, fresh, report)
    return report


def _array(values: list[Any], item_type: Any) -> Any:
    """A PostgreSQL array parameter of ``values`` (for ``unnest``)."""
    return cast(bindparam(None, values, type_=ARRAY(item_type)), ARRAY(item_type))


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _insert_events(
    connection: Connection, rows: list[dict[str, Any]], received_at: datetime
) -> set[str]:
    """Insert the events not stored yet; returns the ``sg_event_id`` of those inserted.

    PostgreSQL: one ``INSERT … SELECT … FROM json_array_elements(:batch)``, the whole batch
    in one JSON parameter (one short statement whatever the batch size). SQLite: an
    executemany of the dialect's ``INSERT … ON CONFLICT DO NOTHING``.
    """
    table = table_of(DeliveryEvent)
    if connection.dialect.name != "postgresql":
        statement = (
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=["sg_event_id"])
            .returning(table.c.sg_event_id)
        )
        stamped = [{**row, "received_at": received_at} for row in rows]
        return {row[0] for row in connection.execute(statement, stamped)}
    batch = json.dumps(
        [
            [
                r["sg_event_id"],
                r["message_id"],
                r["event"],
                r["email"],
                _naive_utc(r["occurred_at"]).isoformat(),
                r["payload"],
            ]
            for r in rows
        ]
    )
    bulk = text(
        "INSERT INTO delivery_events "
        "(sg_event_id, message_id, event, email, occurred_at, received_at, payload) "
        "SELECT r->>0, CAST(r->>1 AS BIGINT), r->>2, r->>3, CAST(r->>4 AS TIMESTAMP), "
        ":received_at, r->5 "
        "FROM json_array_elements(CAST(:batch AS JSON)) AS r "
        "ON CONFLICT (sg_event_id) DO NOTHING RETURNING sg_event_id"
    ).bindparams(received_at=_naive_utc(received_at), batch=batch)
    return {row[0] for row in connection.execute(bulk)}


def _apply_statuses(
    connection: Connection,
    fresh: Sequence[WebhookEvent],
    targets: Mapping[str, _Target | None],
    report: IngestReport,
) -> None:
    """Raise each message's delivery status to the highest-ranked new event (never lower)."""
    best: dict[int, tuple[int, datetime, str]] = {}
    for event in fresh:
        target = targets[event.sg_event_id]
        state = rules.delivery_status(event.payload)
        if target is None or state is None:
            continue
        candidate = (rules.STATUS_RANK[state], event.occurred_at, state)
        if target.id not in best or candidate[:2] > best[target.id][:2]:
            best[target.id] = candidate
    if not best:
        return
    messages = table_of(Message)
    ordered = sorted(best.items())
    if connection.dialect.name == "postgresql":
        source = (
            func.unnest(
                _array([message_id for message_id, _ in ordered], BigInteger),
                _array([rank for _, (rank, _at, _state) in ordered], Integer),
                _array([state for _, (_rank, _at, state) in ordered], String),
                _array([_naive_utc(at) for _, (_rank, at, _state) in ordered], DateTime),
            )
            .table_valued("id", "rank", "status", "at")
            .render_derived()
        )
        result = connection.execute(
            update(messages)
            .where(
                messages.c.id == source.c.id,
                or_(
                    messages.c.delivery_status.is_(None),
                    rules.rank_of(messages.c.delivery_status) < source.c.rank,
                ),
            )
            .values(delivery_status=source.c.status, delivery_updated_at=source.c.at)
        )
    else:
        statement = (
            update(messages)
            .where(
                messages.c.id == bindparam("_id"),
                or_(
                    messages.c.delivery_status.is_(None),
                    rules.rank_of(messages.c.delivery_status) < bindparam("_rank", type_=Integer),
                ),
            )
            .values(delivery_status=bindparam("_status"), delivery_updated_at=bindparam("_at"))
        )
        params = [
            {"_id": message_id, "_rank": rank, "_status": state, "_at": at}
            for message_id, (rank, at, state) in ordered
        ]
        result = connection.execute(statement, params)
    report.status_updates = max(result.rowcount, 0)


def _settle_sends(
    connection: Connection,
    fresh: Sequence[WebhookEvent],
    targets: Mapping[str, _Target | None],
    report: IngestReport,
) -> None:
    """Messages in doubt (``sending``, ``ambiguous``) that SendGrid reports on were sent."""
    provider_ids: dict[int, str | None] = {}
    for event in fresh:
        target = targets[event.sg_event_id]
        in_doubt = target is not None and target.status in IN_DOUBT_STATUSES
        if target is not None and in_doubt and provider_ids.get(target.id) is None:
            provider_ids[target.id] = event.provider_message_id
    report.reconciled = outbox.settle_by_events(connection, provider_ids, EVENTS_PROVIDER)


def _add_suppressions(
    connection: Connection, fresh: Sequence[WebhookEvent], report: IngestReport
) -> None:
    """Bounces, spam reports and unsubscribes: the address is not mailed again."""
    rows: dict[str, dict[str, Any]] = {}
    for event in sorted(fresh, key=lambda e: e.occurred_at):
        reason = rules.suppression_reason(event.payload)
        if reason and event.email and event.email.lower() not in rows:
            rows[event.email.lower()] = {
                "email": event.email.lower(),
                "reason": reason,
                "source": SUPPRESSION_SOURCE,
                "created_at": event.occurred_at,
            }
    if rows:
        ordered = [rows[email] for email in sorted(rows)]
        report.suppressions_added += _insert_suppressions(connection, ordered)


def _insert_suppressions(connection: Connection, rows: list[dict[str, Any]]) -> int:
    table = table_of(Suppression)
    statement = (
        dialect_insert(connection, table)
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(table.c.email)
    )
    return len(connection.execute(statement, rows).all())


def _apply_group_subscriptions(
    connection: Connection, fresh: Sequence[WebhookEvent], report: IngestReport
) -> None:
    """Per address and unsubscribe group, the latest of group_unsubscribe and
    group_resubscribe wins, whatever order they arrive in: an address is suppressed while
    any of its groups' latest event is an unsubscribe."""
    touched = {e.email for e in fresh if e.event in rules.GROUP_EVENTS and e.email}
    emails = sorted(touched | {email.lower() for email in touched})
    if not emails:
        return
    latest: dict[tuple[str, str], tuple[datetime, int, str]] = {}
    for part in chunks(emails, IN_LIST_SIZE):
        stored = connection.execute(
            select(
                DeliveryEvent.id,
                DeliveryEvent.email,
                DeliveryEvent.event,
                DeliveryEvent.occurred_at,
                DeliveryEvent.payload,
            ).where(
                DeliveryEvent.event.in_(sorted(rules.GROUP_EVENTS)),
                DeliveryEvent.email.in_(part),
            )
        )
        for event_id, email, name, at, payload in stored:
            group = str((payload or {}).get("asm_group_id", ""))
            key = (str(email).lower(), group)
            if key not in latest or (at, event_id) > latest[key][:2]:
                latest[key] = (at, event_id, name)
    unsubscribed: dict[str, datetime] = {}
    for (email, _group), (at, _id, name) in latest.items():
        if name == ProviderEvent.GROUP_UNSUBSCRIBE:
            unsubscribed[email] = min(at, unsubscribed.get(email, at))
    resubscribed = sorted({email for email, _ in latest} - set(unsubscribed))
    if unsubscribed:
        report.suppressions_added += _insert_suppressions(
            connection,
            [
                {
                    "email": email,
                    "reason": SuppressionReason.GROUP_UNSUBSCRIBE,
                    "source": SUPPRESSION_SOURCE,
                    "created_at": at,
                }
                for email, at in sorted(unsubscribed.items())
            ],
        )
    for part in chunks(resubscribed, IN_LIST_SIZE):
        result = connection.execute(
            delete(Suppression).where(
                Suppression.email.in_(part),
                Suppression.reason == SuppressionReason.GROUP_UNSUBSCRIBE,
            )
        )
        report.suppressions_lifted += max(result.rowcount, 0)
