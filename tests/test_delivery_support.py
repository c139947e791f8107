"""A delivery world for the delivery tests and the delivery benchmark, and its own checks.

``DeliveryWorld`` writes N customers with marketing consent into a migrated database, a
catalogue with one letter campaign (a daily schedule trigger, the repository's ``nurture``
templates, it/en) and plans it with the real planner: N outbox rows due at ``AS_OF``.
``settings`` points ciclovita at that database and catalogue, and the SendGrid sender at a
local fake. ``processed_events`` turns what a double accepted (the fake SendGrid, the recording
sender) into the events SendGrid's webhook would post (``processed``), for
``ciclovita.web.webhook.ingest_events``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from ciclovita.campaigns.catalog import Catalog, load_catalog
from ciclovita.db.models import Consent, Customer, Message, table_of
from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG
from ciclovita.planning.planner import plan_all
from ciclovita.settings import REPOSITORY_ROOT, Settings
from ciclovita.vocabulary import DEFAULT_TIMEZONE

# a Tuesday, 11:00 in Rome: after the letter's 09:00 slot, outside quiet hours
AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CAMPAIGN = "letter"
API_KEY = "SG.delivery-tests"

LETTER_YAML = """\
description: A letter to every consenting customer (delivery tests and benchmark)
kind: marketing
priority: 10
trigger:
  schedule: "0 9 * * *"
  expires_after: 12h
audience:
  consent: marketing
content:
  template: nurture
  subject:
    it: "{{ customer.first_name or 'Ciao' }}, tre domande da farsi prima di scegliere"
    en: "{{ customer.first_name or 'Hi' }}, three questions to ask before you choose"
  preheader:
    it: "Una lettura di due minuti, senza impegno."
    en: "A two-minute read, no strings attached."
  locales: [it, en]
  fallback_locale: en
guards:
  frequency_cap: false
"""

FIRST_NAMES = ("Giulia", "Marco", "Anna", "Luca", "Sofia", "Émile", "Zoë", "Ольга", "José")
LAST_NAMES = ("Rossi", "Bianchi", "O'Brien", "Müller", "Smith", "Nguyễn")


def write_catalog(directory: Path, campaigns: Iterable[str] = (CAMPAIGN,)) -> Path:
    """The repository's policy, lifecycle and segments, plus letter campaigns."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("policy.yaml", "lifecycle.yaml", "segments.yaml"):
        shutil.copy(REPOSITORY_ROOT / "campaigns" / name, directory / name)
    for name in campaigns:
        (directory / f"{name}.yaml").write_text(LETTER_YAML, encoding="utf-8")
    return directory


def add_customers(engine: Engine, count: int, *, consent: bool = True) -> list[int]:
    """``count`` customers (it/en, Rome, unicode names), with marketing consent."""
    with engine.begin() as connection:
        first = connection.execute(select(func.coalesce(func.max(Customer.id), 0))).scalar_one()
        tag = uuid.uuid4().hex[:6]
        ids = list(range(first + 1, first + count + 1))
        for start in range(0, count, 10_000):
            part = ids[start : start + 10_000]
            connection.execute(
                insert(table_of(Customer)),
                [
                    {
                        "id": i,
                        "external_id": f"d-{tag}-{i}",
                        "email": f"customer{i}.{tag}@example.com",
                        "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                        "last_name": LAST_NAMES[i % len(LAST_NAMES)],
                        "locale": "it" if i % 3 else "en",
                        "timezone": DEFAULT_TIMEZONE,
                        "country": "IT",
                        "created_at": AS_OF - timedelta(days=400),
                        "attributes": {},
                    }
                    for i in part
                ],
            )
            if consent:
                connection.execute(
                    insert(table_of(Consent)),
                    [
                        {
                            "customer_id": i,
                            "topic": "marketing",
                            "granted": True,
                            "source": "test",
                            "recorded_at": AS_OF - timedelta(days=300),
                        }
                        for i in part
                    ],
                )
    return ids


@dataclass
class DeliveryWorld:
    """A database with customers and a catalogue whose letter campaign is due at AS_OF."""

    engine: Engine
    database_url: str
    catalog_dir: Path
    outbox_dir: Path

    @classmethod
    def create(
        cls, engine: Engine, database_url: str, directory: Path, customers: int = 0
    ) -> DeliveryWorld:
        world = cls(engine, database_url, write_catalog(directory / "campaigns"), directory / "eml")
        if customers:
            add_customers(engine, customers)
        return world

    @property
    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_dir)

    def plan(self, as_of: datetime = AS_OF) -> list[str]:
        """Plan every campaign; returns the uids of the rows now planned."""
        with self.engine.begin() as connection:
            plan_all(connection, self.catalog, as_of)
        return self.uids("planned")

    def uids(self, status: str | None = None) -> list[str]:
        query = select(Message.uid).order_by(Message.id)
        if status is not None:
            query = query.where(Message.status == status)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def statuses(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {
                status: int(n)
                for status, n in connection.execute(
                    select(Message.status, func.count()).group_by(Message.status)
                )
            }

    def settings(self, sendgrid_host: str | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "campaigns_dir": self.catalog_dir,
            "templates_dir": REPOSITORY_ROOT / "templates",
            "outbox_dir": self.outbox_dir,
            "sender": "sendgrid" if sendgrid_host else "file",
            "sendgrid_api_key": API_KEY,
            "public_base_url": "https://ciclovita.example",
        }
        if sendgrid_host:
            values["sendgrid_host"] = sendgrid_host
        values.update(overrides)
        return Settings(_env_file=None, **values)

    def environment(self, sendgrid_host: str | None = None, **overrides: Any) -> dict[str, str]:
        """The same settings as ``CICLOVITA_*`` variables, for a child process."""
        settings = self.settings(sendgrid_host, **overrides)
        env = {
            "CICLOVITA_DATABASE_URL": settings.database_url,
            "CICLOVITA_CAMPAIGNS_DIR": str(settings.campaigns_dir),
            "CICLOVITA_TEMPLATES_DIR": str(settings.templates_dir),
            "CICLOVITA_OUTBOX_DIR": str(settings.outbox_dir),
            "CICLOVITA_SENDER": settings.sender,
            "CICLOVITA_SENDGRID_API_KEY": API_KEY,
            "CICLOVITA_SENDGRID_HOST": settings.sendgrid_host,
            "CICLOVITA_PUBLIC_BASE_URL": settings.public_base_url,
        }
        env.update({f"CICLOVITA_{k.upper()}": str(v) for k, v in overrides.items()})
        return env


def processed_events(accepted: Iterable[tuple[str, str | None]], at: float) -> list[dict[str, Any]]:
    """The ``processed`` event SendGrid posts for each message it accepted, given as (our
    message id, the provider's id) pairs: a double's ``accepted_messages()``."""
    return [
        {
            "sg_event_id": f"processed-{uid}-{provider_id}",
            "sg_message_id": f"{provider_id}.filter0001",
            "event": "processed",
            "timestamp": int(at),
            "email": f"{uid}@example.com",
            MESSAGE_ID_ARG: uid,
        }
        for uid, provider_id in accepted
    ]


# -------------------------------------------------------------------------- the world's checks


def test_the_world_plans_one_letter_per_consenting_customer(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    world = DeliveryWorld.create(engine, database_url, tmp_path, customers=30)
    add_customers(engine, 5, consent=False)
    planned = world.plan()
    assert len(planned) == 30
    assert world.statuses() == {"planned": 30, "skipped": 5}
    assert world.plan() == planned  # planning again adds nothing
