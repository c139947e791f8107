"""``generate_demo_data``: check the arguments, then build and write the data set at once.

The same ``(customers, seed, as_of, history_days, mean_orders)`` always writes the same rows:
every random draw comes from a stream seeded from ``seed`` (``timeline``) or from Faker seeded
with ``seed``; the wall clock is never read. A database that already holds demo customers is
left alone.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from sqlalchemy import Engine

from ciclovita.db.bulk import BULK_WRITE_ROWS, vacuum
from ciclovita.ingest.demo.dataset import build
from ciclovita.ingest.demo.timeline import Timeline
from ciclovita.ingest.demo.writing import (
    TABLES,
    DemoSummary,
    existing_summary,
    has_demo_customers,
    write,
)


def generate_demo_data(
    engine: Engine,
    *,
    customers: int,
    seed: int,
    as_of: datetime,
    history_days: int = 3 * 365,
    mean_orders: float | None = None,
) -> DemoSummary:
    """Write a demo data set of ``customers`` customers with ``history_days`` of history
    ending at ``as_of`` (a naive datetime is taken as UTC); nothing happens after ``as_of``.

    ``mean_orders`` sets the average number of orders per customer, prospects included
    (by default the natural behaviour gives about 2). The same arguments always give the
    same rows. If demo customers already exist, nothing is written and the counts of the
    demo rows there are returned with ``existing=True``.
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if history_days < 1:
        raise ValueError(f"history_days must be at least 1, got {history_days}")
    if mean_orders is not None and not (math.isfinite(mean_orders) and mean_orders > 0):
        raise ValueError(f"mean_orders must be a positive number, got {mean_orders}")
    end = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)

    with engine.begin() as connection:
        if has_demo_customers(connection):
            return existing_summary(connection)
        data = build(Timeline.create(seed, end, history_days), customers, mean_orders)
        summary = write(connection, data)
    if summary.customers + summary.orders + summary.events > BULK_WRITE_ROWS:
        vacuum(engine, *TABLES)
    return summary
