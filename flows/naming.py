"""Run names that say what a run did, instead of Prefect's random words.

``cycle as of 2026-06-16 09:00 UTC``, ``plan and send thank_you, survey as of …``,
``reconcile as of …``; a scheduled run without ``as_of`` is named after its scheduled time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect.runtime import flow_run


def resolve_as_of(as_of: datetime | None) -> datetime:
    """The moment a run works as of: its ``as_of`` parameter, else now (UTC)."""
    if as_of is None:
        return datetime.now(UTC)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


def as_of_label(value: Any) -> str:
    """``2026-06-16 09:00 UTC`` for a datetime or an ISO string; the scheduled time when None."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if not isinstance(value, datetime):
        try:
            value = flow_run.get_scheduled_start_time()
        except Exception:  # noqa: BLE001 - outside a run: no scheduled time
            value = datetime.now(UTC)
    assert isinstance(value, datetime)
    moment = resolve_as_of(value)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def campaigns_label(names: Any) -> str:
    """``all campaigns``, or the names asked for."""
    if not names:
        return "all campaigns"
    names = list(names)
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def flow_run_namer(prefix: str, *, with_campaigns: bool = False) -> Callable[[], str]:
    """A ``flow_run_name`` callable: ``<prefix> as of <time>``; with campaigns, ``plan and send
    <campaigns> as of <time>`` (``plan only`` when ``send`` is false); ``<prefix> dry run as
    of <time>`` for a dry run."""

    def name() -> str:
        parameters = flow_run.parameters or {}
        label = as_of_label(parameters.get("as_of"))
        if with_campaigns:
            verb = "plan only" if parameters.get("send") is False else "plan and send"
            return f"{verb} {campaigns_label(parameters.get('campaigns'))} as of {label}"
        if parameters.get("dry_run"):
            return f"{prefix} dry run as of {label}"
        return f"{prefix} as of {label}"

    name.__name__ = f"{prefix.replace(' ', '_')}_run_name"
    return name


def batch_name(number: int, first: int, last: int) -> str:
    """``deliver batch 3 (messages 1001–1500)``: the n-th batch and its slice of the due list."""
    return f"deliver batch {number} (messages {first}–{last})"
