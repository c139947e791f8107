"""SendGrid's Event Webhook batches: parsed and checked, event by event.

:func:`parse_body` turns a request body into its items (a JSON array, or ``MalformedBody``:
nothing of it is stored); :func:`validate_event` turns each item into a
:class:`WebhookEvent` or says why it is rejected (not an object, no ``sg_event_id``, no
``event``, no usable ``timestamp``, text no database can store). A malformed item never
costs the good ones of its batch. What each event does is ``event_rules``; applying a batch
is ``event_effects``; the HTTP endpoint that receives it is ``ciclovita.web.webhook``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG, SendGridSender

EVENTS_PROVIDER: Final = SendGridSender.name
"""Whose events the webhook stores (what a message settled by its events records as its
provider)."""
_LATEST_TIMESTAMP: Final = 32_503_680_000  # 3000-01-01: later is not a real event time
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class MalformedBody(Exception):  # noqa: N818 - says what the body is
    """The body is not a JSON array of events (answered 400; nothing is stored)."""


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
