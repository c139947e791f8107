"""The SendGrid event webhook over real HTTP (uvicorn on 127.0.0.1), on SQLite and PostgreSQL.

Signed and forged requests (with the sendgrid package's own signing test vector),
duplicates and retries, out-of-order events, reconciliation of ambiguous sends, suppressions
that the next plan honours, malformed bodies that keep the valid events, and a 10,000-event
batch.
"""

from __future__ import annotations

import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ciclovita.campaigns.catalog import load_catalog
from ciclovita.db.models import DeliveryEvent, Message, Suppression
from ciclovita.delivery.event_effects import ingest_events
from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG
from ciclovita.planning.planner import plan_campaign
from ciclovita.settings import REPOSITORY_ROOT
from ciclovita.vocabulary import SkipReason
from ciclovita.web.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.builders import World
from tests.web_support import (  # noqa: F401 - the fixtures signing_key and web
    SigningKey,
    WebServer,
    add_message,
    add_messages,
    running,
    signing_key_fixture,
    web_fixture,
)

_numbers = itertools.count(1)
T0 = int(time.time()) - 3_600

# The sendgrid package's own signing test vector (sendgrid-python, test/unit/test_eventwebhook.py).
VECTOR_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe6"
    "2gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
VECTOR_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0J"
    "uG+luQAbPIqHh89M15TluLtEZtM="
)
VECTOR_BAD_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6"
    "BpSzoQsbVRamr2nlxFDWYNH3j/0="
)
VECTOR_TIMESTAMP = "1600112502"
VECTOR_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": (
                    "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
                ),
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
)


def event(
    uid: str | None, kind: str, at: int, email: str = "x@example.com", **extra: Any
) -> dict[str, Any]:
    """A SendGrid event as the webhook posts it (custom args as top-level keys)."""
    n = next(_numbers)
    data: dict[str, Any] = {
        "email": email,
        "timestamp": at,
        "event": kind,
        "sg_event_id": f"ev-{n}-{kind}",
        "sg_message_id": f"pm-{uid or n}.filterdrecv-1",
        "smtp-id": f"<pm-{n}@example.com>",
        "category": ["thank_you"],
        **extra,
    }
    if uid is not None:
        data[MESSAGE_ID_ARG] = uid
        data["ciclovita_campaign"] = "thank_you"
    return data


def message(engine: Engine, uid: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Message).where(Message.uid == uid)).one()


def stored_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(DeliveryEvent)).scalar_one())


def suppressions(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(Suppression.email, Suppression.reason))
        return {email: reason for email, reason in rows}


def test_signed_batch_is_stored_once_and_moves_the_status(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    customer = world.customer("Giulia")
    uid = add_message(web.engine, customer, to_email="giulia@example.com")
    batch = [
        event(uid, "processed", T0, "giulia@example.com"),
        event(uid, "delivered", T0 + 5, "giulia@example.com"),
        event(uid, "open", T0 + 60, "giulia@example.com", sg_machine_open=False),
    ]
    first = web.post_events(batch)
    assert first.status_code == 200, first.text
    assert first.json() | {"rejected": []} == {
        "received": 3,
        "stored": 3,
        "duplicates": 0,
        "matched": 3,
        "status_updates": 1,
        "reconciled": 0,
        "suppressions_added": 0,
        "suppressions_lifted": 0,
        "rejected": [],
        "rejected_count": 0,
    }
    row = message(web.engine, uid)
    assert row.delivery_status == "open"
    assert row.delivery_updated_at == datetime.fromtimestamp(T0 + 60, UTC)
    with web.engine.connect() as connection:
        linked = connection.execute(select(DeliveryEvent.message_id).distinct()).scalars().all()
    assert linked == [row.id]

    # SendGrid's retry of the same batch (a fresh signature, the same events): nothing new
    again = web.post_events(batch)
    assert again.status_code == 200
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 3
    assert stored_events(web.engine) == 3
    # a batch repeating one event inside itself stores it once too
    twice = event(uid, "click", T0 + 90, "giulia@example.com", url="https://example.com/")
    assert web.post_events([twice, twice]).json()["duplicates"] == 1
    assert stored_events(web.engine) == 4
    assert message(web.engine, uid).delivery_status == "click"


def test_out_of_order_events_never_move_the_status_backwards(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    a = add_message(web.engine, world.customer("Anna"))
    b = add_message(web.engine, world.customer("Bruno"))
    c = add_message(web.engine, world.customer("Carla"))
    # a: the open arrives first, then the delivered and a late processed
    assert web.post_events([event(a, "open", T0 + 30)]).status_code == 200
    assert (
        web.post_events([event(a, "delivered", T0 + 10), event(a, "processed", T0)]).status_code
        == 200
    )
    assert message(web.engine, a).delivery_status == "open"
    # b: deferred, delivered, then a late deferred retry notice; then an async bounce
    web.post_events([event(b, "deferred", T0 + 5)])
    web.post_events([event(b, "delivered", T0 + 50)])
    web.post_events([event(b, "deferred", T0 + 40), event(b, "processed", T0)])
    assert message(web.engine, b).delivery_status == "delivered"
    web.post_events([event(b, "bounce", T0 + 500, "b@example.com", type="bounce")])
    assert message(web.engine, b).delivery_status == "bounce"
    web.post_events([event(b, "open", T0 + 600)])
    assert message(web.engine, b).delivery_status == "bounce"
    # c: a machine open (Apple Mail Privacy Protection) is stored but is not an open
    web.post_events([event(c, "delivered", T0 + 5), event(c, "open", T0 + 6, sg_machine_open=True)])
    assert message(web.engine, c).delivery_status == "delivered"
    with web.engine.connect() as connection:
        kinds = connection.execute(
            select(DeliveryEvent.event).where(DeliveryEvent.message_id == message(web.engine, c).id)
        ).scalars()
        assert sorted(kinds) == ["delivered", "open"]


def test_ambiguous_and_sending_messages_are_reconciled_from_events(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    sent_at = datetime.fromtimestamp(T0 - 100, UTC)
    ambiguous = add_message(
        web.engine,
        world.customer("Dario"),
        status="ambiguous",
        sending_at=sent_at,
        error="no answer",
    )
    sending = add_message(web.engine, world.customer("Elena"), status="sending", sending_at=sent_at)
    already = add_message(web.engine, world.customer("Fabio"), status="sent", at=sent_at)
    failed = add_message(web.engine, world.customer("Gina"), status="failed", error="400 bad")
    # out of order: the delivered (later) arrives in the batch before the processed
    response = web.post_events(
        [
            event(ambiguous, "delivered", T0 + 20),
            event(ambiguous, "processed", T0 + 2),
            event(sending, "processed", T0 + 3),
            event(already, "delivered", T0 + 4),
            event(failed, "dropped", T0 + 5, reason="Invalid"),
        ]
    )
    assert response.status_code == 200 and response.json()["reconciled"] == 2
    row = message(web.engine, ambiguous)
    assert (row.status, row.sent_at, row.provider, row.error) == (
        "sent",
        datetime.fromtimestamp(T0 + 2, UTC),
        "sendgrid",
        None,
    )
    assert row.provider_message_id == f"pm-{ambiguous}"
    assert row.delivery_status == "delivered"
    assert message(web.engine, sending).status == "sent"
    assert message(web.engine, sending).sent_at == datetime.fromtimestamp(T0 + 3, UTC)
    assert message(web.engine, already).sent_at == sent_at  # a sent message keeps its time
    assert message(web.engine, failed).status == "failed"  # only ambiguous/sending change


def test_events_match_by_sendgrid_message_id_when_the_custom_arg_is_missing(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    uid = add_message(
        web.engine, world.customer("Ivo"), provider="sendgrid", provider_message_id="Xyz123"
    )
    orphan = event(None, "delivered", T0, sg_message_id="Xyz123.filterdrecv-p3-1-2")
    unknown = event("f" * 32, "delivered", T0)  # a uid that is not ours: stored, unmatched
    response = web.post_events([orphan, unknown])
    assert response.json()["matched"] == 1 and response.json()["stored"] == 2
    assert message(web.engine, uid).delivery_status == "delivered"


def test_the_sendgrid_package_signing_vector(engine: Engine, signing_key: SigningKey) -> None:
    headers = {SIGNATURE_HEADER: VECTOR_SIGNATURE, TIMESTAMP_HEADER: VECTOR_TIMESTAMP}
    body = VECTOR_PAYLOAD.encode()
    signed_at = datetime.fromtimestamp(int(VECTOR_TIMESTAMP), UTC)
    with running(
        engine,
        signing_key,
        public_key=VECTOR_PUBLIC_KEY,
        clock=lambda: signed_at + timedelta(seconds=5),
    ) as server:
        bad = {**headers, SIGNATURE_HEADER: VECTOR_BAD_SIGNATURE}
        assert server.post_events(body, headers=bad).status_code == 403
        assert (
            server.post_events(body.replace(b"dropped", b"delivered"), headers=headers).status_code
            == 403
        )
        assert stored_events(engine) == 0
        response = server.post_events(body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["stored"] == 1
    # "dropped: Bounced Address" means SendGrid suppresses the address: so do we
    assert suppressions(engine) == {"hello@world.com": "bounce"}
    # the same authentic request years later is stale
    with running(engine, signing_key, public_key=VECTOR_PUBLIC_KEY) as server:
        stale = server.post_events(body, headers=headers)
        assert stale.status_code == 403 and "stale" in stale.json()["reason"]


def test_forged_missing_and_stale_signatures_are_refused_and_change_nothing(
    web: WebServer,
) -> None:
    world = World(web.engine, datetime.now(UTC))
    uid = add_message(web.engine, world.customer("Lia"))
    body = json.dumps([event(uid, "bounce", T0, "lia@example.com")]).encode()
    stranger = SigningKey()
    now = int(time.time())
    attempts = {
        "no headers": {"Content-Type": "application/json"},
        "no timestamp": {SIGNATURE_HEADER: web.key.sign(body, str(now))},
        "another key": stranger.headers(body, now),
        "garbage signature": {SIGNATURE_HEADER: "%%%not base64", TIMESTAMP_HEADER: str(now)},
        "signature of another timestamp": {
            SIGNATURE_HEADER: web.key.sign(body, str(now - 1)),
            TIMESTAMP_HEADER: str(now),
        },
        "stale": web.key.headers(body, now - 3_600),
        "from the future": web.key.headers(body, now + 3_600),
    }
    for name, headers in attempts.items():
        response = web.http.post("/webhooks/sendgrid", content=body, headers=headers)
        assert response.status_code == 403, name
    altered = body.replace(b"bounce", b"delivered")
    response = web.http.post("/webhooks/sendgrid", content=altered, headers=web.key.headers(body))
    assert response.status_code == 403
    assert stored_events(web.engine) == 0
    assert suppressions(web.engine) == {}
    assert message(web.engine, uid).delivery_status is None
    assert web.post_events(body).status_code == 200  # the authentic one is taken


def test_malformed_bodies_answer_400_and_keep_every_valid_event(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    uid = add_message(web.engine, world.customer("Marco"))
    for body in (b"not json", b'{"event": "delivered"}', b"[NaN]", b"[1, 2"):
        response = web.post_events(body)
        assert response.status_code == 400, body
    assert stored_events(web.engine) == 0

    good = [event(uid, "processed", T0), event(uid, "delivered", T0 + 1)]
    batch: list[Any] = [
        good[0],
        "a string",
        {"event": "open", "timestamp": T0},  # no sg_event_id
        {"sg_event_id": "x1", "timestamp": T0},  # no event
        {"sg_event_id": "x2", "event": "open", "timestamp": "yesterday"},
        {"sg_event_id": "x3", "event": "open", "timestamp": True},
        good[1],
    ]
    body = json.dumps(batch).encode()
    response = web.post_events(body)
    assert response.status_code == 400
    report = response.json()
    assert report["stored"] == 2 and report["rejected_count"] == 5
    assert [r["index"] for r in report["rejected"]] == [1, 2, 3, 4, 5]
    assert message(web.engine, uid).delivery_status == "delivered"
    # SendGrid retries the batch: still 400 for the bad items, the good ones stay stored once
    retry = web.post_events(body)
    assert retry.status_code == 400 and retry.json()["stored"] == 0
    assert stored_events(web.engine) == 2
    # a lone surrogate cannot be stored by any database: that item is rejected, not the batch
    tricky = (
        b'[{"sg_event_id":"s1","event":"open","timestamp":1,"email":"\\ud800"},'
        + json.dumps(event(uid, "click", T0 + 2)).encode()
        + b"]"
    )
    response = web.post_events(tricky)
    assert response.status_code == 400 and response.json()["stored"] == 1


def test_suppressions_from_events_are_honoured_by_the_next_plan(web: WebServer) -> None:
    as_of = datetime.now(UTC)
    world = World(web.engine, as_of)
    people = {
        name: world.customer(name, email=f"{name}@example.com", orders_days_ago=(1.5,))
        for name in ("bounced", "blocked", "spam", "unsub", "group", "regroup", "fine")
    }
    batch = [
        event(None, "bounce", T0, "bounced@example.com", type="bounce"),
        event(None, "bounce", T0, "blocked@example.com", type="blocked"),
        event(None, "spamreport", T0, "spam@example.com"),
        event(None, "unsubscribe", T0, "unsub@example.com"),
        event(None, "group_unsubscribe", T0, "group@example.com", asm_group_id=7),
        # regroup: resubscribed later, but the resubscribe arrives first
        event(None, "group_resubscribe", T0 + 100, "regroup@example.com", asm_group_id=7),
    ]
    assert web.post_events(batch).status_code == 200
    assert (
        web.post_events(
            [event(None, "group_unsubscribe", T0, "REGROUP@example.com", asm_group_id=7)]
        ).status_code
        == 200
    )
    assert suppressions(web.engine) == {
        "bounced@example.com": "bounce",
        "spam@example.com": "spamreport",
        "unsub@example.com": "unsubscribe",
        "group@example.com": "group_unsubscribe",
    }
    # a later resubscribe lifts the group unsubscribe
    web.post_events(
        [event(None, "group_resubscribe", T0 + 200, "group@example.com", asm_group_id=7)]
    )
    assert "group@example.com" not in suppressions(web.engine)

    catalog = load_catalog(REPOSITORY_ROOT / "campaigns")
    with web.engine.begin() as connection:
        plan = plan_campaign(connection, catalog, catalog.campaign("thank_you"), as_of)
        rows = connection.execute(
            select(Message.customer_id, Message.skip_reason).where(Message.campaign == "thank_you")
        )
        skipped = {customer_id: reason for customer_id, reason in rows}
    assert plan.skipped.get(SkipReason.SUPPRESSED) == 3
    assert {name for name, cid in people.items() if skipped[cid] == "suppressed"} == {
        "bounced",
        "spam",
        "unsub",
    }


def test_no_verification_key_answers_503(engine: Engine, signing_key: SigningKey) -> None:
    with running(engine, signing_key, public_key=None) as server:
        response = server.post_events([event(None, "delivered", T0)])
        assert response.status_code == 503
        assert server.http.get("/healthz").json() == {"ok": True}
    assert stored_events(engine) == 0


def test_concurrent_retries_of_one_batch_store_each_event_once(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    uids = [add_message(web.engine, world.customer(f"P{i}")) for i in range(20)]
    batch = [
        event(uid, kind, T0 + i)
        for i, uid in enumerate(uids)
        for kind in ("processed", "delivered")
    ]
    body = json.dumps(batch).encode()
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: web.post_events(body), range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert sum(r.json()["stored"] for r in responses) == len(batch)
    assert stored_events(web.engine) == len(batch)


@pytest.mark.slow
def test_a_batch_of_ten_thousand_events(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    customer = world.customer("Massimo")
    uids = add_messages(web.engine, customer, 2_500)
    kinds = ("processed", "delivered", "open", "click")
    batch = [
        event(uid, kind, T0 + k, f"m{i}@example.com")
        for i, uid in enumerate(uids)
        for k, kind in enumerate(kinds)
    ]
    assert len(batch) == 10_000
    started = time.perf_counter()
    response = web.post_events(batch)
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.text[:500]
    assert response.json()["stored"] == 10_000 and response.json()["matched"] == 10_000
    assert stored_events(web.engine) == 10_000
    with web.engine.connect() as connection:
        statuses = connection.execute(
            select(Message.delivery_status, func.count()).group_by(Message.delivery_status)
        ).all()
    assert [tuple(row) for row in statuses] == [("click", 2_500)]
    print(f"\n10,000 events in one request: {seconds:.2f} s ({10_000 / seconds:,.0f} events/s)")
    replay = web.post_events(batch)
    assert replay.json()["duplicates"] == 10_000 and stored_events(web.engine) == 10_000


def test_ingest_events_works_without_http(engine: Engine) -> None:
    world = World(engine, datetime.now(UTC))
    uid = add_message(engine, world.customer("Nora"), status="ambiguous")
    received = datetime.now(UTC)
    with engine.begin() as connection:
        report = ingest_events(connection, [event(uid, "delivered", T0), {"bad": 1}], received)
    assert (report.stored, len(report.rejected), report.reconciled) == (1, 1, 1)
    with engine.begin() as connection:
        again = ingest_events(connection, [event(uid, "delivered", T0)], received)
    assert again.stored == 1  # a new sg_event_id: a different event
    row = message(engine, uid)
    assert row.status == "sent" and row.delivery_status == "delivered"
