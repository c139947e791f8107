"""Writing the demo data: existing demo rows, primary keys, frames, and the bulk load.

Rows are written in one transaction (the caller's) through ``insert_frame`` (COPY on
PostgreSQL), table by table in chunks, with explicit primary keys that follow the ids
already in the database, so a failure writes nothing. A large load into PostgreSQL checks
foreign keys and builds the secondary indexes once at the end, as PostgreSQL's manual advises
for bulk loads. Demo rows are known by their external ids, which start with ``demo-``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Connection, Select, Table, func, select, text
from sqlalchemy.exc import DBAPIError

from ciclovita.batching import chunks
from ciclovita.db.bulk import insert_frame
from ciclovita.db.models import (
    Base,
    Consent,
    Customer,
    Event,
    Order,
    Referral,
    SurveyResponse,
    table_of,
)
from ciclovita.ingest.demo.dataset import DemoData
from ciclovita.ingest.demo.parameters import (
    CHANNEL_NAMES,
    CURRENCY,
    EVENT_TYPES,
    ORDER_STATUSES,
    REFERRAL_CAMPAIGN,
)
from ciclovita.ingest.demo.timeline import I64

DEMO_PREFIX: Final = "demo-"
WRITE_CHUNK_ROWS: Final = 250_000
# Loads of at least this many rows into PostgreSQL check foreign keys and build secondary
# indexes once at the end instead of row by row (see _deferred_checks).
BULK_LOAD_MIN_ROWS: Final = 250_000


@dataclass(frozen=True)
class DemoSummary:
    """Rows of demo data per table: written now, or already there when ``existing``."""

    customers: int
    orders: int
    events: int
    consents: int
    survey_responses: int
    referrals: int
    existing: bool = False


# --- existing data ---------------------------------------------------------------------------


def _demo_customer_ids() -> Select[tuple[int]]:
    return select(Customer.id).where(Customer.external_id.startswith(DEMO_PREFIX))


def has_demo_customers(connection: Connection) -> bool:
    return connection.execute(_demo_customer_ids().limit(1)).first() is not None


def existing_summary(connection: Connection) -> DemoSummary:
    def count(table: Table, where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(table).where(where)
        return int(connection.execute(query).scalar_one())

    ids = _demo_customer_ids()
    return DemoSummary(
        customers=count(table_of(Customer), Customer.external_id.startswith(DEMO_PREFIX)),
        orders=count(table_of(Order), Order.external_id.startswith(f"{DEMO_PREFIX}o-")),
        events=count(table_of(Event), Event.external_id.startswith(f"{DEMO_PREFIX}e-")),
        consents=count(table_of(Consent), Consent.customer_id.in_(ids)),
        survey_responses=count(table_of(SurveyResponse), SurveyResponse.customer_id.in_(ids)),
        referrals=count(table_of(Referral), Referral.referrer_id.in_(ids)),
        existing=True,
    )


# --- writing ---------------------------------------------------------------------------------

_MODELS: Final[dict[str, type[Base]]] = {  # in the order they are written
    "customers": Customer,
    "orders": Order,
    "referrals": Referral,
    "events": Event,
    "consents": Consent,
    "survey_responses": SurveyResponse,
}
TABLES: Final = tuple(_MODELS)
"""The tables demo data goes into."""


@dataclass(frozen=True)
class _Keys:
    """Primary keys for the new rows, following the ids already in the database."""

    base: dict[str, int]  # first id per table
    customer: I64  # per customer
    order: I64  # per order (orders are numbered in the order they were placed)
    order_in_time: I64  # order indices sorted by time
    placed_s: I64  # per order

    @classmethod
    def reserve(cls, connection: Connection, data: DemoData) -> _Keys:
        base = {name: _next_id(connection, model) for name, model in _MODELS.items()}
        placed_s = data.timeline.seconds(data.orders.t)
        in_time = np.lexsort((data.orders.customer, placed_s)).astype(np.int64)
        rank = np.empty(len(in_time), dtype=np.int64)
        rank[in_time] = np.arange(len(in_time), dtype=np.int64)
        return cls(
            base=base,
            customer=base["customers"] + np.arange(data.customers.n, dtype=np.int64),
            order=base["orders"] + rank,
            order_in_time=in_time,
            placed_s=placed_s,
        )


def write(connection: Connection, data: DemoData) -> DemoSummary:
    """Insert everything, table by table in chunks, within the caller's transaction."""
    keys = _Keys.reserve(connection, data)
    frames: dict[str, Iterator[pd.DataFrame]] = {
        "customers": _customer_frames(data, keys),
        "orders": _order_frames(data, keys),
        "referrals": _referral_frames(data, keys),
        "events": _event_frames(data, keys),
        "consents": _consent_frames(data, keys),
        "survey_responses": _survey_frames(data, keys),
    }
    rows = (
        data.customers.n
        + len(data.orders.customer)
        + len(data.events.customer)
        + len(data.consents.customer)
    )
    with _deferred_checks(connection, list(_MODELS), rows):
        written = {
            name: sum(insert_frame(connection, table_of(_MODELS[name]), f) for f in table_frames)
            for name, table_frames in frames.items()
        }
    if connection.dialect.name == "postgresql":
        for name in _MODELS:
            # Explicit ids bypass the sequences: move them past what was written, and give
            # the planner statistics for the freshly loaded tables.
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT max(id) FROM {name}))"
            )
            connection.exec_driver_sql(f"ANALYZE {name}")
    return DemoSummary(
        customers=written["customers"],
        orders=written["orders"],
        events=written["events"],
        consents=written["consents"],
        survey_responses=written["survey_responses"],
        referrals=written["referrals"],
    )


_FOREIGN_KEYS: Final = """
SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
WHERE co.contype = 'f' AND cl.relname = ANY(:tables)
  AND cl.relnamespace = current_schema()::regnamespace
ORDER BY cl.relname, co.conname
"""
_SECONDARY_INDEXES: Final = """
SELECT i.indexname, i.indexdef
FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename = ANY(:tables)
  AND i.indexdef NOT LIKE 'CREATE UNIQUE %'
  AND NOT EXISTS (
    SELECT 1 FROM pg_constraint co
    WHERE co.conindid = to_regclass(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))
  )
ORDER BY i.tablename, i.indexname
"""


@contextmanager
def _deferred_checks(connection: Connection, tables: Sequence[str], rows: int) -> Iterator[None]:
    """A large load into PostgreSQL follows its manual ("Populating a Database"): the loaded
    tables' foreign keys and non-unique indexes are dropped before and re-created after,
    from their own definitions in the catalog. It all happens in the load's transaction, so
    a failure restores them, and re-adding a foreign key checks every row once. Primary keys
    and unique constraints stay. A role that may not alter the tables loads with the checks
    in place. Other sessions wait for the tables until the load commits.
    """
    if connection.dialect.name != "postgresql" or rows < BULK_LOAD_MIN_ROWS:
        yield
        return
    quote = connection.dialect.identifier_preparer.quote
    names = {"tables": list(tables)}
    foreign_keys = connection.execute(text(_FOREIGN_KEYS), names).tuples().all()
    indexes = connection.execute(text(_SECONDARY_INDEXES), names).tuples().all()
    try:
        with connection.begin_nested():
            for table, name, _ in foreign_keys:
                connection.exec_driver_sql(
                    f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}"
                )
            for name, _ in indexes:
                connection.exec_driver_sql(f"DROP INDEX {quote(name)}")
    except DBAPIError:  # not the tables' owner: check row by row
        yield
        return
    yield
    connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for _, definition in indexes:
        connection.exec_driver_sql(definition)
    for table, name, definition in foreign_keys:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {definition}"
        )


def _customer_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    customers = data.customers
    channels = np.array(CHANNEL_NAMES, dtype=object)
    for rows in chunks(range(customers.n), WRITE_CHUNK_ROWS):
        part = np.asarray(rows, dtype=np.int64)
        created = _utc(data.timeline.seconds(customers.created_t[part]))
        yield pd.DataFrame(
            {
                "id": keys.customer[part],
                "external_id": _external_ids("c", part, customers.n, 6),
                "email": customers.email[part],
                "first_name": customers.first_name[part],
                "last_name": customers.last_name[part],
                "locale": customers.locale[part],
                "timezone": customers.timezone[part],
                "country": customers.country[part],
                "birth_date": customers.birth_date[part],
                "acquisition_channel": channels[customers.channel[part] + 1],
                "acquisition_cost_cents": customers.acquisition_cost[part],
                "referred_by_id": _nullable(keys.customer, data.referrals.referred_by[part]),
                "attributes": customers.attributes[part],
                "created_at": created,
                "updated_at": created,
            }
        )


def _order_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    orders = data.orders
    statuses = np.array([status.value for status in ORDER_STATUSES], dtype=object)
    codes = np.array([*data.referrals.code.tolist(), None], dtype=object)  # -1: no code
    rank = keys.order - keys.base["orders"]
    for rows in chunks(range(len(keys.order_in_time)), WRITE_CHUNK_ROWS):
        part = keys.order_in_time[rows]
        placed = _utc(keys.placed_s[part])
        yield pd.DataFrame(
            {
                "id": keys.order[part],
                "external_id": _external_ids("o", rank[part], len(rank), 7),
                "customer_id": keys.customer[orders.customer[part]],
                "placed_at": placed,
                "amount_cents": orders.amount[part],
                "currency": CURRENCY,
                "status": statuses[orders.status[part]],
                "referral_code": codes[orders.referral_code[part]],
                "created_at": placed,
            }
        )


def _referral_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    referrals = data.referrals
    seconds = data.timeline.seconds
    converted = referrals.referee >= 0
    order = np.maximum(referrals.converted_order, 0)
    converted_s = keys.placed_s[order] if len(keys.placed_s) else np.zeros(len(order), np.int64)
    yield pd.DataFrame(
        {
            "id": keys.base["referrals"] + np.arange(len(referrals.code), dtype=np.int64),
            "code": referrals.code,
            "referrer_id": keys.customer[referrals.referrer],
            "referee_id": _nullable(keys.customer, referrals.referee),
            "campaign": REFERRAL_CAMPAIGN,
            "created_at": _utc(seconds(referrals.created_t)),
            "last_visited_at": _utc(seconds(np.nan_to_num(referrals.last_visit_t))).where(
                referrals.visits > 0
            ),
            "visits": referrals.visits,
            "converted_at": _utc(converted_s).where(converted),
            "converted_order_id": _nullable(keys.order, referrals.converted_order),
        }
    )


def _event_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    events = data.events
    types = np.array(EVENT_TYPES, dtype=object)
    for rows in chunks(range(len(events.customer)), WRITE_CHUNK_ROWS):
        part = np.asarray(rows, dtype=np.int64)
        yield pd.DataFrame(
            {
                "id": keys.base["events"] + part,
                "external_id": _external_ids("e", part, len(events.customer), 8),
                "customer_id": keys.customer[events.customer[part]],
                "type": types[events.kind[part]],
                "occurred_at": _utc(events.seconds[part]),
                "properties": events.properties[part],
            }
        )


def _consent_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    consents = data.consents
    yield pd.DataFrame(
        {
            "id": keys.base["consents"] + np.arange(len(consents.customer), dtype=np.int64),
            "customer_id": keys.customer[consents.customer],
            "topic": consents.topic,
            "granted": consents.granted,
            "source": consents.source,
            "recorded_at": _utc(data.timeline.seconds(consents.t)),
        }
    )


def _survey_frames(data: DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    surveys = data.surveys
    yield pd.DataFrame(
        {
            "id": keys.base["survey_responses"] + np.arange(len(surveys.customer), dtype=np.int64),
            "customer_id": keys.customer[surveys.customer],
            "kind": "nps",
            "score": surveys.score,
            "comment": surveys.comment,
            "answered_at": _utc(surveys.seconds),
        }
    )


def _next_id(connection: Connection, model: type[Base]) -> int:
    current = connection.execute(select(func.max(table_of(model).c.id))).scalar_one()
    return int(current or 0) + 1


def _external_ids(kind: str, index: I64, total: int, width: int) -> list[str]:
    """``demo-c-000001``-style ids of 0-based ``index``, zero-padded to fit ``total``."""
    width = max(width, len(str(total)))
    return [f"{DEMO_PREFIX}{kind}-{i + 1:0{width}d}" for i in index.tolist()]


def _nullable(ids: I64, index: I64) -> pd.arrays.IntegerArray:
    """``ids[index]`` where ``index >= 0``, NULL elsewhere."""
    values = pd.array(ids[np.maximum(index, 0)] if len(ids) else index, dtype="Int64")
    values[index < 0] = pd.NA
    return values


def _utc(seconds: I64) -> pd.Series:
    """Unix seconds as a UTC datetime64 column."""
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))
