"""Writing the valid rows of a CSV import: one writer per kind, upserting on external id.

Each chunk of rows is compared with what the database holds (looked up by external id, in
batches), and only new or changed rows are written, with ``INSERT … ON CONFLICT DO UPDATE``;
the report counts inserted, updated and unchanged rows. Orders and events need their
customer to exist. Customers also carry consents and referrers: a row whose referrer is
further down the file waits until the referrer is written, and is reported when it never is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Table,
    any_,
    bindparam,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ciclovita.batching import chunks
from ciclovita.db.models import Consent, Customer, Event, Order, table_of
from ciclovita.db.types import utcnow
from ciclovita.errors import Problem
from ciclovita.ingest.csv_import.columns import Header, Kind, new_row_defaults
from ciclovita.ingest.csv_import.report import ImportReport
from ciclovita.ingest.csv_import.rows import Row
from ciclovita.vocabulary import ConsentTopic

LOOKUP_BATCH: Final = 5_000
"""External ids looked up per query."""

_customers: Final = table_of(Customer)
_orders: Final = table_of(Order)
_events: Final = table_of(Event)
_consents: Final = table_of(Consent)


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
    for batch in chunks(keys, LOOKUP_BATCH):
        query = select(table).where(_among(connection, table.c.external_id, batch))
        result = connection.execute(query)
        for row in result.mappings():
            found[row["external_id"]] = dict(row)
    return found


def _customer_ids(connection: Connection, keys: Iterable[str]) -> dict[str, int]:
    """Customer ids by external id, for those of ``keys`` in the database."""
    ids: dict[str, int] = {}
    for batch in chunks(sorted(set(keys)), LOOKUP_BATCH):
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

    kind: Kind

    def new_row(self) -> dict[str, Any]:
        """A new row before the file's values: the defaults of the columns it may lack."""
        return new_row_defaults(self.kind)

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
    kind = "orders"
    table = _orders
    compared = ("customer_id", "placed_at", "amount_cents", "currency", "status", "referral_code")

    def new_row(self) -> dict[str, Any]:
        return {**super().new_row(), "created_at": self.now}


class _EventsWriter(_OwnedRowsWriter):
    kind = "events"
    table = _events
    compared = ("customer_id", "type", "occurred_at", "properties")


class _CustomersWriter(_Writer):
    """Customers, their consents, custom attributes and referrers."""

    table = _customers
    compared = (
        "email", "first_name", "last_name", "locale", "timezone", "country", "birth_date",
        "acquisition_channel", "acquisition_cost_cents", "attributes", "created_at",
        "referred_by",
    )  # fmt: skip
    """Compared with the database; ``referred_by`` is the referrer's external id."""

    def __init__(
        self, connection: Connection, header: Header, report: ImportReport, problems: list[Problem]
    ) -> None:
        super().__init__(connection, header, report, problems)
        self.topics = [t for t in ConsentTopic if f"consent:{t}" in self.targets]
        self.defaults = new_row_defaults("customers")
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
            if after["referred_by"] != (before["referred_by"] if before else None):
                links.append({"key": row.key, "referrer": after["referred_by"]})
        for row_values in changed:
            del row_values["referred_by"]  # an external id, not a column: linked next
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
            elif not target.startswith("consent:"):
                after[target] = value
        after["attributes"] = attributes
        after.setdefault("created_at", self.now)
        return after

    def _existing(self, rows: list[Row]) -> dict[str, dict[str, Any]]:
        referrer = _customers.alias("referrer")
        found: dict[str, dict[str, Any]] = {}
        for batch in chunks([r.key for r in rows], LOOKUP_BATCH):
            query = (
                select(_customers, referrer.c.external_id.label("referred_by"))
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
        for batch in chunks([r.key for r in rows], LOOKUP_BATCH):
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


WRITERS: Final[Mapping[Kind, type[_Writer]]] = {
    "customers": _CustomersWriter,
    "orders": _OrdersWriter,
    "events": _EventsWriter,
}
