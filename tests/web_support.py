"""The web app under a real uvicorn server on 127.0.0.1, and SendGrid-style webhook signing.

``web`` (a fixture) runs ``create_app`` in a background thread on a free loopback port
against the ``engine`` fixture's database (SQLite and PostgreSQL); tests talk to it over real
HTTP with httpx. ``SigningKey`` is an ECDSA P-256 key pair that signs ``timestamp + body``
exactly as SendGrid's Signed Event Webhook does; its public key, in the base64 form SendGrid
shows, is the app's ``CICLOVITA_SENDGRID_WEBHOOK_PUBLIC_KEY``.

Test modules import the fixtures they use (``signing_key_fixture`` and ``web_fixture``,
registered under the names ``signing_key`` and ``web``).
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, insert
from starlette.applications import Starlette

from ciclovita.db.models import Message, table_of
from ciclovita.links import LinkBuilder
from ciclovita.settings import Settings
from ciclovita.web.app import create_app
from ciclovita.web.webhook import DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER

SECRET = "test-secret-for-signed-links"


class SigningKey:
    """Signs webhook bodies like SendGrid: base64(DER ECDSA-SHA256(timestamp + body))."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def sign(self, body: bytes, timestamp: str) -> str:
        signature = self.private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode("ascii")

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {
            SIGNATURE_HEADER: self.sign(body, stamp),
            TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        }


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(build: Callable[[str], Starlette]) -> Iterator[str]:
    """Run the app ``build(base_url)`` under uvicorn in a thread; yields its base URL."""
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(build(url), lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def make_settings(engine: Engine, public_key: str | None, base_url: str) -> Settings:
    return Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        sendgrid_webhook_public_key=public_key,
        secret_key=SECRET,
        public_base_url=base_url,
        from_name="Ciclovita",
    )


@dataclass
class WebServer:
    """A running app: its URL, settings, signing key, links and an HTTP client."""

    url: str
    settings: Settings
    key: SigningKey
    engine: Engine
    http: httpx.Client

    @property
    def links(self) -> LinkBuilder:
        return LinkBuilder(self.url, SECRET)

    def post_events(
        self,
        events: list[dict[str, Any]] | bytes,
        *,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = events if isinstance(events, bytes) else json.dumps(events).encode()
        sent = self.key.headers(body, timestamp) if headers is None else headers
        return self.http.post("/webhooks/sendgrid", content=body, headers=sent)


@contextmanager
def running(
    engine: Engine,
    key: SigningKey,
    *,
    public_key: str | None = "from key",
    clock: Callable[[], datetime] | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> Iterator[WebServer]:
    """A server for ``engine``'s database; ``public_key`` defaults to ``key``'s."""
    chosen = key.public_key if public_key == "from key" else public_key
    holder: dict[str, Settings] = {}

    def build(url: str) -> Starlette:
        settings = holder["settings"] = make_settings(engine, chosen, url)
        extra: dict[str, Any] = {"clock": clock} if clock else {}
        return create_app(settings, engine=engine, webhook_tolerance=tolerance, **extra)

    with serve(build) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield WebServer(url, holder["settings"], key, engine, http)


@pytest.fixture(scope="session", name="signing_key")
def signing_key_fixture() -> SigningKey:
    return SigningKey()


@pytest.fixture(name="web")
def web_fixture(engine: Engine, signing_key: SigningKey) -> Iterator[WebServer]:
    """The app under uvicorn on 127.0.0.1, on the test's fresh database."""
    with running(engine, signing_key) as server:
        yield server


_message_numbers = itertools.count(1)


def _message_row(
    customer_id: int,
    status: str,
    campaign: str,
    to_email: str | None,
    when: datetime,
    **fields: Any,
) -> dict[str, Any]:
    number = next(_message_numbers)
    row: dict[str, Any] = {
        "uid": uuid.uuid4().hex,
        "campaign": campaign,
        "customer_id": customer_id,
        "occurrence_key": f"test:{number}",
        "kind": "marketing",
        "status": status,
        "to_email": to_email,
        "due_at": when,
        "planned_at": when,
        "attempts": 1 if status != "planned" else 0,
        "priority": 0,
        "details": {},
        **fields,
    }
    if status == "sent":
        row.setdefault("sent_at", when)
    return row


def add_messages(
    engine: Engine,
    customer_id: int,
    count: int = 1,
    *,
    status: str = "sent",
    campaign: str = "thank_you",
    to_email: str | None = None,
    at: datetime | None = None,
    **fields: Any,
) -> list[str]:
    """``count`` outbox rows for ``customer_id``, in one insert; returns their uids."""
    when = at or datetime.now(UTC)
    rows = [
        _message_row(customer_id, status, campaign, to_email, when, **fields) for _ in range(count)
    ]
    with engine.begin() as connection:
        connection.execute(insert(table_of(Message)), rows)
    return [row["uid"] for row in rows]


def add_message(engine: Engine, customer_id: int, **options: Any) -> str:
    """One outbox row for ``customer_id``; returns its uid."""
    return add_messages(engine, customer_id, 1, **options)[0]
