"""The planner's rules without a database: an occurrence's fate from its facts, the resend
rule, who may be written to at all, and the registry of trigger kinds."""

from __future__ import annotations

import typing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from ciclovita.campaigns import spec
from ciclovita.campaigns.spec import EventTrigger, EveryDays, ScheduleTrigger, StageTrigger
from ciclovita.planning import triggers
from ciclovita.planning.decision import OccurrenceFacts, resend_blocked, skip_reason
from ciclovita.planning.eligibility import Eligibility
from ciclovita.planning.triggers import (
    builds,
    registered_events,
    registered_kinds,
    trigger_query,
)
from ciclovita.vocabulary import DEFAULT_TIMEZONE, BuiltInEvent, ConsentTopic, SkipReason

AS_OF = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
EVERYTHING = OccurrenceFacts(
    refusal=SkipReason.SUPPRESSED, in_holdout=True, resend_blocked=True, over_cap=True
)

# ----------------------------------------------------------------------------- skip_reason


def test_an_occurrence_with_nothing_against_it_is_planned() -> None:
    assert skip_reason(OccurrenceFacts()) is None


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (EVERYTHING, SkipReason.SUPPRESSED),
        (replace(EVERYTHING, refusal=SkipReason.NO_EMAIL), SkipReason.NO_EMAIL),
        (replace(EVERYTHING, refusal=SkipReason.NO_CONSENT), SkipReason.NO_CONSENT),
        (replace(EVERYTHING, refusal=None), SkipReason.HOLDOUT),
        (replace(EVERYTHING, refusal=None, in_holdout=False), SkipReason.RESEND_RULE),
        (OccurrenceFacts(over_cap=True), SkipReason.FREQUENCY_CAP),
        (OccurrenceFacts(resend_blocked=True), SkipReason.RESEND_RULE),
        (OccurrenceFacts(in_holdout=True), SkipReason.HOLDOUT),
    ],
)
def test_the_first_reason_that_holds_is_recorded(
    facts: OccurrenceFacts, reason: SkipReason
) -> None:
    """Eligibility, then holdout, then the resend rule, then the frequency cap."""
    assert skip_reason(facts) is reason


def test_every_skip_reason_can_be_the_answer() -> None:
    answers = {
        skip_reason(OccurrenceFacts(refusal=r)) for r in SkipReason if r not in _NOT_REFUSALS
    }
    answers |= {
        skip_reason(OccurrenceFacts(in_holdout=True)),
        skip_reason(OccurrenceFacts(resend_blocked=True)),
        skip_reason(OccurrenceFacts(over_cap=True)),
    }
    assert answers == set(SkipReason)


_NOT_REFUSALS = {SkipReason.HOLDOUT, SkipReason.RESEND_RULE, SkipReason.FREQUENCY_CAP}

# ----------------------------------------------------------------------------- resend rule


def test_once_per_occurrence_never_blocks() -> None:
    assert not resend_blocked("once_per_occurrence", AS_OF, True, AS_OF)


def test_once_ever_blocks_after_any_earlier_message_or_one_planned_this_run() -> None:
    assert not resend_blocked("once_ever", None, False, AS_OF)
    assert resend_blocked("once_ever", AS_OF - timedelta(days=900), False, AS_OF)
    assert resend_blocked("once_ever", None, True, AS_OF)


def test_every_days_blocks_within_the_period_only() -> None:
    rule = EveryDays(every_days=30)
    assert resend_blocked(rule, AS_OF - timedelta(days=29), False, AS_OF)
    assert not resend_blocked(rule, AS_OF - timedelta(days=30), False, AS_OF)
    assert not resend_blocked(rule, None, False, AS_OF)
    assert resend_blocked(rule, None, True, AS_OF)


# ----------------------------------------------------------------------------- eligibility

ELIGIBILITY = Eligibility(
    suppressed=frozenset({"gone@example.com"}),
    consented={ConsentTopic.MARKETING: frozenset({1, 2}), ConsentTopic.SURVEYS: frozenset({3})},
)


@pytest.mark.parametrize(
    ("email", "customer", "topic", "refusal"),
    [
        ("anna@example.com", 1, ConsentTopic.MARKETING, None),
        ("anna@example.com", 3, None, None),  # transactional: no consent needed
        (None, 1, ConsentTopic.MARKETING, SkipReason.NO_EMAIL),
        ("", 1, None, SkipReason.NO_EMAIL),
        ("Gone@Example.com", 1, ConsentTopic.MARKETING, SkipReason.SUPPRESSED),
        ("gone@example.com", 3, None, SkipReason.SUPPRESSED),
        ("anna@example.com", 3, ConsentTopic.MARKETING, SkipReason.NO_CONSENT),
        ("anna@example.com", 1, ConsentTopic.NEWSLETTER, SkipReason.NO_CONSENT),
    ],
)
def test_who_may_be_written_to(
    email: str | None, customer: int, topic: ConsentTopic | None, refusal: SkipReason | None
) -> None:
    assert ELIGIBILITY.refusal(email, customer, topic) is refusal


# ------------------------------------------------------------------------- trigger registry


def test_every_kind_of_trigger_has_a_query_builder() -> None:
    (union,) = typing.get_args(spec.Trigger)[:1]
    kinds = {typing.get_args(member)[0] for member in typing.get_args(union)}
    assert kinds == set(registered_kinds())


def test_every_built_in_event_is_read_from_its_own_table() -> None:
    assert registered_events() == set(BuiltInEvent)


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        builds(StageTrigger)(lambda trigger, as_of, timezone: None)


def test_an_unknown_kind_of_trigger_is_refused() -> None:
    class Moonrise(BaseModel):
        phase: str = "full"

    with pytest.raises(TypeError, match="no query builder"):
        trigger_query(Moonrise(), AS_OF, DEFAULT_TIMEZONE)


def test_a_new_kind_is_one_registered_function() -> None:
    class Moonrise(BaseModel):
        phase: str = "full"

    @builds(Moonrise)
    def _moonrise(trigger: Moonrise, as_of: datetime, timezone: str) -> None:
        return None

    try:
        assert trigger_query(Moonrise(), AS_OF, DEFAULT_TIMEZONE) is None
    finally:
        del triggers._BUILDERS[Moonrise]


def test_built_in_and_engagement_events_name_their_driver() -> None:
    for event in BuiltInEvent:
        found = trigger_query(EventTrigger(event=event), AS_OF, DEFAULT_TIMEZONE)
        assert found is not None and found.driver == event
    found = trigger_query(EventTrigger(event="page_view"), AS_OF, DEFAULT_TIMEZONE)
    assert found is not None and found.driver == "event:page_view"


def test_a_schedule_between_editions_has_nothing_due() -> None:
    trigger = ScheduleTrigger(schedule="0 10 * * mon", expires_after=timedelta(hours=1))
    assert trigger_query(trigger, AS_OF, DEFAULT_TIMEZONE) is None  # a Tuesday
