"""SQL expressions that differ between SQLite and PostgreSQL, compiled per dialect.

Aggregate queries read times as Unix seconds (integers) so that a million rows reach pandas
without a Python conversion per value.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class epoch_seconds(FunctionElement[int]):  # noqa: N801 - reads like an SQL function
    """Unix seconds of a UTC timestamp column."""

    type = BigInteger()
    inherit_cache = True
    name = "epoch_seconds"


class calendar_day(FunctionElement[str]):  # noqa: N801
    """The calendar day (UTC) of a timestamp column, for counting purchase days."""

    type = String()
    inherit_cache = True
    name = "calendar_day"


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) AS BIGINT)"


@compiles(calendar_day, "sqlite")
def _day_sqlite(element: calendar_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(calendar_day, "postgresql")
def _day_postgresql(element: calendar_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DATE)"


class month_day(FunctionElement[str]):  # noqa: N801
    """``MM-DD`` of a date or timestamp column, for anniversaries."""

    type = String()
    inherit_cache = True
    name = "month_day"


@compiles(month_day, "sqlite")
def _month_day_sqlite(element: month_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%m-%d', {compiler.process(element.clauses, **kw)})"


@compiles(month_day, "postgresql")
def _month_day_postgresql(element: month_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'MM-DD')"


class _JsonField(FunctionElement[Any]):
    """A top-level key of a JSON column, typed: NULL when the stored value has another type.

    Arguments: the JSON column and the key (a bound literal). Customers' custom attributes are
    free-form, so a comparison must never fail (or silently compare text with numbers) on a
    customer whose value has another type.
    """

    inherit_cache = True

    def _parts(self, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
        column, key = list(self.clauses)
        return compiler.process(column, **kw), compiler.process(key, **kw)


class json_text(_JsonField):  # noqa: N801
    type = String()
    name = "json_text"


class json_number(_JsonField):  # noqa: N801
    type = Float()
    name = "json_number"


class json_bool(_JsonField):  # noqa: N801
    type = Boolean()
    name = "json_bool"


def _sqlite_path(key: str) -> str:
    return f"'$.\"' || {key} || '\"'"


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return (
        f"CASE WHEN json_type({column}, {path}) IN ('text', 'integer', 'real') "
        f"THEN CAST(json_extract({column}, {path}) AS TEXT) END"
    )


@compiles(json_text, "postgresql")
def _json_text_postgresql(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    return (
        f"CASE WHEN json_typeof(({column}) -> {key}) IN ('string', 'number') "
        f"THEN ({column}) ->> {key} END"
    )


@compiles(json_number, "sqlite")
def _json_number_sqlite(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    path = _sqlite_path(key)
    return (
        f"CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({column}, {path}) END"
    )


@compiles(json_number, "postgresql")
def _json_number_postgresql(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    return (
        f"CASE WHEN json_typeof(({column}) -> {key}) = 'number' "
        f"THEN CAST(({column}) ->> {key} AS DOUBLE PRECISION) END"
    )


@compiles(json_bool, "sqlite")
def _json_bool_sqlite(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    return (
        f"CASE json_type({column}, {_sqlite_path(key)}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
    )


@compiles(json_bool, "postgresql")
def _json_bool_postgresql(element: json_bool, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = element._parts(compiler, **kw)
    return (
        f"CASE WHEN json_typeof(({column}) -> {key}) = 'boolean' "
        f"THEN CAST(({column}) ->> {key} AS BOOLEAN) END"
    )
