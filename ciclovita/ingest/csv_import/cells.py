"""How each cell of a CSV import is read: one parser per kind of value, none of them
touching the database.

A parser takes the cell's text (stripped, never empty) and the file's ``Options`` and returns
the value, or raises ``CellError`` with a message saying what is accepted. E-mail addresses
follow the rule of the campaign files' ``EmailStr`` (the email-validator package, without
a DNS lookup), lower-cased; locales, order statuses and the default zone come from
``ciclovita.vocabulary``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email

from ciclovita.vocabulary import DEFAULT_TIMEZONE, Locale, OrderStatus

TRUE_WORDS: Final = frozenset({"true", "yes", "sì", "si", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "0"})
MAX_CENTS: Final = 10**15  # ten trillion in major units: more is a typo, not an order


class CellError(ValueError):
    """A cell's text is not accepted; the message says what is."""


@dataclass(frozen=True)
class Options:
    """File-wide reading options."""

    decimal_comma: bool = False


Parser = Callable[[str, Options], Any]


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[+-]?\d+")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
_PLAIN_INT = re.compile(r"-?(0|[1-9]\d{0,15})")
_PLAIN_DECIMAL = re.compile(r"-?(0|[1-9]\d{0,15})\.\d+")

TIMESTAMP_HELP: Final = (
    "not a date; use YYYY-MM-DD or ISO 8601 date-time such as 2024-03-01T14:30:00+01:00"
)


def text(max_length: int) -> Parser:
    """Free text of at most ``max_length`` characters."""

    def parse(value: str, _options: Options) -> str:
        if len(value) > max_length:
            raise CellError(f"too long: {len(value)} characters, at most {max_length}")
        return value

    return parse


external_id = text(64)


def email(value: str, _options: Options) -> str:
    """An address as the campaign files' ``EmailStr`` accepts it (email-validator, no DNS
    lookup), normalised by it and lower-cased."""
    try:
        address = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise CellError(f"not an email address; use the form name@example.com ({reason})") from None
    return address.lower()


def locale(value: str, _options: Options) -> Locale:
    """A locale we have text for, from its language: ``it``, ``it-IT`` and ``IT_it`` are ``it``."""
    language = re.split(r"[-_]", value.lower(), maxsplit=1)[0]
    try:
        return Locale(language)
    except ValueError:
        raise CellError(f"unknown locale; accepted: {', '.join(Locale)}") from None


@cache
def _timezones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


@cache
def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return _timezones_by_lower_name().get(value.lower())
    return value


def timezone(value: str, _options: Options) -> str:
    known = _timezone(value)
    if known is None:
        raise CellError(f"unknown time zone; use an IANA name such as {DEFAULT_TIMEZONE}")
    return known


def country(value: str, _options: Options) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", value):
        raise CellError("not a country code; use 2 letters (ISO 3166-1), e.g. IT")
    return value.upper()


def currency(value: str, _options: Options) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise CellError("not a currency code; use 3 letters (ISO 4217), e.g. EUR")
    return value.upper()


def order_status(value: str, _options: Options) -> OrderStatus:
    try:
        return OrderStatus(value.lower())
    except ValueError:
        raise CellError(f"unknown status; accepted: {', '.join(OrderStatus)}") from None


def day(value: str, _options: Options) -> date:
    """A calendar date, YYYY-MM-DD, not in the future (birth dates)."""
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        parsed = date.fromisoformat(value)
    except ValueError:
        raise CellError("not a date; use YYYY-MM-DD") from None
    if parsed > datetime.now(UTC).date():
        raise CellError("a date in the future; use a past date YYYY-MM-DD")
    return parsed


def timestamp(value: str, _options: Options) -> datetime:
    """A point in time in UTC: a date is its midnight UTC, a naive date-time is UTC."""
    try:
        if _DATE.fullmatch(value):
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise CellError(TIMESTAMP_HELP) from None


def money_cents(value: str, options: Options) -> int:
    """A decimal amount in major units (12.50, or 12,50 in ';' files) as integer cents."""
    example = "12,50 or 12.50" if options.decimal_comma else "12.50"
    normalized = value.replace(",", ".", 1) if options.decimal_comma else value
    if not _NUMBER.fullmatch(normalized):
        hint = (
            ""
            if options.decimal_comma or "," not in value
            else (" (a decimal comma is accepted only in ';'-separated files)")
        )
        raise CellError(f"not an amount; use digits with up to 2 decimals, e.g. {example}{hint}")
    amount = Decimal(normalized)
    if amount < 0:
        raise CellError("negative amount; amounts must be 0 or more")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise CellError(f"more than 2 decimal places; use at most 2, e.g. {example}")
    cents = int(amount.scaleb(2))
    if cents >= MAX_CENTS:
        raise CellError("amount too large")
    return cents


def cents(value: str, _options: Options) -> int:
    """A whole number of cents."""
    if not _INTEGER.fullmatch(value):
        raise CellError("not a whole number of cents; use digits only, e.g. 1250 for 12.50")
    amount = int(value)
    if amount < 0:
        raise CellError("negative amount; amounts must be 0 or more")
    if amount >= MAX_CENTS:
        raise CellError("amount too large")
    return amount


def yes_no(value: str, _options: Options) -> bool:
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CellError("not a yes/no value; accepted: true, false, yes, no, sì, si, 1, 0 or empty")


def event_type(value: str, _options: Options) -> str:
    if len(value) > 48 or not _IDENTIFIER.fullmatch(value):
        raise CellError(
            "not an event type; use a lowercase identifier (a-z, 0-9, _; at most 48), "
            "e.g. site_visit"
        )
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def json_object(value: str, _options: Options) -> dict[str, Any]:
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise CellError('not a JSON object; write e.g. {"page": "/pricing"} or leave it empty')
    return parsed


def attribute(value: str, _options: Options) -> Any:
    """Custom attributes: integers, decimals and true/false keep their type, the rest is text."""
    if _PLAIN_INT.fullmatch(value):
        return int(value)
    if _PLAIN_DECIMAL.fullmatch(value):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
