"""Fault scripts: what the fake SendGrid answers instead of ``202 Accepted``, and to whom.

A :class:`Fault` is one scripted answer; build it with the factories below. A :class:`Rule`
applies a fault to the next ``times`` requests (``None``: every one until the fake is
reset), or only to those carrying a given message id (our ``custom_args`` id). Rules are
tried in the order they were queued, and a request consumes at most one.

* :func:`rate_limit`: 429 with ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0`` and
  ``X-RateLimit-Reset`` (Unix time, rounded up), as SendGrid answers;
* :func:`server_error`: a 5xx with SendGrid's ``{"errors": [...]}`` body;
* :func:`bad_request`: 400 with that body, naming a field;
* :func:`delay`: answer late, then normally or with another fault. A client that gives up
  waiting still has its mail accepted: SendGrid has no idempotency key;
* :func:`drop_connection`: close the connection without answering; with
  ``after_accept=True`` the mail is accepted first and only the answer is lost.

A wrong API key is not scripted: the fake answers 401 whenever it was given an ``api_key``
and a request carries another one. Rules travel as JSON to a fake in another process, hence
pydantic models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["rate_limit", "server_error", "bad_request", "delay", "drop_connection"]


class Fault(BaseModel):
    """One scripted answer; build it with :func:`rate_limit`, :func:`server_error`, ..."""

    model_config = ConfigDict(frozen=True)

    kind: FaultKind
    status: int = 0
    message: str = ""
    field: str | None = None
    seconds: float = Field(default=0.0, ge=0)
    limit: int = 0
    after_accept: bool = False
    then: Fault | None = None


class Rule(BaseModel):
    """Apply ``fault`` to the next ``times`` requests that carry ``message_id`` (any, if None)."""

    fault: Fault
    times: int | None = Field(default=1, ge=1)
    message_id: str | None = None

    def matches(self, ids: Sequence[str]) -> bool:
        """Whether a request whose personalizations carry ``ids`` is one of this rule's."""
        return self.message_id is None or self.message_id in ids


def rate_limit(reset_in_seconds: float = 1.0, *, limit: int = 600) -> Fault:
    """429 with the rate-limit headers; the window resets ``reset_in_seconds`` from now."""
    return Fault(kind="rate_limit", status=429, seconds=reset_in_seconds, limit=limit)


def server_error(status: int = 500, message: str = "internal server error") -> Fault:
    """A 5xx answer (500 by default) with a SendGrid-shaped error body."""
    if not 500 <= status <= 599:
        raise ValueError(f"server_error needs a 5xx status, got {status}")
    return Fault(kind="server_error", status=status, message=message)


def bad_request(message: str = "invalid request", field: str | None = None) -> Fault:
    """400 with a SendGrid-shaped error body carrying ``message`` and ``field``."""
    return Fault(kind="bad_request", status=400, message=message, field=field)


def delay(seconds: float, then: Fault | None = None) -> Fault:
    """Wait ``seconds`` before answering; then accept as usual, or apply ``then``."""
    if then is not None and then.kind == "delay":
        raise ValueError("delay(then=delay(...)) is not supported: add the seconds instead")
    return Fault(kind="delay", seconds=seconds, then=then)


def drop_connection(*, after_accept: bool = False) -> Fault:
    """Close the connection without an answer (accepting the mail first if ``after_accept``)."""
    return Fault(kind="drop_connection", after_accept=after_accept)
