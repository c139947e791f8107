"""``ciclovita demo-data`` and ``ciclovita import``: getting customers, orders and events in."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ciclovita.cli.app import app, console, handles_errors, parse_as_of, runtime
from ciclovita.db.migrate import upgrade


@app.command("demo-data")
@handles_errors
def demo_data(
    customers: Annotated[int, typer.Option(min=1, help="How many customers to generate.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 42,
    as_of: Annotated[
        str | None, typer.Option(help="End of the generated history (ISO date; default now).")
    ] = None,
) -> None:
    """Fill the database with a realistic, deterministic demo data set."""
    from ciclovita.ingest.demo import generate_demo_data

    rt = runtime()
    upgrade(rt.engine)
    summary = generate_demo_data(
        rt.engine, customers=customers, seed=seed, as_of=parse_as_of(as_of)
    )
    if summary.existing:
        console.print("demo data already present: nothing written")
    console.print(summary)


class ImportKind(StrEnum):
    customers = "customers"
    orders = "orders"
    events = "events"


@app.command("import")
@handles_errors
def import_file(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds.")],
    file: Annotated[Path, typer.Argument(help="CSV file (',' or ';' separated, UTF-8).")],
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="Import good rows, report the bad ones.")
    ] = False,
) -> None:
    """Import customers, orders or events from CSV. Any bad row: nothing is imported."""
    from ciclovita.ingest.csv_import import import_csv

    rt = runtime()
    report = import_csv(rt.engine, kind.value, file, skip_bad_rows=skip_bad_rows)
    console.print(report.summary())
    for problem in report.skipped:
        console.print(f"  skipped {problem}", markup=False, highlight=False)
