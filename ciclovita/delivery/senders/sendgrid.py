"""The SendGrid sender, on the official ``sendgrid`` package.

One request per message (content is rendered per customer), built with the package's Mail
helpers and posted by its client (``SendGridAPIClient`` over ``python_http_client``): our
message uid and campaign in the personalization's ``custom_args`` (they come back on every
webhook event), categories for campaign and stage, the ASM unsubscribe group for marketing
mail, sandbox mode as a setting, and a configurable host. Requests run on a bounded thread
pool (``concurrency``) to hide network latency.

What a request's fate means for the message (errors are typed, ``ciclovita.errors``):

* 2xx → ``sent``, with SendGrid's ``X-Message-Id``;
* 429 → ``RateLimitedError``: every thread of the sender pauses until ``X-RateLimit-Reset``,
  then the request is tried again;
* 5xx, and network errors before the request was fully written (refused, DNS, connect
  timeout) → ``TransientDeliveryError``: retried with jittered exponential backoff
  (tenacity);
* other 4xx → ``PermanentDeliveryError``: ``failed`` with SendGrid's error text, never
  retried; 401 also stops the run (the API key is refused: every message would fail alike,
  so none is marked failed and the rest stay due);
* the request left and no answer came (read timeout, connection reset or closed) →
  ``AmbiguousDelivery``: ``ambiguous``, never re-sent blindly (SendGrid has no idempotency
  key), reconciled from webhook events.

A message that is still not accepted when its retries or its time (``RetryPolicy``) run out
comes back as ``retry``: it was certainly not accepted, and the outbox makes it due again
later. Requests that break SendGrid's documented limits are refused here, before sending.
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
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
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_random_exponential,
)

from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.senders.base import register_sender
from ciclovita.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.settings import Settings
from ciclovita.vocabulary import SendResult

log = logging.getLogger(__name__)

MESSAGE_ID_ARG = "ciclovita_message_id"
CAMPAIGN_ARG = "ciclovita_campaign"
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_CONTENT_BYTES = 20 * 1024 * 1024  # SendGrid takes under 30 MB per request, all included
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
"""Headers SendGrid refuses in ``headers`` (they come from the request's own fields)."""


class AmbiguousDelivery(DeliveryError):  # noqa: N818 - a state, not a failure
    """The request reached the provider but no answer came back: it may have been accepted."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long one message may be retried within a run before it is handed back as ``retry``.

    ``deadline`` bounds the time a message spends in the sender (waits and retries, not the
    last request in flight), so that a live worker never holds a row in ``sending`` anywhere
    near the outbox's lease.
    """

    max_attempts: int = 5
    base_backoff: float = 0.5
    max_backoff: float = 30.0
    deadline: float = 120.0
    max_rate_limit_wait: float = 120.0
    min_rate_limit_wait: float = 0.2
    retry_after: float = 60.0


def build_mail(email: OutgoingEmail, *, sandbox: bool) -> Mail:
    """The SendGrid v3 request for one message, or PermanentDeliveryError when the message
    breaks one of SendGrid's documented limits (it would be refused anyway)."""
    if not email.text and not email.html:
        raise PermanentDeliveryError("the message has neither a text nor an HTML part")
    if len(email.text.encode()) + len(email.html.encode()) > MAX_CONTENT_BYTES:
        raise PermanentDeliveryError(
            f"content over {MAX_CONTENT_BYTES} bytes: SendGrid takes under 30 MB per request"
        )
    mail = Mail(
        from_email=From(email.from_email, email.from_name or None),
        subject=email.subject,
        plain_text_content=email.text or None,
        html_content=email.html or None,
    )
    personalization = Personalization()
    personalization.add_to(To(email.to_email, email.to_name or None))
    custom_args = {**email.custom_args, MESSAGE_ID_ARG: email.uid, CAMPAIGN_ARG: email.campaign}
    size = len(json.dumps(custom_args, separators=(",", ":"), ensure_ascii=False).encode())
    if size >= MAX_CUSTOM_ARGS_BYTES:
        raise PermanentDeliveryError(
            f"custom_args total {size} bytes; SendGrid takes under {MAX_CUSTOM_ARGS_BYTES}"
        )
    for key, value in custom_args.items():
        personalization.add_custom_arg(CustomArg(key, str(value)))
    mail.add_personalization(personalization)
    for name, value in email.headers.items():
        if name.lower() in RESERVED_HEADERS:
            raise PermanentDeliveryError(f"header {name!r} is reserved by SendGrid")
        mail.add_header(Header(name, value))
    for category in reversed(categories_of(email)):  # the helper inserts each in front
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


def categories_of(email: OutgoingEmail) -> list[str]:
    """Campaign, ``stage:<stage>``, then the message's own: unique, at most 10, each short."""
    wanted = [email.campaign, *([f"stage:{email.stage}"] if email.stage else []), *email.categories]
    chosen: list[str] = []
    for category in wanted:
        if category and len(category) <= MAX_CATEGORY_LENGTH and category not in chosen:
            chosen.append(category)
    return chosen[:MAX_CATEGORIES]


def request_body(email: OutgoingEmail, *, sandbox: bool) -> dict[str, Any]:
    """The JSON body of the request for one message."""
    body: dict[str, Any] = build_mail(email, sandbox=sandbox).get()
    return body


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


def _reset_wait(headers: Any, policy: RetryPolicy) -> float:
    """Seconds until ``X-RateLimit-Reset`` (Unix time), within the policy's bounds."""
    reset = headers.get("X-RateLimit-Reset") if headers is not None else None
    wait = 1.0
    if reset:
        try:
            wait = float(reset) - time.time()
        except ValueError:
            wait = 1.0
    return min(max(wait, policy.min_rate_limit_wait), policy.max_rate_limit_wait)


def classify(exc: BaseException, policy: RetryPolicy | None = None) -> DeliveryError:
    """The typed delivery error for an exception raised by the official client."""
    policy = policy or RetryPolicy()
    if isinstance(exc, HTTPError):
        status = int(exc.status_code)
        detail = _error_text(exc.body)
        if status == 429:
            wait = _reset_wait(exc.headers, policy)
            return RateLimitedError(detail or "rate limited", 429, wait)
        if status >= 500:
            return TransientDeliveryError(detail or "server error", status)
        return PermanentDeliveryError(detail or f"HTTP {status}", status)
    # urllib wraps in URLError every OSError raised while connecting or writing the request:
    # the request was not complete, so SendGrid cannot have accepted it.
    if isinstance(exc, URLError):
        return TransientDeliveryError(
            f"connection failed before the request was sent: {exc.reason}"
        )
    if isinstance(exc, TimeoutError | socket.timeout | http.client.HTTPException | ConnectionError):
        return AmbiguousDelivery(f"no answer after the request was sent: {exc!r}")
    return AmbiguousDelivery(f"unexpected error after sending: {exc!r}")


def _rate_limited(state: RetryCallState) -> bool:
    """Whether the attempt that just ended was answered 429."""
    outcome = state.outcome
    return outcome is not None and isinstance(outcome.exception(), RateLimitedError)


def make_client(api_key: str, host: str, timeout: float) -> SendGridAPIClient:
    """The official client as every ciclovita sender (and the benchmark's ceiling) uses it."""
    client = SendGridAPIClient(api_key=api_key, host=host)
    client.client.timeout = timeout
    return client


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
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.client = make_client(api_key, host, timeout)
        self.concurrency = concurrency
        self.sandbox = sandbox
        self.policy = policy or RetryPolicy()
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sendgrid")
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._refused: str | None = None

    # -- rate limit: one pause for every thread --------------------------------------------

    def _pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _wait_for_rate_limit(self, deadline: float) -> float:
        """Sleep through the current pause; returns the seconds still to wait if the pause
        outlasts ``deadline`` (0 when the request may go)."""
        while True:
            with self._lock:
                until = self._paused_until
            now = time.monotonic()
            if until <= now:
                return 0.0
            if until > deadline:
                return until - now
            # a little jitter so paused threads do not all hit SendGrid at the same instant
            time.sleep(until - now + random.uniform(0, 0.05))

    # -- sending ---------------------------------------------------------------------------

    def submit(self, email: OutgoingEmail) -> Future[SendOutcome]:
        return self.pool.submit(self.send_one, email)

    def prepare(self, email: OutgoingEmail) -> OutgoingEmail:
        """The message with its request body built (PermanentDeliveryError: never sendable).

        The body carries the content, so the message drops its own copy: what a render
        worker hands to the delivering process holds the HTML and text once."""
        body = request_body(email, sandbox=self.sandbox)
        return replace(email, prepared=body, html="", text="")

    def send_one(self, email: OutgoingEmail) -> SendOutcome:
        """Send one message, retrying what is safe to retry; never raises."""
        policy = self.policy
        try:
            body = email.prepared or request_body(email, sandbox=self.sandbox)
        except PermanentDeliveryError as exc:
            return SendOutcome(email.uid, SendResult.FAILED, error=f"not sent: {exc.detail}")
        deadline = time.monotonic() + policy.deadline
        try:
            outcome: SendOutcome = self._retrying()(self._attempt, email, body, deadline)
        except TransientDeliveryError as error:  # retries or time ran out
            return SendOutcome(
                email.uid, SendResult.RETRY, error=str(error), retry_after=policy.retry_after
            )
        return outcome

    def _retrying(self) -> Retrying:
        """Transient failures are tried again: a 429 at once (every thread first waits out
        the shared pause, ``_wait_for_rate_limit``), any other with jittered exponential
        backoff while attempts and the message's time last."""
        policy = self.policy
        backoff = wait_random_exponential(
            multiplier=2 * policy.base_backoff, max=policy.max_backoff
        )

        def wait(state: RetryCallState) -> float:
            return 0.0 if _rate_limited(state) else backoff(state)

        def stop(state: RetryCallState) -> bool:
            if _rate_limited(state):
                return False  # bounded by the deadline, in _wait_for_rate_limit
            out_of_time = (state.seconds_since_start or 0.0) + (state.upcoming_sleep or 0.0)
            return state.attempt_number >= policy.max_attempts or out_of_time >= policy.deadline

        return Retrying(
            retry=retry_if_exception_type(TransientDeliveryError),
            wait=wait,
            stop=stop,
            reraise=True,
        )

    def _attempt(self, email: OutgoingEmail, body: Any, deadline: float) -> SendOutcome:
        """One request (after the shared rate-limit pause); raises TransientDeliveryError
        when it is worth trying again."""
        policy = self.policy
        if self._refused is not None:
            return self._refusal(email)
        still_paused = self._wait_for_rate_limit(deadline)
        if still_paused:
            return SendOutcome(
                email.uid,
                SendResult.RETRY,
                error="rate limited by SendGrid past this message's time",
                retry_after=still_paused,
            )
        try:
            response = self.client.send(body)
        except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
            error = classify(exc, policy)
        else:
            provider_id = response.headers.get("X-Message-Id") if response.headers else None
            return SendOutcome(email.uid, SendResult.SENT, provider_message_id=provider_id or None)
        if isinstance(error, AmbiguousDelivery):
            log.warning("message %s: %s", email.uid, error.detail)
            return SendOutcome(email.uid, SendResult.AMBIGUOUS, error=error.detail)
        if isinstance(error, PermanentDeliveryError):
            if error.status == 401:
                self._refused = f"SendGrid refused the API key: {error}"
                log.error("%s; stopping", self._refused)
                return self._refusal(email)
            return SendOutcome(email.uid, SendResult.FAILED, error=str(error))
        if isinstance(error, RateLimitedError):
            self._pause(error.retry_after or policy.min_rate_limit_wait)
        raise error

    def _refusal(self, email: OutgoingEmail) -> SendOutcome:
        """SendGrid refused our API key: not this message's fault, so it is due again later,
        and the run stops (every other message would be refused alike)."""
        assert self._refused is not None
        return SendOutcome(
            email.uid,
            SendResult.RETRY,
            error=self._refused,
            retry_after=self.policy.retry_after,
            stop_sending=True,
        )

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        return {}  # SendGrid cannot be asked by our id: its webhook events reconcile

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _factory(settings: Settings) -> SendGridSender:
    return SendGridSender(
        settings.require_sendgrid_key().get_secret_value(),
        host=settings.sendgrid_host,
        concurrency=settings.sendgrid_concurrency,
        sandbox=settings.sendgrid_sandbox,
        timeout=settings.sendgrid_timeout_seconds,
    )


register_sender(SendGridSender.name, _factory)
