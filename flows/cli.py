"""Commands that need Prefect: ``run``, ``demo``, ``deploy``, ``serve`` and ``doctor``.

Registered into the ``ciclovita`` command through the ``ciclovita.commands`` entry point
(``doctor`` itself lives in ``ciclovita.doctor`` and talks to Prefect over HTTP only).
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


def _sendgrid_key() -> None:
    """The SendGrid key from the Prefect Secret block when the environment has none."""
    from tasks.secrets import ensure_sendgrid_key

    ensure_sendgrid_key()


def _prefect_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


def print_summary(summary: dict[str, Any], outbox_dir: str | None) -> None:
    stages = Table(title="Lifecycle stages")
    stages.add_column("stage")
    stages.add_column("customers", justify="right")
    for stage in STAGES:
        stages.add_row(stage, str(summary["stages"].get(stage, 0)))
    console.print(stages)
    campaigns = Table(title="Messages this run")
    for column in ("campaign", "planned", "held", "sent", "failed", "ambiguous", "skipped"):
        campaigns.add_column(
            column,
            justify="left" if column in ("campaign", "skipped") else "right",
            no_wrap=column == "campaign",
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
    held = sum(plan["held_window"] for plan in summary["plans"])
    if held:
        console.print(
            f"{held} planned messages are held: due now, but outside the send window or in quiet "
            "hours in the customer's own time zone. The next `ciclovita run` after the window "
            "opens sends them (they are never dropped)."
        )
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
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Recompute, plan and render every due message, then keep nothing: no "
                "provider call, no database change.",
            ),
        ] = False,
    ) -> None:
        """Run one lifecycle cycle as a Prefect flow run: recompute, plan, deliver."""
        _prefect_environment()
        from flows.lifecycle_cycle import lifecycle_cycle

        _sendgrid_key()  # before the settings are read: they need it with the SendGrid sender
        rt = runtime()
        rt.catalog  # noqa: B018 - a bad campaign file fails here, before the flow starts
        started = time.perf_counter()
        if dry_run:
            from ciclovita.cli.campaigns import print_dry_run

            rehearsal = lifecycle_cycle(as_of=parse_as_of(as_of), campaigns=campaign, dry_run=True)
            print_dry_run(rehearsal)
            console.print(f"dry run finished in {time.perf_counter() - started:.1f}s")
            return
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
        _sendgrid_key()
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

    @app.command("deploy")
    @handles_errors
    def deploy(
        work_pool: Annotated[
            str, typer.Option(help="Process work pool to register on (created if missing).")
        ] = "ciclovita",
        notify: Annotated[
            str | None,
            typer.Option(
                help="Notification block <type>/<name> (e.g. slack-webhook/ops) to alert on "
                "failed, crashed or late runs."
            ),
        ] = None,
    ) -> None:
        """Register the scheduled deployments on a Prefect work pool (production)."""
        _prefect_environment()
        from flows.deployments import DEPLOYMENTS, schedule_timezone
        from flows.deployments import deploy as deploy_all

        runtime().catalog  # noqa: B018 - a bad campaign file stops here
        timezone = schedule_timezone()
        deploy_all(work_pool, timezone=timezone)
        _print_deployments(DEPLOYMENTS, timezone, f"on work pool {work_pool!r}")
        if notify:
            _alerts(notify)
        console.print(
            "next: start a worker on each machine that runs flows:\n"
            f"  [bold]prefect worker start --pool {work_pool}[/]"
        )

    @app.command("serve")
    @handles_errors
    def serve(
        limit: Annotated[
            int | None, typer.Option(min=1, help="Most flow runs at once (default: no limit).")
        ] = None,
        notify: Annotated[
            str | None,
            typer.Option(help="Notification block <type>/<name> to alert on failed or late runs."),
        ] = None,
    ) -> None:
        """Serve the scheduled deployments from this process (a single machine)."""
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # show the runner's activity
        _prefect_environment()
        from flows.deployments import DEPLOYMENTS, schedule_timezone
        from flows.deployments import serve as serve_all

        runtime().catalog  # noqa: B018 - a bad campaign file stops here
        timezone = schedule_timezone()
        _print_deployments(DEPLOYMENTS, timezone, "served by this process (Ctrl-C stops)")
        if notify:
            _alerts(notify)
        serve_all(limit=limit, timezone=timezone)

    @app.command("doctor")
    def doctor(
        sendgrid: Annotated[
            bool, typer.Option("--sendgrid", help="Also check that SendGrid accepts the key.")
        ] = False,
    ) -> None:
        """Check settings, database, migrations, campaigns, SendGrid, Prefect: what to fix."""
        from ciclovita.doctor import run_checks

        api_url = _prefect_api_url()
        if api_url:
            try:
                _sendgrid_key()
            except Exception as exc:  # noqa: BLE001 - reported by the checks below
                console.print(f"[yellow]Prefect Secret block not read: {exc.__class__.__name__}[/]")
        failed = 0
        for check in run_checks(prefect_api_url=api_url, sendgrid=sendgrid):
            colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[check.outcome]
            console.print(f"[{colour}]{check.line()}[/]", highlight=False)
            failed += check.failed
        if failed:
            console.print(f"[red]{failed} check(s) failed[/]")
            raise typer.Exit(1)
        console.print("[green]ready[/]")


def _print_deployments(specs: Any, timezone: str, where: str) -> None:
    table = Table(title=f"Deployments {where}")
    for column in ("deployment", "schedule", "parameters", "does"):
        table.add_column(column)
    for spec in specs:
        schedule = f"{spec.cron} ({timezone})" if spec.cron else "on demand"
        parameters = ", ".join(f"{k}={v}" for k, v in spec.parameters.items()) or "-"
        table.add_row(spec.full_name, schedule, parameters, spec.description)
    console.print(table)


def _alerts(block: str) -> None:
    from flows.alerts import AUTOMATION_NAME, ensure_alert_automation

    try:
        ensure_alert_automation(block)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--notify") from exc
    console.print(f"automation [bold]{AUTOMATION_NAME}[/] notifies through {block}")
