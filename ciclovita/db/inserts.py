"""Inserts that let the database's unique keys decide: ``INSERT … ON CONFLICT DO NOTHING``.

SQLite and PostgreSQL both have it, each in its own SQLAlchemy dialect; ``dialect_insert``
picks the connection's, so callers write one statement for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from ciclovita.batching import IN_LIST_SIZE, chunks


def dialect_insert(connection: Connection, table: Table) -> Any:
    """``INSERT INTO table`` in the connection's dialect (with ``on_conflict_do_nothing``)."""
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_ignoring_duplicates(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert ``rows``, skipping those whose unique key is taken (by an earlier run, or a
    concurrent one): the insert of an idempotent step."""
    if not rows:
        return
    statement = dialect_insert(connection, table).on_conflict_do_nothing()
    for part in chunks(rows, IN_LIST_SIZE):
        connection.execute(statement, list(part))
