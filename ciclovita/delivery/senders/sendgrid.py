"""The SendGrid sender, on the official ``sendgrid`` package.

One request per message (content is rendered per customer), our message uid in the
personalization's ``custom_args`` (it comes back on every webhook event), categories for
campaign and stage, the ASM unsubscribe group for marketing mail, sandbox mode as a setting,
and a configurable host. Requests run on a bounded thread pool to hide network latency.

Errors are typed (``ciclovita.errors``) and decide what happens:

* 429 → ``RateLimitedError``: every worker pauses until ``X-RateLimit-Reset``, then retries;
* 5xx, refused connections → ``TransientDeliveryError``: jittered exponential backoff;
* other 4xx → ``PermanentDeliveryError``: recorded with SendGrid's error text, never retried;
* the request left but no answer came (read timeout, reset) → ``ambiguous``: never re-sent
  blindly, since SendGrid has no idempotency key; reconciled from webhook events.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.error import URLError

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm,
    Category,
    CustomArg,
    From,
    GroupId,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    To,
)

from ciclovita.delivery.message import OutgoingEmail, SendOutcome
from ciclovita.delivery.senders.base import register_sender
from ciclovita.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from ciclovita.settings import Settings

log = logging.getLogger(__name__)

MESSAGE_ID_ARG = "ciclovita_message_id"
MAX_RATE_LIMIT_WAIT = 120.0


class AmbiguousDelivery(DeliveryError):  # noqa: N818 - a state, not a failure
    """The request reached the provider but no answer came back."""


def build_mail(email: OutgoingEmail, *, sandbox: bool) -> Mail:
    """The SendGrid v3 request body for one message."""
    mail = Mail(
        from_email=From(email.from_email, email.from_name or None),
        subject=email.subject,
        plain_text_content=email.text,
        html_content=email.html,
    )
    personalization = Personalization()
    personalization.add_to(To(email.to_email, email.to_name or None))
    personalization.add_custom_arg(CustomArg(MESSAGE_ID_ARG, email.uid))
    personalization.add_custom_arg(CustomArg("ciclovita_campaign", email.campaign))
    mail.add_personalization(personalization)
    for name, value in email.headers.items():
        mail.add_header(Header(name, value))
    categories = [email.campaign, *(f"stage:{email.stage}" for _ in [0] if email.stage)]
    for category in [*categories, *email.categories][:10]:
        mail.add_category(Category(category))
    if email.reply_to:
        mail.reply_to = ReplyTo(email.reply_to)
    if email.asm_group_id is not None:
        mail.asm = Asm(GroupId(email.asm_group_id))
    if sandbox:
        settings = MailSettings()
        settings.sandbox_mode = SandBoxMode(True)
        mail.mail_settings = settings
    return mail


def _error_text(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return str(body)[:500]
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        parts = [
            f"{e['field']}: {e.get('message', '')}" if e.get("field") else str(e.get("message", ""))
            for e in errors
            if isinstance(e, dict)
        ]
        return "; ".join(parts)[:1000]
    return str(body)[:500]


def classify(exc: BaseException) -> DeliveryError:
    """The typed delivery error for an exception raised by the client."""
    if isinstance(exc, HTTPError):
        status = int(exc.status_code)
        detail = _error_text(exc.body)
        if status == 429:
            reset = exc.headers.get("X-RateLimit-Reset") if exc.headers else None
            wait = 1.0
            if reset:
                try:
                    wait = max(0.0, float(reset) - time.time())
                except ValueError:
                    wait = 1.0
            return RateLimitedError(detail or "rate limited", 429, min(wait, MAX_RATE_LIMIT_WAIT))
        if status >= 500:
            return TransientDeliveryError(detail or "server error", status)
        return PermanentDeliveryError(detail or f"HTTP {status}", status)
    if isinstance(exc, URLError):  # failed before the request was fully sent
        return TransientDeliveryError(f"connection failed: {exc.reason}")
    if isinstance(exc, TimeoutError | socket.timeout | http.client.HTTPException | ConnectionError):
        return AmbiguousDelivery(f"no answer after the request was sent: {exc!r}")
    return AmbiguousDelivery(f"unexpected error after sending: {exc!r}")


class SendGridSender:
    """Sends through SendGrid with bounded concurrency, backoff and typed errors."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        host: str = "https://api.sendgrid.com",
        concurrency: int = 16,
        sandbox: bool = False,
        max_attempts: int = 5,
        base_backoff: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout
        self.sandbox = sandbox
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sendgrid")
        self._pause_lock = threading.Lock()
        self._paused_until = 0.0
        self.requests_made = 0

    def _wait_for_rate_limit(self) -> None:
        while True:
            with self._pause_lock:
                remaining = self._paused_until - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 1.0))

    def _pause(self, seconds: float) -> None:
        with self._pause_lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def send_one(self, email: OutgoingEmail) -> SendOutcome:
        body = build_mail(email, sandbox=self.sandbox).get()
        attempt = 0
        while True:
            self._wait_for_rate_limit()
            attempt += 1
            try:
                self.requests_made += 1
                response = self.client.send(body)
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
                error = classify(exc)
            else:
                provider_id = response.headers.get("X-Message-Id") if response.headers else None
                return SendOutcome(email.uid, "sent", provider_message_id=provider_id or "")
            if isinstance(error, AmbiguousDelivery):
                log.warning("message %s: %s", email.uid, error.detail)
                return SendOutcome(email.uid, "ambiguous", error=error.detail)
            if isinstance(error, PermanentDeliveryError):
                return SendOutcome(email.uid, "failed", error=str(error))
            assert isinstance(error, TransientDeliveryError)
            if isinstance(error, RateLimitedError):
                self._pause(error.retry_after or 1.0)
                if attempt < self.max_attempts * 4:
                    continue
            elif attempt < self.max_attempts:
                delay = self.base_backoff * (2 ** (attempt - 1))
                time.sleep(random.uniform(delay / 2, delay))
                continue
            return SendOutcome(
                email.uid, "retry", error=str(error), retry_after=error.retry_after or 60.0
            )

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
        return list(self.pool.map(self.send_one, emails))

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        return {}  # SendGrid cannot be asked by our id: events reconcile (webhook)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _factory(settings: Settings) -> SendGridSender:
    return SendGridSender(
        settings.require_sendgrid_key().get_secret_value(),
        host=settings.sendgrid_host,
        concurrency=settings.sendgrid_concurrency,
        sandbox=settings.sendgrid_sandbox,
    )


register_sender("sendgrid", _factory)
