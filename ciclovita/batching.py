"""Cutting work into batches: the one ``chunks`` helper, and the size of an SQL ``IN`` list.

Every lookup by a list of keys (``WHERE email IN (…)``) and every bulk write goes through
``chunks``, so no statement grows with the size of a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Final, TypeVar

T = TypeVar("T")

IN_LIST_SIZE: Final = 1_000
"""Keys in one ``IN (…)`` list, and rows in one bulk insert: far below every database's
parameter limit, large enough that a run of a million rows is a few hundred statements."""


def chunks(items: Iterable[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive pieces of at most ``size`` (the last may be shorter).

    A sequence is sliced (its pieces are of its own type); any other iterable is read
    lazily, one list of ``size`` at a time.
    """
    if size < 1:
        raise ValueError(f"a chunk holds at least one item, not {size}")
    if isinstance(items, Sequence):
        for start in range(0, len(items), size):
            yield items[start : start + size]
        return
    iterator = iter(items)
    while piece := list(islice(iterator, size)):
        yield piece
