"""Signed links in emails: unsubscribe, preferences, survey answers.

A token is ``base64url(json payload) . base64url(HMAC-SHA256(secret, payload))``. The web app
verifies it before changing anything; an altered or forged token changes nothing. Payloads
are small: the purpose, the customer, the message and (for survey links) the score.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

from ciclovita.errors import CiclovitaError


class BadSignature(CiclovitaError):  # noqa: N818 - the name says what happened
    """A link token was altered, forged or is malformed."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], secret: str) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac[:20])}"


def verify(token: str, secret: str, purpose: str) -> dict[str, Any]:
    """The payload of a valid token for ``purpose``; BadSignature otherwise."""
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()[:20]
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise BadSignature("signature does not match")
        payload = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError) as exc:
        raise BadSignature(f"malformed token: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("p") != purpose:
        raise BadSignature("token is not for this purpose")
    return payload


class LinkBuilder:
    """URLs of ``ciclovita serve-web`` for one message."""

    def __init__(self, base_url: str, secret: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret

    def unsubscribe(self, customer_id: int, message_uid: str, topic: str) -> str:
        token = sign({"p": "unsub", "c": customer_id, "m": message_uid, "t": topic}, self.secret)
        return f"{self.base_url}/u/{token}"

    def preferences(self, customer_id: int) -> str:
        token = sign({"p": "prefs", "c": customer_id}, self.secret)
        return f"{self.base_url}/preferences/{token}"

    def survey(self, customer_id: int, message_uid: str, score: int) -> str:
        token = sign({"p": "survey", "c": customer_id, "m": message_uid, "s": score}, self.secret)
        return f"{self.base_url}/survey/{token}"

    def referral(self, code: str) -> str:
        return f"{self.base_url}/r/{quote(code)}"
