"""``import_csv``: one CSV file into the database, all or nothing, in one transaction.

The file is read in chunks of records (``reader``), each record into a row (``rows``), and
each chunk's valid rows are written by the writer of its kind (``writers``). Bad rows are
collected as problems; unless ``skip_bad_rows``, any problem rolls the whole import back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy import Engine

from ciclovita.db.bulk import BULK_WRITE_ROWS, vacuum
from ciclovita.errors import InputError, Problem
from ciclovita.ingest.csv_import.cells import Options
from ciclovita.ingest.csv_import.columns import KINDS, Kind, read_header
from ciclovita.ingest.csv_import.reader import (
    detect_delimiter,
    not_utf8,
    open_text,
    record_batches,
    records,
)
from ciclovita.ingest.csv_import.report import ImportReport
from ciclovita.ingest.csv_import.rows import RowReader
from ciclovita.ingest.csv_import.writers import WRITERS
from ciclovita.referrals import convert_referrals

CHUNK_ROWS: Final = 5_000
_TABLES_WRITTEN: Final[Mapping[Kind, tuple[str, ...]]] = {
    "customers": ("customers", "consents"),
    "orders": ("orders", "referrals"),
    "events": ("events",),
}
"""What an import of each kind writes (vacuumed after a large import, on PostgreSQL)."""


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
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    started = time.perf_counter()
    source = str(path)
    report = ImportReport(kind, path)
    problems: list[Problem] = []
    with open_text(path) as stream:
        try:
            delimiter = detect_delimiter(stream, source)
            file_records = records(stream, delimiter, source, problems)
            header, header_problems = read_header(kind, next(file_records)[1], source)
            if header_problems:
                raise InputError(header_problems)
            options = Options(decimal_comma=delimiter == ";")
            rows = RowReader(kind, header, options, source, problems)
            with engine.begin() as connection:
                writer = WRITERS[kind](connection, header, report, problems)
                for batch in record_batches(file_records, chunk_rows):
                    report.rows_read += len(batch)
                    writer.add(rows.read(batch))
                writer.finish()
                if problems and not skip_bad_rows:
                    raise InputError(sorted(problems, key=_line))
                if kind == "orders":  # orders carrying a referral code convert the referral
                    report.referrals_converted = convert_referrals(
                        connection, datetime.now(UTC)
                    ).converted
        except UnicodeDecodeError:
            raise InputError([not_utf8(path)]) from None
    if report.inserted + report.updated > BULK_WRITE_ROWS:
        vacuum(engine, *_TABLES_WRITTEN[kind])
    report.skipped = sorted(problems, key=_line)
    report.seconds = time.perf_counter() - started
    return report


def _line(problem: Problem) -> int:
    return problem.line or 0
