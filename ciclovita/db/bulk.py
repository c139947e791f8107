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
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table

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


def _copy_csv(table: Table, frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """The frame as CSV for ``COPY … (FORMAT csv, NULL '\\N')``, formatted by pandas in C.

    Times become naive UTC text, JSON values JSON text; a missing value is ``\\N`` (so an
    empty string stays an empty string).
    """
    prepared = pd.DataFrame(index=frame.index)
    for name in columns:
        series = frame[name]
        if _is_time(table, name):
            series = pd.to_datetime(series, utc=True).dt.tz_localize(None)
        elif series.dtype == object and len(series) and _holds_json(series):
            series = series.map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
        prepared[name] = series
    return prepared.to_csv(
        header=False, index=False, na_rep="\\N", date_format=_SQLITE_TIME, lineterminator="\n"
    )


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
            buffer = io.StringIO(_copy_csv(table, part, columns))
            statement = f"COPY {target} ({', '.join(columns)}) FROM STDIN (FORMAT csv, NULL '\\N')"
            with cursor.copy(statement) as copy:
                while chunk := buffer.read(1 << 20):
                    copy.write(chunk)


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
