"""A local, SendGrid-compatible HTTP server for tests and benchmarks.

The official ``sendgrid`` client is pointed at it over real HTTP::

    with FakeSendGrid() as fake:
        client = SendGridAPIClient(api_key="SG.test", host=fake.url)
        client.send(mail)
        assert fake.accepted_ids() == ["msg-1"]

What it implements
------------------
``POST /v3/mail/send`` like SendGrid's v3 API: the ``Authorization: Bearer <key>`` header
is required (401 otherwise), the JSON body is checked against SendGrid's documented limits
(400 with SendGrid's ``{"errors": [{"message", "field", "help"}]}`` body: missing
personalizations/to/from/content/subject, more than 1000 personalizations, more than 1000
recipients, duplicate addresses in one personalization, more than 10 categories, custom_args
of one message over 10,000 bytes, ``send_at`` more than 72 h ahead; 413 over 30 MB), and a
valid request answers ``202`` with an empty body and a unique ``X-Message-Id`` header.
``Content-Encoding: gzip`` bodies are accepted, as SendGrid does for large senders.

Every request is recorded (:class:`RecordedRequest`); accepted and rejected ones are kept in
separate lists so a test can assert "accepted exactly once per message" even when the code
under test retried after failures.

Fault injection
---------------
A script of rules is consumed by incoming mail/send requests, first matching rule first::

    fake.enqueue(rate_limit(2.0), server_error())        # next two requests fail, in order
    fake.script(bad_request("nope"), message_id="m-7")    # the next request carrying m-7
    fake.script(delay(0.5), times=None)                   # every request, until reset()
    fake.script(drop_connection(after_accept=True), recipient="x@example.com")

Behaviours: :func:`rate_limit` (429 with ``X-RateLimit-*`` headers), :func:`server_error`,
:func:`bad_request`, :func:`delay` (slow answer, then normal processing or another
behaviour) and :func:`drop_connection` (close the socket without answering; with
``after_accept=True`` the message counts as accepted first: the "SendGrid took it but the
answer was lost" case that makes naive retries deliver twice). There is also a global
``latency`` (added to every mail/send request, e.g. 0.1 s to emulate the network) and an
optional fixed-window rate limiter (:meth:`SendGridDouble.set_rate_limit`).

Two ways to run
---------------
* :class:`FakeSendGrid`: in this process, on an asyncio loop in a daemon thread.
* :class:`FakeSendGridProcess`: in a child process (``python -m tests.support.fake_sendgrid
  --port 0 --port-file F``), so a benchmark does not share the GIL with the code under test.
  It is driven through a small JSON control API on the same server (``GET /__fake/stats``,
  ``GET /__fake/requests``, ``GET /__fake/ids``, ``POST /__fake/script``, ``POST
  /__fake/latency``, ``POST /__fake/rate_limit``, ``POST /__fake/reset``, ``POST
  /__fake/shutdown``) and offers the same methods as :class:`FakeSendGrid`.

With ``keep_bodies=False`` only the per-personalization ids (``custom_args[id_key]``),
counts and outcome are kept per request, which keeps 100,000-request benchmarks light.

The server is a small HTTP/1.1 implementation on an ``asyncio.Protocol`` (stdlib only, keep-alive
and ``Expect: 100-continue`` supported, chunked bodies answered 411). It costs about 0.25-0.3 ms
of CPU per request, half of what a bare ``http.server.ThreadingHTTPServer`` handler costs for the
official client's one connection per request, and a delayed answer is a timer, not a thread.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import contextlib
import email.utils
import gzip
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

__all__ = [
    "DEFAULT_ID_KEY",
    "MAIL_SEND_PATH",
    "ApiError",
    "Behaviour",
    "FakeSendGrid",
    "FakeSendGridProcess",
    "FakeStats",
    "RecordedRequest",
    "SendGridDouble",
    "bad_request",
    "delay",
    "drop_connection",
    "rate_limit",
    "server_error",
    "validate_mail_send",
]

DEFAULT_ID_KEY = "ciclovita_message_id"
MAIL_SEND_PATH = "/v3/mail/send"
CONTROL_PREFIX = "/__fake/"

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_SEND_AT_AHEAD_SECONDS = 72 * 3600
_MAX_HEAD_BYTES = 1024 * 1024

_HELP = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors"
_REPO_ROOT = Path(__file__).resolve().parents[2]

BehaviourKind = Literal["rate_limit", "server_error", "bad_request", "delay", "drop_connection"]
Outcome = Literal["accepted", "rejected", "dropped"]
Which = Literal["all", "accepted", "rejected"]
_BEHAVIOUR_KINDS: frozenset[str] = frozenset(
    ("rate_limit", "server_error", "bad_request", "delay", "drop_connection")
)


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of SendGrid's ``{"errors": [...]}`` response body."""

    message: str
    field: str | None = None
    help: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """The JSON object SendGrid puts in its ``errors`` array."""
        return {"message": self.message, "field": self.field, "help": self.help}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A scripted answer for one request; build it with the module's factory functions."""

    kind: BehaviourKind
    status: int = 0
    message: str = ""
    field: str | None = None
    seconds: float = 0.0
    limit: int = 0
    after_accept: bool = False
    then: Behaviour | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as sent to the control API."""
        return {
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "field": self.field,
            "seconds": self.seconds,
            "limit": self.limit,
            "after_accept": self.after_accept,
            "then": None if self.then is None else self.then.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Behaviour:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on an unknown kind."""
        kind = str(data["kind"])
        if kind not in _BEHAVIOUR_KINDS:
            raise ValueError(f"unknown behaviour kind {kind!r}")
        then = data.get("then")
        return cls(
            kind=cast(BehaviourKind, kind),
            status=int(data.get("status", 0)),
            message=str(data.get("message", "")),
            field=None if data.get("field") is None else str(data["field"]),
            seconds=float(data.get("seconds", 0.0)),
            limit=int(data.get("limit", 0)),
            after_accept=bool(data.get("after_accept", False)),
            then=None if then is None else cls.from_dict(then),
        )


def rate_limit(reset_in_seconds: float = 1.0, *, limit: int = 600) -> Behaviour:
    """Answer 429 with ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and
    ``X-RateLimit-Reset`` (Unix time, ``reset_in_seconds`` from now, rounded up)."""
    if reset_in_seconds < 0:
        raise ValueError("reset_in_seconds must be >= 0")
    return Behaviour(kind="rate_limit", status=429, seconds=reset_in_seconds, limit=limit)


def server_error(status: int = 500, message: str = "internal server error") -> Behaviour:
    """Answer a 5xx status (500 by default) with a SendGrid-style error body."""
    if not 500 <= status <= 599:
        raise ValueError(f"server_error needs a 5xx status, got {status}")
    return Behaviour(kind="server_error", status=status, message=message)


def bad_request(message: str = "invalid request", field: str | None = None) -> Behaviour:
    """Answer 400 with a SendGrid-style error body carrying ``message`` and ``field``."""
    return Behaviour(kind="bad_request", status=400, message=message, field=field)


def delay(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before answering; then process normally, or apply ``then``."""
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    if then is not None and then.kind == "delay":
        raise ValueError("delay(then=delay(...)) is not supported: add the seconds instead")
    return Behaviour(kind="delay", seconds=seconds, then=then)


def drop_connection(*, after_accept: bool = False) -> Behaviour:
    """Close the connection without answering.

    With ``after_accept=True`` a valid request is first recorded as accepted (as if SendGrid
    queued the mail and the answer was lost on the way back): a client that retries then
    sends the same message twice.
    """
    return Behaviour(kind="drop_connection", after_accept=after_accept)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request to ``/v3/...`` as the fake saw and answered it."""

    seq: int
    received_at: float
    responded_at: float
    method: str
    path: str
    status: int
    outcome: Outcome
    answered: bool
    message_id: str | None
    injected: str | None
    errors: tuple[ApiError, ...]
    ids: tuple[str, ...]
    personalizations: int
    recipients: int
    headers: dict[str, str] | None
    body: Any = None

    @property
    def accepted(self) -> bool:
        """True when SendGrid would have queued the mail (202, or accepted then dropped)."""
        return self.outcome == "accepted"

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name (None if headers were not kept)."""
        if self.headers is None:
            return None
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def recipient_emails(self) -> list[str]:
        """Every to/cc/bcc address of the request, in order (needs the body)."""
        if self.body is None:
            raise ValueError("the request body was not kept (keep_bodies=False)")
        return _recipient_emails(self.body)

    def ids_for(self, key: str) -> list[str]:
        """Per-personalization ``custom_args[key]`` values (needs the body)."""
        if self.body is None:
            raise ValueError("the request body was not kept (keep_bodies=False)")
        return _personalization_ids(self.body, key)

    def to_dict(self, *, include_body: bool = True) -> dict[str, Any]:
        """JSON form, as served by ``GET /__fake/requests``."""
        return {
            "seq": self.seq,
            "received_at": self.received_at,
            "responded_at": self.responded_at,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "outcome": self.outcome,
            "answered": self.answered,
            "message_id": self.message_id,
            "injected": self.injected,
            "errors": [e.to_dict() for e in self.errors],
            "ids": list(self.ids),
            "personalizations": self.personalizations,
            "recipients": self.recipients,
            "headers": self.headers,
            "body": self.body if include_body else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedRequest:
        """Inverse of :meth:`to_dict`."""
        return cls(
            seq=int(data["seq"]),
            received_at=float(data["received_at"]),
            responded_at=float(data["responded_at"]),
            method=str(data["method"]),
            path=str(data["path"]),
            status=int(data["status"]),
            outcome=cast(Outcome, data["outcome"]),
            answered=bool(data["answered"]),
            message_id=data.get("message_id"),
            injected=data.get("injected"),
            errors=tuple(
                ApiError(str(e["message"]), e.get("field"), e.get("help"))
                for e in data.get("errors", [])
            ),
            ids=tuple(str(i) for i in data.get("ids", [])),
            personalizations=int(data.get("personalizations", 0)),
            recipients=int(data.get("recipients", 0)),
            headers=data.get("headers"),
            body=data.get("body"),
        )


@dataclass(frozen=True, slots=True)
class FakeStats:
    """Counters of the fake since start (or the last :meth:`SendGridDouble.reset`)."""

    requests: int
    accepted: int
    rejected: int
    dropped: int
    by_status: dict[int, int]
    injected: dict[str, int]
    accepted_personalizations: int
    accepted_recipients: int
    pending_rules: int
    in_flight: int
    max_in_flight: int
    latency: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as served by ``GET /__fake/stats``."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "injected": dict(self.injected),
            "accepted_personalizations": self.accepted_personalizations,
            "accepted_recipients": self.accepted_recipients,
            "pending_rules": self.pending_rules,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "latency": self.latency,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FakeStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            requests=int(data["requests"]),
            accepted=int(data["accepted"]),
            rejected=int(data["rejected"]),
            dropped=int(data["dropped"]),
            by_status={int(k): int(v) for k, v in data["by_status"].items()},
            injected={str(k): int(v) for k, v in data["injected"].items()},
            accepted_personalizations=int(data["accepted_personalizations"]),
            accepted_recipients=int(data["accepted_recipients"]),
            pending_rules=int(data["pending_rules"]),
            in_flight=int(data["in_flight"]),
            max_in_flight=int(data["max_in_flight"]),
            latency=float(data["latency"]),
        )


# --------------------------------------------------------------------------------------------
# Mail body inspection and validation
# --------------------------------------------------------------------------------------------


def _personalizations(body: Any) -> list[Any]:
    if isinstance(body, dict):
        pers = body.get("personalizations")
        if isinstance(pers, list):
            return pers
    return []


def _address_lists(personalization: Any) -> Iterator[tuple[str, list[Any]]]:
    if not isinstance(personalization, dict):
        return
    for kind in ("to", "cc", "bcc"):
        value = personalization.get(kind)
        if isinstance(value, list):
            yield kind, value


def _recipient_emails(body: Any) -> list[str]:
    emails: list[str] = []
    for pers in _personalizations(body):
        for _kind, addresses in _address_lists(pers):
            for address in addresses:
                if isinstance(address, dict) and isinstance(address.get("email"), str):
                    emails.append(address["email"])
    return emails


def _count_recipients(body: Any) -> int:
    return sum(
        len(addresses)
        for pers in _personalizations(body)
        for _kind, addresses in _address_lists(pers)
    )


def _personalization_ids(body: Any, key: str) -> list[str]:
    """``custom_args[key]`` of each personalization, falling back to the top-level value."""
    top = body.get("custom_args") if isinstance(body, dict) else None
    default = top.get(key) if isinstance(top, dict) else None
    ids: list[str] = []
    for pers in _personalizations(body):
        value = default
        if isinstance(pers, dict):
            args = pers.get("custom_args")
            if isinstance(args, dict) and key in args:
                value = args[key]
        if value is not None:
            ids.append(str(value))
    return ids


def _has_custom_arg(body: Any, key: str, value: str) -> bool:
    return value in _personalization_ids(body, key)


def _has_recipient(body: Any, email_address: str) -> bool:
    wanted = email_address.lower()
    return any(e.lower() == wanted for e in _recipient_emails(body))


_EMAIL_RE = re.compile(r"[^\s@,;<>]+@[^\s@,;<>.][^\s@,;<>]*\.[^\s@,;<>]+")


def _valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _EMAIL_RE.fullmatch(value) is not None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def validate_mail_send(body: Any, *, now: float | None = None) -> list[ApiError]:
    """Check a parsed ``/v3/mail/send`` body against SendGrid's documented rules.

    Returns SendGrid-style errors (empty when the body is acceptable). ``custom_args`` are
    measured per resulting message (top-level merged with the personalization's), as their
    compact JSON encoding, which is at least as strict as SendGrid's byte count.
    """
    if not isinstance(body, dict):
        return [ApiError("Bad Request: the request body must be a JSON object.", None, _HELP)]
    now = time.time() if now is None else now
    errors: list[ApiError] = []

    def err(message: str, field: str | None) -> None:
        errors.append(ApiError(message, field, f"{_HELP}#{field or 'body'}"))

    template = _nonempty_str(body.get("template_id"))
    top_args = body.get("custom_args")
    if top_args is not None and not isinstance(top_args, dict):
        err(
            "Invalid type. Expected: object, given: " + type(top_args).__name__ + ".", "custom_args"
        )
        top_args = None

    pers_list = body.get("personalizations")
    every_pers_has_subject = False
    if not isinstance(pers_list, list) or not pers_list:
        err("You must have at least one personalization.", "personalizations")
    elif len(pers_list) > MAX_PERSONALIZATIONS:
        err(
            f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations "
            f"per API request. You have provided {len(pers_list)} personalizations. Please "
            "consider splitting this into multiple requests and resending your request.",
            "personalizations",
        )
    else:
        every_pers_has_subject = True
        total_recipients = 0
        for i, pers in enumerate(pers_list):
            where = f"personalizations.{i}"
            if not isinstance(pers, dict):
                err("Each personalization must be a JSON object.", where)
                every_pers_has_subject = False
                continue
            if not _nonempty_str(pers.get("subject")):
                every_pers_has_subject = False
            to = pers.get("to")
            if not isinstance(to, list) or not to:
                err(
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                    f"{where}.to",
                )
            seen: set[str] = set()
            for kind, addresses in _address_lists(pers):
                total_recipients += len(addresses)
                for j, address in enumerate(addresses):
                    email_value = address.get("email") if isinstance(address, dict) else None
                    if not _valid_email(email_value):
                        err("Does not contain a valid address.", f"{where}.{kind}.{j}.email")
                        continue
                    lowered = str(email_value).lower()
                    if lowered in seen:
                        err(
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc. We found the first duplicate instance of "
                            f"[{email_value}] in the {where}.{kind} field.",
                            where,
                        )
                    seen.add(lowered)
            args = pers.get("custom_args")
            if args is not None and not isinstance(args, dict):
                err("Invalid type. Expected: object.", f"{where}.custom_args")
                args = None
            merged = {**(top_args or {}), **(args or {})}
            if merged and _json_size(merged) > MAX_CUSTOM_ARGS_BYTES:
                err(
                    f"The custom_args of a message must total less than {MAX_CUSTOM_ARGS_BYTES} "
                    "bytes.",
                    f"{where}.custom_args",
                )
            send_at = pers.get("send_at")
            if send_at is not None:
                _check_send_at(send_at, now, f"{where}.send_at", err)
        if total_recipients > MAX_RECIPIENTS:
            err(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                f"request. You have provided {total_recipients}.",
                "personalizations",
            )

    sender = body.get("from")
    if not isinstance(sender, dict) or not _valid_email(sender.get("email")):
        err(
            "The from object must be provided for every email send. It is an object that "
            'requires the email parameter, e.g. {"email": "example@example.com"}.',
            "from.email",
        )

    if not template:
        content = body.get("content")
        if not isinstance(content, list) or not content:
            err(
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
                "content",
            )
        else:
            for i, block in enumerate(content):
                if not isinstance(block, dict) or not _nonempty_str(block.get("type")):
                    err("The content type must be a string.", f"content.{i}.type")
                elif not isinstance(block.get("value"), str) or block.get("value") == "":
                    err(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                    )
        if not _nonempty_str(body.get("subject")) and not every_pers_has_subject:
            err(
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
            )

    categories = body.get("categories")
    if categories is not None:
        if not isinstance(categories, list):
            err("The categories parameter must be an array of strings.", "categories")
        elif len(categories) > MAX_CATEGORIES:
            err(
                f"You may not have more than {MAX_CATEGORIES} categories per request. "
                f"You have provided {len(categories)}.",
                "categories",
            )
        else:
            for i, category in enumerate(categories):
                if not isinstance(category, str) or len(category) > MAX_CATEGORY_LENGTH:
                    err(
                        f"A category must be a string of at most {MAX_CATEGORY_LENGTH} characters.",
                        f"categories.{i}",
                    )
    if top_args and _json_size(top_args) > MAX_CUSTOM_ARGS_BYTES:
        err(
            f"The custom_args must total less than {MAX_CUSTOM_ARGS_BYTES} bytes.",
            "custom_args",
        )
    if body.get("send_at") is not None:
        _check_send_at(body["send_at"], now, "send_at", err)
    return errors


def _check_send_at(
    value: Any, now: float, where: str, err: Callable[[str, str | None], None]
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        err("send_at must be a Unix timestamp (integer).", where)
    elif value > now + MAX_SEND_AT_AHEAD_SECONDS:
        err("You cannot schedule a send more than 72 hours in advance.", where)


# --------------------------------------------------------------------------------------------
# Shared state (thread safe)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Rule:
    behaviour: Behaviour
    remaining: int | None
    custom_arg: tuple[str, str] | None
    recipient: str | None

    def matches(self, body: Any) -> bool:
        if self.custom_arg is not None and not _has_custom_arg(body, *self.custom_arg):
            return False
        return self.recipient is None or _has_recipient(body, self.recipient)

    def to_dict(self) -> dict[str, Any]:
        return {
            "behaviour": self.behaviour.to_dict(),
            "times": self.remaining,
            "custom_arg": None if self.custom_arg is None else list(self.custom_arg),
            "recipient": self.recipient,
        }


@dataclass(slots=True)
class _Window:
    limit: int
    seconds: float
    start: float = 0.0
    used: int = 0


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    dropped: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    accepted_personalizations: int = 0
    accepted_recipients: int = 0
    max_in_flight: int = 0


class _State:
    """Records, script and settings, shared by the server loop and the controlling thread."""

    def __init__(
        self, *, keep_bodies: bool, id_key: str, latency: float, api_key: str | None
    ) -> None:
        self.keep_bodies = keep_bodies
        self.id_key = id_key
        self.api_key = api_key
        self.latency = float(latency)
        self._lock = threading.Lock()
        self._seq = 0
        self._in_flight = 0
        self._records: list[RecordedRequest] = []
        self._accepted: list[RecordedRequest] = []
        self._rejected: list[RecordedRequest] = []
        self._accepted_ids: list[str] = []
        self._rules: list[_Rule] = []
        self._window: _Window | None = None
        self._counters = _Counters()

    # -- called by the server ----------------------------------------------------------------

    def begin(self) -> int:
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            if self._in_flight > self._counters.max_in_flight:
                self._counters.max_in_flight = self._in_flight
            return self._seq

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def take_behaviour(self, body: Any) -> Behaviour | None:
        """Consume the first script rule matching this request, if any."""
        if not self._rules:
            return None
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.matches(body):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            del self._rules[index]
                    return rule.behaviour
        return None

    def window_reset_at(self, now: float) -> tuple[int, float] | None:
        """Apply the fixed-window limiter; returns (limit, reset time) when over it."""
        window = self._window
        if window is None:
            return None
        with self._lock:
            if now >= window.start + window.seconds:
                window.start = now - (now % window.seconds)
                window.used = 0
            if window.used >= window.limit:
                return window.limit, window.start + window.seconds
            window.used += 1
            return None

    def record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._records.append(rec)
            c = self._counters
            c.requests += 1
            c.by_status[rec.status] += 1
            if rec.injected:
                c.injected[rec.injected] += 1
            if rec.outcome == "accepted":
                c.accepted += 1
                c.accepted_personalizations += rec.personalizations
                c.accepted_recipients += rec.recipients
                self._accepted.append(rec)
                self._accepted_ids.extend(rec.ids)
            else:
                c.rejected += 1
                if rec.outcome == "dropped":
                    c.dropped += 1
                self._rejected.append(rec)

    # -- called by the controlling side ------------------------------------------------------

    def add_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def set_window(self, limit: int | None, seconds: float) -> None:
        if limit is not None and (limit < 0 or seconds <= 0):
            raise ValueError("the rate limit needs limit >= 0 and window_seconds > 0")
        with self._lock:
            self._window = None if limit is None else _Window(limit=limit, seconds=seconds)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._accepted.clear()
            self._rejected.clear()
            self._accepted_ids.clear()
            self._rules.clear()
            self._counters = _Counters(max_in_flight=self._in_flight)
            if self._window is not None:
                self._window.used = 0

    def records(self, which: Which) -> list[RecordedRequest]:
        with self._lock:
            if which == "accepted":
                return list(self._accepted)
            if which == "rejected":
                return list(self._rejected)
            return list(self._records)

    def accepted_ids(self, key: str | None) -> list[str]:
        with self._lock:
            if key is None or key == self.id_key:
                return list(self._accepted_ids)
            accepted = list(self._accepted)
        if not self.keep_bodies:
            raise ValueError(
                f"ids are only extracted for id_key={self.id_key!r} when keep_bodies=False"
            )
        return [i for rec in accepted for i in _personalization_ids(rec.body, key)]

    def pending_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def stats(self) -> FakeStats:
        with self._lock:
            c = self._counters
            return FakeStats(
                requests=c.requests,
                accepted=c.accepted,
                rejected=c.rejected,
                dropped=c.dropped,
                by_status=dict(c.by_status),
                injected=dict(c.injected),
                accepted_personalizations=c.accepted_personalizations,
                accepted_recipients=c.accepted_recipients,
                pending_rules=len(self._rules),
                in_flight=self._in_flight,
                max_in_flight=c.max_in_flight,
                latency=self.latency,
            )


def _make_rule(
    behaviour: Behaviour,
    times: int | None,
    custom_arg: tuple[str, str] | None,
    message_id: str | None,
    recipient: str | None,
    id_key: str,
) -> _Rule:
    if times is not None and times < 1:
        raise ValueError("times must be >= 1, or None for every matching request")
    if message_id is not None:
        if custom_arg is not None:
            raise ValueError("give message_id or custom_arg, not both")
        custom_arg = (id_key, message_id)
    return _Rule(behaviour=behaviour, remaining=times, custom_arg=custom_arg, recipient=recipient)


# --------------------------------------------------------------------------------------------
# HTTP server (asyncio protocol)
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    lower: dict[str, str]
    body: bytes
    received_at: float
    path: str = ""
    seq: int = 0
    counted: bool = False


@dataclass(slots=True)
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    drop: bool = False
    close: bool = False


@dataclass(slots=True)
class _Later:
    """An answer decided ``seconds`` from now by calling ``then`` (latency, delay())."""

    seconds: float
    then: Callable[[], _Response | _Later]


_Result = _Response | _Later


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _errors_body(*errors: ApiError) -> bytes:
    return json.dumps({"errors": [e.to_dict() for e in errors]}).encode()


def _error_response(status: int, *errors: ApiError, close: bool = False) -> _Response:
    return _Response(
        status, [("Content-Type", "application/json")], _errors_body(*errors), close=close
    )


def _json_response(data: Any, status: int = 200) -> _Response:
    return _Response(status, [("Content-Type", "application/json")], json.dumps(data).encode())


def _new_message_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).decode("ascii").rstrip("=")


_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _DateCache:
    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True)
        return self._value


class _Connection(asyncio.Protocol):
    """One client connection: parses HTTP/1.1 requests and writes the answers in order."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.sent_continue = False
        # The request being answered later (latency, delay()) and its timer.
        self.waiting: _Request | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # A request being delayed goes on: SendGrid would still queue a mail whose client
        # gave up waiting, which is exactly the case a retry-after-timeout test needs.
        self.closed = True
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiting is None:
            self._process()

    def _process(self) -> None:
        while not self.closed:
            try:
                request = self._parse()
            except _HTTPError as exc:
                self._send(_error_response(exc.status, ApiError(exc.message), close=True), None)
                return
            if request is None:
                return
            if not self._answer(request, self.server.handle):
                return

    def _answer(self, request: _Request, decide: Callable[[_Request], _Result]) -> bool:
        """Answer now, or schedule the answer; returns whether to go on reading requests."""
        try:
            result = decide(request)
        except Exception as exc:  # noqa: BLE001 - a bug in the fake must not hang clients
            print(f"fake SendGrid internal error: {exc!r}", file=sys.stderr)
            result = _error_response(500, ApiError(f"fake SendGrid internal error: {exc!r}"))
        if isinstance(result, _Later):
            self.waiting = request
            self.timer = self.server.loop.call_later(result.seconds, self._resume, result)
            self.server.waiting.add(self)
            return False
        return self._send(result, request)

    def _resume(self, later: _Later) -> None:
        request = self.waiting
        self.waiting = self.timer = None
        self.server.waiting.discard(self)
        if request is not None and self._answer(request, lambda _r: later.then()):
            self._process()

    def cancel(self) -> None:
        """Abandon a scheduled answer (server shutdown)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.waiting is not None and self.waiting.counted:
            self.server.state.end()
        self.waiting = self.timer = None

    def _parse(self) -> _Request | None:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise _HTTPError(431, "request headers too large")
            return None
        lines = buffer[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _HTTPError(400, "malformed request line")
        headers: dict[str, str] = {}
        lower: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _HTTPError(400, "malformed header line")
            name = name.strip()
            value = value.strip()
            headers[name] = value
            lower[name.lower()] = value
        if "transfer-encoding" in lower:
            raise _HTTPError(411, "send the body with a Content-Length")
        try:
            length = int(lower.get("content-length", "0"))
        except ValueError as exc:
            raise _HTTPError(400, "invalid Content-Length") from exc
        if length > MAX_BODY_BYTES:
            raise _HTTPError(413, "content too large")
        start = end + 4
        if len(buffer) < start + length:
            expect = lower.get("expect", "").lower() == "100-continue"
            if expect and not self.sent_continue and self.transport is not None:
                self.sent_continue = True
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        self.sent_continue = False
        return _Request(parts[0], parts[1], parts[2], headers, lower, body, time.time())

    def _send(self, response: _Response, request: _Request | None) -> bool:
        """Write (or drop) the answer; returns whether the connection stays open."""
        if request is not None and request.counted:
            self.server.state.end()
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return False
        if response.drop:
            transport.abort()
            self.closed = True
            return False
        keep_alive = not response.close and request is not None and _keep_alive(request)
        transport.write(self.server.serialize(response, keep_alive))
        if not keep_alive:
            transport.close()
            self.closed = True
        return keep_alive


def _keep_alive(request: _Request) -> bool:
    connection = request.lower.get("connection", "").lower()
    if request.version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


class _Server:
    """The HTTP server: ``/v3/mail/send`` plus the ``/__fake/`` control API."""

    def __init__(self, state: _State, host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.connections: set[_Connection] = set()
        self.shutdown_requested: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self.waiting: set[_Connection] = set()
        self._date = _DateCache()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> int:
        self.shutdown_requested = asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for connection in list(self.waiting):
            connection.cancel()
        self.waiting.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("server not started")
        return self._loop

    def serialize(self, response: _Response, keep_alive: bool) -> bytes:
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
            f"Server: fake-sendgrid\r\nDate: {self._date.get()}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        )
        for name, value in response.headers:
            head += f"{name}: {value}\r\n"
        return (head + "\r\n").encode("latin-1") + response.body

    # -- routing -----------------------------------------------------------------------------

    def handle(self, request: _Request) -> _Result:
        path, _, query = request.target.partition("?")
        request.path = path
        if path.startswith(CONTROL_PREFIX):
            try:
                return self._control(request.method, path[len(CONTROL_PREFIX) :], query, request)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                return _json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)
        request.seq = self.state.begin()
        request.counted = True
        if path != MAIL_SEND_PATH:
            return self._reject(request, 404, ApiError("not found"))
        if request.method != "POST":
            return self._reject(request, 405, ApiError("method not allowed"))
        if self.state.latency > 0:
            return _Later(self.state.latency, lambda: self._mail_send(request))
        return self._mail_send(request)

    def _record(
        self,
        request: _Request,
        status: int,
        outcome: Outcome,
        body: Any = None,
        errors: tuple[ApiError, ...] = (),
        *,
        message_id: str | None = None,
        injected: str | None = None,
        answered: bool = True,
    ) -> None:
        state = self.state
        ids: tuple[str, ...] = ()
        personalizations = recipients = 0
        if body is not None:
            ids = tuple(_personalization_ids(body, state.id_key))
            personalizations = len(_personalizations(body))
            recipients = _count_recipients(body)
        keep = state.keep_bodies
        state.record(
            RecordedRequest(
                seq=request.seq,
                received_at=request.received_at,
                responded_at=time.time(),
                method=request.method,
                path=request.path,
                status=status,
                outcome=outcome,
                answered=answered,
                message_id=message_id,
                injected=injected,
                errors=errors,
                ids=ids,
                personalizations=personalizations,
                recipients=recipients,
                headers=dict(request.headers) if keep else None,
                body=body if keep else None,
            )
        )

    def _reject(
        self,
        request: _Request,
        status: int,
        *errors: ApiError,
        body: Any = None,
        injected: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> _Response:
        self._record(request, status, "rejected", body, errors, injected=injected)
        response = _error_response(status, *errors)
        response.headers.extend(headers)
        return response

    # -- mail/send ---------------------------------------------------------------------------

    def _mail_send(self, request: _Request) -> _Result:
        state = self.state
        scheme, _, token = request.lower.get("authorization", "").partition(" ")
        token = token.strip()
        if (
            scheme.lower() != "bearer"
            or token in ("", "None")
            or (state.api_key is not None and token != state.api_key)
        ):
            error = ApiError("The provided authorization grant is invalid, expired, or revoked")
            return self._reject(request, 401, error)

        body: Any = None
        parse_error: str | None = None
        try:
            raw = request.body
            encoding = request.lower.get("content-encoding", "identity").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding != "identity":
                parse_error = f"Unsupported Content-Encoding {encoding!r}."
            if parse_error is None:
                body = json.loads(raw)
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            parse_error = f"Bad Request: the request body is not valid JSON ({exc})."

        behaviour = state.take_behaviour(body)
        if behaviour is None:
            return self._conclude(request, body, parse_error, None, None)
        if behaviour.kind != "delay":
            return self._conclude(request, body, parse_error, behaviour, behaviour.kind)
        then = behaviour.then
        injected = "delay" if then is None else then.kind
        return _Later(
            behaviour.seconds,
            lambda: self._conclude(request, body, parse_error, then, injected),
        )

    def _conclude(
        self,
        request: _Request,
        body: Any,
        parse_error: str | None,
        behaviour: Behaviour | None,
        injected: str | None,
    ) -> _Response:
        if behaviour is None or (behaviour.kind == "drop_connection" and behaviour.after_accept):
            return self._accept_or_reject(request, body, parse_error, behaviour, injected)
        kind = behaviour.kind
        if kind == "drop_connection":
            self._record(request, 0, "dropped", body, injected=kind, answered=False)
            return _Response(0, [], drop=True)
        if kind == "rate_limit":
            return self._rate_limited(
                request, body, behaviour.limit, time.time() + behaviour.seconds, kind
            )
        error = ApiError(behaviour.message, behaviour.field)
        return self._reject(request, behaviour.status, error, body=body, injected=kind)

    def _accept_or_reject(
        self,
        request: _Request,
        body: Any,
        parse_error: str | None,
        behaviour: Behaviour | None,
        injected: str | None,
    ) -> _Response:
        drop = behaviour is not None
        if parse_error is not None:
            errors: tuple[ApiError, ...] = (ApiError(parse_error),)
        else:
            errors = tuple(validate_mail_send(body))
        if errors:
            self._record(
                request, 400, "rejected", body, errors, injected=injected, answered=not drop
            )
            return _Response(0, [], drop=True) if drop else _error_response(400, *errors)
        window = self.state.window_reset_at(time.time())
        if window is not None:
            return self._rate_limited(request, body, window[0], window[1], "rate_window")
        message_id = _new_message_id()
        self._record(
            request, 202, "accepted", body, message_id=message_id, injected=injected,
            answered=not drop,
        )  # fmt: skip
        if drop:
            return _Response(202, [], drop=True)
        return _Response(202, [("X-Message-Id", message_id)])

    def _rate_limited(
        self, request: _Request, body: Any, limit: int, reset_at: float, injected: str
    ) -> _Response:
        headers = [
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", str(math.ceil(reset_at))),
        ]
        error = ApiError("too many requests")
        return self._reject(request, 429, error, body=body, injected=injected, headers=headers)

    # -- control API -------------------------------------------------------------------------

    def _control(self, method: str, name: str, query: str, request: _Request) -> _Response:
        state = self.state
        params = urllib.parse.parse_qs(query)

        def param(key: str, default: str) -> str:
            return params.get(key, [default])[0]

        def payload() -> dict[str, Any]:
            data = json.loads(request.body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the control API takes a JSON object")
            return data

        route = (method, name)
        if route == ("GET", "health"):
            return _json_response({"ok": True, "port": self.port})
        if route == ("GET", "stats"):
            return _json_response(state.stats().to_dict())
        if route == ("GET", "config"):
            return _json_response(
                {"keep_bodies": state.keep_bodies, "id_key": state.id_key, "port": self.port}
            )
        if route == ("GET", "requests"):
            which = param("which", "all")
            if which not in ("all", "accepted", "rejected"):
                raise ValueError(f"which must be all, accepted or rejected, not {which!r}")
            include_body = param("bodies", "1") != "0"
            offset = int(param("offset", "0"))
            records = state.records(cast(Which, which))[offset:]
            return _json_response([r.to_dict(include_body=include_body) for r in records])
        if route == ("GET", "ids"):
            key = params.get("key", [None])[0]
            return _json_response({"ids": state.accepted_ids(key)})
        if route == ("GET", "script"):
            return _json_response({"rules": state.pending_rules()})
        if route == ("POST", "script"):
            data = payload()
            custom_arg = data.get("custom_arg")
            state.add_rule(
                _make_rule(
                    Behaviour.from_dict(data["behaviour"]),
                    None if data.get("times", 1) is None else int(data.get("times", 1)),
                    None if custom_arg is None else (str(custom_arg[0]), str(custom_arg[1])),
                    data.get("message_id"),
                    data.get("recipient"),
                    state.id_key,
                )
            )
            return _json_response({"ok": True, "pending_rules": len(state.pending_rules())})
        if route == ("POST", "latency"):
            seconds = float(payload()["seconds"])
            if seconds < 0:
                raise ValueError("latency must be >= 0")
            state.latency = seconds
            return _json_response({"ok": True, "latency": seconds})
        if route == ("POST", "rate_limit"):
            data = payload()
            limit = data.get("limit")
            state.set_window(
                None if limit is None else int(limit), float(data.get("window_seconds", 1.0))
            )
            return _json_response({"ok": True})
        if route == ("POST", "reset"):
            state.reset()
            return _json_response({"ok": True})
        if route == ("POST", "shutdown"):
            if self.shutdown_requested is not None:
                asyncio.get_running_loop().call_later(0.05, self.shutdown_requested.set)
            return _Response(
                200, [("Content-Type", "application/json")], b'{"ok": true}', close=True
            )
        return _json_response({"error": f"no control route {method} {CONTROL_PREFIX}{name}"}, 404)


# --------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------


class SendGridDouble(abc.ABC):
    """What :class:`FakeSendGrid` and :class:`FakeSendGridProcess` both offer."""

    id_key: str
    keep_bodies: bool

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Base URL to give the client as ``host`` (``http://127.0.0.1:<port>``)."""

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The TCP port the fake listens on."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Start serving; returns self."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop serving (idempotent)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- settings and script -----------------------------------------------------------------

    @abc.abstractmethod
    def script(
        self,
        behaviour: Behaviour,
        times: int | None = 1,
        *,
        custom_arg: tuple[str, str] | None = None,
        message_id: str | None = None,
        recipient: str | None = None,
    ) -> None:
        """Queue a rule: apply ``behaviour`` to the next ``times`` matching mail/send requests.

        ``times=None`` applies it to every matching request until :meth:`reset`. Without a
        filter every request matches; ``message_id`` matches requests whose personalizations
        carry ``custom_args[id_key] == message_id``; ``custom_arg=(key, value)`` any custom
        arg; ``recipient`` any to/cc/bcc address (case-insensitive). Rules are tried in the
        order they were queued and a request consumes at most one.
        """

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Apply each behaviour once, in order, to the next requests (whatever they carry)."""
        for behaviour in behaviours:
            self.script(behaviour)

    @abc.abstractmethod
    def pending_rules(self) -> list[dict[str, Any]]:
        """Script rules not used up yet (JSON form)."""

    @property
    def latency(self) -> float:
        """Seconds added to every mail/send request."""
        return self.stats().latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_latency(seconds)

    @abc.abstractmethod
    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every mail/send request (0 to turn it off)."""

    @abc.abstractmethod
    def set_rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        """Accept at most ``limit`` mails per fixed window, 429 beyond (None: no limit)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget recorded requests, counters and pending script rules (settings stay)."""

    # -- observation -------------------------------------------------------------------------

    @abc.abstractmethod
    def stats(self) -> FakeStats:
        """Counters since start or the last reset."""

    @abc.abstractmethod
    def requests(self, which: Which = "all") -> list[RecordedRequest]:
        """Recorded requests (``all``, ``accepted`` or ``rejected``), in completion order."""

    def accepted(self) -> list[RecordedRequest]:
        """Requests SendGrid would have queued mail for."""
        return self.requests("accepted")

    def rejected(self) -> list[RecordedRequest]:
        """Requests answered 4xx/5xx, or dropped without answer."""
        return self.requests("rejected")

    @abc.abstractmethod
    def accepted_ids(self, key: str | None = None) -> list[str]:
        """``custom_args[key]`` of every accepted personalization (default key: ``id_key``)."""

    def accepted_id_counts(self, key: str | None = None) -> Counter[str]:
        """How many times each id was accepted."""
        return Counter(self.accepted_ids(key))

    def duplicate_ids(self, key: str | None = None) -> dict[str, int]:
        """Ids accepted more than once, with their counts."""
        return {i: n for i, n in self.accepted_id_counts(key).items() if n > 1}

    def accepted_recipients(self) -> list[str]:
        """Every to/cc/bcc address of accepted requests (needs ``keep_bodies=True``)."""
        return [e for rec in self.accepted() for e in rec.recipient_emails()]

    def assert_accepted_once(self, expected_ids: Iterable[str], key: str | None = None) -> None:
        """Fail unless each expected id was accepted exactly once and nothing else was."""
        expected = Counter(expected_ids)
        duplicated_expectation = sorted(i for i, n in expected.items() if n > 1)
        if duplicated_expectation:
            raise ValueError(f"expected ids are not unique: {duplicated_expectation[:10]}")
        counts = self.accepted_id_counts(key)
        missing = sorted(set(expected) - set(counts))
        extra = sorted(set(counts) - set(expected))
        dupes = {i: n for i, n in counts.items() if n > 1}
        if missing or extra or dupes:
            raise AssertionError(
                f"accepted ids differ: {len(missing)} missing {missing[:10]}, {len(extra)} "
                f"unexpected {extra[:10]}, {len(dupes)} duplicated "
                f"{dict(list(dupes.items())[:10])}"
            )

    def wait_for_accepted(self, count: int, timeout: float = 10.0) -> FakeStats:
        """Wait until at least ``count`` requests were accepted; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.accepted >= count:
                return stats
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{stats.accepted} of {count} requests accepted in {timeout}s")
            time.sleep(0.01)

    def wait_idle(self, timeout: float = 10.0) -> FakeStats:
        """Wait until no mail/send request is in flight."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.in_flight == 0:
                return stats
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{stats.in_flight} requests still in flight after {timeout}s")
            time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# In-process server
# --------------------------------------------------------------------------------------------


class FakeSendGrid(SendGridDouble):
    """The fake SendGrid served from a daemon thread of this process.

    ``with FakeSendGrid() as fake: SendGridAPIClient(api_key="SG.test", host=fake.url)``.
    ``api_key``, when given, is the only bearer token accepted (others get 401).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep_bodies: bool = True,
        id_key: str = DEFAULT_ID_KEY,
        latency: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.keep_bodies = keep_bodies
        self.id_key = id_key
        self._requested_port = port
        self._state = _State(
            keep_bodies=keep_bodies, id_key=id_key, latency=latency, api_key=api_key
        )
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSendGrid is not started")
        return self._server.port

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[OSError] = []
        started: list[bool] = []
        server = self._server = _Server(self._state, self.host, self._requested_port)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start())
                stopped = self._stopped = asyncio.Event()
                started.append(True)
            except OSError as exc:  # e.g. the port is taken
                failure.append(exc)
                loop.close()
                return
            finally:
                ready.set()
            try:
                loop.run_until_complete(stopped.wait())
                loop.run_until_complete(server.close())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-sendgrid", daemon=True)
        self._thread.start()
        ready.wait()
        if not started:
            self._thread.join()
            self._thread = None
            cause = failure[0] if failure else None
            raise RuntimeError(f"FakeSendGrid could not start: {cause!r}") from cause
        return self

    def stop(self) -> None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None or loop is None or stopped is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=10)
        self._thread = None

    def script(
        self,
        behaviour: Behaviour,
        times: int | None = 1,
        *,
        custom_arg: tuple[str, str] | None = None,
        message_id: str | None = None,
        recipient: str | None = None,
    ) -> None:
        self._state.add_rule(
            _make_rule(behaviour, times, custom_arg, message_id, recipient, self.id_key)
        )

    def pending_rules(self) -> list[dict[str, Any]]:
        return self._state.pending_rules()

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._state.latency = float(seconds)

    def set_rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        self._state.set_window(limit, window_seconds)

    def reset(self) -> None:
        self._state.reset()

    def stats(self) -> FakeStats:
        return self._state.stats()

    def requests(self, which: Which = "all") -> list[RecordedRequest]:
        return self._state.records(which)

    def accepted_ids(self, key: str | None = None) -> list[str]:
        return self._state.accepted_ids(key)


# --------------------------------------------------------------------------------------------
# Child-process server
# --------------------------------------------------------------------------------------------


class FakeSendGridProcess(SendGridDouble):
    """The fake SendGrid in a child Python process, driven over its control API.

    Same methods as :class:`FakeSendGrid`. Use ``keep_bodies=False`` for large benchmarks:
    records then keep only the ids (``custom_args[id_key]``), counts and outcome.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep_bodies: bool = True,
        id_key: str = DEFAULT_ID_KEY,
        latency: float = 0.0,
        api_key: str | None = None,
        python: str = sys.executable,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.keep_bodies = keep_bodies
        self.id_key = id_key
        self._requested_port = port
        self._latency = latency
        self._api_key = api_key
        self._python = python
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSendGridProcess is not started")
        return self._port

    @property
    def pid(self) -> int | None:
        """The child's process id (None when not running)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-sendgrid-")
        port_file = Path(self._tmpdir.name) / "port"
        self._log_path = Path(self._tmpdir.name) / "server.log"
        cmd = [
            self._python,
            "-m",
            "tests.support.fake_sendgrid",
            "--host",
            self.host,
            "--port",
            str(self._requested_port),
            "--port-file",
            str(port_file),
            "--id-key",
            self.id_key,
            "--latency",
            str(self._latency),
        ]
        if not self.keep_bodies:
            cmd.append("--no-bodies")
        if self._api_key is not None:
            cmd += ["--api-key", self._api_key]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with self._log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=_REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if port_file.exists() and port_file.read_text().strip():
                self._port = int(port_file.read_text().strip())
                break
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log()
                self.stop()
                raise RuntimeError(f"fake SendGrid process did not start:\n{log_text}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        """The child's stdout/stderr so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def stop(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None and self._port is not None:
                with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                    self._call("POST", "shutdown", {}, timeout=2.0)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._port = None

    def _call(
        self,
        method: str,
        name: str,
        payload: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        url = f"{self.url}{CONTROL_PREFIX}{name}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"control API {method} {name} failed: {exc.code} {detail}") from exc

    def script(
        self,
        behaviour: Behaviour,
        times: int | None = 1,
        *,
        custom_arg: tuple[str, str] | None = None,
        message_id: str | None = None,
        recipient: str | None = None,
    ) -> None:
        rule = _make_rule(behaviour, times, custom_arg, message_id, recipient, self.id_key)
        self._call("POST", "script", rule.to_dict())

    def pending_rules(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._call("GET", "script")["rules"])

    def set_latency(self, seconds: float) -> None:
        self._call("POST", "latency", {"seconds": seconds})

    def set_rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        self._call("POST", "rate_limit", {"limit": limit, "window_seconds": window_seconds})

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def stats(self) -> FakeStats:
        return FakeStats.from_dict(self._call("GET", "stats"))

    def requests(self, which: Which = "all", *, bodies: bool = True) -> list[RecordedRequest]:
        data = self._call(
            "GET", "requests", query={"which": which, "bodies": "1" if bodies else "0"}
        )
        return [RecordedRequest.from_dict(item) for item in data]

    def accepted_ids(self, key: str | None = None) -> list[str]:
        query = {} if key is None else {"key": key}
        return [str(i) for i in self._call("GET", "ids", query=query)["ids"]]


# --------------------------------------------------------------------------------------------
# Command line (process mode)
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_sendgrid",
        description="Serve a fake SendGrid v3 mail/send API with a /__fake/ control API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here when ready")
    parser.add_argument("--id-key", default=DEFAULT_ID_KEY, help="custom_args key of your ids")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--api-key", default=None, help="the only bearer token accepted")
    parser.add_argument(
        "--no-bodies", action="store_true", help="keep only ids and counts per request"
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    state = _State(
        keep_bodies=not args.no_bodies,
        id_key=args.id_key,
        latency=args.latency,
        api_key=args.api_key,
    )
    server = _Server(state, args.host, args.port)
    port = await server.start()
    assert server.shutdown_requested is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, server.shutdown_requested.set)
    if args.port_file is not None:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"fake SendGrid listening on http://{args.host}:{port}", file=sys.stderr, flush=True)
    await server.shutdown_requested.wait()
    await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tests.support.fake_sendgrid``."""
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
