"""The fate of one trigger occurrence: planned, or skipped with a reason — a pure function.

The planner gathers the facts about an occurrence (``OccurrenceFacts``: may the customer be
written to at all, do they fall in the holdout, did they get this campaign too recently, are
they at the frequency cap) and ``skip_reason`` decides. The order of ``skip_reason``'s
checks is the order the reasons win in: the first that holds is recorded, so results count
each skipped occurrence once, under one reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ciclovita.campaigns.spec import EveryDays, Resend
from ciclovita.vocabulary import SkipReason


@dataclass(frozen=True, slots=True)
class OccurrenceFacts:
    """What the planner knows about one occurrence when it decides."""

    refusal: SkipReason | None = None
    """Why the customer may not be written to at all (no address, suppressed, no consent),
    from ``Eligibility.refusal``; None: they may."""
    in_holdout: bool = False
    """Marketing mail only: the customer is in the campaign's holdout group."""
    resend_blocked: bool = False
    """The campaign's resend rule forbids another message to this customer now."""
    over_cap: bool = False
    """The customer already got as many marketing messages as the frequency cap allows."""


def skip_reason(facts: OccurrenceFacts) -> SkipReason | None:
    """Why the occurrence gets no message (None: it is planned). The first reason that holds
    wins, in the order below."""
    checks = (
        facts.refusal,
        SkipReason.HOLDOUT if facts.in_holdout else None,
        SkipReason.RESEND_RULE if facts.resend_blocked else None,
        SkipReason.FREQUENCY_CAP if facts.over_cap else None,
    )
    return next((reason for reason in checks if reason is not None), None)


def resend_blocked(
    resend: Resend, last_sent_at: datetime | None, planned_this_run: bool, as_of: datetime
) -> bool:
    """Whether the campaign's resend rule forbids another message to the customer now.

    ``last_sent_at``: when the customer last got (or is due) a message of the campaign (None:
    never); ``planned_this_run``: one was just planned for another of their occurrences.
    """
    if resend == "once_ever":
        return last_sent_at is not None or planned_this_run
    if isinstance(resend, EveryDays):
        recent = last_sent_at is not None and last_sent_at > as_of - timedelta(
            days=resend.every_days
        )
        return planned_this_run or recent
    return False
