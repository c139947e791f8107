"""The demo data set: deterministic, realistic in shape, consistent, written all or nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from ciclovita.db import bulk
from ciclovita.db.models import Consent, Customer, Event, Order, Referral, SurveyResponse
from ciclovita.ingest.demo import DemoSummary, generate_demo_data

AS_OF = datetime(2025, 6, 15, 9, 0, tzinfo=UTC)
MODELS: tuple[Any, ...] = (Customer, Order, Event, Consent, SurveyResponse, Referral)
COUNTED = {
    "customers": Customer,
    "orders": Order,
    "events": Event,
    "consents": Consent,
    "survey_responses": SurveyResponse,
    "referrals": Referral,
}


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every demo table, ordered by id."""
    with engine.connect() as connection:
        return {
            model.__tablename__: [
                tuple(row)
                for row in connection.execute(select(model.__table__).order_by(model.id)).all()
            ]
            for model in MODELS
        }


def wipe(engine: Engine) -> None:
    with engine.begin() as connection:
        for model in reversed(MODELS):
            connection.execute(delete(model))


def frame(engine: Engine, model: Any) -> pd.DataFrame:
    with engine.connect() as connection:
        result = connection.execute(select(model.__table__))
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            name: connection.execute(select(func.count()).select_from(model)).scalar_one()
            for name, model in COUNTED.items()
        }


def test_same_seed_same_rows_other_seed_other_rows(engine: Engine) -> None:
    first = generate_demo_data(engine, customers=300, seed=11, as_of=AS_OF)
    rows = dump(engine)
    assert len(rows["customers"]) == 300
    assert first == DemoSummary(**{k: len(v) for k, v in rows.items()}, existing=False)

    wipe(engine)
    again = generate_demo_data(engine, customers=300, seed=11, as_of=AS_OF)
    assert again == first
    assert dump(engine) == rows

    wipe(engine)
    generate_demo_data(engine, customers=300, seed=12, as_of=AS_OF)
    other = dump(engine)
    assert other["customers"] != rows["customers"]
    assert other["orders"] != rows["orders"]


def test_naive_as_of_is_utc(sqlite_engine: Engine) -> None:
    generate_demo_data(sqlite_engine, customers=100, seed=3, as_of=AS_OF.replace(tzinfo=None))
    naive = dump(sqlite_engine)
    wipe(sqlite_engine)
    rome = AS_OF.astimezone(ZoneInfo("Europe/Rome"))
    generate_demo_data(sqlite_engine, customers=100, seed=3, as_of=rome)
    assert dump(sqlite_engine) == naive


def test_realistic_shape(engine: Engine) -> None:
    summary = generate_demo_data(engine, customers=2_000, seed=2025, as_of=AS_OF)
    customers = frame(engine, Customer)
    orders = frame(engine, Order)
    events = frame(engine, Event)
    consents = frame(engine, Consent)
    surveys = frame(engine, SurveyResponse)
    assert summary.customers == len(customers) == 2_000

    # Who the customers are.
    assert 0.55 <= (customers.locale == "it").mean() <= 0.65
    assert set(customers.loc[customers.locale == "it", "timezone"]) == {"Europe/Rome"}
    assert set(customers.loc[customers.locale == "en", "country"]) <= {"GB", "IE", "US", "CA", "AU"}
    emails = customers.email.dropna()
    assert 0.01 <= customers.email.isna().mean() <= 0.06
    assert emails.is_unique
    assert emails.str.fullmatch(r"[a-z.]+\d+@example\.(com|org|net)").all()
    assert customers.external_id.str.fullmatch(r"demo-c-\d{6}").all()
    assert 0.6 <= customers.birth_date.notna().mean() <= 0.8
    assert set(customers.acquisition_channel) == {
        "organic_search",
        "paid_search",
        "social_ads",
        "marketplace",
        "direct",
        "newsletter",
        "referral",
    }
    free = customers.acquisition_channel.isin(["organic_search", "direct"])
    assert (customers.loc[free, "acquisition_cost_cents"] == 0).all()
    paid = customers.acquisition_channel == "paid_search"
    assert customers.loc[paid, "acquisition_cost_cents"].median() > 1_000
    assert {"favourite_category", "newsletter_frequency"} <= set(customers.attributes.iloc[0])
    assert (customers.created_at <= AS_OF).all()
    assert (customers.created_at > AS_OF - timedelta(days=7)).sum() >= 5  # fresh signups

    # What they bought.
    assert (orders.placed_at <= AS_OF).all()
    assert pd.api.types.is_integer_dtype(orders.amount_cents)
    assert (orders.amount_cents > 0).all()
    assert set(orders.currency) == {"EUR"}
    assert set(orders.status) <= {"completed", "cancelled", "refunded"}
    assert 0.01 <= (orders.status != "completed").mean() <= 0.06
    signed_up_at = customers.set_index("id").created_at
    assert (orders.placed_at >= orders.customer_id.map(signed_up_at)).all()

    done = orders[orders.status == "completed"]
    per_buyer = done.groupby("customer_id").placed_at.agg(["count", "min", "max"])
    buyers = len(per_buyer) / len(customers)
    assert 0.55 <= buyers <= 0.8, "some customers never buy (prospects)"
    repeat = per_buyer["count"] >= 2
    assert 0.3 <= repeat.mean() <= 0.7
    assert (per_buyer["count"] >= 8).sum() >= 20, "a set of frequent buyers"
    days_ago = (AS_OF - per_buyer["max"]).dt.days
    assert (repeat & (days_ago > 120)).sum() >= 50, "repeat buyers gone quiet (at risk)"
    assert (repeat & (days_ago > 365)).sum() >= 20, "repeat buyers long gone (lapsed)"
    assert ((per_buyer["count"] >= 3) & (days_ago < 60)).sum() >= 30, "loyal candidates"
    assert ((AS_OF - per_buyer["min"]).dt.days < 30).sum() >= 20, "new customers"
    assert (done.placed_at > AS_OF - timedelta(days=3)).sum() >= 5, "thank-you has work"
    assert (done.placed_at > AS_OF - timedelta(days=1)).sum() >= 1

    month = done.placed_at.dt.month
    peak_per_day = month.isin([11, 12]).sum() / 61
    august_per_day = (month == 8).sum() / 31
    assert peak_per_day > 1.5 * august_per_day

    # Engagement.
    assert 2.0 <= len(events) / len(customers) <= 5.0
    assert (events.occurred_at <= AS_OF).all()
    assert set(events.type) >= {
        "site_visit",
        "signup",
        "content_download",
        "newsletter_click",
        "review",
        "support_ticket",
    }
    assert (events.type == "signup").sum() == len(customers)
    assert (events.occurred_at >= events.customer_id.map(signed_up_at)).all()
    recent = events[events.occurred_at > AS_OF - timedelta(days=30)].customer_id
    prospects = set(customers.id) - set(per_buyer.index)
    assert len(prospects & set(recent)) >= 30, "engaged prospects"
    ratings = events.loc[events.type == "review", "properties"].map(lambda p: p["rating"])
    assert ratings.between(1, 5).all()

    # Consents.
    marketing = consents[consents.topic == "marketing"]
    assert 0.7 <= marketing.granted.sum() / len(customers) <= 0.8
    assert (~marketing.granted).sum() > 0
    surveys_topic = consents[consents.topic == "surveys"]
    assert 0.55 <= surveys_topic.granted.sum() / len(customers) <= 0.65
    assert set(consents.source) <= {"signup_form", "checkout", "import", "preference_center"}

    # NPS: about 15% of buyers, more promoters among frequent buyers, after an order.
    assert set(surveys.kind) == {"nps"}
    assert surveys.score.between(0, 10).all()
    assert 0.1 <= surveys.customer_id.nunique() / len(per_buyer) <= 0.2
    assert (surveys.answered_at <= AS_OF).all()
    frequency = per_buyer["count"].reindex(surveys.customer_id).to_numpy()
    promoters = surveys.score.to_numpy() >= 9
    assert promoters[frequency >= 3].mean() > promoters[frequency == 1].mean() + 0.2
    first_order = per_buyer["min"].reindex(surveys.customer_id).to_numpy()
    assert (surveys.answered_at.to_numpy() > first_order).all()


def test_referrals_are_consistent(engine: Engine) -> None:
    generate_demo_data(engine, customers=2_000, seed=5, as_of=AS_OF)
    customers = frame(engine, Customer).set_index("id")
    orders = frame(engine, Order).set_index("id")
    referrals = frame(engine, Referral)
    done = orders[orders.status == "completed"]

    assert len(referrals) > 50
    assert referrals.code.is_unique
    assert referrals.code.map(lambda c: re.fullmatch(r"CV-[A-Z0-9]{6}", c) is not None).all()
    assert (done.customer_id.value_counts().reindex(referrals.referrer_id) >= 3).all()
    assert (referrals.created_at <= AS_OF).all()

    converted = referrals[referrals.referee_id.notna()]
    assert len(converted) >= 20
    assert converted.referee_id.is_unique
    customer_rows: dict[Any, Any] = customers.to_dict("index")
    order_rows: dict[Any, Any] = orders.to_dict("index")
    for row in converted.to_dict("records"):
        referee = customer_rows[int(row["referee_id"])]
        assert referee["acquisition_channel"] == "referral"
        assert int(referee["referred_by_id"]) == row["referrer_id"]
        assert referee["created_at"] >= row["created_at"]
        order = order_rows[int(row["converted_order_id"])]
        assert order["customer_id"] == row["referee_id"]
        assert order["status"] == "completed"
        assert order["referral_code"] == row["code"]
        assert order["placed_at"] == row["converted_at"]
        referee_orders = orders[orders.customer_id == row["referee_id"]]
        assert order["placed_at"] == referee_orders.placed_at.min()
        assert row["created_at"] <= row["converted_at"] <= AS_OF
        assert row["visits"] >= 1 and row["last_visited_at"] is not pd.NaT

    unconverted = referrals[referrals.referee_id.isna()]
    assert unconverted.converted_at.isna().all() and unconverted.converted_order_id.isna().all()
    by_referral = customers[customers.acquisition_channel == "referral"]
    assert set(by_referral.index) == set(converted.referee_id.astype(int))
    assert customers.referred_by_id.notna().sum() == len(converted)
    assert orders.referral_code.notna().sum() == len(converted)


def test_existing_demo_data_is_left_alone(engine: Engine) -> None:
    first = generate_demo_data(engine, customers=200, seed=1, as_of=AS_OF)
    before = counts(engine)
    again = generate_demo_data(engine, customers=500, seed=2, as_of=AS_OF)
    assert again.existing and not first.existing
    assert again == dataclasses.replace(first, existing=True)
    assert counts(engine) == before


def test_new_rows_get_fresh_ids(engine: Engine) -> None:
    """Ids follow what is already there, and the database's own ids continue after them."""
    with engine.begin() as connection:
        connection.execute(
            insert(Customer),
            {"external_id": "shop-1", "email": "a@example.com", "created_at": AS_OF},
        )
    generate_demo_data(engine, customers=50, seed=1, as_of=AS_OF)
    with engine.begin() as connection:
        connection.execute(insert(Customer), {"external_id": "shop-2", "created_at": AS_OF})
        ids = dict(connection.execute(select(Customer.external_id, Customer.id)).tuples().all())
    assert len(ids) == 52 and len(set(ids.values())) == 52
    assert ids["shop-1"] < ids["demo-c-000001"] < ids["demo-c-000050"] < ids["shop-2"]


def test_a_failure_writes_nothing(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bulk.insert_frame

    def failing(connection: Any, table: Any, frame: pd.DataFrame) -> int:
        if table.name == "events":
            raise RuntimeError("disk full")
        return real(connection, table, frame)

    monkeypatch.setattr("ciclovita.ingest.demo.writing.insert_frame", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_demo_data(engine, customers=100, seed=1, as_of=AS_OF)
    assert set(counts(engine).values()) == {0}


def catalog(engine: Engine) -> list[tuple[Any, ...]]:
    """Every constraint and index definition of the schema (PostgreSQL)."""
    with engine.connect() as connection:
        constraints = connection.execute(
            text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
            )
        )
        indexes = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
        )
        return sorted(tuple(row) for row in [*constraints, *indexes])


def test_large_loads_check_foreign_keys_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, a large load drops foreign keys and secondary indexes and re-creates
    them: same rows, same schema afterwards, and a bad row still fails the whole load."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    schema = catalog(engine)
    generate_demo_data(engine, customers=300, seed=4, as_of=AS_OF)
    checked_row_by_row = dump(engine)
    wipe(engine)

    monkeypatch.setattr("ciclovita.ingest.demo.writing.BULK_LOAD_MIN_ROWS", 0)
    generate_demo_data(engine, customers=300, seed=4, as_of=AS_OF)
    assert dump(engine) == checked_row_by_row
    assert catalog(engine) == schema
    wipe(engine)

    real = bulk.insert_frame

    def orphan_event(connection: Any, table: Any, frame: pd.DataFrame) -> int:
        if table.name == "events":
            frame = frame.assign(customer_id=frame.customer_id + 10_000_000)
        return real(connection, table, frame)

    monkeypatch.setattr("ciclovita.ingest.demo.writing.insert_frame", orphan_event)
    with pytest.raises(IntegrityError, match="fk_events_customer_id_customers"):
        generate_demo_data(engine, customers=300, seed=4, as_of=AS_OF)
    assert set(counts(engine).values()) == {0}
    assert catalog(engine) == schema


def test_mean_orders_sets_the_average(sqlite_engine: Engine) -> None:
    summary = generate_demo_data(
        sqlite_engine, customers=3_000, seed=9, as_of=AS_OF, mean_orders=6.0
    )
    assert summary.orders / summary.customers == pytest.approx(6.0, rel=0.05)
    wipe(sqlite_engine)
    few = generate_demo_data(sqlite_engine, customers=3_000, seed=9, as_of=AS_OF, mean_orders=0.5)
    assert few.orders / few.customers == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize(("customers", "history_days"), [(1, 1), (3, 30), (40, 1), (60, 365)])
def test_tiny_data_sets(sqlite_engine: Engine, customers: int, history_days: int) -> None:
    summary = generate_demo_data(
        sqlite_engine, customers=customers, seed=8, as_of=AS_OF, history_days=history_days
    )
    assert summary.customers == customers
    assert counts(sqlite_engine) == {name: getattr(summary, name) for name in COUNTED}
    with sqlite_engine.connect() as connection:
        first = connection.execute(select(func.min(Customer.created_at))).scalar_one()
        last = connection.execute(select(func.max(Order.placed_at))).scalar_one()
    assert first >= AS_OF - timedelta(days=history_days)
    assert last is None or last <= AS_OF


def test_bad_arguments_are_refused(sqlite_engine: Engine) -> None:
    with pytest.raises(ValueError, match="customers"):
        generate_demo_data(sqlite_engine, customers=0, seed=1, as_of=AS_OF)
    with pytest.raises(ValueError, match="history_days"):
        generate_demo_data(sqlite_engine, customers=10, seed=1, as_of=AS_OF, history_days=0)
    with pytest.raises(ValueError, match="mean_orders"):
        generate_demo_data(sqlite_engine, customers=10, seed=1, as_of=AS_OF, mean_orders=-1)
    with pytest.raises(ValueError, match="mean_orders"):
        generate_demo_data(
            sqlite_engine, customers=10, seed=1, as_of=AS_OF, history_days=5, mean_orders=1e6
        )
    assert counts(sqlite_engine)["customers"] == 0


@pytest.mark.slow
def test_scale_smoke(engine: Engine) -> None:
    started = time.perf_counter()
    summary = generate_demo_data(engine, customers=20_000, seed=42, as_of=AS_OF)
    elapsed = time.perf_counter() - started
    print(
        f"\ndemo data on {engine.dialect.name}: {summary.customers} customers, "
        f"{summary.orders} orders, {summary.events} events in {elapsed:.1f}s"
    )
    assert summary.customers == 20_000
    assert 1.5 <= summary.orders / summary.customers <= 3.0
    assert counts(engine) == {name: getattr(summary, name) for name in COUNTED}
    assert min(summary.events, summary.consents, summary.survey_responses) > 0
    assert elapsed < 120


def canonical(value: Any) -> Any:
    """A value read back from either database as plain JSON: times in UTC, JSON sorted."""
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def digest(engine: Engine) -> str:
    """SHA-256 of every demo row, canonicalised so that SQLite and PostgreSQL agree."""
    rows = {
        table: [[canonical(value) for value in row] for row in table_rows]
        for table, table_rows in dump(engine).items()
    }
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


PINNED_DIGEST: Final = "601ff5e08cd286c7b2db2cf34989fa9f0ee0fb158a362553f9b220ae47b2a0df"


def test_the_data_is_pinned(engine: Engine) -> None:
    """200 customers, seed 1: the very rows the generator wrote when this digest was taken.

    Any change to the generator that moves a single value fails here; change the digest
    only for a change meant to alter the demo data, and say so in its commit.
    """
    generate_demo_data(engine, customers=200, seed=1, as_of=AS_OF)
    assert digest(engine) == PINNED_DIGEST
