"""What the deliveries of one process share per object: one per live key, made on first use.

Parallel delivery batches of a process share one sender and one ``MessageBuilder``; what
goes with each (the sender's window of rows in flight, the builder's render workers) is kept
here, weakly keyed, so it goes when its key does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SharedPer(Generic[K, V]):
    """One ``V`` per live ``K``, made by ``make`` on first use; safe across threads."""

    def __init__(self, make: Callable[[K], V]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[K, V] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, key: K) -> V:
        with self._lock:
            value = self._values.get(key)
            if value is None:
                value = self._values[key] = self._make(key)
            return value

    def pop(self, key: K) -> V | None:
        """Forget ``key``'s value and return it (None: it had none)."""
        with self._lock:
            return self._values.pop(key, None)
