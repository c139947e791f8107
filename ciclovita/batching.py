"""Cutting long sequences into pieces a database statement can take."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items``, each at most ``size`` long."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
