"""What ops see in the Prefect UI for every run: artifacts with stable keys.

=====================  =========================================================================
key                    what it shows
=====================  =========================================================================
``lifecycle-stages``   customers per lifecycle stage, the previous run's count and the change
``segments``           each segment's size, previous size, entries and exits
``campaigns``          per campaign: candidates, planned, held for the send window, skipped by
                       each guard, and this run's deliveries (sent, failed, retry, ambiguous)
``clv-model``          the BG/NBD and Gamma-Gamma parameters in use, fit quality, when fitted
``stage-funnel``       a PNG chart of customers per stage over the last runs, and its table
``campaign-versions``  the git commit, campaign files and template folders used (content
                       hashes, links to the commit when the repository has a web remote)
``delivery-problems``  messages that failed or are ambiguous: campaign, customer, error
``reconciliation``     what ``reconcile-events`` settled: newly ambiguous, resolved, pending
=====================  =========================================================================

Each key keeps its history across runs (the Artifacts page shows the latest and the runs
before it); each run's page lists its own. The row builders are plain functions of the run
summary, so they are tested without Prefect.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlalchemy import Engine, or_, select

from ciclovita.db.models import CycleRun, Message
from ciclovita.lifecycle import STAGES
from ciclovita.vocabulary import MessageStatus, SkipReason
from flows.history import StageSnapshot, previous_stages, stage_history

STAGE_COLOURS = {
    "prospect": "#c7d2fe",
    "engaged": "#818cf8",
    "new_customer": "#34d399",
    "active": "#10b981",
    "loyal": "#059669",
    "advocate": "#065f46",
    "at_risk": "#f59e0b",
    "lapsed": "#ef4444",
}
DELIVERY_COLUMNS = ("sent", "failed", "retried", "ambiguous")


def _when(iso: str) -> str:
    """``2026-06-16 09:00 UTC`` for an ISO time from a run summary."""
    try:
        return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return iso


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else ("±0" if n == 0 else f"−{-n}")


def stage_rows(stages: dict[str, int], previous: StageSnapshot | None) -> list[dict[str, Any]]:
    """One row per stage (lifecycle order) with the change since ``previous``."""
    total = sum(stages.values()) or 1
    rows = []
    for stage in STAGES:
        now = int(stages.get(stage, 0))
        before = previous.stages.get(stage, 0) if previous else None
        rows.append(
            {
                "stage": stage,
                "customers": now,
                "share": f"{100 * now / total:.1f}%",
                "previous run": before if before is not None else "—",
                "change": _signed(now - before) if before is not None else "first run",
            }
        )
    return rows


def segment_rows(segments: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "segment": s["segment"],
            "size": s["size"],
            "previous size": s.get("previous_size", "—"),
            "entered": s["entered"],
            "exited": s["exited"],
            "change": _signed(int(s["entered"]) - int(s["exited"])),
        }
        for s in segments
    ]


def campaign_rows(
    plans: Sequence[dict[str, Any]], delivered: dict[str, dict[str, int]]
) -> list[dict[str, Any]]:
    """Per campaign: what planning decided (each guard) and what this run delivered."""
    rows = []
    names = [p["campaign"] for p in plans]
    names += sorted(set(delivered) - set(names))  # sent now, planned by an earlier run
    by_name = {p["campaign"]: p for p in plans}
    for name in names:
        plan = by_name.get(name)
        row: dict[str, Any] = {"campaign": name}
        row["candidates"] = plan["candidates"] if plan else 0
        row["planned"] = plan["planned"] if plan else 0
        counts = delivered.get(name, {})
        for column in DELIVERY_COLUMNS:
            row["retry later" if column == "retried" else column] = int(counts.get(column, 0))
        row["held: send window"] = plan["held_window"] if plan else 0
        for reason in SkipReason:
            row[f"skipped: {reason}"] = plan["skipped"].get(reason, 0) if plan else 0
        if plan is None:
            row["status"] = "not planned this run"
        elif plan["active"]:
            row["status"] = "active"
        else:
            row["status"] = f"inactive ({plan['inactive_reason']})"
        rows.append(row)
    return rows


def clv_markdown(model: dict[str, Any]) -> str:
    """The fitted CLV model as markdown: parameters, fit quality, when."""

    def number(value: Any) -> str:
        return f"{value:.6g}" if isinstance(value, int | float) else "—"

    lines = ["# CLV model in use", ""]
    state = "reused from an earlier fit" if model.get("reused") else "fitted by this run"
    lines.append(
        f"Fitted at **{model.get('fitted_at', '?')}** ({state}) on "
        f"{model.get('n_fitted', 0)} of {model.get('n_customers', 0)} customers; "
        f"time unit: {model.get('time_unit', '?')}; "
        f"converged: **{'yes' if model.get('converged') else 'no'}**."
    )
    if model.get("note"):
        lines += ["", f"> {model['note']}"]
    bgnbd = model.get("bgnbd") or {}
    lines += [
        "",
        "## BG/NBD (purchases and drop-out)",
        "",
        "| r | α | a | b | log-likelihood |",
        "|---|---|---|---|---|",
        f"| {number(bgnbd.get('r'))} | {number(bgnbd.get('alpha'))} | {number(bgnbd.get('a'))} "
        f"| {number(bgnbd.get('b'))} | {number(model.get('bgnbd_log_likelihood'))} |",
    ]
    gamma = model.get("gamma_gamma") or {}
    lines += [
        "",
        "## Gamma-Gamma (spend per order)",
        "",
        "| p | q | γ | log-likelihood |",
        "|---|---|---|---|",
        f"| {number(gamma.get('p'))} | {number(gamma.get('q'))} | {number(gamma.get('gamma'))} "
        f"| {number(model.get('gg_log_likelihood'))} |",
    ]
    return "\n".join(lines) + "\n"


def funnel_png(history: Sequence[StageSnapshot]) -> bytes:
    """A stacked bar chart of customers per stage, one bar per run, as PNG bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.2), dpi=100)
    axes = figure.subplots()
    labels = [f"#{h.cycle_id}\n{h.as_of:%m-%d %H:%M}" for h in history]
    bottoms = [0] * len(history)
    for stage in STAGES:
        values = [h.stages.get(stage, 0) for h in history]
        axes.bar(labels, values, bottom=bottoms, label=stage, color=STAGE_COLOURS[stage])
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set_ylabel("customers")
    axes.set_title("Customers per lifecycle stage, by run (UTC)")
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def funnel_markdown(history: Sequence[StageSnapshot]) -> str:
    """The funnel chart as an embedded PNG, followed by the same numbers as a table."""
    image = base64.b64encode(funnel_png(history)).decode("ascii")
    header = "| run | as of (UTC) | " + " | ".join(STAGES) + " |"
    lines = [
        "# Stage funnel over time",
        "",
        f"![customers per stage over the last {len(history)} runs](data:image/png;base64,{image})",
        "",
        header,
        "|" + "---|" * (len(STAGES) + 2),
    ]
    for h in history:
        counts = " | ".join(str(h.stages.get(stage, 0)) for stage in STAGES)
        lines.append(f"| #{h.cycle_id} | {h.as_of:%Y-%m-%d %H:%M} | {counts} |")
    return "\n".join(lines) + "\n"


def versions_markdown(versions: dict[str, Any]) -> str:
    """Campaign files and templates a run used, with hashes and links."""
    commit = versions.get("commit")
    lines = ["# Campaign files and templates used", ""]
    if commit:
        dirty = " — **with uncommitted changes**" if versions.get("uncommitted_changes") else ""
        lines.append(f"Git commit `{commit}` of `{versions.get('repository')}`{dirty}.")
    else:
        lines.append("Not a git checkout: the content hashes below identify the versions.")
    lines += [
        "",
        f"Shared layouts and partials: `{versions.get('shared_templates_hash')}`.",
        "",
        "| campaign | campaign file | file hash | templates (hash) |",
        "|---|---|---|---|",
    ]

    def linked(text: str, link: str | None) -> str:
        return f"[{text}]({link})" if link else f"`{text}`"

    for entry in versions.get("campaigns", []):
        templates = ", ".join(
            f"{linked(t['template'] + '/', t.get('link'))} (`{t['hash']}`)"
            for t in entry["templates"]
        )
        lines.append(
            f"| {entry['campaign']} | {linked(entry['file'], entry.get('file_link'))} "
            f"| `{entry['file_hash']}` | {templates} |"
        )
    return "\n".join(lines) + "\n"


def problem_rows(engine: Engine, cycle_id: int) -> list[dict[str, Any]]:
    """Messages this run failed or left ambiguous (at most 50): who, which campaign, why.

    "This run": planned by it, or claimed or sent since it started (wall clock)."""
    started = select(CycleRun.started_at).where(CycleRun.id == cycle_id).scalar_subquery()
    condition = or_(
        Message.cycle_id == cycle_id, Message.claimed_at >= started, Message.sending_at >= started
    )
    query = (
        select(Message.campaign, Message.customer_id, Message.uid, Message.status, Message.error)
        .where(Message.status.in_((MessageStatus.FAILED, MessageStatus.AMBIGUOUS)), condition)
        .order_by(Message.campaign, Message.customer_id)
        .limit(50)
    )
    with engine.connect() as connection:
        return [
            {
                "campaign": campaign,
                "customer": customer_id,
                "message": uid,
                "status": status,
                "error": (error or "")[:300],
            }
            for campaign, customer_id, uid, status, error in connection.execute(query)
        ]


def publish_stages(engine: Engine, summary: dict[str, Any]) -> None:
    """``lifecycle-stages``, ``segments``, ``clv-model`` and ``stage-funnel``."""
    cycle_id = int(summary["cycle_id"])
    previous = previous_stages(engine, cycle_id)
    since = (
        f"run #{previous.cycle_id} as of {previous.as_of:%Y-%m-%d %H:%M} UTC" if previous else ""
    )
    create_table_artifact(
        key="lifecycle-stages",
        table=stage_rows(summary["stages"], previous),
        description=f"Customers per lifecycle stage as of {_when(summary['as_of'])}"
        + (f", compared with {since}" if since else " (no earlier run to compare with)"),
    )
    if summary.get("segments"):
        create_table_artifact(
            key="segments",
            table=segment_rows(summary["segments"]),
            description=f"Segment sizes as of {_when(summary['as_of'])}, entries and exits",
        )
    model = summary.get("scores", {}).get("model")
    if model:
        create_markdown_artifact(
            key="clv-model", markdown=clv_markdown(model), description="CLV model parameters"
        )
    history = stage_history(engine, limit=30)
    if history:
        create_markdown_artifact(
            key="stage-funnel",
            markdown=funnel_markdown(history),
            description=f"Customers per stage over the last {len(history)} run"
            + ("s" if len(history) > 1 else ""),
        )


def publish_campaigns(engine: Engine, summary: dict[str, Any]) -> None:
    """``campaigns``, ``campaign-versions`` and, when there are any, ``delivery-problems``."""
    create_table_artifact(
        key="campaigns",
        table=campaign_rows(summary.get("plans", []), summary.get("delivered", {})),
        description=f"Campaigns as of {_when(summary['as_of'])}: what each guard held or "
        "skipped, and this run's deliveries",
    )
    if summary.get("versions"):
        create_markdown_artifact(
            key="campaign-versions",
            markdown=versions_markdown(summary["versions"]),
            description="Campaign files and template versions this run used",
        )
    problems = problem_rows(engine, int(summary["cycle_id"]))
    logger = get_run_logger()
    for row in problems:
        logger.error(
            "campaign %s, customer %s, message %s is %s: %s",
            row["campaign"],
            row["customer"],
            row["message"],
            row["status"],
            row["error"] or "no error text",
        )
    if problems:
        create_table_artifact(
            key="delivery-problems",
            table=problems,
            description=f"{len(problems)} message(s) failed or ambiguous in this run (max 50)",
        )
