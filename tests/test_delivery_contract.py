"""Contract: every request the SendGrid sender builds is valid against SendGrid's own OpenAPI
description (``../shared/sendgrid/tsg_mail_v3.json``), served by Stoplight Prism.

The official client posts the sender's requests to Prism, which answers 202 for a valid body
and 400 with an ``sl-violations`` header for an invalid one. Covered: messages at the API's
limits (10 categories, custom_args near 10,000 bytes, long subjects, many headers, unicode
names, reply-to, ASM group, sandbox, one part only), a concurrent batch, and real messages
rendered from the campaign templates and sent by the dispatcher. Skips with the reason when
``../shared`` or Node are absent (fails instead under ``CI=true``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from python_http_client.exceptions import BadRequestsError
from sqlalchemy import Engine

from ciclovita.delivery.dispatch import deliver
from ciclovita.delivery.senders.base import send_all
from ciclovita.delivery.senders.sendgrid import (
    MAX_CUSTOM_ARGS_BYTES,
    MESSAGE_ID_ARG,
    SendGridSender,
    request_body,
)
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.runtime import Runtime
from ciclovita.vocabulary import MessageKind
from tests.support.prism import PrismServer, prism_or_skip, sl_violation_messages, sl_violations
from tests.test_delivery_support import AS_OF, DeliveryWorld, add_customers


@pytest.fixture(scope="module")
def prism() -> Iterator[PrismServer]:
    with prism_or_skip() as server:
        yield server


@pytest.fixture
def sender(prism: PrismServer) -> Iterator[SendGridSender]:
    sender = SendGridSender("SG.contract", host=prism.url, concurrency=8, sandbox=True)
    yield sender
    sender.close()


BASE = OutgoingEmail(
    uid="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    campaign="thank_you",
    kind=MessageKind.MARKETING,
    to_email="giulia.rossi@example.com",
    to_name="Giulia Rossi",
    from_email="ciao@ciclovita.example",
    from_name="Ciclovita",
    subject="Grazie per il tuo ordine",
    html="<html><body><p>Grazie!</p></body></html>",
    text="Grazie!",
    stage="new_customer",
    headers={
        "List-Unsubscribe": "<https://ciclovita.example/u/abc>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    },
    asm_group_id=12345,
)


def _custom_args_near_limit() -> dict[str, str]:
    ours = {MESSAGE_ID_ARG: BASE.uid, "ciclovita_campaign": BASE.campaign}
    args = {f"k{i:02d}": "v" * 190 for i in range(48)}
    size = len(json.dumps({**args, **ours}, separators=(",", ":")).encode())
    args["pad"] = "p" * (MAX_CUSTOM_ARGS_BYTES - size - 20)
    return args


AT_THE_LIMITS = {
    "ten categories": replace(BASE, categories=tuple(f"segment-{i}" for i in range(8))),
    "custom_args near 10,000 bytes": replace(BASE, custom_args=_custom_args_near_limit()),
    "long unicode subject": replace(BASE, subject="Grazie, Zoë! 🚲 " * 120),
    "many headers": replace(
        BASE, headers={**BASE.headers, **{f"X-Ciclovita-Trace-{i}": f"v{i}" for i in range(60)}}
    ),
    "unicode names": replace(
        BASE,
        to_name="Ольга Нгуен-Müller 🌟",
        from_name="Ciclovita — Bottega d’Italia",
        to_email="olga.nguyen@example.org",
    ),
    "reply-to": replace(BASE, reply_to="assistenza@ciclovita.example"),
    "no ASM group (transactional)": replace(
        BASE, kind=MessageKind.TRANSACTIONAL, asm_group_id=None
    ),
    "text only": replace(BASE, html=""),
    "html only": replace(BASE, text=""),
    "large body": replace(BASE, html="<p>" + "Una storia lunga. " * 50_000 + "</p>"),
}


@pytest.mark.parametrize("case", list(AT_THE_LIMITS))
def test_requests_at_the_api_limits_are_valid(
    prism: PrismServer, sender: SendGridSender, case: str
) -> None:
    email = AT_THE_LIMITS[case]
    body = request_body(email, sandbox=True)
    response = sender.client.send(body)
    assert response.status_code == 202
    assert sl_violations(response) is None, sl_violation_messages(response)
    if case == "ten categories":
        assert len(body["categories"]) == 10
    if case == "custom_args near 10,000 bytes":
        args = body["personalizations"][0]["custom_args"]
        size = len(json.dumps(args, separators=(",", ":")).encode())
        assert MAX_CUSTOM_ARGS_BYTES - 100 < size < MAX_CUSTOM_ARGS_BYTES


def test_a_concurrent_batch_is_accepted(sender: SendGridSender) -> None:
    emails = [
        replace(email, uid=f"{i:032x}", to_email=f"customer{i}@example.com")
        for i, email in enumerate(list(AT_THE_LIMITS.values()) * 10)
    ]
    outcomes = send_all(sender, emails)
    assert {o.status for o in outcomes} == {"sent"}, [o.error for o in outcomes if o.error]
    assert {o.provider_message_id for o in outcomes} == {None}  # Prism sends no X-Message-Id


def test_the_spec_refuses_what_the_sender_never_builds(
    prism: PrismServer, sender: SendGridSender
) -> None:
    """Eleven categories break the spec; the sender caps them at ten."""
    body: dict[str, Any] = request_body(BASE, sandbox=True)
    body["categories"] = [f"c{i}" for i in range(11)]
    with pytest.raises(BadRequestsError) as caught:
        sender.client.send(body)
    assert any("categories" in m for m in sl_violation_messages(caught.value))
    many = replace(BASE, categories=tuple(f"c{i}" for i in range(11)))
    assert len(request_body(many, sandbox=True)["categories"]) == 10


def test_rendered_campaign_messages_sent_by_the_dispatcher_are_valid(
    prism: PrismServer, sqlite_engine: Engine, tmp_path: Path
) -> None:
    url = sqlite_engine.url.render_as_string(hide_password=False)
    world = DeliveryWorld.create(sqlite_engine, url, tmp_path)
    add_customers(sqlite_engine, 40)
    world.plan()
    settings = world.settings(prism.url, sendgrid_sandbox=True, sendgrid_asm_group_id=4321)
    runtime = Runtime(settings)
    sender = runtime.sender()
    try:
        report = deliver(sqlite_engine, runtime.builder, sender, as_of=AS_OF)
    finally:
        sender.close()
    assert (report.sent, report.failed, report.ambiguous) == (40, 0, 0), report.errors
    assert world.statuses() == {"sent": 40}
