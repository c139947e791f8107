"""The fake's HTTP side (a Starlette app) and what it records (a thread-safe :class:`Recorder`).

``POST /v3/mail/send`` checks only what a fake must: a bearer token (401 without one, or
with another than the pinned ``api_key``), a JSON object with a non-empty
``personalizations`` list (400 otherwise). Whether a body is valid SendGrid is the contract
tests' question, answered by Stoplight Prism from SendGrid's own OpenAPI description
(``tests/test_delivery_contract.py``); the fake does not re-implement it. Then the first
matching fault rule, if any, decides the answer; otherwise the mail is accepted: ``202``,
an empty body and a unique ``X-Message-Id``.

Every mail/send request is recorded (:class:`RecordedRequest`) with our message id of each
personalization (``custom_args[id_key]``), its outcome and the fault applied; with
``keep_bodies=False`` the body and headers are not kept (100,000-request benchmarks).

``POST /__fake/<op>`` is the control API a fake in another process is driven through
(:meth:`Recorder.control`); the in-process fake calls the same method directly.

Dropping a connection needs the socket, which ASGI does not give: uvicorn's ``send`` is a
method of its request cycle, which holds the connection's transport, and
:func:`create_app` hands that transport to the route in the request's scope.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ciclovita_testing.fake_sendgrid.faults import Fault, Rule

DEFAULT_ID_KEY = "ciclovita_message_id"
MAIL_SEND_PATH = "/v3/mail/send"
CONTROL_PATH = "/__fake/{op}"
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
_TRANSPORT = "ciclovita_testing.transport"

Outcome = Literal["accepted", "rejected", "dropped"]
Which = Literal["all", "accepted", "rejected"]


class RecordedRequest(BaseModel):
    """One mail/send request as the fake saw and answered it.

    ``status`` is 0 when no answer was sent; a request accepted and then dropped
    (``drop_connection(after_accept=True)``) is ``accepted`` with ``answered=False``.
    """

    model_config = ConfigDict(frozen=True)

    seq: int
    received_at: float
    status: int
    outcome: Outcome
    answered: bool = True
    ids: tuple[str, ...] = ()
    message_id: str | None = None
    fault: str | None = None
    headers: dict[str, str] | None = None
    body: Any = None

    @property
    def accepted(self) -> bool:
        """True when SendGrid would have queued the mail."""
        return self.outcome == "accepted"

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name (None when headers were not kept)."""
        return None if self.headers is None else self.headers.get(name.lower())


class FakeStats(BaseModel):
    """Counters since start or the last reset."""

    requests: int
    accepted: int
    rejected: int
    dropped: int
    by_status: dict[int, int]
    in_flight: int
    max_in_flight: int
    pending_rules: int
    latency: float


@dataclass
class _Window:
    """A fixed-window rate limit: ``limit`` mails per ``seconds``, 429 beyond."""

    limit: int
    seconds: float
    start: float = 0.0
    used: int = 0


class Recorder:
    """Records, fault rules and settings, shared by the server's loop and the test's thread."""

    def __init__(
        self,
        *,
        id_key: str = DEFAULT_ID_KEY,
        keep_bodies: bool = True,
        api_key: str | None = None,
        latency: float = 0.0,
    ) -> None:
        self.id_key = id_key
        self.keep_bodies = keep_bodies
        self.api_key = api_key
        self.latency = latency
        self._lock = threading.Lock()
        self._seq = self._in_flight = self._max_in_flight = 0
        self._records: list[RecordedRequest] = []
        self._rules: list[Rule] = []
        self._window: _Window | None = None

    # -- the server's side --------------------------------------------------------------------

    def begin(self) -> int:
        """A request arrives: its sequence number."""
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._seq

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def take_fault(self, ids: tuple[str, ...]) -> Fault | None:
        """Consume the first rule matching a request carrying ``ids``; its fault."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.matches(ids):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            del self._rules[index]
                    return rule.fault
        return None

    def over_window(self, now: float) -> tuple[int, float] | None:
        """Count one mail against the rate limit; (limit, reset time) when over it."""
        with self._lock:
            window = self._window
            if window is None:
                return None
            if now >= window.start + window.seconds:
                window.start, window.used = now - now % window.seconds, 0
            if window.used >= window.limit:
                return window.limit, window.start + window.seconds
            window.used += 1
            return None

    def record(self, record: RecordedRequest) -> None:
        if not self.keep_bodies:
            record = record.model_copy(update={"body": None, "headers": None})
        with self._lock:
            self._records.append(record)

    # -- the test's side ----------------------------------------------------------------------

    def control(self, op: str, payload: Mapping[str, Any]) -> Any:
        """One control operation (``ValueError`` for bad arguments, ``LookupError`` for an
        unknown ``op``); the result is JSON-serialisable by pydantic."""
        if op == "health":
            return {"ok": True}
        if op == "script":
            rule = Rule.model_validate(payload)
            with self._lock:
                self._rules.append(rule)
            return None
        if op == "latency":
            seconds = float(payload["seconds"])
            if seconds < 0:
                raise ValueError("latency must be >= 0")
            self.latency = seconds
            return None
        if op == "rate_limit":
            limit, seconds = payload.get("limit"), float(payload.get("window_seconds", 1.0))
            if limit is not None and (int(limit) < 0 or seconds <= 0):
                raise ValueError("the rate limit needs limit >= 0 and window_seconds > 0")
            with self._lock:
                self._window = None if limit is None else _Window(int(limit), seconds)
            return None
        if op == "reset":
            with self._lock:
                self._records.clear()
                self._rules.clear()
                self._max_in_flight = self._in_flight
            return None
        if op == "stats":
            return self._stats()
        if op == "requests":
            return self._requests(payload.get("which", "all"), bool(payload.get("bodies", True)))
        raise LookupError(f"no control operation {op!r}")

    def _stats(self) -> FakeStats:
        with self._lock:
            records = list(self._records)
            in_flight, max_in_flight = self._in_flight, self._max_in_flight
            pending = len(self._rules)
        outcomes = Counter(r.outcome for r in records)
        return FakeStats(
            requests=len(records),
            accepted=outcomes["accepted"],
            rejected=outcomes["rejected"] + outcomes["dropped"],
            dropped=outcomes["dropped"],
            by_status=dict(Counter(r.status for r in records)),
            in_flight=in_flight,
            max_in_flight=max_in_flight,
            pending_rules=pending,
            latency=self.latency,
        )

    def _requests(self, which: str, bodies: bool) -> list[RecordedRequest]:
        if which not in ("all", "accepted", "rejected"):
            raise ValueError(f"which must be all, accepted or rejected, not {which!r}")
        with self._lock:
            records = list(self._records)
        if which != "all":
            records = [r for r in records if r.accepted == (which == "accepted")]
        if not bodies:
            records = [r.model_copy(update={"body": None, "headers": None}) for r in records]
        return records


def personalization_ids(body: Any, key: str) -> tuple[str, ...]:
    """``custom_args[key]`` of each personalization that has it."""
    ids = []
    for personalization in body.get("personalizations") or ():
        args = personalization.get("custom_args") if isinstance(personalization, dict) else None
        if isinstance(args, dict) and key in args:
            ids.append(str(args[key]))
    return tuple(ids)


def _errors(status: int, message: str, field: str | None = None, **headers: str) -> Response:
    """SendGrid's error answer: ``{"errors": [{"message", "field", "help"}]}``."""
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return JSONResponse(body, status, headers=headers)


def _rate_limited(limit: int, reset_at: float) -> Response:
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(math.ceil(reset_at)),
    }
    return _errors(429, "too many requests", **headers)


def _authorized(header: str | None, api_key: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return (
        scheme.lower() == "bearer"
        and token not in ("", "None")
        and (api_key is None or token == api_key)
    )


def _drop(request: Request) -> None:
    """Close the request's connection at once, without an answer."""
    transport: asyncio.Transport | None = request.scope.get(_TRANSPORT)
    if transport is None:
        raise RuntimeError("no transport to drop: the fake needs uvicorn's HTTP server")
    transport.abort()


def _problem(body: Any) -> tuple[str, str | None] | None:
    """The fake's only checks of a body (the rest is Prism's job): message and field."""
    if not isinstance(body, dict):
        return "Bad Request: the request body must be a JSON object.", None
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "You must have at least one personalization.", "personalizations"
    return None


async def _sleep(request: Request, seconds: float) -> None:
    """Wait before answering; if the server stops meanwhile, no answer rather than a 500."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _drop(request)
        raise


async def _mail_send(recorder: Recorder, request: Request, seq: int) -> Response:
    received_at = time.time()
    raw = await request.body()
    if recorder.latency:
        await _sleep(request, recorder.latency)
    headers = dict(request.headers)

    def record(status: int, outcome: Outcome, **fields: Any) -> None:
        fields.update(seq=seq, received_at=received_at, headers=headers)
        recorder.record(RecordedRequest(status=status, outcome=outcome, **fields))

    if not _authorized(request.headers.get("authorization"), recorder.api_key):
        record(401, "rejected")
        return _errors(401, UNAUTHORIZED)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        record(400, "rejected")
        return _errors(400, f"Bad Request: the request body is not valid JSON ({exc}).")
    problem = _problem(body)
    if problem is not None:
        record(400, "rejected", body=body)
        return _errors(400, *problem)

    ids = personalization_ids(body, recorder.id_key)
    fault = recorder.take_fault(ids)
    applied = None if fault is None else fault.kind
    if fault is not None and fault.kind == "delay":
        await _sleep(request, fault.seconds)
        fault = fault.then
        applied = "delay" if fault is None else fault.kind
    seen = {"body": body, "ids": ids, "fault": applied}

    if fault is None or (fault.kind == "drop_connection" and fault.after_accept):
        over = recorder.over_window(time.time())
        if over is not None:
            record(429, "rejected", **{**seen, "fault": "rate_window"})
            return _rate_limited(*over)
        message_id = secrets.token_urlsafe(16)
        record(202, "accepted", message_id=message_id, answered=fault is None, **seen)
        if fault is not None:
            _drop(request)
        return Response(status_code=202, headers={"X-Message-Id": message_id})
    if fault.kind == "drop_connection":
        record(0, "dropped", answered=False, **seen)
        _drop(request)
        return Response(status_code=500)  # never written: the connection is gone
    if fault.kind == "rate_limit":
        record(429, "rejected", **seen)
        return _rate_limited(fault.limit, time.time() + fault.seconds)
    record(fault.status, "rejected", **seen)
    return _errors(fault.status, fault.message, fault.field)


_JSON_OBJECT = TypeAdapter(dict[str, Any])


def create_app(recorder: Recorder) -> ASGIApp:
    """The fake SendGrid as an ASGI app, recording into ``recorder``."""

    async def mail_send(request: Request) -> Response:
        seq = recorder.begin()
        try:
            return await _mail_send(recorder, request, seq)
        finally:
            recorder.end()

    async def control(request: Request) -> Response:
        try:
            payload = _JSON_OBJECT.validate_json(await request.body() or b"{}")
            result = recorder.control(request.path_params["op"], payload)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except ValueError as exc:  # pydantic's ValidationError included
            return JSONResponse({"error": str(exc)}, 400)
        return Response(pydantic_core.to_json(result), media_type="application/json")

    app = Starlette(
        routes=[
            Route(MAIL_SEND_PATH, mail_send, methods=["POST"]),
            Route(CONTROL_PATH, control, methods=["POST"]),
        ]
    )

    async def with_transport(scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
        scope[_TRANSPORT] = getattr(cycle, "transport", None)
        await app(scope, receive, send)

    return with_transport
