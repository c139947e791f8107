"""Benchmark: a full recompute of 1,000,000 customers with 10,000,000 orders.

    .venv/bin/python -m benchmarks.recompute [--backend postgresql|sqlite|both]
                                             [--customers N] [--mean-orders K]

Builds the data set once per backend (demo generator, deterministic) and reuses it. Then, on
each backend, in a fresh child process (so peak memory is the recompute's own):

1. the bare grouped scan of orders (count, max date, sum per customer), fetched to the client;
2. a full recompute: facts, BG/NBD + Gamma-Gamma fit on a sample and scoring of everyone,
   RFM, stages with history, segments with membership diff — each phase timed;
3. the ratio of the total to the bare scan, and the peak memory (max RSS);
4. the next night's full recompute (one day later, model reused): every customer recomputed,
   only real changes written;
5. 1% of customers get a new order, then a recompute: rows written (only what changed).

Targets (issue 3): full recompute ≤ 60 s and ≤ 3× the bare scan on PostgreSQL; peak memory
≤ 2 GB; the 1% run writes only what changed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

AS_OF = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DATA_DIR = Path(__file__).resolve().parent / ".data"
PG_ADMIN = os.environ.get(
    "CICLOVITA_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def database_url(backend: str, customers: int) -> str:
    name = f"ciclovita_bench_{customers}"
    if backend == "sqlite":
        DATA_DIR.mkdir(exist_ok=True)
        return f"sqlite:///{DATA_DIR / (name + '.db')}"
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin.url.set(database=name).render_as_string(hide_password=False)


def _build(url: str, customers: int, mean_orders: float) -> dict[str, Any]:
    from ciclovita.db.engine import make_engine
    from ciclovita.db.migrate import upgrade
    from ciclovita.ingest.demo import generate_demo_data

    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    summary = generate_demo_data(
        engine, customers=customers, seed=1, as_of=AS_OF, mean_orders=mean_orders
    )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {
        "existing": summary.existing,
        "orders": summary.orders,
        "seconds": time.perf_counter() - started,
    }


def _reset_scores(engine: Any) -> None:
    """Start from no scores, no history, no segments: a true full recompute."""
    with engine.begin() as connection:
        for table in (
            "segment_runs",
            "segment_memberships",
            "stage_history",
            "customer_scores",
            "model_runs",
        ):
            connection.exec_driver_sql(f"DELETE FROM {table}")
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE customer_scores")
            connection.exec_driver_sql("VACUUM ANALYZE stage_history")
            connection.exec_driver_sql("VACUUM ANALYZE segment_memberships")


def _bare_scan(engine: Any) -> tuple[float, int]:
    """count, max date, sum per customer over orders, every row fetched to the client."""
    started = time.perf_counter()
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT customer_id, count(*), max(placed_at), sum(amount_cents) "
            "FROM orders GROUP BY customer_id"
        ).fetchall()
    return time.perf_counter() - started, len(rows)


def _measure(url: str, result: Any) -> None:
    from ciclovita.campaigns.catalog import load_catalog
    from ciclovita.cycle import recompute_segments
    from ciclovita.db.engine import make_engine
    from ciclovita.scoring.recompute import recompute_scores
    from ciclovita.settings import REPOSITORY_ROOT

    engine = make_engine(url)
    catalog = load_catalog(REPOSITORY_ROOT / "campaigns")
    _reset_scores(engine)
    bare, buyers = _bare_scan(engine)
    bare_again, _ = _bare_scan(engine)  # warm cache, like the recompute will see
    bare = min(bare, bare_again)

    started = time.perf_counter()
    report = recompute_scores(engine, catalog.lifecycle, AS_OF, refit=True)
    print(f"  scores and stages: {report.timings}", flush=True)
    scores_done = time.perf_counter()
    changes = []
    per_segment = {}
    for segment in catalog.segments:
        clock = time.perf_counter()
        changes += recompute_segments(engine, catalog, AS_OF, only=segment.name)
        per_segment[segment.name] = round(time.perf_counter() - clock, 3)
    print(f"  segments: {per_segment}", flush=True)
    total = time.perf_counter() - started
    phases = dict(report.timings)
    phases["segments"] = round(time.perf_counter() - scores_done, 3)

    # the next night: everything recomputed again (model reused), only real changes written
    next_day = AS_OF + timedelta(days=1)
    warm_started = time.perf_counter()
    warm = recompute_scores(engine, catalog.lifecycle, next_day)
    warm_segments = recompute_segments(engine, catalog, next_day)
    warm_total = time.perf_counter() - warm_started
    print(f"  next day: {warm_total:.1f}s, {warm.timings}", flush=True)

    # 1% of customers buy again; the next recompute (same day, model reused) writes only them
    from sqlalchemy import text

    with engine.begin() as connection:
        n = connection.execute(text("SELECT count(*) FROM customers")).scalar_one()
        step = 100
        placed = AS_OF - timedelta(hours=2)
        connection.execute(
            text(
                "INSERT INTO orders (external_id, customer_id, placed_at, amount_cents, "
                "currency, status, created_at) "
                "SELECT 'bench-1pct-' || CAST(id AS VARCHAR), id, :placed, 4200, 'EUR', "
                "'completed', :placed FROM customers WHERE id % :step = 0"
            ),
            {"placed": placed.replace(tzinfo=None), "step": step},
        )
    changed_customers = n // step
    again_started = time.perf_counter()
    again = recompute_scores(engine, catalog.lifecycle, next_day)
    again_segments = recompute_segments(engine, catalog, next_day)
    again_seconds = time.perf_counter() - again_started
    with engine.begin() as connection:  # leave the data set as it was built
        connection.execute(
            text(
                "DELETE FROM orders WHERE external_id LIKE 'bench-1pct-%' AND placed_at = :placed"
            ),
            {"placed": placed.replace(tzinfo=None)},
        )
    engine.dispose()
    result.update(
        {
            "customers": report.customers,
            "buyers": buyers,
            "bare_scan_s": round(bare, 3),
            "phases_s": phases,
            "total_s": round(total, 3),
            "ratio_to_bare_scan": round(total / bare, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "stage_counts": report.stage_counts,
            "model": {
                k: report.model[k] for k in ("bgnbd", "gamma_gamma", "n_fitted", "converged")
            },
            "segments": {c.segment: c.size for c in changes},
            "next_day": {
                "total_s": round(warm_total, 3),
                "ratio_to_bare_scan": round(warm_total / bare, 2),
                "phases_s": warm.timings,
                "scores_updated": warm.scores_updated,
                "stage_rows_written": warm.stage_rows_opened + warm.stage_rows_closed,
                "segment_entries": sum(c.entered for c in warm_segments),
                "segment_exits": sum(c.exited for c in warm_segments),
            },
            "one_percent": {
                "customers_changed": changed_customers,
                "seconds": round(again_seconds, 3),
                "scores_updated": again.scores_updated,
                "scores_inserted": again.scores_inserted,
                "stage_rows_written": again.stage_rows_opened + again.stage_rows_closed,
                "segment_entries": sum(c.entered for c in again_segments),
                "segment_exits": sum(c.exited for c in again_segments),
                "phases_s": again.timings,
            },
        }
    )


def run_child(target: Any, *args: Any) -> dict[str, Any]:
    manager = multiprocessing.Manager()
    result = manager.dict()
    process = multiprocessing.get_context("spawn").Process(target=target, args=(*args, result))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed with exit code {process.exitcode}")
    return dict(result)


def _build_child(url: str, customers: int, mean_orders: float, result: Any) -> None:
    result.update(_build(url, customers, mean_orders))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--mean-orders", type=float, default=10.0)
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    for backend in backends:
        url = database_url(backend, args.customers)
        print(
            f"== {backend}: {args.customers:,} customers, ~{args.mean_orders:g} orders each",
            flush=True,
        )
        built = run_child(_build_child, url, args.customers, args.mean_orders)
        print(
            f"data: {'reused' if built['existing'] else 'built'} ({built['orders']:,} orders) "
            f"in {built['seconds']:.1f}s",
            flush=True,
        )
        figures = run_child(_measure, url)
        print(json.dumps(figures, indent=2))
        print(
            f"{backend}: total {figures['total_s']:.1f}s, bare scan {figures['bare_scan_s']:.2f}s, "
            f"ratio {figures['ratio_to_bare_scan']:.2f}x, peak {figures['peak_rss_mb']:.0f} MB; "
            f"next day {figures['next_day']['total_s']:.1f}s "
            f"({figures['next_day']['ratio_to_bare_scan']:.2f}x, "
            f"{figures['next_day']['scores_updated']} rows updated); "
            f"1% run: {figures['one_percent']['scores_updated']} score rows updated for "
            f"{figures['one_percent']['customers_changed']} changed customers in "
            f"{figures['one_percent']['seconds']:.1f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
