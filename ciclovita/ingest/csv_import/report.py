"""What a CSV import did: rows read, inserted, updated, unchanged, and the skipped rows'
problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ciclovita.errors import Problem
from ciclovita.ingest.csv_import.columns import Kind


@dataclass
class ImportReport:
    """What an import did. ``skipped`` lists the problems of the rows left out."""

    kind: Kind
    path: Path
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    referrals_converted: int = 0

    @property
    def skipped_rows(self) -> int:
        """How many rows were skipped (a row may have several problems)."""
        return len({p.line for p in self.skipped})

    def summary(self) -> str:
        """One line of counts (the skipped rows' problems are in ``skipped``)."""
        skipped = f", {self.skipped_rows} skipped (bad rows)" if self.skipped else ""
        return (
            f"{self.kind} from {self.path}: {self.rows_read} rows read: {self.inserted} "
            f"inserted, {self.updated} updated, {self.unchanged} unchanged{skipped} "
            f"in {self.seconds:.1f}s"
            + (
                f"; {self.referrals_converted} referrals converted"
                if self.referrals_converted
                else ""
            )
        )
