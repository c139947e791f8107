"""SendGrid's Event Webhook: verify the signed request, parse its events, ingest them once.

Three steps, each usable on its own:

* :class:`SignatureVerifier` checks the Signed Event Webhook headers with the sendgrid
  package's own helper (``sendgrid.helpers.eventwebhook.EventWebhook``): ECDSA P-256 over
  ``timestamp + raw body``, and a timestamp no further than ``tolerance`` from now.
* :func:`parse_body` turns the raw body into the list of event objects (or says why not).
* :func:`ingest_events` stores and applies a batch of events in the caller's transaction,
  with set operations only: one lookup of the outbox messages by our message id (the
  ``ciclovita_message_id`` custom arg, or SendGrid's message id as a fallback); one bulk
  ``INSERT … ON CONFLICT (sg_event_id) DO NOTHING RETURNING`` (SendGrid retries for 24 hours
  and sends duplicates: each event is stored once, and only new events have effects); one
  statement for the delivery statuses and one for reconciling ambiguous sends; bulk
  suppression writes. On PostgreSQL the two big statements read the batch from one JSON or a
  few array parameters, so a batch of any size is one short statement; on SQLite they are
  executemany calls of the dialect's statements. What each event type does is decided in
  ``ciclovita.web.status``.

Events that are not valid (not an object, no ``sg_event_id``, no ``event``, no usable
``timestamp``) are reported in :attr:`IngestReport.rejected` and the valid ones of the same
batch are stored all the same: a malformed item never costs the good ones.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    String,
    Table,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.db.models import DeliveryEvent, Message, Suppression, table_of
from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG
from ciclovita.errors import ConfigurationError
from ciclovita.web import status as rules
from ciclovita.web.pages import BodyTooLarge, WebContext, context_of, json_response, read_body

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: Final = EventWebhookHeader.TIMESTAMP
DEFAULT_TOLERANCE: Final = timedelta(minutes=10)
"""How far the signed timestamp may be from now (either way) before the request is stale."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Largest webhook body accepted (SendGrid batches are far smaller)."""
SUPPRESSION_SOURCE: Final = "sendgrid_webhook"
LOOKUP_CHUNK: Final = 1_000
_LATEST_TIMESTAMP: Final = 32_503_680_000  # 3000-01-01: later is not a real event time
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class SignatureError(Exception):
    """The request is not a fresh, authentic SendGrid webhook call (answered 403)."""


class MalformedBody(Exception):  # noqa: N818 - says what the body is
    """The body is not a JSON array of events (answered 400; nothing is stored)."""


class SignatureVerifier:
    """Verifies Signed Event Webhook requests against one public key."""

    def __init__(self, public_key: str, tolerance: timedelta = DEFAULT_TOLERANCE) -> None:
        self._helper = EventWebhook()
        try:
            self._key = self._helper.convert_public_key_to_ecdsa(public_key.strip())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "CICLOVITA_SENDGRID_WEBHOOK_PUBLIC_KEY",
                f"not a usable public key ({exc.__class__.__name__})",
                "the base64 verification key shown in SendGrid's Mail Settings",
            ) from exc
        self.tolerance = tolerance

    def verify(
        self, body: bytes, signature: str | None, timestamp: str | None, now: datetime
    ) -> None:
        """Return if the request is authentic and fresh; raise SignatureError otherwise."""
        if not signature or not timestamp:
            raise SignatureError("missing signature or timestamp header")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureError("body is not UTF-8, its signature cannot verify") from exc
        try:
            valid = self._helper.verify_signature(text, signature, timestamp, self._key)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise SignatureError(f"malformed signature ({exc.__class__.__name__})") from exc
        if not valid:
            raise SignatureError("signature does not verify")
        if not timestamp.isdigit():
            raise SignatureError("timestamp is not Unix seconds")
        signed_at = datetime.fromtimestamp(int(timestamp), UTC)
        if abs(now - signed_at) > self.tolerance:
            raise SignatureError(
                f"stale timestamp: signed {signed_at.isoformat()}, now {now.isoformat()}"
            )


def parse_body(body: bytes) -> list[Any]:
    """The items of a webhook body (a JSON array); MalformedBody otherwise."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise MalformedBody(f"body is not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise MalformedBody(f"body is a JSON {type(data).__name__}, not an array of events")
    if _SURROGATE_ESCAPE.search(body):
        data = [_without_lone_surrogates(item) for item in data]
    return data


def _without_lone_surrogates(item: Any) -> Any:
    """``item``, or a marker when it holds text no database can store (lone surrogates)."""
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return _Unstorable()
    return item


class _Unstorable:
    """An event whose text cannot be stored (rejected by ``validate_event``)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item of a batch that is not a valid event, and why."""

    index: int
    reason: str
    sg_event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "sg_event_id": self.sg_event_id}


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One valid event of a batch."""

    index: int
    sg_event_id: str
    event: str
    email: str | None
    occurred_at: datetime
    message_uid: str | None
    provider_message_id: str | None
    payload: dict[str, Any]


def _text(value: Any, limit: int) -> str | None:
    """A storable short text, or None."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    return value


def validate_event(index: int, item: Any) -> WebhookEvent | Rejection:
    """The event of a batch item, or why it is rejected."""
    if isinstance(item, _Unstorable):
        return Rejection(index, "contains text that is not valid Unicode (a lone surrogate)")
    if not isinstance(item, dict):
        return Rejection(index, f"not an object but a JSON {type(item).__name__}")
    raw_id = item.get("sg_event_id")
    sg_event_id = _text(raw_id, 128)
    if sg_event_id is None:
        return Rejection(index, "sg_event_id missing or not a string of 1-128 characters")
    name = _text(item.get("event"), 32)
    if name is None:
        return Rejection(index, "event missing or not a string of 1-32 characters", sg_event_id)
    stamp = item.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return Rejection(index, "timestamp missing or not Unix seconds", sg_event_id)
    if not 0 <= stamp < _LATEST_TIMESTAMP:
        return Rejection(index, f"timestamp {stamp} is out of range", sg_event_id)
    provider_id = _text(item.get("sg_message_id"), 256)
    return WebhookEvent(
        index=index,
        sg_event_id=sg_event_id,
        event=name,
        email=_text(item.get("email"), 320),
        occurred_at=datetime.fromtimestamp(stamp, UTC),
        message_uid=_text(item.get(MESSAGE_ID_ARG), 36),
        provider_message_id=provider_id.split(".", 1)[0] if provider_id else None,
        payload=item,
    )


@dataclass
class IngestReport:
    """What one batch of events did."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    matched: int = 0
    status_updates: int = 0
    reconciled: int = 0
    suppressions_added: int = 0
    suppressions_lifted: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "matched": self.matched,
            "status_updates": self.status_updates,
            "reconciled": self.reconciled,
            "suppressions_added": self.suppressions_added,
            "suppressions_lifted": self.suppressions_lifted,
            "rejected": [r.as_dict() for r in self.rejected[:100]],
            "rejected_count": len(self.rejected),
        }


@dataclass(frozen=True, slots=True)
class _Target:
    """The outbox message an event belongs to."""

    id: int
    status: str


def _chunks(items: Sequence[Any], size: int = LOOKUP_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _dialect_insert(connection: Connection, table: Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _find_messages(connection: Connection, events: Sequence[WebhookEvent]) -> dict[str, _Target]:
    """Outbox messages by our uid, and by SendGrid's message id (prefixed ``sg:``)."""
    found: dict[str, _Target] = {}
    uids = sorted({e.message_uid for e in events if e.message_uid})
    for part in _chunks(uids):
        for message_id, uid, state in connection.execute(
            select(Message.id, Message.uid, Message.status).where(Message.uid.in_(part))
        ):
            found[uid] = _Target(message_id, state)
    orphans = sorted(
        {
            e.provider_message_id
            for e in events
            if e.provider_message_id and (e.message_uid is None or e.message_uid not in found)
        }
    )
    for part in _chunks(orphans):
        for message_id, provider_id, state in connection.execute(
            select(Message.id, Message.provider_message_id, Message.status).where(
                Message.provider_message_id.in_(part)
            )
        ):
            found[f"sg:{provider_id}"] = _Target(message_id, state)
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
    _reconcile_sends(connection, fresh, targets, report)
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


def _reconcile_sends(
    connection: Connection,
    fresh: Sequence[WebhookEvent],
    targets: Mapping[str, _Target | None],
    report: IngestReport,
) -> None:
    """Ambiguous (or still sending) messages that SendGrid reports on were sent: mark them
    ``sent`` at the time of their earliest event."""
    provider_ids: dict[int, str | None] = {}
    for event in fresh:
        target = targets[event.sg_event_id]
        reconcilable = target is not None and target.status in rules.RECONCILABLE_STATUSES
        if target is not None and reconcilable and provider_ids.get(target.id) is None:
            provider_ids[target.id] = event.provider_message_id
    if not provider_ids:
        return
    messages = table_of(Message)
    earliest = (
        select(func.min(DeliveryEvent.occurred_at))
        .where(DeliveryEvent.message_id == messages.c.id)
        .scalar_subquery()
    )
    statement = (
        update(messages)
        .where(
            messages.c.id == bindparam("_id"),
            or_(*(messages.c.status == state for state in rules.RECONCILABLE_STATUSES)),
        )
        .values(
            status="sent",
            sent_at=earliest,
            provider=func.coalesce(messages.c.provider, "sendgrid"),
            provider_message_id=func.coalesce(
                messages.c.provider_message_id,
                bindparam("_pid", type_=messages.c.provider_message_id.type),
            ),
            error=None,
        )
    )
    params = [{"_id": i, "_pid": pid} for i, pid in sorted(provider_ids.items())]
    result = connection.execute(statement, params)
    report.reconciled = max(result.rowcount, 0)


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
        _dialect_insert(connection, table)
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
    for part in _chunks(emails):
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
        if name == "group_unsubscribe":
            unsubscribed[email] = min(at, unsubscribed.get(email, at))
    resubscribed = sorted({email for email, _ in latest} - set(unsubscribed))
    if unsubscribed:
        report.suppressions_added += _insert_suppressions(
            connection,
            [
                {
                    "email": email,
                    "reason": "group_unsubscribe",
                    "source": SUPPRESSION_SOURCE,
                    "created_at": at,
                }
                for email, at in sorted(unsubscribed.items())
            ],
        )
    for part in _chunks(resubscribed):
        result = connection.execute(
            delete(Suppression).where(
                Suppression.email.in_(part), Suppression.reason == "group_unsubscribe"
            )
        )
        report.suppressions_lifted += max(result.rowcount, 0)


# ------------------------------------------------------------------------------ HTTP endpoint


def handle_request(
    web: WebContext,
    verifier: SignatureVerifier,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
) -> IngestReport:
    """Verify, parse and ingest one webhook request in one transaction (committed on
    return). Raises SignatureError or MalformedBody before anything is written."""
    now = web.now()
    verifier.verify(body, signature, timestamp, now)
    items = parse_body(body)
    with web.engine.begin() as connection:
        return ingest_events(connection, items, now)


def routes(verifier: SignatureVerifier | None) -> list[Route]:
    """``POST /webhooks/sendgrid``.

    Answers: 200 once every event is committed; 400 for a body that is not a JSON array
    (nothing stored) or with invalid items (the valid ones are committed, the invalid ones
    listed); 403 for a missing, bad or stale signature; 413 past ``MAX_BODY_BYTES``; 500 when
    the database fails (nothing committed: SendGrid retries); 503 when no verification key is
    configured (SendGrid retries until it is).
    """

    async def sendgrid_events(request: Request) -> Response:
        web = context_of(request)
        if verifier is None:
            return json_response(
                {"error": "CICLOVITA_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: cannot verify"},
                503,
            )
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return json_response({"error": str(exc)}, 413)
        try:
            report = await run_in_threadpool(
                handle_request,
                web,
                verifier,
                body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
            )
        except SignatureError as exc:
            log.warning("webhook request refused: %s", exc)
            return json_response({"error": "forbidden", "reason": str(exc)}, 403)
        except MalformedBody as exc:
            log.warning("webhook body refused: %s", exc)
            return json_response({"error": "malformed body", "reason": str(exc)}, 400)
        except SQLAlchemyError:
            log.exception("webhook batch not stored (SendGrid will retry)")
            return json_response({"error": "database error: nothing stored, retry"}, 500)
        if report.rejected:
            log.warning(
                "webhook: %d of %d events rejected (first: %s); the %d valid ones are stored",
                len(report.rejected),
                report.received,
                report.rejected[0].reason,
                report.received - len(report.rejected),
            )
            return json_response(report.as_dict(), 400)
        log.debug("webhook: %s", report.as_dict())
        return json_response(report.as_dict(), 200)

    return [Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"], name="sendgrid")]
