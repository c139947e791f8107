"""``is_transient``: one answer to "may retrying succeed?", for the pipeline and the tasks.

Real errors from real databases: a missing table is never worth a retry (on SQLite it is an
``OperationalError`` like a lock, so the text decides), a locked database or a dropped
connection is; SendGrid's 429 and 5xx are, its other refusals are not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from ciclovita.errors import (
    CiclovitaError,
    InputError,
    PermanentDeliveryError,
    Problem,
    RateLimitedError,
    RenderError,
    TransientDeliveryError,
    TransientError,
    is_transient,
)


def test_a_missing_table_is_not_transient(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as missing, engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    assert isinstance(missing.value, OperationalError | ProgrammingError)
    assert not is_transient(missing.value)


def test_a_missing_column_is_not_transient(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as missing, engine.connect() as connection:
        connection.execute(text("SELECT no_such_column FROM messages"))
    assert not is_transient(missing.value)


def test_a_locked_database_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    locked = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    try:
        with pytest.raises(OperationalError) as error, locked.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        holder.rollback()
        holder.close()
        locked.dispose()
    assert "locked" in str(error.value) and is_transient(error.value)


def test_a_dropped_connection_is_transient() -> None:
    dropped = DBAPIError("SELECT 1", None, Exception("server closed the connection"))
    dropped.connection_invalidated = True
    assert is_transient(dropped)


@pytest.mark.parametrize(
    "error",
    [
        RateLimitedError("slow down", 429, retry_after=1.0),
        TransientDeliveryError("bad gateway", 502),
        TransientDeliveryError("connection refused"),
        ConnectionResetError("reset"),
        TimeoutError("timed out"),
    ],
)
def test_provider_and_network_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PermanentDeliveryError("bad address", 400),
        InputError([Problem("campaigns/x.yaml", "bad")]),
        RenderError("thank_you", "thank_you/it.html", 1, "undefined"),
        ValueError("a bug"),
    ],
)
def test_everything_else_fails_at_once(error: BaseException) -> None:
    assert not is_transient(error)


def test_transient_delivery_errors_are_transient_errors_of_the_tree() -> None:
    assert issubclass(TransientDeliveryError, TransientError)
    assert issubclass(RateLimitedError, TransientError)
    assert issubclass(TransientError, CiclovitaError)
    assert not issubclass(PermanentDeliveryError, TransientError)
