"""``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook, received over HTTP.

This module owns the request: its size, its signature (:class:`SignatureVerifier`: the
Signed Event Webhook headers checked with the sendgrid package's own helper,
``sendgrid.helpers.eventwebhook.EventWebhook``: ECDSA P-256 over ``timestamp + raw body``,
and a timestamp no further than ``tolerance`` from now) and the answer. The signature stays
here because it authenticates the HTTP request, not the events. What the body holds and what
its events do are delivery's: ``ciclovita.delivery.provider_events`` parses and checks the
batch, ``ciclovita.delivery.event_effects`` stores and applies it, in one transaction.
"""

from __future__ import annotations

import binascii
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ciclovita.delivery.event_effects import IngestReport, ingest_events
from ciclovita.delivery.provider_events import MalformedBody, parse_body
from ciclovita.errors import ConfigurationError
from ciclovita.web.pages import BodyTooLarge, WebContext, context_of, json_response, read_body

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: Final = EventWebhookHeader.TIMESTAMP
DEFAULT_TOLERANCE: Final = timedelta(minutes=10)
"""How far the signed timestamp may be from now (either way) before the request is stale."""
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Largest webhook body accepted (SendGrid batches are far smaller)."""


class SignatureError(Exception):
    """The request is not a fresh, authentic SendGrid webhook call (answered 403)."""


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
            return json_response(report.model_dump(mode="json"), 400)
        answer = report.model_dump(mode="json")
        log.debug("webhook: %s", answer)
        return json_response(answer, 200)

    return [Route("/webhooks/sendgrid", sendgrid_events, methods=["POST"], name="sendgrid")]
