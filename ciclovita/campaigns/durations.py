"""Durations and times of day as marketers write them: ``90m``, ``12h``, ``1d``, ``09:00``."""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> timedelta:
    """``"1d"`` → one day. Accepted units: m (minutes), h, d, w."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError("a duration with its unit, such as 30m, 12h, 1d or 2w (m, h, d, w)")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for suffix, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{suffix}"
    return f"{seconds // 60}m"


def parse_time_of_day(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 09:00 as 540
        hours, minutes = divmod(value, 60)
        if 0 <= hours < 24:
            return time(hours, minutes)
    text = str(value).strip()
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
    if not match:
        raise ValueError("a time of day as HH:MM, such as 09:00")
    return time(int(match.group(1)), int(match.group(2)))


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\s*\d+\s*(m|h|d|w)\s*$", "examples": ["1d"]}),
]
TimeOfDay = Annotated[
    time,
    BeforeValidator(parse_time_of_day),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^([01]?\d|2[0-3]):[0-5]\d$", "examples": ["09:00"]}
    ),
]
