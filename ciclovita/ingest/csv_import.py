"""Import a user's own customers, orders and events from CSV files.

``import_csv(engine, "orders", Path("orders.csv"))`` reads the file in chunks, checks every
row (columns and accepted values in ``ciclovita.ingest.csv_rows``), and upserts the rows on
their external id (``customer_id`` / ``order_id`` / ``event_id``), all in one transaction:

* every bad row is reported with its line, column and value; when any row is bad nothing is
  written and ``InputError`` lists every problem — unless ``skip_bad_rows``, which imports the
  good rows and lists the skipped ones in the report;
* importing the same file again inserts nothing: rows whose values did not change are counted
  as unchanged (and not written); rows whose values changed are updated;
* the delimiter is ',' or ';' (detected from the header); ';' files may use decimal commas.

Customers' ``referred_by`` may name a customer further down the file: rows whose referrer is
not in the database yet wait until it is written, and are reported when it never is.
"""

from __future__ import annotations

import codecs
import csv
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    any_,
    bindparam,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ciclovita.db.bulk import BULK_WRITE_ROWS, vacuum
from ciclovita.db.models import Consent, Customer, Event, Order
from ciclovita.db.types import utcnow
from ciclovita.errors import InputError, Problem
from ciclovita.ingest import csv_rows
from ciclovita.ingest.csv_rows import ID_COLUMN, Header, Kind, Options, Row
from ciclovita.referrals import convert_referrals

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

__all__ = ["CHUNK_ROWS", "ImportReport", "import_csv"]

CHUNK_ROWS: Final = 5_000
_TABLES_WRITTEN: dict[str, tuple[str, ...]] = {
    "customers": ("customers", "consents"),
    "orders": ("orders", "referrals"),
    "events": ("events",),
}
"""What an import of each kind writes (vacuumed after a large import, on PostgreSQL)."""
_LOOKUP_BATCH: Final = 5_000

_customers: Final[Table] = Customer.__table__  # type: ignore[assignment]
_orders: Final[Table] = Order.__table__  # type: ignore[assignment]
_events: Final[Table] = Event.__table__  # type: ignore[assignment]
_consents: Final[Table] = Consent.__table__  # type: ignore[assignment]


@dataclass
class ImportReport:
    """What an import did. ``skipped`` lists the problems of the rows left out."""

    kind: Kind
    path: Path
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    referrals_converted: int = 0

    @property
    def skipped_rows(self) -> int:
        """How many rows were skipped (a row may have several problems)."""
        return len({p.line for p in self.skipped})

    def summary(self) -> str:
        """One line of counts (the skipped rows' problems are in ``skipped``)."""
        skipped = f", {self.skipped_rows} skipped (bad rows)" if self.skipped else ""
        return (
            f"{self.kind} from {self.path}: {self.rows_read} rows read: {self.inserted} "
            f"inserted, {self.updated} updated, {self.unchanged} unchanged{skipped} "
            f"in {self.seconds:.1f}s"
            + (
                f"; {self.referrals_converted} referrals converted"
                if self.referrals_converted
                else ""
            )
        )


def import_csv(
    engine: Engine,
    kind: Kind,
    path: Path,
    *,
    skip_bad_rows: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import a CSV file of ``kind`` into the database, all or nothing.

    Raises ``InputError`` listing every problem (line, column, value) when the file cannot be
    read, its header is wrong, or — without ``skip_bad_rows`` — any row is bad.
    """
    if kind not in csv_rows.KINDS:
        raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(csv_rows.KINDS)}")
    started = time.perf_counter()
    source = str(path)
    report = ImportReport(kind, path)
    problems: list[Problem] = []
    with _open_text(path) as stream:
        try:
            delimiter = _detect_delimiter(stream, source)
            reader = csv.reader(stream, delimiter=delimiter, strict=True)
            records = _records(reader, source, problems)
            header, header_problems = csv_rows.read_header(kind, next(records)[1], source)
            if header_problems:
                raise InputError(header_problems)
            rows = _Rows(kind, header, Options(decimal_comma=delimiter == ";"), source, problems)
            with engine.begin() as connection:
                writer = _WRITERS[kind](connection, header, report, problems)
                for chunk in _chunks(records, chunk_rows):
                    report.rows_read += len(chunk)
                    writer.add(rows.read(chunk))
                writer.finish()
                if problems and not skip_bad_rows:
                    raise InputError(sorted(problems, key=_line))
                if kind == "orders":  # orders carrying a referral code convert the referral
                    report.referrals_converted = convert_referrals(
                        connection, datetime.now(UTC)
                    ).converted
        except UnicodeDecodeError:
            raise InputError([_not_utf8(path)]) from None
    if report.inserted + report.updated > BULK_WRITE_ROWS:
        vacuum(engine, *_TABLES_WRITTEN[kind])
    report.skipped = sorted(problems, key=_line)
    report.seconds = time.perf_counter() - started
    return report


def _line(problem: Problem) -> int:
    return problem.line or 0


# ---------------------------------------------------------------------------- reading the file


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """The file as UTF-8 text (a BOM is skipped), or InputError naming it."""
    try:
        stream = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError([Problem(str(path), "file not found")]) from None
    except IsADirectoryError:
        raise InputError([Problem(str(path), "is a directory, not a CSV file")]) from None
    except OSError as exc:
        raise InputError([Problem(str(path), f"cannot be read: {exc.strerror}")]) from None
    with stream:
        yield stream


def _detect_delimiter(stream: TextIO, source: str) -> str:
    """',' or ';', whichever the header line has more of (',' for a one-column header)."""
    first = stream.readline()
    if not first.strip():
        empty = not stream.read(1 << 16).strip()
        message = "the file is empty" if empty else "the first line is empty"
        raise InputError([Problem(source, f"{message}; its first line must name the columns", 1)])
    stream.seek(0)
    return ";" if first.count(";") > first.count(",") else ","


def _not_utf8(path: Path) -> Problem:
    """Where the first byte that is not UTF-8 is: its line and the text around it."""
    with path.open("rb") as stream:
        if stream.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            message = "the file is UTF-16, not UTF-8; save it as 'CSV UTF-8'"
            return Problem(str(path), message, line=1)
        stream.seek(0)
        for number, raw in enumerate(stream, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                message = (
                    f"the file is not UTF-8 text (byte {raw[exc.start]:#04x} at character "
                    f"{exc.start + 1}); save it as 'CSV UTF-8'"
                )
                value = raw[max(0, exc.start - 30) : exc.start + 30]
                return Problem(str(path), message, number, value=value.decode("utf-8", "replace"))
    return Problem(str(path), "the file is not UTF-8 text; save it as 'CSV UTF-8'")


def _records(
    reader: CsvReader, source: str, problems: list[Problem]
) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, cells) for the header and each non-blank record after it.

    A record the csv module cannot read (a quote left open) ends the import with an
    ``InputError``, even with ``skip_bad_rows``: what follows it cannot be trusted.
    """
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = f"not readable as CSV ({exc}); check the quotes of the record on this line"
            raise InputError([*problems, Problem(source, message, line)]) from None
        if line == 1 or any(cell.strip() for cell in cells):
            yield line, cells


def _chunks(records: Iterable[tuple[int, list[str]]], size: int) -> Iterator[list[Any]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _Rows:
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

    def read(self, chunk: Sequence[tuple[int, list[str]]]) -> list[Row]:
        """The valid rows of ``chunk``, each with its external id (derived for events)."""
        rows: list[Row] = []
        for line, cells in chunk:
            row = csv_rows.read_row(
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
                base = csv_rows.event_key(row, 1)
                self.derived[base] += 1
                occurrence = self.derived[base]
                row.key = base if occurrence == 1 else csv_rows.event_key(row, occurrence)
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------- writing


def _batches(values: Sequence[Any], size: int = _LOOKUP_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _among(
    connection: Connection, column: ColumnElement[str], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``: one parameter, not thousands."""
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam("values", list(values), type_=postgresql.ARRAY(String)))
    return column.in_(values)


def _upsert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT (external_id) DO UPDATE of full rows (dialect inserts)."""
    if not rows:
        return
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(table)
    columns = [name for name in rows[0] if name != "external_id"]
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.external_id],
        set_={name: statement.excluded[name] for name in columns},
    )
    if connection.dialect.name == "postgresql":
        connection.execute(statement, rows)  # psycopg pipelines executemany
    else:
        # RETURNING makes SQLAlchemy send pages of multi-row VALUES ("insertmanyvalues").
        connection.execute(statement.returning(table.c.id), rows).all()


def _existing(
    connection: Connection, table: Table, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The rows of ``table`` with these external ids, by external id."""
    found: dict[str, dict[str, Any]] = {}
    for batch in _batches(keys):
        query = select(table).where(_among(connection, table.c.external_id, batch))
        result = connection.execute(query)
        for row in result.mappings():
            found[row["external_id"]] = dict(row)
    return found


def _customer_ids(connection: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Customer ids by external id, for those of ``keys`` in the database."""
    ids: dict[str, int] = {}
    for batch in _batches(sorted(set(keys))):
        query = select(_customers.c.external_id, _customers.c.id).where(
            _among(connection, _customers.c.external_id, batch)
        )
        ids.update({key: id_ for key, id_ in connection.execute(query).tuples()})
    return ids


class _Writer:
    """Writes the valid rows of one import, chunk by chunk, counting what changed."""

    table: Table
    compared: tuple[str, ...]

    def __init__(
        self, connection: Connection, header: Header, report: ImportReport, problems: list[Problem]
    ) -> None:
        self.connection = connection
        self.targets = header.targets()
        self.report = report
        self.problems = problems
        self.source = str(report.path)
        self.now = utcnow()

    def add(self, rows: list[Row]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called after the last chunk."""

    def changed(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
        """Whether ``after`` differs from the row in the database (True for a new row)."""
        return before is None or any(before[name] != after[name] for name in self.compared)

    def count(self, before: Mapping[str, Any] | None, changed: bool) -> None:
        if before is None:
            self.report.inserted += 1
        elif changed:
            self.report.updated += 1
        else:
            self.report.unchanged += 1


class _OwnedRowsWriter(_Writer):
    """Orders and events: rows that belong to a customer who must already exist."""

    def new_row(self) -> dict[str, Any]:
        raise NotImplementedError

    def add(self, rows: list[Row]) -> None:
        customer_ids = _customer_ids(self.connection, (r.values["customer"] for r in rows))
        existing = _existing(self.connection, self.table, [r.key for r in rows])
        changed: list[dict[str, Any]] = []
        for row in rows:
            customer = row.values.pop("customer")
            if customer not in customer_ids:
                message = f"customer {customer!r} not found (import customers first)"
                self.problems.append(
                    Problem(self.source, message, row.line, "customer_id", customer)
                )
                continue
            before = existing.get(row.key)
            after = dict(before) if before else self.new_row()
            after.pop("id", None)
            after.update(row.values, external_id=row.key, customer_id=customer_ids[customer])
            is_changed = self.changed(before, after)
            self.count(before, is_changed)
            if is_changed:
                changed.append(after)
        _upsert(self.connection, self.table, changed)


class _OrdersWriter(_OwnedRowsWriter):
    table = _orders
    compared = ("customer_id", "placed_at", "amount_cents", "currency", "status", "referral_code")

    def new_row(self) -> dict[str, Any]:
        return {
            "currency": "EUR",
            "status": "completed",
            "referral_code": None,
            "created_at": self.now,
        }


class _EventsWriter(_OwnedRowsWriter):
    table = _events
    compared = ("customer_id", "type", "occurred_at", "properties")

    def new_row(self) -> dict[str, Any]:
        return {"properties": {}}


class _CustomersWriter(_Writer):
    """Customers, their consents, custom attributes and referrers."""

    table = _customers
    compared = (
        "email", "first_name", "last_name", "locale", "timezone", "country", "birth_date",
        "acquisition_channel", "acquisition_cost_cents", "attributes", "created_at",
        "referrer",
    )  # fmt: skip
    defaults: Final[Mapping[str, Any]] = {
        "email": None, "first_name": "", "last_name": "", "locale": csv_rows.DEFAULT_LOCALE,
        "timezone": csv_rows.DEFAULT_TIMEZONE, "country": None, "birth_date": None,
        "acquisition_channel": None, "acquisition_cost_cents": 0, "referrer": None,
    }  # fmt: skip

    def __init__(
        self, connection: Connection, header: Header, report: ImportReport, problems: list[Problem]
    ) -> None:
        super().__init__(connection, header, report, problems)
        self.topics = [t for t in csv_rows.CONSENT_TOPICS if f"consent:{t}" in self.targets]
        # Rows waiting for their referrer to be written, by the referrer's external id.
        self.waiting: dict[str, list[Row]] = defaultdict(list)

    def add(self, rows: list[Row]) -> None:
        referrers = {r.values["referred_by"] for r in rows if r.values.get("referred_by")}
        known = _customer_ids(self.connection, referrers)
        ready: list[Row] = []
        for row in rows:
            referrer = row.values.get("referred_by")
            if referrer and referrer not in known:
                self.waiting[referrer].append(row)
            else:
                ready.append(row)
        while ready:
            self._write(ready)
            ready = [w for r in ready for w in self.waiting.pop(r.key, [])]

    def finish(self) -> None:
        """Write the rows whose referrers are among the waiting rows (cycles); report the rest."""
        pending = {row.key: row for rows in self.waiting.values() for row in rows}
        dropped = True
        while dropped:
            dropped = False
            for referrer in [r for r in self.waiting if r not in pending]:
                for row in self.waiting.pop(referrer):
                    del pending[row.key]
                    dropped = True
                    message = (
                        f"customer {referrer!r} not found (it must be a customer_id in this "
                        "file or already imported, in a row without problems)"
                    )
                    self.problems.append(
                        Problem(self.source, message, row.line, "referred_by", referrer)
                    )
        self.waiting.clear()
        if pending:
            self._write(sorted(pending.values(), key=lambda r: r.line))

    def _write(self, rows: list[Row]) -> None:
        existing = self._existing(rows)
        consents = self._consents(rows)
        changed: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        new_consents: list[tuple[str, str, bool]] = []
        for row in rows:
            before = existing.get(row.key)
            after = self._after(row, before)
            wanted = [
                (row.key, topic, row.values[f"consent:{topic}"])
                for topic in self.topics
                if f"consent:{topic}" in row.values
                and consents.get((row.key, topic)) != row.values[f"consent:{topic}"]
            ]
            is_changed = self.changed(before, after) or bool(wanted)
            self.count(before, is_changed)
            if not is_changed:
                continue
            after["updated_at"] = self.now
            changed.append(after)
            new_consents.extend(wanted)
            if after["referrer"] != (before["referrer"] if before else None):
                links.append({"key": row.key, "referrer": after["referrer"]})
        for row_values in changed:
            del row_values["referrer"]
        _upsert(self.connection, self.table, changed)
        self._link(links)
        self._write_consents(new_consents)

    def _after(self, row: Row, before: Mapping[str, Any] | None) -> dict[str, Any]:
        after = dict(before) if before else {**self.defaults, "attributes": {}}
        after.pop("id", None)
        after.pop("referred_by_id", None)
        after["external_id"] = row.key
        attributes = dict(after["attributes"] or {})
        for target, value in row.values.items():
            if target.startswith("attr:"):
                name = target.removeprefix("attr:")
                if value is None:
                    attributes.pop(name, None)
                else:
                    attributes[name] = value
            elif target == "referred_by":
                after["referrer"] = value
            elif not target.startswith("consent:"):
                after[target] = value
        after["attributes"] = attributes
        after.setdefault("created_at", self.now)
        return after

    def _existing(self, rows: list[Row]) -> dict[str, dict[str, Any]]:
        referrer = _customers.alias("referrer")
        found: dict[str, dict[str, Any]] = {}
        for batch in _batches([r.key for r in rows]):
            query = (
                select(_customers, referrer.c.external_id.label("referrer"))
                .outerjoin(referrer, referrer.c.id == _customers.c.referred_by_id)
                .where(_among(self.connection, _customers.c.external_id, batch))
            )
            for row in self.connection.execute(query).mappings():
                found[row["external_id"]] = dict(row)
        return found

    def _consents(self, rows: list[Row]) -> dict[tuple[str, str], bool]:
        if not self.topics:
            return {}
        found: dict[tuple[str, str], bool] = {}
        for batch in _batches([r.key for r in rows]):
            query = (
                select(_customers.c.external_id, _consents.c.topic, _consents.c.granted)
                .join(_consents, _consents.c.customer_id == _customers.c.id)
                .where(_among(self.connection, _customers.c.external_id, batch))
            )
            found.update({(k, t): g for k, t, g in self.connection.execute(query).tuples()})
        return found

    def _link(self, links: list[dict[str, Any]]) -> None:
        """Set referred_by_id from the referrers' external ids (now all in the database)."""
        if not links:
            return
        referrer = _customers.alias("referrer")
        referrer_id = (
            select(referrer.c.id)
            .where(referrer.c.external_id == bindparam("referrer"))
            .scalar_subquery()
        )
        statement = (
            update(_customers)
            .where(_customers.c.external_id == bindparam("key"))
            .values(referred_by_id=referrer_id, updated_at=self.now)
        )
        self.connection.execute(statement, links)

    def _write_consents(self, wanted: list[tuple[str, str, bool]]) -> None:
        if not wanted:
            return
        ids = _customer_ids(self.connection, (key for key, _, _ in wanted))
        rows = [
            {
                "customer_id": ids[key],
                "topic": topic,
                "granted": granted,
                "source": "import",
                "recorded_at": self.now,
            }
            for key, topic, granted in wanted
        ]
        dialect = postgresql if self.connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(_consents)
        statement = statement.on_conflict_do_update(
            index_elements=[_consents.c.customer_id, _consents.c.topic],
            set_={
                "granted": statement.excluded.granted,
                "source": statement.excluded.source,
                "recorded_at": statement.excluded.recorded_at,
            },
            where=_consents.c.granted != statement.excluded.granted,
        )
        self.connection.execute(statement, rows)


_WRITERS: Final[Mapping[Kind, type[_Writer]]] = {
    "customers": _CustomersWriter,
    "orders": _OrdersWriter,
    "events": _EventsWriter,
}
