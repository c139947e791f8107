"""The outbox's state machine, as set operations on the messages table.

::

    planned ──claim──▶ claimed ──mark_sending (committed)──▶ sending ──▶ sent | failed
       ▲                  │                                     │
       └──retry (later)───┴── lease expired (never attempted) ──┘ crash ──▶ ambiguous

A row is committed as ``sending`` before the provider is called and as ``sent`` after.
Claimed rows whose worker vanished before ``sending`` are safe to claim again; rows left in
``sending`` are ambiguous and are never re-sent blindly. Claiming uses ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite, so two cycles at once never take
the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from ciclovita.db.models import Customer, CustomerScore, Message, table_of
from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.recipients import RECIPIENT_COLUMNS, recipient_from_row
from ciclovita.rendering.context import Recipient

CLAIM_LEASE = timedelta(minutes=15)
SENDING_LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 8


def claimable(as_of: datetime, campaigns: Sequence[str] | None = None) -> Any:
    """Rows a worker may claim now: due planned rows, and stale claims never attempted."""
    condition = or_(
        and_(Message.status == "planned", Message.due_at <= as_of),
        and_(Message.status == "claimed", Message.claimed_at < as_of - CLAIM_LEASE),
    )
    if campaigns:
        condition = and_(condition, Message.campaign.in_(list(campaigns)))
    return condition


def claim(
    connection: Connection,
    worker: str,
    limit: int,
    as_of: datetime,
    campaigns: Sequence[str] | None = None,
) -> list[int]:
    """Take up to ``limit`` due messages for ``worker``; returns their ids."""
    chosen = (
        select(Message.id)
        .where(claimable(as_of, campaigns))
        .order_by(Message.priority.desc(), Message.due_at, Message.id)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    result = connection.execute(
        update(Message)
        .where(Message.id.in_(chosen.scalar_subquery()))
        .values(status="claimed", claimed_by=worker, claimed_at=as_of)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def count_due(
    connection: Connection, as_of: datetime, campaigns: Sequence[str] | None = None
) -> int:
    return int(
        connection.execute(select(func.count()).where(claimable(as_of, campaigns))).scalar_one()
    )


def load_batch(connection: Connection, ids: Sequence[int]) -> list[tuple[Any, Recipient]]:
    """Outbox rows with their recipients, in one query."""
    if not ids:
        return []
    rows = connection.execute(
        select(
            Message.id,
            Message.uid,
            Message.campaign,
            Message.kind,
            Message.variant,
            Message.locale,
            Message.to_email,
            Message.stage,
            Message.details,
            Message.claimed_by,
            *RECIPIENT_COLUMNS,
        )
        .join(Customer, Customer.id == Message.customer_id)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(Message.id.in_(list(ids)))
        .order_by(Message.id)
    ).all()
    return [(row, recipient_from_row(row, email=row.to_email)) for row in rows]


def mark_sending(
    connection: Connection, ids: Sequence[int], worker: str, now: datetime
) -> list[int]:
    """Commit point before the provider call: only rows still claimed by ``worker``."""
    if not ids:
        return []
    result = connection.execute(
        update(Message)
        .where(Message.id.in_(list(ids)), Message.status == "claimed", Message.claimed_by == worker)
        .values(status="sending", sending_at=now, attempts=Message.attempts + 1)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(row[0] for row in result)


def mark_failed(connection: Connection, ids_errors: dict[int, str], now: datetime) -> None:
    """Permanent failures before sending (render errors, unknown campaign)."""
    for message_id, error in ids_errors.items():
        connection.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(status="failed", error=error[:2000], sending_at=None)
        )


def record_outcomes(
    connection: Connection,
    outcomes: Sequence[SendOutcome],
    ids_by_uid: dict[str, int],
    provider: str,
    now: datetime,
) -> None:
    """Commit point after the provider call."""
    sent = [
        {"_id": ids_by_uid[o.uid], "_pid": o.provider_message_id}
        for o in outcomes
        if o.status == "sent"
    ]
    if sent:
        connection.execute(
            update(table_of(Message))
            .where(table_of(Message).c.id == bindparam("_id"))
            .values(
                status="sent",
                sent_at=now,
                provider=provider,
                provider_message_id=bindparam("_pid"),
                error=None,
            ),
            sent,
        )
    for outcome in outcomes:
        message_id = ids_by_uid[outcome.uid]
        if outcome.status == "failed":
            values: dict[str, Any] = {"status": "failed", "error": (outcome.error or "")[:2000]}
        elif outcome.status == "ambiguous":
            values = {"status": "ambiguous", "error": (outcome.error or "")[:2000]}
        elif outcome.status == "retry":
            values = {
                "status": "planned",
                "error": (outcome.error or "")[:2000],
                "due_at": now + timedelta(seconds=outcome.retry_after or 60),
                "claimed_by": None,
                "claimed_at": None,
            }
        else:
            continue
        connection.execute(update(Message).where(Message.id == message_id).values(**values))
    # rows retried too often become failures
    connection.execute(
        update(Message)
        .where(Message.status == "planned", Message.attempts >= MAX_ATTEMPTS)
        .values(
            status="failed", error=func.coalesce(Message.error, "") + " (gave up after retries)"
        )
    )


def release(connection: Connection, ids: Sequence[int], worker: str) -> None:
    """Give back claimed rows that were not attempted (send cap reached, shutdown)."""
    if ids:
        connection.execute(
            update(Message)
            .where(
                Message.id.in_(list(ids)), Message.status == "claimed", Message.claimed_by == worker
            )
            .values(status="planned", claimed_by=None, claimed_at=None)
        )


def mark_stale_sending_ambiguous(connection: Connection, now: datetime) -> int:
    """Rows left in ``sending`` past the lease: their worker died mid-call."""
    return connection.execute(
        update(Message)
        .where(Message.status == "sending", Message.sending_at < now - SENDING_LEASE)
        .values(status="ambiguous", error="worker stopped between the provider call and its record")
    ).rowcount


def ambiguous_uids(connection: Connection) -> dict[str, int]:
    return {
        uid: message_id
        for uid, message_id in connection.execute(
            select(Message.uid, Message.id).where(Message.status == "ambiguous")
        )
    }


def resolve_ambiguous(
    connection: Connection,
    found: dict[str, str],
    ids_by_uid: dict[str, int],
    provider: str,
    now: datetime,
) -> int:
    """Ambiguous rows the provider is known to have become sent."""
    for uid, provider_id in found.items():
        connection.execute(
            update(Message)
            .where(Message.id == ids_by_uid[uid], Message.status == "ambiguous")
            .values(
                status="sent",
                provider=provider,
                provider_message_id=provider_id,
                sent_at=func.coalesce(Message.sending_at, now),
                error=None,
            )
        )
    return len(found)
