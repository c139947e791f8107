"""Reading a CSV file as records: opening it as UTF-8, telling ',' from ';', and locating
what cannot be read (a byte that is not UTF-8, a quote left open) by line.

A record is ``(line, cells)``: the line it starts on (a quoted value may span lines) and its
cells as text. Blank records after the header are skipped.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TextIO

from ciclovita.errors import InputError, Problem

Record = tuple[int, list[str]]


@contextmanager
def open_text(path: Path) -> Iterator[TextIO]:
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


def detect_delimiter(stream: TextIO, source: str) -> str:
    """',' or ';', whichever the header line has more of (',' for a one-column header)."""
    first = stream.readline()
    if not first.strip():
        empty = not stream.read(1 << 16).strip()
        message = "the file is empty" if empty else "the first line is empty"
        raise InputError([Problem(source, f"{message}; its first line must name the columns", 1)])
    stream.seek(0)
    return ";" if first.count(";") > first.count(",") else ","


def not_utf8(path: Path) -> Problem:
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


def records(
    stream: TextIO, delimiter: str, source: str, problems: list[Problem]
) -> Iterator[Record]:
    """The header's record and each non-blank record after it.

    A record the csv module cannot read (a quote left open) ends the import with an
    ``InputError`` listing ``problems`` found so far and this one, even with
    ``skip_bad_rows``: what follows it cannot be trusted.
    """
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
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


def record_batches(all_records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """``all_records`` read ``size`` at a time, as they stream from the file."""
    iterator = iter(all_records)
    while batch := list(islice(iterator, size)):
        yield batch
