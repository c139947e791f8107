"""Bulk writes of DataFrames: COPY on PostgreSQL, executemany on SQLite.

Recomputing a million customers must not cost a million round trips. These helpers write
whole frames into a table, or update a table from a frame by key, on either database.
Timestamp columns are ``datetime64`` in UTC and are written as naive UTC, like
``UtcDateTime`` does.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Engine, Table

from ciclovita.db.types import UtcDateTime

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
CHUNK_ROWS = 50_000


def _is_time(table: Table, column: str) -> bool:
    return isinstance(table.c[column].type, UtcDateTime)


def _python_rows(
    table: Table, frame: pd.DataFrame, columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Rows as tuples of plain Python values (None for missing) in ``columns`` order."""
    prepared: list[Iterable[Any]] = []
    for name in columns:
        series = frame[name]
        if _is_time(table, name):
            text = pd.to_datetime(series, utc=True).dt.tz_localize(None).dt.strftime(_SQLITE_TIME)
            values: list[Any] = text.where(series.notna(), None).tolist()
        elif series.dtype == object:
            values = [
                None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                for v in series.tolist()
            ]
        else:
            values = series.astype(object).where(series.notna(), None).tolist()
        prepared.append(values)
    return list(zip(*prepared, strict=True))


def _copy_csv(table: Table, frame: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """The frame as CSV for ``COPY … (FORMAT csv)``, written by Arrow's C++ CSV writer.

    Strings are always quoted and missing values never are, which is exactly how PostgreSQL's
    CSV format tells an empty string from NULL. Times become naive UTC (like ``UtcDateTime``),
    JSON values JSON text.
    """
    prepared: dict[str, Any] = {}
    for name in columns:
        series = frame[name]
        if _is_time(table, name):
            series = pd.to_datetime(series, utc=True).dt.tz_localize(None).astype("datetime64[us]")
        elif series.dtype == object and len(series) and _holds_json(series):
            series = series.map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
        prepared[name] = series.reset_index(drop=True)
    arrow = pa.Table.from_pandas(pd.DataFrame(prepared), preserve_index=False)
    out = io.BytesIO()
    pa_csv.write_csv(arrow, out, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return out.getvalue()


def _holds_json(series: pd.Series) -> bool:
    first = series.dropna()
    return not first.empty and isinstance(first.iloc[0], dict | list)


def insert_frame(connection: Connection, table: Table, frame: pd.DataFrame) -> int:
    """Insert every row of ``frame`` (its columns are table columns). Returns rows written."""
    if frame.empty:
        return 0
    columns = list(frame.columns)
    if connection.dialect.name == "postgresql":
        _copy_into(connection, table.name, table, frame, columns)
    else:
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
        raw = connection.connection.driver_connection
        assert raw is not None
        for start in range(0, len(frame), CHUNK_ROWS):
            part = frame.iloc[start : start + CHUNK_ROWS]
            raw.executemany(sql, _python_rows(table, part, columns))
    return len(frame)


def _copy_into(
    connection: Connection, target: str, table: Table, frame: pd.DataFrame, columns: Sequence[str]
) -> None:
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        for start in range(0, len(frame), CHUNK_ROWS):
            part = frame.iloc[start : start + CHUNK_ROWS]
            statement = f"COPY {target} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
            with cursor.copy(statement) as copy:
                copy.write(_copy_csv(table, part, columns))


def update_frame(connection: Connection, table: Table, key: str, frame: pd.DataFrame) -> int:
    """Update rows of ``table`` matched on ``key`` with the other columns of ``frame``."""
    if frame.empty:
        return 0
    columns = [c for c in frame.columns if c != key]
    if connection.dialect.name == "postgresql":
        staging = f"_staging_{table.name}"
        connection.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        connection.exec_driver_sql(f"TRUNCATE {staging}")
        _copy_into(connection, staging, table, frame, [key, *columns])
        assignments = ", ".join(f"{c} = s.{c}" for c in columns)
        connection.exec_driver_sql(
            f"UPDATE {table.name} AS t SET {assignments} FROM {staging} AS s "
            f"WHERE t.{key} = s.{key}"
        )
    else:
        assignments = ", ".join(f"{c} = ?" for c in columns)
        sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = ?"
        raw = connection.connection.driver_connection
        assert raw is not None
        for start in range(0, len(frame), CHUNK_ROWS):
            part = frame.iloc[start : start + CHUNK_ROWS]
            raw.executemany(sql, _python_rows(table, part, [*columns, key]))
    return len(frame)


def changed_rows(old: pd.DataFrame, new: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Boolean mask over ``new`` rows (aligned by index) whose ``columns`` differ from ``old``.

    Rows missing from ``old`` are not flagged (they are inserts, not updates). Missing values
    compare equal to missing values; floats compare exactly.
    """
    common = new.index.intersection(old.index)
    mask = np.zeros(len(new), dtype=bool)
    if common.empty:
        return mask
    before = old.loc[common, list(columns)]
    after = new.loc[common, list(columns)]
    differs = np.zeros(len(common), dtype=bool)
    for name in columns:
        a = before[name]
        b = after[name]
        both_missing = a.isna().to_numpy() & b.isna().to_numpy()
        equal = (a.to_numpy() == b.to_numpy()) | both_missing
        differs |= ~equal
    mask[new.index.get_indexer(common)] = differs
    return mask


def id_frame(ids: Sequence[int] | np.ndarray, name: str = "id") -> pd.DataFrame:
    return pd.DataFrame({name: np.asarray(ids, dtype=np.int64)})


def close_open_rows(
    connection: Connection,
    table: Table,
    ids: Sequence[int] | np.ndarray,
    at: Any,
    *,
    key: str = "customer_id",
    extra_where: str = "",
    extra_params: dict[str, Any] | None = None,
) -> int:
    """Set ``exited_at = at`` on the open rows (``exited_at IS NULL``) of the given keys."""
    if len(ids) == 0:
        return 0
    stamp = pd.Timestamp(at).tz_convert("UTC").tz_localize(None).to_pydatetime()
    params = dict(extra_params or {})
    condition = f"exited_at IS NULL{' AND ' + extra_where if extra_where else ''}"
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _closing_ids (id BIGINT) ON COMMIT DROP"
            )
            cursor.execute("TRUNCATE _closing_ids")
            with cursor.copy("COPY _closing_ids (id) FROM STDIN") as copy:
                copy.write("\n".join(str(int(i)) for i in ids) + "\n")
            cursor.execute(
                f"UPDATE {table.name} SET exited_at = %(at)s "
                f"WHERE {_pyformat(condition)} AND {key} IN (SELECT id FROM _closing_ids)",
                {"at": stamp, **params},
            )
            return int(cursor.rowcount)
    raw = connection.connection.driver_connection
    assert raw is not None
    sql = f"UPDATE {table.name} SET exited_at = :at WHERE {condition} AND {key} = :id"
    text_stamp = stamp.strftime(_SQLITE_TIME)
    cursor = raw.executemany(sql, [{"at": text_stamp, "id": int(i), **params} for i in ids])
    return int(cursor.rowcount)


def _pyformat(condition: str) -> str:
    """``:name`` placeholders (SQLite style) as ``%(name)s`` (psycopg style)."""
    return re.sub(r":([a-z_]+)", r"%(\1)s", condition)


def _plain(value: Any, dialect: str) -> Any:
    """A bound value as the driver needs it when the statement bypasses SQLAlchemy's
    processors: aware datetimes become naive UTC (text on SQLite, like ``UtcDateTime``)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime(_SQLITE_TIME) if dialect == "sqlite" else value
    return value


def read_frame(connection: Connection, query: Any, columns: Sequence[str]) -> pd.DataFrame:
    """Run a SELECT and return its rows as a DataFrame, fast.

    PostgreSQL streams the result with ``COPY (query) TO STDOUT`` into pandas' C CSV reader;
    SQLite hands back plain tuples. Either way no Python object is built per row, which is
    what makes reading a million customers' aggregates take seconds, not minutes. Selected
    values must be numbers (times as ``epoch_seconds``) or text without line breaks.
    """
    dialect = connection.dialect.name
    compiled = query.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    raw = connection.connection.driver_connection
    assert raw is not None
    if dialect == "postgresql":
        params = {k: _plain(v, dialect) for k, v in compiled.params.items()}
        buffer = io.BytesIO()
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY ({compiled.string}) TO STDOUT (FORMAT csv)", params) as copy,
        ):
            for block in copy:
                buffer.write(block)
        buffer.seek(0)
        if buffer.getbuffer().nbytes == 0:
            return pd.DataFrame({name: pd.Series(dtype="float64") for name in columns})
        return pd.read_csv(buffer, header=None, names=list(columns), engine="pyarrow")
    positional = [_plain(compiled.params[name], dialect) for name in compiled.positiontup or ()]
    rows = raw.execute(compiled.string, positional).fetchall()
    return pd.DataFrame.from_records(rows, columns=list(columns))


def refresh_statistics(connection: Connection, *tables: str) -> None:
    """After a bulk write, let PostgreSQL's planner see the new rows now (autovacuum would get
    there minutes later, and a plan made for an empty table is ruinous on a million rows)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"ANALYZE {', '.join(tables)}")


BULK_WRITE_ROWS = 10_000
"""Rows written at once above which a bulk writer vacuums what it wrote (``vacuum``)."""


def vacuum(engine: Engine, *tables: str) -> None:
    """After a bulk write on PostgreSQL, VACUUM (ANALYZE) the tables outside any transaction.

    The first reader of a million freshly written rows otherwise pays for setting every row's
    hint bits and plans without statistics: measured at 1M customers, the first segment query
    after the first recompute took 149 s instead of 5 s.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(tables)}")
