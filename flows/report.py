"""Markdown for the Prefect UI: what a cycle found and did."""

from __future__ import annotations

from typing import Any

from ciclovita.lifecycle import STAGES


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cycle_markdown(summary: dict[str, Any]) -> str:
    stages = summary.get("stages", {})
    parts = [f"# Lifecycle cycle {summary['cycle_id']} — as of {summary['as_of']}", "## Stages"]
    parts.append(_table(["stage", "customers"], [[s, stages.get(s, 0)] for s in STAGES]))
    if summary.get("segments"):
        parts.append("## Segments")
        parts.append(
            _table(
                ["segment", "size", "entered", "exited"],
                [[s["segment"], s["size"], s["entered"], s["exited"]] for s in summary["segments"]],
            )
        )
    parts.append("## Campaigns")
    outbox = summary.get("outbox", {})
    rows = []
    for plan in summary.get("plans", []):
        counts = outbox.get(plan["campaign"], {})
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(plan["skipped"].items())) or "—"
        rows.append(
            [
                plan["campaign"],
                plan["candidates"],
                plan["planned"],
                plan["held_window"],
                skipped,
                counts.get("sent", 0),
                counts.get("failed", 0),
                counts.get("ambiguous", 0),
            ]
        )
    parts.append(
        _table(
            [
                "campaign",
                "candidates",
                "planned",
                "held (window)",
                "skipped",
                "sent",
                "failed",
                "ambiguous",
            ],
            rows,
        )
    )
    return "\n\n".join(parts) + "\n"


def dry_run_markdown(summary: dict[str, Any]) -> str:
    """A dry run's report: what the cycle would plan and render; nothing was kept or sent."""
    stages = summary.get("stages", {})
    parts = [
        f"# Dry run — as of {summary['as_of']}",
        "Nothing was written and no provider was called.",
        "## Stages",
        _table(["stage", "customers"], [[s, stages.get(s, 0)] for s in STAGES]),
    ]
    if summary.get("segments"):
        parts.append("## Segments")
        parts.append(
            _table(
                ["segment", "size", "would enter", "would leave"],
                [[s["segment"], s["size"], s["entered"], s["exited"]] for s in summary["segments"]],
            )
        )
    rendered = (summary.get("delivery") or {}).get("by_campaign", {})
    rows = []
    for plan in summary.get("plans", []):
        counts = rendered.get(plan["campaign"], {})
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(plan["skipped"].items())) or "—"
        rows.append(
            [
                plan["campaign"],
                plan["planned"] - plan["held_window"],
                plan["held_window"],
                skipped,
                counts.get("rendered", 0),
                counts.get("failed", 0),
                counts.get("skipped", 0),
            ]
        )
    parts.append("## Campaigns")
    parts.append(
        _table(
            [
                "campaign",
                "would send",
                "held (window)",
                "skipped",
                "rendered",
                "render failed",
                "late guard",
            ],
            rows,
        )
    )
    errors = (summary.get("delivery") or {}).get("errors", [])
    if errors:
        parts.append("## Messages that would fail")
        parts.append("\n".join(f"- {error}" for error in errors))
    return "\n\n".join(parts) + "\n"
