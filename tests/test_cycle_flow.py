"""The lifecycle-cycle flow, run for real by Prefect, on SQLite and PostgreSQL.

Demo data in, one cycle: stages computed, thank-you notes planned, rendered and written as
.eml files that we read back as real MIME; a second cycle sends nothing twice.
"""

from __future__ import annotations

import email
import email.message
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ciclovita.db.models import Consent, CustomerScore, Message, Order
from ciclovita.ingest.demo import generate_demo_data
from tests.builders import dict_of

# 11:00 in Rome: inside every send window, so nothing is held for quiet hours
AS_OF = datetime(2026, 6, 16, 9, 0, tzinfo=UTC)

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]


def _part(message: email.message.EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


def _eml_files(outbox: Path) -> list[Path]:
    return sorted(outbox.glob("*/*.eml"))


def test_cycle_sends_thank_you_notes_once(engine: Engine, app_settings: Path) -> None:
    from flows.lifecycle_cycle import lifecycle_cycle

    generate_demo_data(engine, customers=500, seed=3, as_of=AS_OF)
    summary = lifecycle_cycle(as_of=AS_OF, campaigns=["thank_you"])

    assert sum(summary["stages"].values()) == 500
    with engine.connect() as connection:
        scored = connection.execute(select(func.count()).select_from(CustomerScore)).scalar_one()
        due_orders = connection.execute(
            select(func.count())
            .select_from(Order)
            .where(
                Order.status == "completed",
                Order.placed_at > AS_OF - timedelta(days=4),
                Order.placed_at <= AS_OF - timedelta(days=1),
            )
        ).scalar_one()
        statuses = dict_of(
            connection.execute(
                select(Message.status, func.count())
                .where(Message.campaign == "thank_you")
                .group_by(Message.status)
            ).all()
        )
        reasons = dict_of(
            connection.execute(
                select(Message.skip_reason, func.count())
                .where(Message.status == "skipped")
                .group_by(Message.skip_reason)
            ).all()
        )
    assert scored == 500
    assert due_orders > 0
    # every due order has exactly one outbox row, sent or skipped with a reason
    assert sum(statuses.values()) == due_orders
    assert statuses.get("sent", 0) > 0
    assert set(reasons) <= {"no_consent", "no_email", "suppressed", "frequency_cap"}
    files = _eml_files(app_settings)
    assert len(files) == statuses["sent"]

    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        assert message["X-Ciclovita-Message-Id"] == path.stem
        assert message["List-Unsubscribe"].startswith("<http") and message[
            "List-Unsubscribe"
        ].endswith(">")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = _part(message, "plain")
        html = _part(message, "html")
        assert "{{" not in text and "{{" not in html
        assert 'style="' in html  # CSS inlined for email clients
        assert message["Subject"].startswith(
            ("Grazie per il tuo ordine", "Thank you for your order")
        )

    # only customers with marketing consent were written to
    with engine.connect() as connection:
        sent_to = set(
            connection.execute(
                select(Message.customer_id).where(Message.status == "sent")
            ).scalars()
        )
        consenting = set(
            connection.execute(
                select(Consent.customer_id).where(
                    Consent.topic == "marketing", Consent.granted.is_(True)
                )
            ).scalars()
        )
    assert sent_to <= consenting

    again = lifecycle_cycle(as_of=AS_OF + timedelta(minutes=30), campaigns=["thank_you"])
    assert again["delivery"]["sent"] == 0
    assert len(_eml_files(app_settings)) == len(files)
