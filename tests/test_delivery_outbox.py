"""Delivery through the outbox, on SQLite and PostgreSQL.

Each planned message is sent once and recorded with the provider's id; refusals, retries
and lost answers land in the right state; rows whose fate is unknown are held and
reconciled from provider events, never re-sent; claims keep concurrent deliveries apart and
expire on the wall clock; a late answer never overwrites what the webhook settled; the send
cap, the late guards (suppression, consent), dry runs and render workers.

Most tests deliver to the in-memory recording sender (``tests/support/recording_sender.py``),
which is told which messages fail and how. Three go through the SendGrid sender and the
official client to the fake SendGrid over HTTP: the end-to-end send with SendGrid's ids and
request body, SendGrid's refusals, 5xx and lost answers landing in their states, and
requests built ahead in render workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update

from ciclovita.db.models import Consent, Message, Suppression, table_of
from ciclovita.delivery import outbox
from ciclovita.delivery.dispatch import deliver, reconcile
from ciclovita.delivery.event_effects import ingest_events
from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.outbox import CLAIM_LEASE, MAX_ATTEMPTS, SENDING_LEASE
from ciclovita.delivery.render_pool import close_pool
from ciclovita.delivery.reports import ReconcileReport
from ciclovita.delivery.senders.sendgrid import RetryPolicy, SendGridSender
from ciclovita.rendering.builder import MessageBuilder
from ciclovita.runtime import Runtime
from ciclovita.vocabulary import SendResult
from ciclovita_testing.fake_sendgrid import (
    FakeSendGrid,
    bad_request,
    drop_connection,
    server_error,
)
from tests.support.recording_sender import RecordingSender
from tests.test_delivery_support import (
    API_KEY,
    AS_OF,
    CAMPAIGN,
    DeliveryWorld,
    add_customers,
    processed_events,
)

QUICK = RetryPolicy(max_attempts=2, base_backoff=0.01, max_backoff=0.02, deadline=5.0)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def world(engine: Engine, database_url: str, tmp_path: Path) -> DeliveryWorld:
    return DeliveryWorld.create(engine, database_url, tmp_path)


@pytest.fixture
def builder(world: DeliveryWorld) -> Iterator[MessageBuilder]:
    runtime = Runtime(world.settings(sendgrid_asm_group_id=77))
    yield runtime.builder
    close_pool(runtime.builder)


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def sendgrid(fake: FakeSendGrid) -> Iterator[SendGridSender]:
    sender = SendGridSender(API_KEY, host=fake.url, concurrency=8, policy=QUICK)
    yield sender
    sender.close()


def rows(engine: Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as connection:
        found = connection.execute(
            select(
                Message.uid,
                Message.status,
                Message.attempts,
                Message.provider_message_id,
                Message.error,
                Message.due_at,
                Message.skip_reason,
            )
        ).all()
    return {row.uid: dict(row._mapping) for row in found}


def ingest(engine: Engine, events: list[dict[str, object]]) -> None:
    with engine.begin() as connection:
        ingest_events(connection, events, datetime.now(UTC))


# ------------------------------------------------------------- through SendGrid, over HTTP


def test_each_planned_message_is_sent_once_and_recorded(
    world: DeliveryWorld,
    engine: Engine,
    fake: FakeSendGrid,
    builder: MessageBuilder,
    sendgrid: SendGridSender,
) -> None:
    add_customers(engine, 120)
    uids = world.plan()
    report = deliver(engine, builder, sendgrid, as_of=AS_OF, batch_size=50)

    fake.assert_accepted_once(uids)
    assert (report.claimed, report.sent, report.rendered) == (120, 120, 120)
    assert report.failed == report.ambiguous == report.retried == 0
    assert report.by_campaign == {CAMPAIGN: {"sent": 120}}
    provider_ids = dict(fake.accepted_messages())
    stored = rows(engine)
    assert {u: r["status"] for u, r in stored.items()} == dict.fromkeys(uids, "sent")
    assert {u: r["provider_message_id"] for u, r in stored.items()} == provider_ids
    assert {r["attempts"] for r in stored.values()} == {1}

    [record] = [r for r in fake.accepted() if r.ids[0] == uids[0]]
    body = record.body
    assert body["asm"] == {"group_id": 77}
    assert body["categories"][0] == CAMPAIGN
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["from"]["email"] == "ciao@ciclovita.example"

    again = deliver(engine, builder, sendgrid, as_of=AS_OF + timedelta(hours=1))
    assert (again.claimed, again.sent) == (0, 0)
    assert len(fake.requests()) == 120


def test_refusals_retries_and_lost_answers_each_land_in_their_state(
    world: DeliveryWorld,
    engine: Engine,
    fake: FakeSendGrid,
    builder: MessageBuilder,
    sendgrid: SendGridSender,
) -> None:
    add_customers(engine, 10)
    uids = world.plan()
    refused, failing, lost = uids[0], uids[1], uids[2]
    fake.script(bad_request("Invalid email address.", "personalizations.0.to"), message_id=refused)
    fake.script(server_error(503, "try later"), times=None, message_id=failing)
    fake.script(drop_connection(after_accept=True), message_id=lost)

    report = deliver(engine, builder, sendgrid, as_of=AS_OF)

    assert (report.sent, report.failed, report.retried, report.ambiguous) == (7, 1, 1, 1)
    stored = rows(engine)
    assert stored[refused]["status"] == "failed"
    assert stored[refused]["error"] == "400: personalizations.0.to: Invalid email address."
    assert stored[failing]["status"] == "planned"
    assert stored[failing]["due_at"] == AS_OF + timedelta(seconds=60)
    assert "503" in str(stored[failing]["error"])
    assert stored[lost]["status"] == "ambiguous"
    assert sum(1 for r in fake.requests() if r.ids == (failing,)) == QUICK.max_attempts

    # a later run: the refused and the ambiguous are never tried again; the retry is
    fake.reset()
    later = deliver(engine, builder, sendgrid, as_of=AS_OF + timedelta(minutes=5))
    assert (later.claimed, later.sent) == (1, 1)
    fake.assert_accepted_once([failing])
    assert rows(engine)[failing]["attempts"] == 2


def test_render_workers_send_the_same_messages(
    world: DeliveryWorld, engine: Engine, fake: FakeSendGrid, sendgrid: SendGridSender
) -> None:
    """Render workers build SendGrid's requests ahead; the delivering process only sends."""
    add_customers(engine, 150)
    uids = world.plan()
    runtime = Runtime(world.settings(fake.url, render_processes=2))
    try:
        report = deliver(engine, runtime.builder, sendgrid, as_of=AS_OF, batch_size=100)
    finally:
        close_pool(runtime.builder)
    assert (report.sent, report.rendered) == (150, 150)
    fake.assert_accepted_once(uids)
    subjects = {r.body["subject"] for r in fake.accepted()}
    assert any(s.endswith(", tre domande da farsi prima di scegliere") for s in subjects)
    assert any(s.endswith(", three questions to ask before you choose") for s in subjects)


# ------------------------------------------------------------------ retries and held rows


def test_a_message_failing_every_run_gives_up_after_max_attempts(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 1)
    [uid] = world.plan()
    sender.fail(uid, "retry", times=None, error="500: internal server error")
    as_of = AS_OF
    for _ in range(MAX_ATTEMPTS):
        deliver(engine, builder, sender, as_of=as_of)
        as_of += timedelta(minutes=2)
    row = rows(engine)[uid]
    assert (row["status"], row["attempts"]) == ("failed", MAX_ATTEMPTS)
    assert str(row["error"]).startswith(f"gave up after {MAX_ATTEMPTS} attempts: 500")
    assert len(sender.sends) == MAX_ATTEMPTS
    assert sender.accepted() == []


def test_an_ambiguous_message_is_held_then_reconciled_from_provider_events(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 3)
    uids = world.plan()
    sender.fail(uids[1], "ambiguous", accepted=True)  # taken, the answer lost
    deliver(engine, builder, sender, as_of=AS_OF)
    assert reconcile(engine, sender) == ReconcileReport(ambiguous=1)
    deliver(engine, builder, sender, as_of=AS_OF + timedelta(hours=1))
    sender.assert_accepted_once(uids)  # held: not sent a second time
    assert sorted(sender.sent_uids()) == sorted(uids)

    ingest(engine, processed_events(sender.accepted_messages(), time.time()))
    assert reconcile(engine, sender).ambiguous == 0
    row = rows(engine)[uids[1]]
    provider_id = dict(sender.accepted_messages())[uids[1]]
    assert (row["status"], row["provider_message_id"]) == ("sent", provider_id)


def test_a_worker_that_died_mid_send_leaves_rows_held_never_resent(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 6)
    uids = world.plan()
    now = datetime.now(UTC)
    with engine.begin() as connection:  # a worker claims 4 and commits 2 as sending, then dies
        claimed = outbox.claim(connection, "dead", 4, AS_OF, now=now)
        outbox.start_sending(connection, claimed[:2], "dead", now)

    report = deliver(engine, builder, sender, as_of=AS_OF)
    assert report.sent == 2  # the claim lease has not expired; sending rows are never taken
    assert reconcile(engine, sender).sending == 2

    later = now + CLAIM_LEASE + timedelta(seconds=1)
    report = deliver(engine, builder, sender, as_of=AS_OF, clock=lambda: later)
    assert report.sent == 2  # the abandoned claims, taken over
    with engine.begin() as connection:
        assert outbox.start_sending(connection, claimed[2:], "dead", later) == []

    result = reconcile(engine, sender, now + SENDING_LEASE + timedelta(seconds=1))
    assert (result.newly_ambiguous, result.ambiguous, result.sending) == (2, 2, 0)
    sender.assert_accepted_once(u for u in uids if rows(engine)[u]["status"] == "sent")
    assert len(sender.sends) == 4

    # SendGrid had one of them after all: its event settles it; the other stays held
    sending_uid = next(u for u, r in rows(engine).items() if r["status"] == "ambiguous")
    ingest(
        engine,
        [
            {
                "sg_event_id": "ev-1",
                "sg_message_id": "sg-123.filter",
                "event": "delivered",
                "timestamp": int(time.time()),
                "email": "x@example.com",
                "ciclovita_message_id": sending_uid,
            }
        ],
    )
    row = rows(engine)[sending_uid]
    assert (row["status"], row["provider_message_id"]) == ("sent", "sg-123")
    assert reconcile(engine, sender).ambiguous == 1


def test_reconcile_settles_ambiguous_rows_from_events_stored_before(
    world: DeliveryWorld, engine: Engine, sender: RecordingSender
) -> None:
    """Events that arrived while the row was still claimed elsewhere are not lost."""
    add_customers(engine, 1)
    [uid] = world.plan()
    ingest(
        engine,
        [
            {
                "sg_event_id": "ev-early",
                "sg_message_id": "sg-early.x",
                "event": "processed",
                "timestamp": int(time.time()),
                "ciclovita_message_id": uid,
            }
        ],
    )
    with engine.begin() as connection:
        connection.execute(update(Message).values(status="ambiguous", claimed_by="w"))
    assert reconcile(engine, sender) == ReconcileReport(resolved=1)
    assert rows(engine)[uid]["provider_message_id"] == "sg-early"
    assert sender.sends == []


def test_a_retried_message_the_provider_already_has_is_not_sent_again(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    """A 5xx answer for a request SendGrid did accept: its events stop a second copy."""
    add_customers(engine, 2)
    uids = world.plan()
    sender.fail(uids[0], "retry", error="500: internal server error")
    deliver(engine, builder, sender, as_of=AS_OF)
    assert rows(engine)[uids[0]]["status"] == "planned"
    ingest(
        engine,
        [
            {
                "sg_event_id": "ev-5xx",
                "sg_message_id": "sg-5xx.y",
                "event": "delivered",
                "timestamp": int(time.time()),
                "ciclovita_message_id": uids[0],
            }
        ],
    )
    report = deliver(engine, builder, sender, as_of=AS_OF + timedelta(minutes=5))
    assert report.sent == 1 and report.claimed == 1
    assert rows(engine)[uids[0]]["status"] == "sent"
    assert sender.accepted_ids() == [uids[1]]
    assert sorted(sender.sent_uids()) == sorted(uids)  # the retry was never sent


def test_a_late_answer_never_overwrites_what_the_webhook_settled(
    world: DeliveryWorld, engine: Engine
) -> None:
    add_customers(engine, 2)
    uids = world.plan()
    now = datetime.now(UTC)
    with engine.begin() as connection:
        ids = outbox.claim(connection, "w", 2, AS_OF, now=now)
        outbox.start_sending(connection, ids, "w", now)
        connection.execute(update(Message).where(Message.uid == uids[0]).values(status="sent"))
        applied = outbox.record_outcomes(
            connection,
            [
                SendOutcome(uids[0], SendResult.AMBIGUOUS, error="timeout"),
                SendOutcome(uids[1], SendResult.FAILED),
            ],
            {uids[0]: ids[0], uids[1]: ids[1]},
            "other-worker",
            "sendgrid",
            AS_OF,
        )
    assert applied == {}
    assert {u: r["status"] for u, r in rows(engine).items()} == {
        uids[0]: "sent",
        uids[1]: "sending",
    }


def test_leases_run_on_the_wall_clock_not_on_the_run_time(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    """A run for a time long past must not take over the claims of a live run."""
    add_customers(engine, 4)
    world.plan()
    with engine.begin() as connection:
        live = outbox.claim(connection, "live", 2, AS_OF)
    report = deliver(engine, builder, sender, as_of=AS_OF + timedelta(days=30))
    assert report.claimed == 2
    with engine.begin() as connection:
        assert outbox.start_sending(connection, live, "live", datetime.now(UTC)) == live


def test_an_operator_can_release_held_messages_the_provider_never_had(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 3)
    uids = world.plan()
    sender.fail(uids[0], "ambiguous")  # lost before the provider took it
    sender.fail(uids[1], "ambiguous", accepted=True)
    deliver(engine, builder, sender, as_of=AS_OF)
    ingest(engine, processed_events(sender.accepted_messages(), time.time()))  # settles uids[1]
    with engine.begin() as connection:
        connection.execute(update(Message).where(Message.uid == uids[1]).values(status="ambiguous"))
        released = outbox.release_ambiguous(connection, uids, AS_OF)
    assert released == [uids[0]]  # the one the provider reported on stays as it is

    deliver(engine, builder, sender, as_of=AS_OF)
    sender.assert_accepted_once(uids)


def test_operators_see_and_release_held_messages_from_the_command_line(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    """``ciclovita outbox status`` lists what is held; ``outbox release`` lets one go."""
    import subprocess
    import sys

    from ciclovita.settings import REPOSITORY_ROOT

    add_customers(engine, 4)
    uids = world.plan()
    sender.fail(uids[2], "ambiguous")
    deliver(engine, builder, sender, as_of=AS_OF)
    env = world.environment()
    env.update(PYTHONPATH=str(REPOSITORY_ROOT), COLUMNS="250")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ciclovita", "outbox", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    shown = cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "Ambiguous messages (1)" in shown.stdout and uids[2] in shown.stdout
    # released at the test's own clock, so the message is due when the next delivery runs
    refused = cli("release", "--as-of", AS_OF.isoformat(), uids[0], uids[2])  # uids[0] was sent
    assert refused.returncode == 1
    assert f"released {uids[2]}" in refused.stdout
    assert f"not released {uids[0]}" in refused.stdout
    assert world.statuses() == {"sent": 3, "planned": 1}
    deliver(engine, builder, sender, as_of=AS_OF + timedelta(minutes=1))
    sender.assert_accepted_once(uids)
    assert "no ambiguous messages" in cli("status").stdout


# -------------------------------------------------------------------------- concurrency


def test_concurrent_deliveries_never_take_the_same_message(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder
) -> None:
    add_customers(engine, 300)
    uids = world.plan()
    senders = [RecordingSender(concurrency=4, delay=0.002) for _ in range(4)]
    reports = []

    def one(sender: RecordingSender) -> None:
        reports.append(deliver(engine, builder, sender, as_of=AS_OF, batch_size=20))

    threads = [threading.Thread(target=one, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(uid for sender in senders for uid in sender.sent_uids()) == sorted(uids)
    assert sum(r.sent for r in reports) == 300
    assert sum(1 for r in reports if r.sent) > 1  # they really shared the work


# --------------------------------------------------------------------- cap, guards, dry run


def test_the_send_cap_stops_a_run(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 50)
    world.plan()
    report = deliver(engine, builder, sender, as_of=AS_OF, batch_size=7, max_messages=20)
    assert (report.claimed, report.sent, report.cap_reached) == (20, 20, True)
    assert len(sender.sends) == 20
    assert world.statuses() == {"sent": 20, "planned": 30}


def test_late_guards_hold_back_suppressed_and_unconsented_customers(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    ids = add_customers(engine, 3)
    uids = world.plan()
    with engine.begin() as connection:  # after planning: a bounce, and a consent withdrawn
        email = connection.execute(
            select(Message.to_email).where(Message.customer_id == ids[0])
        ).scalar_one()
        connection.execute(
            insert(table_of(Suppression)),
            [{"email": email, "reason": "bounce", "source": "test", "created_at": AS_OF}],
        )
        connection.execute(
            update(Consent).where(Consent.customer_id == ids[1]).values(granted=False)
        )
    report = deliver(engine, builder, sender, as_of=AS_OF)
    assert (report.sent, report.skipped) == (1, 2)
    stored = rows(engine)
    assert [stored[u]["skip_reason"] for u in uids] == ["suppressed", "no_consent", None]
    assert sender.sent_uids() == [uids[2]]


def test_a_message_that_cannot_be_rendered_fails_alone(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 3)
    uids = world.plan()
    with engine.begin() as connection:
        connection.execute(update(Message).where(Message.uid == uids[0]).values(campaign="gone"))
    report = deliver(engine, builder, sender, as_of=AS_OF)
    assert (report.sent, report.failed) == (2, 1)
    assert "campaign no longer defined" in str(rows(engine)[uids[0]]["error"])
    assert sorted(sender.sent_uids()) == sorted(uids[1:])


def test_dry_run_renders_without_claiming_writing_or_sending(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder
) -> None:
    add_customers(engine, 25)
    world.plan()
    before = rows(engine)
    report = deliver(engine, builder, None, as_of=AS_OF, max_messages=20, dry_run=True)
    assert (report.dry_run, report.rendered, report.cap_reached) == (True, 20, True)
    assert report.by_campaign == {CAMPAIGN: {"rendered": 20}}
    assert rows(engine) == before


def test_a_refused_api_key_stops_the_run_and_leaves_every_message_due(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder
) -> None:
    add_customers(engine, 40)
    world.plan()
    sender = RecordingSender(concurrency=2)
    sender.refuse_everything("401: The provided authorization grant is invalid")
    report = deliver(engine, builder, sender, as_of=AS_OF, batch_size=10)
    assert report.stopped is not None and "401" in report.stopped
    assert report.sent == report.failed == 0
    assert world.statuses() == {"planned": 40}
    assert sender.accepted() == []


def test_a_retried_task_resumes_its_claims_within_its_size(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder, sender: RecordingSender
) -> None:
    add_customers(engine, 30)
    world.plan()
    now = datetime.now(UTC)
    with engine.begin() as connection:  # the first attempt claimed 10, sent 4, then failed
        claimed = outbox.claim(connection, "task:1", 10, AS_OF, now=now)
        outbox.start_sending(connection, claimed[:4], "task:1", now)
        connection.execute(update(Message).where(Message.id.in_(claimed[:4])).values(status="sent"))
    report = deliver(
        engine,
        builder,
        sender,
        as_of=AS_OF,
        batch_size=10,
        max_messages=10,
        single_batch=True,
        worker="task:1",
        resume=True,
    )
    assert (report.claimed, report.sent) == (6, 6)
    assert world.statuses() == {"sent": 10, "planned": 20}


def test_a_dry_run_inside_a_rolled_back_plan_sees_what_would_be_sent(
    world: DeliveryWorld, engine: Engine, builder: MessageBuilder
) -> None:
    """How ``ciclovita run --dry-run`` can plan and render without keeping anything."""
    from ciclovita.delivery.dispatch import render_due
    from ciclovita.planning.planner import plan_all

    add_customers(engine, 12)
    with engine.connect() as connection:
        transaction = connection.begin()
        plan_all(connection, world.catalog, AS_OF)
        report = render_due(connection, builder, as_of=AS_OF, limit=10)
        transaction.rollback()
    assert (report.rendered, report.cap_reached, report.errors) == (10, True, [])
    assert world.statuses() == {}
