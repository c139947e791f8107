"""Commands that run flows: ``ciclovita run`` and ``ciclovita demo``.

Registered into the ``ciclovita`` command through the ``ciclovita.commands`` entry point.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from ciclovita.cli.app import console, handles_errors, parse_as_of, runtime
from ciclovita.lifecycle import STAGES


def _prefect_environment() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # a busy 2-core machine can need more than Prefect's 20 s to start its local server
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def print_summary(summary: dict[str, Any], outbox_dir: str | None) -> None:
    stages = Table(title="Lifecycle stages")
    stages.add_column("stage")
    stages.add_column("customers", justify="right")
    for stage in STAGES:
        stages.add_row(stage, str(summary["stages"].get(stage, 0)))
    console.print(stages)
    campaigns = Table(title="Messages this run")
    for column in (
        "campaign",
        "planned",
        "held (window)",
        "sent",
        "failed",
        "ambiguous",
        "skipped (reason)",
    ):
        campaigns.add_column(
            column, justify="left" if column.startswith(("campaign", "skipped")) else "right"
        )
    outbox = summary.get("outbox", {})
    for plan in summary["plans"]:
        counts = outbox.get(plan["campaign"], {})
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(plan["skipped"].items())) or "-"
        campaigns.add_row(
            plan["campaign"] + ("" if plan["active"] else f" ({plan['inactive_reason']})"),
            str(plan["planned"]),
            str(plan["held_window"]),
            str(counts.get("sent", 0)),
            str(counts.get("failed", 0)),
            str(counts.get("ambiguous", 0)),
            skipped,
        )
    console.print(campaigns)
    delivery = summary["delivery"]
    ambiguous = delivery["ambiguous"] + summary["reconciled"].get("ambiguous", 0)
    console.print(
        f"sent {delivery['sent']}, failed {delivery['failed']}, "
        f"retried later {delivery['retried']}, ambiguous {ambiguous}"
    )
    if summary.get("cap_reached"):
        console.print("[yellow]send cap reached: the remaining messages wait for the next run[/]")
    if outbox_dir:
        console.print(f"emails written to [bold]{outbox_dir}[/] (one .eml per message)")


def register(app: typer.Typer) -> None:
    @app.command("run")
    @handles_errors
    def run(
        as_of: Annotated[
            str | None, typer.Option(help="Run as of this ISO date-time (UTC).")
        ] = None,
        campaign: Annotated[
            list[str] | None, typer.Option("--campaign", help="Only plan these campaigns.")
        ] = None,
        no_send: Annotated[
            bool, typer.Option("--no-send", help="Plan only; send nothing.")
        ] = False,
        batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 500,
    ) -> None:
        """Run one lifecycle cycle as a Prefect flow run: recompute, plan, deliver."""
        _prefect_environment()
        from flows.lifecycle_cycle import lifecycle_cycle

        rt = runtime()
        rt.catalog  # noqa: B018 - a bad campaign file fails here, before the flow starts
        started = time.perf_counter()
        summary = lifecycle_cycle(
            as_of=parse_as_of(as_of), campaigns=campaign, send=not no_send, batch_size=batch_size
        )
        print_summary(
            summary, str(rt.settings.outbox_dir) if rt.settings.sender == "file" else None
        )
        console.print(
            f"cycle {summary['cycle_id']} finished in {time.perf_counter() - started:.1f}s"
        )

    @app.command("demo")
    @handles_errors
    def demo(
        customers: Annotated[int, typer.Option(min=10)] = 2000,
        seed: Annotated[int, typer.Option()] = 42,
    ) -> None:
        """Migrate, generate demo data (once) and run one cycle, then print a summary."""
        _prefect_environment()
        from ciclovita.db.migrate import upgrade
        from ciclovita.ingest.demo import generate_demo_data
        from flows.lifecycle_cycle import lifecycle_cycle

        started = time.perf_counter()
        rt = runtime()
        rt.catalog  # noqa: B018 - validate campaigns before anything else
        upgrade(rt.engine)
        now = parse_as_of(None)
        data = generate_demo_data(rt.engine, customers=customers, seed=seed, as_of=now)
        if data.existing:
            console.print("demo data already in the database: reusing it")
        else:
            console.print(f"demo data: {data}")
        summary = lifecycle_cycle(as_of=now)
        print_summary(
            summary, str(rt.settings.outbox_dir) if rt.settings.sender == "file" else None
        )
        console.print(f"demo finished in {time.perf_counter() - started:.1f}s")
