"""The columns each kind of CSV import accepts, and reading a file's header against them.

Each kind of import (customers, orders, events) accepts a fixed set of columns, described by
``Field``\\ s: the column name, what it becomes in the database (its *target*), whether it is
required, what an empty cell means, and the parser that reads its cells (``cells``).

Empty cells: a column that is present sets its target to the field's empty value (``None``,
``""`` or a default such as the shop's locale); the target of an absent column is left as it
is in the database, and a new row gets the empty value there too (``new_row_defaults``). Two
exceptions leave the target unchanged on an empty cell (``KEEP``): the consent columns, and
``created_at`` (a new customer then gets the import time).

Targets are table columns, or one of: ``customer`` (another customer's external id, for
orders and events), ``referred_by`` (the referrer's external id), ``consent:<topic>`` and
``attr:<name>`` (a key of ``customers.attributes``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from ciclovita.errors import Problem
from ciclovita.ingest.csv_import.cells import (
    TIMESTAMP_HELP,
    Parser,
    attribute,
    cents,
    country,
    currency,
    day,
    email,
    event_type,
    external_id,
    json_object,
    locale,
    money_cents,
    order_status,
    text,
    timestamp,
    timezone,
    yes_no,
)
from ciclovita.vocabulary import DEFAULT_TIMEZONE, SHOP_LOCALE, ConsentTopic, OrderStatus

Kind = Literal["customers", "orders", "events"]
KINDS: Final[tuple[Kind, ...]] = ("customers", "orders", "events")
ATTRIBUTE_PREFIX: Final = "attr_"


class _Keep:
    """An empty cell leaves the target unchanged."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(frozen=True)
class Field:
    """One accepted column."""

    name: str
    target: str
    parse: Parser
    required: bool = False
    empty: Any = None
    required_message: str = "a value is required"


# ---------------------------------------------------------------------------- columns per kind

_CUSTOMER_REQUIRED = "a value is required (the id of the customer in your system)"

CUSTOMER_FIELDS: Final = (
    Field("customer_id", "external_id", external_id, True, required_message=_CUSTOMER_REQUIRED),
    Field("email", "email", email),
    Field("first_name", "first_name", text(100), empty=""),
    Field("last_name", "last_name", text(100), empty=""),
    Field("locale", "locale", locale, empty=SHOP_LOCALE),
    Field("timezone", "timezone", timezone, empty=DEFAULT_TIMEZONE),
    Field("country", "country", country),
    Field("birth_date", "birth_date", day),
    Field("acquisition_channel", "acquisition_channel", text(32)),
    Field("acquisition_cost", "acquisition_cost_cents", money_cents, empty=0),
    Field("acquisition_cost_cents", "acquisition_cost_cents", cents, empty=0),
    Field("created_at", "created_at", timestamp, empty=KEEP),
    Field("referred_by", "referred_by", external_id),
    *(Field(f"consent_{t}", f"consent:{t}", yes_no, empty=KEEP) for t in ConsentTopic),
)

ORDER_FIELDS: Final = (
    Field("order_id", "external_id", external_id, True),
    Field("customer_id", "customer", external_id, True),
    Field("placed_at", "placed_at", timestamp, True, required_message=TIMESTAMP_HELP),
    Field("amount", "amount_cents", money_cents, True, required_message="an amount is required"),
    Field("amount_cents", "amount_cents", cents, True, required_message="an amount is required"),
    Field("currency", "currency", currency, empty="EUR"),
    Field("status", "status", order_status, empty=OrderStatus.COMPLETED),
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


def new_row_defaults(kind: Kind) -> dict[str, Any]:
    """What a new row of ``kind`` holds where the file has no column for it: each optional
    field's empty value, by target (``KEEP`` fields and the external id are left out)."""
    return {
        field.target: field.empty
        for field in FIELDS[kind]
        if not field.required and field.empty is not KEEP and field.target != "external_id"
    }


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
