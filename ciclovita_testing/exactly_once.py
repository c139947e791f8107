"""The exactly-once checks every double that accepts messages offers.

A double says which of our message ids it accepted, in order, duplicates included
(:meth:`ExactlyOnceChecks.accepted_ids`); the rest is derived here, once.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterable


class ExactlyOnceChecks(abc.ABC):
    """Counts, duplicates and the exactly-once assertion over :meth:`accepted_ids`."""

    @abc.abstractmethod
    def accepted_ids(self) -> list[str]:
        """Our message id of every accepted message, in order (duplicates included)."""

    def accepted_id_counts(self) -> Counter[str]:
        """How many times each id was accepted."""
        return Counter(self.accepted_ids())

    def duplicate_ids(self) -> dict[str, int]:
        """Ids accepted more than once, with their counts."""
        return {uid: n for uid, n in self.accepted_id_counts().items() if n > 1}

    def assert_accepted_once(self, expected_ids: Iterable[str]) -> None:
        """Fail unless each expected id was accepted exactly once, and nothing else was."""
        expected = Counter(expected_ids)
        repeated = sorted(uid for uid, n in expected.items() if n > 1)
        if repeated:
            raise ValueError(f"expected ids are not unique: {repeated[:10]}")
        counts = self.accepted_id_counts()
        missing = sorted(set(expected) - set(counts))
        extra = sorted(set(counts) - set(expected))
        duplicated = {uid: n for uid, n in counts.items() if n > 1}
        if missing or extra or duplicated:
            raise AssertionError(
                f"accepted ids differ: {len(missing)} missing {missing[:10]}, {len(extra)} "
                f"unexpected {extra[:10]}, {len(duplicated)} duplicated "
                f"{dict(list(duplicated.items())[:10])}"
            )
