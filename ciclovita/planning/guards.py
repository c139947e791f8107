"""Guards that need no database: deterministic holdout and A/B assignment, send windows.

Assignment hashes (campaign, customer) with SHA-256, so the same customer always lands in the
same variant and the same side of the holdout, run after run, on any machine. Send windows
and quiet hours are read in the customer's own time zone; a message outside them is held
until the window opens, never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ciclovita.campaigns.spec import DEFAULT_VARIANT, WEEKDAYS, QuietHours, Variant, Window
from ciclovita.vocabulary import DEFAULT_TIMEZONE


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(campaign: str, customer_id: int, share: float) -> bool:
    return share > 0 and unit_hash("holdout", campaign, customer_id) < share


def pick_variant(campaign: str, customer_id: int, variants: Sequence[Variant]) -> str:
    """The customer's variant, with probability proportional to its weight."""
    if not variants:
        return DEFAULT_VARIANT
    total = sum(v.weight for v in variants)
    point = unit_hash("variant", campaign, customer_id) * total
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant.name
    return variants[-1].name


@lru_cache(maxsize=512)
def zone(name: str | None, fallback: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """The time zone ``name`` (a customer's), or ``fallback`` when it is missing or unknown."""
    try:
        return ZoneInfo(name or fallback)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


def _within(clock: time, start: time, end: time) -> bool:
    """Whether ``clock`` is in [start, end), the interval possibly crossing midnight."""
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def allowed(local: datetime, window: Window | None, quiet: QuietHours | None) -> bool:
    clock = local.time().replace(tzinfo=None)
    if window is not None:
        if WEEKDAYS[local.weekday()] not in window.days:
            return False
        if not _within(clock, window.start, window.end):
            return False
    return not (quiet is not None and _within(clock, quiet.start, quiet.end))


def next_allowed(
    due: datetime, timezone: str | None, window: Window | None, quiet: QuietHours | None
) -> datetime:
    """The first moment at or after ``due`` (UTC) when the customer may be written to."""
    if window is None and quiet is None:
        return due
    tz = zone(timezone)
    local = due.astimezone(tz)
    if allowed(local, window, quiet):
        return due
    openings: list[time] = []
    if window is not None:
        openings.append(window.start)
    if quiet is not None:
        openings.append(quiet.end)
    for day in range(0, 9):
        date = (local + timedelta(days=day)).date()
        for opening in sorted(openings):
            candidate = datetime.combine(date, opening, tzinfo=tz)
            if candidate >= local and allowed(candidate, window, quiet):
                return candidate.astimezone(UTC)
    return due  # no allowed moment within a week: the window excludes every day
