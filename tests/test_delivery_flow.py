"""The lifecycle-cycle flow, run for real by Prefect, delivering through the SendGrid sender to
the local fake SendGrid over HTTP, on SQLite and PostgreSQL.

A lost answer makes one message ambiguous: the run's summary says so, the next run holds it
(reported, not re-sent) and, once SendGrid's events for it are ingested, reconciles it.
Batch tasks name their claims after their task run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ciclovita.db.models import CustomerScore, Message
from ciclovita.delivery.event_effects import ingest_events
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.runtime import reset_runtimes
from ciclovita_testing.fake_sendgrid import FakeSendGrid, drop_connection
from tests.test_delivery_support import processed_events

AS_OF = datetime(2026, 6, 16, 9, 0, tzinfo=UTC)
KEY = "SG.flow-test"

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
def fake(app_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=KEY) as server:
        monkeypatch.setenv("CICLOVITA_SENDER", "sendgrid")
        monkeypatch.setenv("CICLOVITA_SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("CICLOVITA_SENDGRID_HOST", server.url)
        reset_runtimes()
        yield server
        reset_runtimes()


def test_a_lost_answer_is_reported_held_and_reconciled(engine: Engine, fake: FakeSendGrid) -> None:
    from flows.lifecycle_cycle import lifecycle_cycle

    generate_demo_data(engine, customers=3000, seed=3, as_of=AS_OF)
    fake.script(drop_connection(after_accept=True))  # the first request: taken, answer lost
    first = lifecycle_cycle(as_of=AS_OF, campaigns=["thank_you"], batch_size=40)

    delivery = first["delivery"]
    sent = delivery["sent"]
    assert sent > 0
    assert delivery["ambiguous"] == 1
    assert delivery["failed"] == delivery["retried"] == 0
    assert first["outbox"]["thank_you"].get("ambiguous") == 1
    assert len(fake.accepted()) == sent + 1
    assert fake.duplicate_ids() == {}
    with engine.connect() as connection:
        workers = set(connection.execute(select(Message.claimed_by).distinct()).scalars())
        [held] = connection.execute(
            select(Message.uid).where(Message.status == "ambiguous")
        ).scalars()
    assert {w.split(":")[0] for w in workers if w} == {"task"}

    second = lifecycle_cycle(as_of=AS_OF + timedelta(minutes=30), campaigns=["thank_you"])
    assert second["reconciled"]["ambiguous"] == 1  # held and reported, not re-sent
    assert second["delivery"]["ambiguous"] == 0
    assert fake.accepted_id_counts()[held] == 1
    assert fake.duplicate_ids() == {}

    with engine.begin() as connection:
        ingest_events(
            connection, processed_events(fake.accepted_messages(), time.time()), datetime.now(UTC)
        )
    third = lifecycle_cycle(as_of=AS_OF + timedelta(minutes=60), campaigns=["thank_you"])
    assert third["reconciled"]["ambiguous"] == 0
    fake.assert_accepted_once(fake.accepted_ids())
    with engine.connect() as connection:
        statuses = set(
            connection.execute(
                select(Message.status).where(Message.campaign == "thank_you").distinct()
            ).scalars()
        )
    assert "ambiguous" not in statuses and "sending" not in statuses


def test_a_dry_run_renders_what_the_real_run_then_sends_and_keeps_nothing(
    engine: Engine, fake: FakeSendGrid
) -> None:
    from ciclovita.db.models import CycleRun
    from flows.lifecycle_cycle import lifecycle_cycle

    generate_demo_data(engine, customers=1500, seed=4, as_of=AS_OF)
    with engine.connect() as connection:
        scores_before = connection.execute(select(func.count()).select_from(CustomerScore)).scalar()
    rehearsal = lifecycle_cycle(as_of=AS_OF, campaigns=["thank_you"], dry_run=True)

    assert rehearsal["dry_run"] is True
    assert fake.requests() == []
    with engine.connect() as connection:
        for model in (Message, CycleRun):
            assert connection.execute(select(func.count()).select_from(model)).scalar() == 0
        after = connection.execute(select(func.count()).select_from(CustomerScore)).scalar()
    assert after == scores_before
    [plan] = rehearsal["plans"]
    rendered = rehearsal["delivery"]["by_campaign"]["thank_you"]["rendered"]
    assert rendered == plan["planned"] - plan["held_window"] > 0
    assert rehearsal["delivery"]["errors"] == []

    real = lifecycle_cycle(as_of=AS_OF, campaigns=["thank_you"])
    assert real["delivery"]["sent"] == rendered
    assert real["plans"][0]["planned"] == plan["planned"]
    assert len(fake.accepted()) == rendered
