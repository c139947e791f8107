"""The columns of the CSV imports and how each cell is read (no database here).

Each kind of import (customers, orders, events) accepts a fixed set of columns, described by
``Field``\\ s: the column name, what it becomes in the database (its *target*), whether it is
required, what an empty cell means, and a parser that turns the cell's text into a value or
raises ``CellError`` with a message saying what is accepted.

Empty cells: a column that is present sets its target to the field's empty value (``None``,
``""`` or a default such as ``it``); the target of an absent column is left as it is in the
database. Two exceptions leave the target unchanged on an empty cell (``KEEP``): the consent
columns, and ``created_at`` (a new customer then gets the import time).

Targets are table columns, or one of: ``customer`` (another customer's external id, for
orders and events), ``referred_by`` (the referrer's external id), ``consent:<topic>`` and
``attr:<name>`` (a key of ``customers.attributes``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from ciclovita.errors import Problem

Kind = Literal["customers", "orders", "events"]
KINDS: Final[tuple[Kind, ...]] = ("customers", "orders", "events")

LOCALES: Final = ("it", "en")
DEFAULT_LOCALE: Final = "it"
DEFAULT_TIMEZONE: Final = "Europe/Rome"
ORDER_STATUSES: Final = ("completed", "pending", "cancelled", "refunded")
CONSENT_TOPICS: Final = ("marketing", "surveys", "newsletter")
TRUE_WORDS: Final = frozenset({"true", "yes", "sì", "si", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "0"})
ATTRIBUTE_PREFIX: Final = "attr_"
MAX_CENTS: Final = 10**15  # ten trillion in major units: more is a typo, not an order

SHOWN_VALUE_CHARS: Final = 200


class _Keep:
    """An empty cell leaves the target unchanged."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


class CellError(ValueError):
    """A cell's text is not accepted; the message says what is."""


@dataclass(frozen=True)
class Options:
    """File-wide reading options."""

    decimal_comma: bool = False


Parser = Callable[[str, Options], Any]


@dataclass(frozen=True)
class Field:
    """One accepted column."""

    name: str
    target: str
    parse: Parser
    required: bool = False
    empty: Any = None
    required_message: str = "a value is required"


# ---------------------------------------------------------------------------- cell parsers

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
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
    if len(value) > 320 or not _EMAIL.fullmatch(value):
        raise CellError("not an email address; use the form name@example.com")
    return value.lower()


def locale(value: str, _options: Options) -> str:
    language = re.split(r"[-_]", value.lower(), maxsplit=1)[0]
    if language not in LOCALES:
        raise CellError(f"unknown locale; accepted: {', '.join(LOCALES)}")
    return language


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
        raise CellError("unknown time zone; use an IANA name such as Europe/Rome")
    return known


def country(value: str, _options: Options) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", value):
        raise CellError("not a country code; use 2 letters (ISO 3166-1), e.g. IT")
    return value.upper()


def currency(value: str, _options: Options) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise CellError("not a currency code; use 3 letters (ISO 4217), e.g. EUR")
    return value.upper()


def order_status(value: str, _options: Options) -> str:
    status = value.lower()
    if status not in ORDER_STATUSES:
        raise CellError(f"unknown status; accepted: {', '.join(ORDER_STATUSES)}")
    return status


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


# ---------------------------------------------------------------------------- columns per kind

_CUSTOMER_REQUIRED = "a value is required (the id of the customer in your system)"

CUSTOMER_FIELDS: Final = (
    Field("customer_id", "external_id", external_id, True, required_message=_CUSTOMER_REQUIRED),
    Field("email", "email", email),
    Field("first_name", "first_name", text(100), empty=""),
    Field("last_name", "last_name", text(100), empty=""),
    Field("locale", "locale", locale, empty=DEFAULT_LOCALE),
    Field("timezone", "timezone", timezone, empty=DEFAULT_TIMEZONE),
    Field("country", "country", country),
    Field("birth_date", "birth_date", day),
    Field("acquisition_channel", "acquisition_channel", text(32)),
    Field("acquisition_cost", "acquisition_cost_cents", money_cents, empty=0),
    Field("acquisition_cost_cents", "acquisition_cost_cents", cents, empty=0),
    Field("created_at", "created_at", timestamp, empty=KEEP),
    Field("referred_by", "referred_by", external_id),
    *(Field(f"consent_{t}", f"consent:{t}", yes_no, empty=KEEP) for t in CONSENT_TOPICS),
)

ORDER_FIELDS: Final = (
    Field("order_id", "external_id", external_id, True),
    Field("customer_id", "customer", external_id, True),
    Field("placed_at", "placed_at", timestamp, True, required_message=TIMESTAMP_HELP),
    Field("amount", "amount_cents", money_cents, True, required_message="an amount is required"),
    Field("amount_cents", "amount_cents", cents, True, required_message="an amount is required"),
    Field("currency", "currency", currency, empty="EUR"),
    Field("status", "status", order_status, empty="completed"),
    Field("referral_code", "referral_code", text(32)),
)

EVENT_FIELDS: Final = (
    Field("event_id", "external_id", external_id),
    Field("customer_id", "customer", external_id, True),
    Field("type", "type", event_type, True),
    Field("occurred_at", "occurred_at", timestamp, True, required_message=TIMESTAMP_HELP),
    Field("properties", "properties", json_object, empty={}),
)

FIELDS: Final[Mapping[Kind, tuple[Field, ...]]] = {
    "customers": CUSTOMER_FIELDS,
    "orders": ORDER_FIELDS,
    "events": EVENT_FIELDS,
}

# Required columns; a tuple means "exactly one of these".
REQUIRED_COLUMNS: Final[Mapping[Kind, tuple[str | tuple[str, ...], ...]]] = {
    "customers": ("customer_id",),
    "orders": ("order_id", "customer_id", "placed_at", ("amount", "amount_cents")),
    "events": ("customer_id", "type", "occurred_at"),
}
ONE_OF: Final = (("amount", "amount_cents"), ("acquisition_cost", "acquisition_cost_cents"))
ID_COLUMN: Final[Mapping[Kind, str]] = {
    "customers": "customer_id",
    "orders": "order_id",
    "events": "event_id",
}


def accepted_columns(kind: Kind) -> list[str]:
    names = [f.name for f in FIELDS[kind]]
    return [*names, f"{ATTRIBUTE_PREFIX}<name>"] if kind == "customers" else names


def _attribute_field(name: str) -> Field | None:
    key = name.removeprefix(ATTRIBUTE_PREFIX)
    if not re.fullmatch(r"[a-z0-9_]+", key):
        return None
    return Field(name, f"attr:{key}", attribute, empty=None)


# ---------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    """The file's columns: the field read from each position (None: unnamed, ignored)."""

    fields: tuple[Field | None, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f is not None)

    def targets(self) -> frozenset[str]:
        return frozenset(f.target for f in self.fields if f is not None)


def read_header(kind: Kind, cells: Sequence[str], source: str) -> tuple[Header, list[Problem]]:
    """The header of a ``kind`` file, and every problem with it (all on line 1)."""
    known = {f.name: f for f in FIELDS[kind]}
    problems: list[Problem] = []
    fields: list[Field | None] = []
    positions: dict[str, int] = {}

    def problem(message: str, column: str | None = None, value: str | None = None) -> None:
        problems.append(Problem(source, message, line=1, column=column, value=value))

    for position, cell in enumerate(cells, start=1):
        name = cell.strip().lower()
        if not name:
            fields.append(None)
            continue
        if name in positions:
            problem(
                f"column {name!r} appears twice (columns {positions[name]} and {position})",
                name,
                cell,
            )
        positions.setdefault(name, position)
        found = known.get(name)
        if found is None and kind == "customers" and name.startswith(ATTRIBUTE_PREFIX):
            found = _attribute_field(name)
            if found is None:
                problem(
                    "bad attribute column; use attr_ then lowercase letters, digits and _",
                    name,
                    cell,
                )
                fields.append(None)
                continue
        if found is None:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            accepted = ", ".join(accepted_columns(kind))
            problem(f"unknown column; {hint}accepted: {accepted}", name, cell)
        fields.append(found)
    names = set(positions)
    for required in REQUIRED_COLUMNS[kind]:
        if isinstance(required, str) and required not in names:
            problem(f"missing required column {required!r}", required)
        elif isinstance(required, tuple) and not names.intersection(required):
            either = " or ".join(repr(n) for n in required)
            problem(f"missing required column {either}", required[0])
    for pair in ONE_OF:
        if set(pair) <= names:
            problem(f"use either {pair[0]!r} or {pair[1]!r}, not both", pair[1])
    return Header(tuple(fields)), problems


# ---------------------------------------------------------------------------- rows


@dataclass(slots=True)
class Row:
    """One data row: its line, external id ("" when not given) and values by target.

    A row with problems is not ``valid``; its values are then incomplete.
    """

    line: int
    key: str
    values: dict[str, Any] = field(default_factory=dict)
    valid: bool = True


def shown(value: str) -> str:
    """A cell's text as shown in a problem (long values are cut)."""
    if len(value) <= SHOWN_VALUE_CHARS:
        return value
    return value[:SHOWN_VALUE_CHARS] + "…"


def read_row(
    kind: Kind,
    header: Header,
    cells: Sequence[str],
    line: int,
    source: str,
    options: Options,
    problems: list[Problem],
) -> Row:
    """The row's values; its problems, if any, are appended to ``problems``."""
    found: list[Problem] = []
    if len(cells) > len(header.fields):
        extra = ",".join(cells[len(header.fields) :])
        found.append(
            Problem(
                source,
                f"{len(cells)} values but the header has {len(header.fields)} columns "
                "(is a value with the separator in it missing its quotes?)",
                line,
                value=shown(extra),
            )
        )
    elif len(cells) < len(header.fields):
        found.append(
            Problem(
                source,
                f"only {len(cells)} values but the header has {len(header.fields)} columns",
                line,
            )
        )
    values: dict[str, Any] = {}
    for spec, raw in zip(header.fields, cells, strict=False):
        cell = raw.strip()
        if spec is None:
            if cell:
                message = "a value in a column without a name (name it in the first line)"
                found.append(Problem(source, message, line, value=shown(raw)))
            continue
        if not cell:
            if spec.required:
                found.append(Problem(source, spec.required_message, line, spec.name, raw))
            elif spec.empty is not KEEP:
                values[spec.target] = spec.empty
            continue
        try:
            values[spec.target] = spec.parse(cell, options)
        except CellError as exc:
            found.append(Problem(source, str(exc), line, spec.name, shown(raw)))
    key = values.pop("external_id", None)
    if kind == "customers" and key is not None and values.get("referred_by") == key:
        found.append(
            Problem(source, "a customer cannot refer themselves", line, "referred_by", key)
        )
    problems.extend(found)
    return Row(line, key or "", values, valid=not found)


def event_key(row: Row, occurrence: int) -> str:
    """A stable external id for an event without ``event_id``.

    It hashes the customer, type, time and properties, plus the occurrence number of
    identical rows within the file, so that re-importing the file (or a later export that
    contains the same events) matches the events already imported.
    """
    properties = json.dumps(row.values.get("properties", {}), sort_keys=True, ensure_ascii=False)
    occurred: datetime = row.values["occurred_at"]
    parts = [row.values["customer"], row.values["type"], occurred.isoformat(), properties]
    if occurrence > 1:
        parts.append(str(occurrence))
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"h:{digest[:40]}"
