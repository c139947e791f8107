"""Reading the records of a CSV import into rows: each cell through its column's parser,
every problem located by line, column and value.

A ``Row`` holds its line, its external id and its values by target (``columns``).
``RowReader`` reads a file's records chunk by chunk, keeps only valid rows, reports an id
seen twice in the file, and gives an event without ``event_id`` a stable derived id.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ciclovita.errors import Problem
from ciclovita.ingest.csv_import.cells import CellError, Options
from ciclovita.ingest.csv_import.columns import ID_COLUMN, KEEP, Header, Kind
from ciclovita.ingest.csv_import.reader import Record

SHOWN_VALUE_CHARS: Final = 200


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


class RowReader:
    """Reads chunks of records into valid rows; ids seen twice in the file are problems."""

    def __init__(
        self, kind: Kind, header: Header, options: Options, source: str, problems: list[Problem]
    ) -> None:
        self.kind = kind
        self.header = header
        self.options = options
        self.source = source
        self.problems = problems
        self.seen: dict[str, int] = {}  # external id -> line
        self.derived: dict[str, int] = defaultdict(int)  # event key -> occurrences so far

    def read(self, chunk: Sequence[Record]) -> list[Row]:
        """The valid rows of ``chunk``, each with its external id (derived for events)."""
        rows: list[Row] = []
        for line, cells in chunk:
            row = read_row(
                self.kind, self.header, cells, line, self.source, self.options, self.problems
            )
            if row.key in self.seen:
                column = ID_COLUMN[self.kind]
                message = (
                    f"{column} {row.key!r} is also on line {self.seen[row.key]}; "
                    "each id may appear once in a file"
                )
                self.problems.append(Problem(self.source, message, line, column, row.key))
                continue
            if row.key:
                self.seen[row.key] = line
            if not row.valid:
                continue
            if not row.key:  # an event without event_id
                base = event_key(row, 1)
                self.derived[base] += 1
                occurrence = self.derived[base]
                row.key = base if occurrence == 1 else event_key(row, occurrence)
            rows.append(row)
        return rows
