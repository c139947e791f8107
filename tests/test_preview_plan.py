"""``ciclovita preview`` and ``ciclovita plan`` only read: real emails and real numbers,
and the database is left exactly as it was.

Each test gets a fresh database (SQLite and PostgreSQL) with the demo data and a first
recompute, then runs the real command in a subprocess. ``snapshot`` reads every table of the
database ordered by primary key and checksums its rows, before and after.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, func, select

from ciclovita import cycle
from ciclovita.campaigns.catalog import Catalog, load_catalog
from ciclovita.db.models import Base, Consent, Coupon, Customer, Message, Order
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.scoring.recompute import recompute_scores
from ciclovita.vocabulary import DEFAULT_TIMEZONE, SkipReason

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ROOT / "campaigns"
AS_OF = datetime(2026, 6, 16, 9, 0, tzinfo=UTC)  # a Tuesday: the weekly nurture is due too
AS_OF_ARG = "2026-06-16T09:00:00"
SEED = 7
TIMEZONE = DEFAULT_TIMEZONE
SUBJECTS = {
    "it": "Grazie per il tuo ordine, {}!",
    "en": "Thank you for your order, {}!",
}


def snapshot(engine: Engine) -> dict[str, tuple[int, str]]:
    """Every table of the database: its row count and a checksum of all its rows."""
    metadata = MetaData()
    metadata.reflect(bind=engine)
    out: dict[str, tuple[int, str]] = {}
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            digest = hashlib.sha256()
            count = 0
            for row in connection.execute(select(table).order_by(*order)):
                digest.update(repr(tuple(row)).encode())
                count += 1
            out[table.name] = (count, digest.hexdigest())
    assert set(Base.metadata.tables) <= set(out)
    return out


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(CAMPAIGNS)


@pytest.fixture
def demo(engine: Engine, catalog: Catalog) -> Engine:
    generate_demo_data(engine, customers=300, seed=SEED, as_of=AS_OF)
    recompute_scores(engine, catalog.lifecycle, AS_OF)
    return engine


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_DATABASE_URL=database_url,
        CICLOVITA_CAMPAIGNS_DIR=str(CAMPAIGNS),
        CICLOVITA_TEMPLATES_DIR=str(ROOT / "templates"),
        CICLOVITA_OUTBOX_DIR=str(tmp_path / "outbox"),
        PYTHONPATH=str(ROOT),
        COLUMNS="250",
    )
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ciclovita", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def customer_by_external_id(engine: Engine, external_id: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Customer).where(Customer.external_id == external_id)).one()


def read_eml(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> dict[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    found = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert set(found) == {"text/plain", "text/html"}
    return found


def lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").rstrip("\n").split("\n")


def previews(out: Path) -> dict[str, dict[str, Path]]:
    """``stem → {suffix: path}`` of the files a preview wrote."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(out.iterdir()):
        found.setdefault(path.stem, {})[path.suffix] = path
    return found


def check_preview(engine: Engine, stem: str, files: dict[str, Path]) -> tuple[Any, str]:
    """One previewed message: three files, a parseable multipart email for that customer."""
    assert set(files) == {".eml", ".html", ".txt"}, stem
    head, locale, variant = stem.rsplit("-", 2)
    campaign, external_id = head.split("-", 1)
    assert (campaign, variant) == ("thank_you", "default")
    customer = customer_by_external_id(engine, external_id)
    message = read_eml(files[".eml"])
    body = parts(message)
    for kind, suffix in (("text/html", ".html"), ("text/plain", ".txt")):
        written = files[suffix].read_text(encoding="utf-8")
        assert lines(body[kind]) == lines(written), suffix  # the .eml has CRLF line ends
    assert message["To"].addresses[0].addr_spec == customer.email
    subject = str(message["Subject"])
    assert "{{" not in subject and "}}" not in subject
    assert subject == SUBJECTS[locale].format(customer.first_name)
    assert customer.first_name in body["text/plain"]
    assert "{{" not in body["text/html"] and "{%" not in body["text/plain"]
    return customer, locale


def test_preview_sample_writes_real_emails_and_changes_nothing(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    before = snapshot(demo)
    assert before["customers"][0] == 300
    out = tmp_path / "preview"
    result = run_cli(
        cli_env, "preview", "thank_you", "--sample", "3", "--out", str(out), "--as-of", AS_OF_ARG
    )
    assert result.returncode == 0, result.stderr
    written = previews(out)
    assert len(written) == 3
    for stem, files in written.items():
        assert stem.startswith("thank_you-demo-")
        customer, locale = check_preview(demo, stem, files)
        assert locale == customer.locale
        assert stem in result.stdout or str(files[".eml"]) in result.stdout
    assert snapshot(demo) == before


def test_preview_one_customer_by_external_id(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with demo.connect() as connection:
        external_id, customer_id = connection.execute(
            select(Customer.external_id, Customer.id)
            .join(Order, Order.customer_id == Customer.id)
            .where(Customer.locale == "it", Order.status == "completed")
            .order_by(Customer.id)
            .limit(1)
        ).one()
        latest_order = connection.execute(
            select(Order.external_id)
            .where(Order.customer_id == customer_id, Order.status == "completed")
            .order_by(Order.placed_at.desc())
            .limit(1)
        ).scalar_one()
    before = snapshot(demo)
    out = tmp_path / "one"
    result = run_cli(
        cli_env, "preview", "thank_you", "--customer", external_id, "--out", str(out),
        "--as-of", AS_OF_ARG,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = previews(out)
    assert list(written) == [f"thank_you-{external_id}-it-default"]
    customer, locale = check_preview(demo, *next(iter(written.items())))
    assert (customer.id, locale) == (customer_id, "it")
    text = written[f"thank_you-{external_id}-it-default"][".txt"].read_text(encoding="utf-8")
    assert latest_order in text  # the customer's own latest order, not an invented one
    assert snapshot(demo) == before


def test_preview_locale_en_forces_english(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with demo.connect() as connection:
        external_id = connection.execute(
            select(Customer.external_id)
            .join(Order, Order.customer_id == Customer.id)
            .where(Customer.locale == "it")
            .order_by(Customer.id)
            .limit(1)
        ).scalar_one()
    before = snapshot(demo)
    out = tmp_path / "english"
    result = run_cli(
        cli_env, "preview", "thank_you", "--customer", external_id, "--locale", "en",
        "--out", str(out), "--as-of", AS_OF_ARG,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = previews(out)
    assert list(written) == [f"thank_you-{external_id}-en-default"]
    customer, locale = check_preview(demo, *next(iter(written.items())))
    assert (customer.locale, locale) == ("it", "en")
    text = written[f"thank_you-{external_id}-en-default"][".txt"].read_text(encoding="utf-8")
    assert "Thank you" in text and "Grazie" not in text
    assert snapshot(demo) == before


def test_preview_unknown_customer_exits_1_with_a_clear_message(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    before = snapshot(demo)
    out = tmp_path / "nobody"
    result = run_cli(cli_env, "preview", "thank_you", "--customer", "nobody-42", "--out", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "--customer: no customer with this id or external id (got 'nobody-42')" in result.stderr
    assert not out.exists() or not any(out.iterdir())

    bad_locale = run_cli(
        cli_env, "preview", "thank_you", "--sample", "1", "--locale", "fr", "--out", str(out)
    )
    assert bad_locale.returncode == 1
    assert "--locale: campaign 'thank_you' offers it, en (got 'fr')" in bad_locale.stderr

    unknown = run_cli(cli_env, "preview", "thank_yuo", "--sample", "1", "--out", str(out))
    assert unknown.returncode == 1
    assert "no campaign 'thank_yuo'" in unknown.stderr and "thank_you" in unknown.stderr
    assert not out.exists() or not any(out.iterdir())
    assert snapshot(demo) == before


def test_preview_sample_takes_customers_who_could_receive_it(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "sample"
    result = run_cli(
        cli_env, "preview", "thank_you", "--sample", "20", "--out", str(out), "--as-of", AS_OF_ARG
    )
    assert result.returncode == 0, result.stderr
    external_ids = {stem.split("-", 1)[1].rsplit("-", 2)[0] for stem in previews(out)}
    with demo.connect() as connection:
        consenting = set(
            connection.execute(
                select(Customer.external_id)
                .join(Consent, Consent.customer_id == Customer.id)
                .where(Consent.topic == "marketing", Consent.granted.is_(True))
            ).scalars()
        )
    assert external_ids <= consenting, sorted(external_ids - consenting)


def test_preview_of_an_order_campaign_shows_only_real_orders(
    demo: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "sample"
    result = run_cli(
        cli_env, "preview", "thank_you", "--sample", "20", "--out", str(out), "--as-of", AS_OF_ARG
    )
    assert result.returncode == 0, result.stderr
    for files in previews(out).values():
        assert "ORD-1042" not in files[".txt"].read_text(encoding="utf-8")


# ------------------------------------------------------------------ plan


def table_cells(stdout: str) -> list[list[str]]:
    """The cells of every body row of the rich tables printed."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def plan_rows(stdout: str, names: set[str]) -> dict[str, list[str]]:
    return {
        cells[0]: cells for cells in table_cells(stdout) if len(cells) == 8 and cells[0] in names
    }


def test_plan_prints_per_campaign_counts_and_changes_nothing(
    demo: Engine, catalog: Catalog, cli_env: dict[str, str]
) -> None:
    before = snapshot(demo)
    result = run_cli(cli_env, "plan", "--as-of", AS_OF_ARG)
    assert result.returncode == 0, result.stderr
    assert snapshot(demo) == before

    expected = cycle.dry_run(demo, catalog, AS_OF, timezone=TIMEZONE)
    assert snapshot(demo) == before
    names = {c.name for c in catalog.campaigns}
    rows = plan_rows(result.stdout, names)
    assert set(rows) == names
    for plan in expected.plans:
        row = rows[plan.campaign]
        other = {
            k: v
            for k, v in plan.skipped.items()
            if k not in ("no_consent", "frequency_cap", "holdout")
        }
        assert row[1] == (", ".join(f"{k} {v}" for k, v in plan.drivers.items()) or "-")
        assert row[2:7] == [
            str(plan.planned - plan.held_window),
            str(plan.held_window),
            str(plan.skipped.get(SkipReason.NO_CONSENT, 0)),
            str(plan.skipped.get(SkipReason.FREQUENCY_CAP, 0)),
            str(plan.skipped.get(SkipReason.HOLDOUT, 0)),
        ], plan.campaign
        assert row[7] == (", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-")
    assert sum(int(r[2]) for r in rows.values()) > 0, "nothing would be sent: a vacuous test"
    shown = {cells[0]: cells[1] for cells in table_cells(result.stdout) if len(cells) == 2}
    assert {stage: shown[stage] for stage in expected.stage_counts} == {
        stage: str(count) for stage, count in expected.stage_counts.items()
    }


def test_dry_run_predicts_exactly_what_a_real_cycle_plans(demo: Engine, catalog: Catalog) -> None:
    before = snapshot(demo)
    dry = cycle.dry_run(demo, catalog, AS_OF, timezone=TIMEZONE)
    assert snapshot(demo) == before

    report = cycle.recompute(demo, catalog, AS_OF)
    segments = cycle.recompute_segments(demo, catalog, AS_OF)
    plans = [
        cycle.plan(demo, catalog, campaign.name, AS_OF, timezone=TIMEZONE)
        for campaign in catalog.by_priority
    ]
    assert dry.stage_counts == report.stage_counts
    assert dry.transitions == report.transitions
    assert [(s.segment, s.size, s.entered, s.exited) for s in dry.segments] == [
        (s.segment, s.size, s.entered, s.exited) for s in segments
    ]

    def numbers(plan: Any) -> dict[str, Any]:
        data = plan.model_dump()
        return {k: data[k] for k in ("candidates", "planned", "held_window", "skipped",
                                      "drivers", "variants", "active")}  # fmt: skip

    predicted = {p.campaign: numbers(p) for p in dry.plans}
    real = {p.campaign: numbers(p) for p in plans}
    assert predicted == real
    assert sum(p["planned"] for p in real.values()) > 0
    assert sum(sum(p["skipped"].values()) for p in real.values()) > 0

    with demo.connect() as connection:
        outbox = Counter(
            (campaign, status)
            for campaign, status, n in connection.execute(
                select(Message.campaign, Message.status, func.count()).group_by(
                    Message.campaign, Message.status
                )
            )
            for _ in range(n)
        )
        coupons = connection.execute(
            select(func.count()).select_from(Coupon).where(Coupon.campaign == "win_back")
        ).scalar_one()
    for name, plan in predicted.items():
        assert outbox[(name, "planned")] == plan["planned"], name
        assert outbox[(name, "skipped")] == sum(plan["skipped"].values()), name
    assert coupons == predicted["win_back"]["planned"]
