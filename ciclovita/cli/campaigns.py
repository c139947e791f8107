"""``ciclovita validate | preview | plan | segments | schema``: checking before sending."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ciclovita.cli.app import app, console, errors, handles_errors, parse_as_of, runtime
from ciclovita.errors import InputError
from ciclovita.lifecycle import STAGES
from ciclovita.settings import load_settings


@app.command("validate")
@handles_errors
def validate_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Campaign, segment or lifecycle files, or directories (default: all)."),
    ] = None,
) -> None:
    """Check campaigns, segments, lifecycle and every template they name; exit 1 on problems."""
    from ciclovita.authoring.validation import validate

    settings = load_settings()
    problems = validate(
        paths or [], campaigns_dir=settings.campaigns_dir, templates_dir=settings.templates_dir
    )
    if problems:
        raise InputError(problems)
    console.print("[green]all campaigns, segments, lifecycle rules and templates are valid[/]")


@app.command("preview")
@handles_errors
def preview_command(
    campaign: Annotated[str, typer.Argument(help="Campaign name (its file name).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the rendered emails.")],
    customer: Annotated[
        list[str] | None,
        typer.Option("--customer", help="Customer id or external id (repeatable)."),
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, max=500, help="Render for N customers.")
    ] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="Force a locale (it, en).")] = None,
    as_of: Annotated[str | None, typer.Option(help="Preview as of this ISO date-time.")] = None,
) -> None:
    """Render real emails (HTML, text, headers) into a directory. Sends and records nothing."""
    from ciclovita.authoring.preview import preview

    if customer and sample:
        raise typer.BadParameter("use --customer or --sample, not both")
    rt = runtime()
    files = preview(
        rt.engine,
        rt.catalog.campaign(campaign),
        rt.builder,
        out,
        customers=customer,
        sample=sample,
        locale=locale,
        as_of=parse_as_of(as_of),
        timezone=rt.settings.timezone,
    )
    table = Table(title=f"Preview of {campaign}")
    for column in ("customer", "locale", "variant", "subject", "file"):
        table.add_column(column)
    for item in files:
        table.add_row(item.customer, item.locale, item.variant, item.subject, str(item.eml))
    console.print(table)


@app.command("plan")
@handles_errors
def plan_command(
    as_of: Annotated[str | None, typer.Option(help="Plan as of this ISO date-time (UTC).")] = None,
) -> None:
    """Dry run of the next cycle: who would get what, what each guard holds. Changes nothing."""
    from ciclovita.cycle import dry_run

    rt = runtime()
    result = dry_run(rt.engine, rt.catalog, parse_as_of(as_of), timezone=rt.settings.timezone)
    print_dry_run(result.as_dict())


_GUARD_COLUMNS = ("no_consent", "frequency_cap", "holdout")


def print_dry_run(summary: dict[str, Any]) -> None:
    """Print a dry run (``DryRun.as_dict()``): stages, segments, and per campaign who would
    get what, what each guard holds and, when messages were rendered, how that went."""
    as_of = datetime.fromisoformat(summary["as_of"])
    stages = Table(title=f"Stages as of {as_of:%Y-%m-%d %H:%M} UTC")
    stages.add_column("stage")
    stages.add_column("customers", justify="right")
    for stage in STAGES:
        stages.add_row(stage, str(summary["stages"].get(stage, 0)))
    console.print(stages)
    if summary["transitions"]:
        console.print(
            "stage changes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(summary["transitions"].items()))
        )
    segments = Table(title="Segments")
    for column in ("segment", "size", "entering", "leaving"):
        segments.add_column(column, justify="left" if column == "segment" else "right")
    for change in summary["segments"]:
        segments.add_row(
            change["segment"], str(change["size"]), str(change["entered"]), str(change["exited"])
        )
    console.print(segments)
    delivery = summary.get("delivery")
    rendered = delivery["by_campaign"] if delivery else {}
    plans = Table(title="Campaigns (nothing is sent or recorded)")
    columns = [
        "campaign",
        "new occurrences",
        "would send",
        "held: window",
        "consent",
        "cap",
        "holdout",
        "other skips",
    ]
    if delivery:
        columns += ["rendered", "render failed"]
    for column in columns:
        plans.add_column(
            column,
            justify="left" if column in ("campaign", "new occurrences", "other skips") else "right",
        )
    for plan in summary["plans"]:
        skipped = plan["skipped"]
        other = {
            k: v for k, v in skipped.items() if k not in ("no_consent", "frequency_cap", "holdout")
        }
        drivers = ", ".join(f"{k} {v}" for k, v in plan["drivers"].items()) or "-"
        row = [
            plan["campaign"] + ("" if plan["active"] else f" ({plan['inactive_reason']})"),
            drivers,
            str(plan["planned"] - plan["held_window"]),
            str(plan["held_window"]),
            str(skipped.get("no_consent", 0)),
            str(skipped.get("frequency_cap", 0)),
            str(skipped.get("holdout", 0)),
            ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-",
        ]
        if delivery:
            counts = rendered.get(plan["campaign"], {})
            row += [str(counts.get("rendered", 0)), str(counts.get("failed", 0))]
        plans.add_row(*row)
    console.print(plans)
    if delivery:
        console.print(
            f"dry run: {delivery['rendered']} due messages rendered, {delivery['failed']} would "
            f"fail, {delivery['skipped']} held by a late guard (suppressed or consent withdrawn)"
        )
        for error in delivery["errors"]:
            console.print(f"[red]would fail:[/] {error}")
        if delivery["cap_reached"]:
            console.print(
                "[yellow]more messages are due than CICLOVITA_SEND_CAP_PER_RUN lets one run send; "
                "only those within the cap were rendered[/]"
            )


@app.command("segments")
@handles_errors
def segments_command() -> None:
    """Each segment with its size and its change since the previous recompute."""
    from ciclovita.segments.report import segment_sizes

    rt = runtime()
    table = Table(title="Segments")
    for column in ("segment", "size", "change", "entered", "exited", "computed", "description"):
        table.add_column(
            column, justify="right" if column in ("size", "change", "entered", "exited") else "left"
        )
    for row in segment_sizes(rt.engine, rt.catalog.segments):
        change = "-" if row.change is None else f"{row.change:+d}"
        computed = row.computed_at.strftime("%Y-%m-%d %H:%M") if row.computed_at else "never"
        table.add_row(
            row.name,
            str(row.size),
            change,
            str(row.entered),
            str(row.exited),
            computed,
            row.description,
        )
    console.print(table)


@app.command("schema")
@handles_errors
def schema_command(
    kind: Annotated[str, typer.Argument(help="campaign, segments or policy")] = "campaign",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Print the JSON Schema of campaign files (or segments.yaml, policy.yaml) for editors."""
    from ciclovita.campaigns.schema import SCHEMAS, render

    if kind not in SCHEMAS:
        errors.print(f"unknown schema {kind!r}; accepted: {', '.join(SCHEMAS)}")
        raise typer.Exit(1)
    text = render(kind)
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        typer.echo(text, nl=False)
