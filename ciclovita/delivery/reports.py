"""What a delivery and a reconciliation report: typed results that Prefect serialises.

The counts match the outbox table: a delivery counts a row once it wrote its new status
(``sent``, ``failed``, ``retried``: due again later, ``ambiguous``, ``skipped``), or, on a
dry run, once it rendered it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_serializer

from ciclovita.vocabulary import DeliveryCount

MAX_ERRORS_KEPT = 100
"""Errors a report keeps (the first ones)."""
ERRORS_SHOWN = 20
"""Errors a report's serialised form shows."""


class DeliveryReport(BaseModel):
    """What one delivery did (or, dry run, would do)."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    ambiguous: int = 0
    skipped: int = 0
    rendered: int = 0
    cap_reached: bool = False
    """Messages were left due: the delivery's limit (``max_messages``) was reached."""
    dry_run: bool = False
    stopped: str | None = None
    """Why the provider refuses every message (the delivery stopped), if it does."""
    by_campaign: dict[str, dict[DeliveryCount, int]] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0

    def count(self, campaign: str, what: DeliveryCount, n: int = 1) -> None:
        """Count ``n`` rows of ``campaign`` under ``what``, in total and for the campaign."""
        if n:
            setattr(self, what.value, getattr(self, what.value) + n)
            counts = self.by_campaign.setdefault(campaign, {})
            counts[what] = counts.get(what, 0) + n

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    @field_serializer("errors")
    def _first_errors(self, errors: list[str]) -> list[str]:
        return errors[:ERRORS_SHOWN]

    @field_serializer("seconds")
    def _rounded(self, seconds: float) -> float:
        return round(seconds, 3)


class ReconcileReport(BaseModel):
    """What one reconciliation settled, and what is still in doubt."""

    newly_ambiguous: int = 0
    """Rows left ``sending`` past their lease: now ambiguous."""
    resolved: int = 0
    """Rows in doubt the provider's events (or the sender) showed were sent."""
    ambiguous: int = 0
    """Rows held now: never re-sent blindly, until events or an operator settle them."""
    sending: int = 0
    """Rows in flight, or whose worker stopped less than a lease ago."""
