"""The outbox's state machine, as set operations on the messages table.

::

             ┌──────────── claim lease expired, never started ─────────────┐
             ▼                                                            │
    planned ──claim──▶ claimed ──start_sending (commit)──▶ sending ──record (commit)──▶ sent
       ▲                  │                                  │  │                     failed
       │                  └─▶ skipped (late guard), failed   │  └─▶ ambiguous: answer lost, or
       │                      (cannot be rendered)           │      sending lease expired
       └────── retry: certainly not accepted, due later ─────┘           │
               (failed after MAX_ATTEMPTS)          provider's events ───┴──▶ sent
                                                    operator's release ────▶ planned

The exactly-once rules, each enforced here:

* A row is committed as ``sending`` before the provider is called and as ``sent`` (with the
  provider's id) after. A row left in ``sending`` is never sent again: past
  ``SENDING_LEASE`` it becomes ``ambiguous``, and only the provider's events (stored by the
  webhook) or the sender's own records turn it into ``sent``. Any provider event for a row
  in doubt (``sending`` or ``ambiguous``) proves the provider has it: ``settle_by_events``
  is that rule, for the webhook as it stores events and for reconciliation after.
* Every transition after the claim names the worker: a worker only moves rows it claimed, so
  a worker that lost its claim (lease expired, row taken over) can never send that row, and
  a late answer never overwrites what another writer settled (the webhook's ``sent`` stays).
* Claiming takes rows atomically: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
  IMMEDIATE`` (one writer at a time) on SQLite; two cycles at once never take the same row.
* Leases are measured on the wall clock (``now``), never on a run's business time
  (``as_of``), which only decides what is due; a back-dated run cannot steal live rows.
* A row retried after a transient failure is checked against stored provider events before
  it is sent again: an error answer for a request SendGrid did accept cannot deliver twice.
* Held (``ambiguous``) rows go back to ``planned`` only by an operator's decision after
  checking the provider (``release_ambiguous``), and never when the provider reported on them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)

from ciclovita.batching import IN_LIST_SIZE, chunks
from ciclovita.db.models import (
    Customer,
    CustomerScore,
    DeliveryEvent,
    Message,
    table_of,
)
from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.recipients import RECIPIENT_COLUMNS, recipient_from_row
from ciclovita.planning.eligibility import read_eligibility
from ciclovita.rendering.context import Recipient
from ciclovita.vocabulary import (
    IN_DOUBT_STATUSES,
    ConsentTopic,
    DeliveryCount,
    MessageKind,
    MessageStatus,
    SendResult,
    SkipReason,
)

CLAIM_LEASE = timedelta(minutes=15)
"""A claimed row its worker never started sending may be claimed by another after this."""
SENDING_LEASE = timedelta(minutes=10)
"""A row still ``sending`` after this is ambiguous (its worker stopped mid-call)."""
MAX_ATTEMPTS = 8
"""A row whose sending was attempted this many times without success becomes ``failed``."""
ERROR_LENGTH = 2000
"""Characters of an error kept on the row."""
_STARTED = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.AMBIGUOUS)
"""Statuses of a row whose sending was started."""

# The two statements of every pipeline commit, built once: building a statement costs more
# than running it, and a delivery runs them dozens of times a second.
_MESSAGES = table_of(Message)
_IN_DOUBT = or_(*(_MESSAGES.c.status == status for status in sorted(IN_DOUBT_STATUSES)))
_MINE = and_(
    _MESSAGES.c.id == bindparam("_id"), _MESSAGES.c.claimed_by == bindparam("_worker"), _IN_DOUBT
)
_START_SENDING = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("_ids", expanding=True)),
        _MESSAGES.c.status == MessageStatus.CLAIMED,
        _MESSAGES.c.claimed_by == bindparam("_worker"),
    )
    .values(
        status=MessageStatus.SENDING,
        sending_at=bindparam("_now"),
        attempts=_MESSAGES.c.attempts + 1,
    )
    .returning(_MESSAGES.c.id)
)
_RECORD_SENT = (
    update(_MESSAGES)
    .where(_MINE)
    .values(
        status=MessageStatus.SENT,
        sent_at=bindparam("_sent_at"),
        provider=bindparam("_provider"),
        provider_message_id=bindparam("_pid"),
        error=None,
    )
)


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OutboxRow:
    """What rendering and sending need of one claimed outbox row."""

    id: int
    uid: str
    campaign: str
    kind: MessageKind
    variant: str | None
    locale: str | None
    to_email: str
    stage: str | None
    attempts: int
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- claiming


def due(as_of: datetime, campaigns: Sequence[str] | None = None) -> Any:
    """Planned rows due at ``as_of``."""
    condition = and_(Message.status == MessageStatus.PLANNED, Message.due_at <= as_of)
    if campaigns:
        condition = and_(condition, Message.campaign.in_(list(campaigns)))
    return condition


def claimable(
    as_of: datetime, campaigns: Sequence[str] | None = None, now: datetime | None = None
) -> Any:
    """Rows a worker may claim: due planned rows, and claims whose worker never started."""
    now = now or wall_clock()
    stale = and_(Message.status == MessageStatus.CLAIMED, Message.claimed_at < now - CLAIM_LEASE)
    if campaigns:
        stale = and_(stale, Message.campaign.in_(list(campaigns)))
    return or_(due(as_of, campaigns), stale)


def claim(
    connection: Connection,
    worker: str,
    limit: int,
    as_of: datetime,
    campaigns: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Take up to ``limit`` due messages for ``worker`` (highest priority, oldest first)."""
    now = now or wall_clock()
    chosen = (
        select(Message.id)
        .where(claimable(as_of, campaigns, now))
        .order_by(Message.priority.desc(), Message.due_at, Message.id)
        .limit(limit)
    )
    values = {"status": MessageStatus.CLAIMED, "claimed_by": worker, "claimed_at": now}
    if connection.dialect.name == "postgresql":
        # a CTE is evaluated once: the locked rows are exactly the rows updated
        locked = chosen.with_for_update(skip_locked=True).cte("chosen")
        statement = update(Message).where(Message.id == locked.c.id)
    else:  # SQLite: the claim runs under BEGIN IMMEDIATE, alone among writers
        statement = update(Message).where(Message.id.in_(chosen.scalar_subquery()))
    result = connection.execute(
        statement.values(**values)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def claimed_by(connection: Connection, worker: str) -> list[int]:
    """Rows ``worker`` claimed and has not started sending (to resume after a retry)."""
    return sorted(
        connection.execute(
            select(Message.id).where(
                Message.status == MessageStatus.CLAIMED, Message.claimed_by == worker
            )
        ).scalars()
    )


def started_by(connection: Connection, worker: str) -> int:
    """How many rows ``worker`` has started sending (what a resumed worker already used)."""
    return int(
        connection.execute(
            select(func.count()).where(
                Message.claimed_by == worker,
                Message.status.in_(_STARTED),
            )
        ).scalar_one()
    )


def count_due(
    connection: Connection,
    as_of: datetime,
    campaigns: Sequence[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Messages a delivery at ``as_of`` would take (due, or abandoned claims)."""
    return int(
        connection.execute(
            select(func.count()).where(claimable(as_of, campaigns, now))
        ).scalar_one()
    )


def count_in_doubt(connection: Connection) -> dict[MessageStatus, int]:
    """Rows whose fate is not settled: ``sending`` (in flight, or its worker stopped less
    than a lease ago) and ``ambiguous`` (held until the provider's events settle it)."""
    counts = dict.fromkeys(sorted(IN_DOUBT_STATUSES), 0)
    for status, n in connection.execute(
        select(Message.status, func.count())
        .where(Message.status.in_(IN_DOUBT_STATUSES))
        .group_by(Message.status)
    ):
        counts[MessageStatus(status)] = int(n)
    return counts


# ----------------------------------------------------------------------------------- loading

_ROW_COLUMNS = (
    Message.id,
    Message.uid,
    Message.campaign,
    Message.kind,
    Message.variant,
    Message.locale,
    Message.to_email,
    Message.stage,
    Message.attempts,
    Message.details,
)


def _outbox_row(row: Any) -> OutboxRow:
    return OutboxRow(
        id=row.id,
        uid=row.uid,
        campaign=row.campaign,
        kind=MessageKind(row.kind),
        variant=row.variant,
        locale=row.locale,
        to_email=row.to_email or "",
        stage=row.stage,
        attempts=row.attempts or 0,
        details=dict(row.details or {}),
    )


def _with_recipients(query: Any) -> Any:
    return query.join(Customer, Customer.id == Message.customer_id).outerjoin(
        CustomerScore, CustomerScore.customer_id == Customer.id
    )


def load_batch(connection: Connection, ids: Sequence[int]) -> list[tuple[OutboxRow, Recipient]]:
    """Outbox rows with their recipients, in id order."""
    found: list[tuple[OutboxRow, Recipient]] = []
    for part in chunks(sorted(ids), IN_LIST_SIZE):
        rows = connection.execute(
            _with_recipients(select(*_ROW_COLUMNS, *RECIPIENT_COLUMNS))
            .where(Message.id.in_(list(part)))
            .order_by(Message.id)
        ).all()
        found += [(_outbox_row(row), recipient_from_row(row, email=row.to_email)) for row in rows]
    return found


def load_due(
    connection: Connection,
    as_of: datetime,
    limit: int | None,
    campaigns: Sequence[str] | None = None,
) -> list[tuple[OutboxRow, Recipient]]:
    """Due rows in claim order, without claiming them (dry run)."""
    query = (
        _with_recipients(select(*_ROW_COLUMNS, *RECIPIENT_COLUMNS))
        .where(due(as_of, campaigns))
        .order_by(Message.priority.desc(), Message.due_at, Message.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        (_outbox_row(row), recipient_from_row(row, email=row.to_email))
        for row in connection.execute(query)
    ]


def late_skips(
    connection: Connection,
    batch: Sequence[tuple[OutboxRow, Recipient]],
    consent_topics: Mapping[str, ConsentTopic | None],
) -> dict[int, SkipReason]:
    """Rows that must not go out any more, by the planner's own rule (``Eligibility``),
    checked again just before sending since a row can wait hours for its send window: the
    address was suppressed, or the customer withdrew the campaign's consent.
    ``consent_topics``: campaign → required consent topic."""
    by_topic: dict[ConsentTopic, list[int]] = {}
    for row, recipient in batch:
        topic = consent_topics.get(row.campaign)
        if topic:
            by_topic.setdefault(topic, []).append(recipient.customer_id)
    eligibility = read_eligibility(connection, (row.to_email for row, _ in batch), by_topic)
    skips: dict[int, SkipReason] = {}
    for row, recipient in batch:
        refusal = eligibility.refusal(
            row.to_email, recipient.customer_id, consent_topics.get(row.campaign)
        )
        if refusal is not None:
            skips[row.id] = refusal
    return skips


def provider_events(connection: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    """Rows among ``ids`` the provider already reported on (the webhook stored an event):
    id → the provider's message id (None when the event did not carry one)."""
    found: dict[int, tuple[datetime, str | None]] = {}
    for part in chunks(sorted(ids), IN_LIST_SIZE):
        for message_id, at, payload in connection.execute(
            select(DeliveryEvent.message_id, DeliveryEvent.occurred_at, DeliveryEvent.payload)
            .where(DeliveryEvent.message_id.in_(list(part)))
            .order_by(DeliveryEvent.occurred_at)
        ):
            if message_id not in found:
                found[message_id] = (at, _provider_id(payload))
    return {message_id: pid for message_id, (_at, pid) in found.items()}


def _provider_id(payload: Any) -> str | None:
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    value = payload.get("sg_message_id") if isinstance(payload, dict) else None
    return str(value).split(".", 1)[0] if value else None


# ------------------------------------------------------------------------------- transitions


def start_sending(
    connection: Connection, ids: Sequence[int], worker: str, now: datetime
) -> list[int]:
    """The commit point before the provider call: only rows still claimed by ``worker``
    become ``sending``; the others were taken over and must not be sent."""
    if not ids:
        return []
    result = connection.execute(_START_SENDING, {"_ids": list(ids), "_worker": worker, "_now": now})
    return sorted(row[0] for row in result)


def _settle_claimed(
    connection: Connection, worker: str, values_by_id: dict[int, dict[str, Any]]
) -> int:
    """Move rows still claimed by ``worker`` out of the claim; returns how many moved."""
    moved = 0
    for message_id, values in values_by_id.items():
        moved += connection.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.status == MessageStatus.CLAIMED,
                Message.claimed_by == worker,
            )
            .values(**values)
        ).rowcount
    return moved


def mark_failed(connection: Connection, errors: dict[int, str], worker: str) -> int:
    """Permanent failures found before sending (render errors, unknown campaign)."""
    return _settle_claimed(
        connection,
        worker,
        {
            i: {"status": MessageStatus.FAILED, "error": error[:ERROR_LENGTH]}
            for i, error in errors.items()
        },
    )


def mark_skipped(connection: Connection, reasons: Mapping[int, SkipReason], worker: str) -> int:
    """Rows a late guard holds back (suppressed, consent withdrawn): skipped, with why."""
    return _settle_claimed(
        connection,
        worker,
        {
            i: {"status": MessageStatus.SKIPPED, "skip_reason": reason}
            for i, reason in reasons.items()
        },
    )


def mark_sent_by_events(
    connection: Connection, found: dict[int, str | None], worker: str, provider: str, at: datetime
) -> int:
    """Claimed rows the provider's events show it already has: ``sent``, not sent again."""
    return _settle_claimed(
        connection,
        worker,
        {
            i: {
                "status": MessageStatus.SENT,
                "sent_at": at,
                "provider": provider,
                "provider_message_id": pid,
                "error": None,
            }
            for i, pid in found.items()
        },
    )


def record_outcomes(
    connection: Connection,
    outcomes: Sequence[SendOutcome],
    ids_by_uid: dict[str, int],
    worker: str,
    provider: str,
    sent_at: datetime,
) -> dict[str, DeliveryCount]:
    """The commit point after the provider call.

    Only rows ``worker`` is sending (or that a lease check declared ambiguous meanwhile)
    change, so a late answer never overwrites what another writer settled (the webhook's
    ``sent`` stays). Returns, per uid, what was written: ``sent`` (always: the provider has
    the message), ``failed``, ``retried`` (due again later, or ``failed`` past
    ``MAX_ATTEMPTS``) or ``ambiguous``.
    """
    table = _MESSAGES
    mine = _MINE
    applied: dict[str, DeliveryCount] = {}
    sent = [o for o in outcomes if o.status == SendResult.SENT]
    if sent:
        connection.execute(
            _RECORD_SENT,
            [
                {
                    "_id": ids_by_uid[o.uid],
                    "_worker": worker,
                    "_pid": o.provider_message_id,
                    "_sent_at": sent_at,
                    "_provider": provider,
                }
                for o in sent
            ],
        )
        applied.update(dict.fromkeys((o.uid for o in sent), DeliveryCount.SENT))
    for outcome in outcomes:
        params = {"_id": ids_by_uid[outcome.uid], "_worker": worker}
        error = (outcome.error or "")[:ERROR_LENGTH]
        if outcome.status == SendResult.FAILED:
            statement = update(table).where(mine).values(status=MessageStatus.FAILED, error=error)
        elif outcome.status == SendResult.AMBIGUOUS:
            statement = (
                update(table)
                .where(table.c.id == bindparam("_id"))
                .where(
                    table.c.claimed_by == bindparam("_worker"),
                    table.c.status == MessageStatus.SENDING,
                )
                .values(status=MessageStatus.AMBIGUOUS, error=error)
            )
        elif outcome.status == SendResult.RETRY:
            gave_up = table.c.attempts >= MAX_ATTEMPTS
            statement = (
                update(table)
                .where(mine)
                .values(
                    status=case(
                        (gave_up, literal(MessageStatus.FAILED.value)),
                        else_=literal(MessageStatus.PLANNED.value),
                    ),
                    error=case(
                        (gave_up, literal(f"gave up after {MAX_ATTEMPTS} attempts: {error}")),
                        else_=literal(error),
                    ),
                    due_at=sent_at + timedelta(seconds=outcome.retry_after or 60.0),
                    claimed_by=None,
                    claimed_at=None,
                )
            )
        else:
            continue
        result = connection.execute(statement.returning(table.c.status), params).first()
        if result is not None:
            status = MessageStatus(result[0])
            applied[outcome.uid] = (
                DeliveryCount.RETRIED if status == MessageStatus.PLANNED else DeliveryCount(status)
            )
    return applied


def release(connection: Connection, ids: Sequence[int], worker: str) -> int:
    """Give back claimed rows that were not attempted (send cap, shutdown, error)."""
    released = 0
    for part in chunks(sorted(ids), IN_LIST_SIZE):
        released += connection.execute(
            update(Message)
            .where(
                Message.id.in_(list(part)),
                Message.status == MessageStatus.CLAIMED,
                Message.claimed_by == worker,
            )
            .values(status=MessageStatus.PLANNED, claimed_by=None, claimed_at=None)
        ).rowcount
    return released


# ---------------------------------------------------------------------------- reconciliation


def mark_stale_sending_ambiguous(connection: Connection, now: datetime | None = None) -> int:
    """Rows left in ``sending`` past the lease: their worker stopped mid-call."""
    now = now or wall_clock()
    return connection.execute(
        update(Message)
        .where(Message.status == MessageStatus.SENDING, Message.sending_at < now - SENDING_LEASE)
        .values(
            status=MessageStatus.AMBIGUOUS,
            error="worker stopped between the provider call and its record",
        )
    ).rowcount


def ambiguous_uids(connection: Connection) -> dict[str, int]:
    return {
        uid: message_id
        for uid, message_id in connection.execute(
            select(Message.uid, Message.id).where(Message.status == MessageStatus.AMBIGUOUS)
        )
    }


def settle_by_events(
    connection: Connection, provider_ids: Mapping[int, str | None], provider: str
) -> int:
    """The provider reported on these messages (the webhook stored an event for each), so
    it has them: those still in doubt (``sending`` or ``ambiguous``) become ``sent``, at the
    time of their earliest event. ``provider_ids``: message id → the provider's message id
    (kept when the row already has one). Returns how many rows changed."""
    if not provider_ids:
        return 0
    messages = _MESSAGES
    earliest = (
        select(func.min(DeliveryEvent.occurred_at))
        .where(DeliveryEvent.message_id == messages.c.id)
        .scalar_subquery()
    )
    statement = (
        update(messages)
        .where(messages.c.id == bindparam("_id"), _IN_DOUBT)
        .values(
            status=MessageStatus.SENT,
            sent_at=func.coalesce(earliest, messages.c.sending_at),
            provider=func.coalesce(messages.c.provider, provider),
            provider_message_id=func.coalesce(
                messages.c.provider_message_id,
                bindparam("_pid", type_=messages.c.provider_message_id.type),
            ),
            error=None,
        )
    )
    params = [{"_id": i, "_pid": pid} for i, pid in sorted(provider_ids.items())]
    return max(connection.execute(statement, params).rowcount, 0)


def resolve_from_events(connection: Connection, provider: str) -> int:
    """Rows in doubt that the provider reported on (events the webhook stored before the
    row was in doubt, or that it could not apply) were sent (``settle_by_events``)."""
    reported = select(DeliveryEvent.id).where(DeliveryEvent.message_id == Message.id).exists()
    ids = list(
        connection.execute(
            select(Message.id).where(Message.status.in_(IN_DOUBT_STATUSES), reported)
        ).scalars()
    )
    return settle_by_events(connection, provider_events(connection, ids), provider)


def resolve_ambiguous(
    connection: Connection,
    found: dict[str, str],
    ids_by_uid: dict[str, int],
    provider: str,
    now: datetime,
) -> int:
    """Ambiguous rows the sender knows the provider has become sent."""
    resolved = 0
    for uid, provider_id in found.items():
        resolved += connection.execute(
            update(Message)
            .where(Message.id == ids_by_uid[uid], Message.status == MessageStatus.AMBIGUOUS)
            .values(
                status=MessageStatus.SENT,
                provider=provider,
                provider_message_id=provider_id,
                sent_at=func.coalesce(Message.sending_at, now),
                error=None,
            )
        ).rowcount
    return resolved


def release_ambiguous(connection: Connection, uids: Sequence[str], as_of: datetime) -> list[str]:
    """An operator's decision, after checking the provider (SendGrid's Email Activity): the
    named ambiguous messages never reached it, so they become due again at ``as_of``. Rows
    the provider did report on (a stored event) are never released. Returns the uids
    released."""
    reported = select(DeliveryEvent.id).where(DeliveryEvent.message_id == Message.id).exists()
    released: list[str] = []
    for part in chunks(sorted(set(uids)), IN_LIST_SIZE):
        released += connection.execute(
            update(Message)
            .where(
                Message.uid.in_(list(part)), Message.status == MessageStatus.AMBIGUOUS, ~reported
            )
            .values(
                status=MessageStatus.PLANNED,
                due_at=as_of,
                claimed_by=None,
                claimed_at=None,
                error=func.coalesce(Message.error, "") + " (released by an operator)",
            )
            .returning(Message.uid)
        ).scalars()
    return sorted(released)
