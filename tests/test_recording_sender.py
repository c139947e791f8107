"""Tests of the recording sender (``tests/support/recording_sender.py``) the outbox tests use:
it is a ``Sender``, records every message, answers each scripted failure as told, and says
exactly which messages the provider has."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ciclovita.delivery.senders.base import Sender, send_all
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.vocabulary import MessageKind
from tests.support.recording_sender import RecordingSender


def email(uid: str) -> OutgoingEmail:
    return OutgoingEmail(
        uid=uid,
        campaign="thank_you",
        kind=MessageKind.MARKETING,
        to_email=f"{uid}@example.com",
        to_name="Ana",
        from_email="ciao@ciclovita.example",
        from_name="Ciclovita",
        subject="Grazie",
        html="<p>Grazie</p>",
        text="Grazie",
    )


def test_it_is_a_sender_that_records_and_accepts_every_message() -> None:
    sender = RecordingSender()
    assert isinstance(sender, Sender)
    messages = [email("a"), email("b")]
    outcomes = send_all(sender, messages)

    assert [(o.uid, o.status, o.provider_message_id) for o in outcomes] == [
        ("a", "sent", "rec-0"),
        ("b", "sent", "rec-1"),
    ]
    assert [send.email for send in sender.sends] == messages
    assert sender.accepted_messages() == [("a", "rec-0"), ("b", "rec-1")]
    assert sender.prepare(messages[0]) is messages[0]
    assert sender.reconcile(["a"]) == {}  # like SendGrid's: only events settle held rows
    sender.assert_accepted_once(["a", "b"])
    sender.close()
    assert sender.closed


def test_scripted_failures_are_answered_as_told_and_for_as_long() -> None:
    sender = RecordingSender()
    sender.fail("retry", "retry", error="503: try later")
    sender.fail("refused", "failed", times=None, error="400: bad address")
    sender.fail("lost", "ambiguous", accepted=True)
    sender.fail("dropped", "ambiguous")
    first = {
        o.uid: o
        for o in send_all(sender, [email(u) for u in ("retry", "refused", "lost", "dropped")])
    }
    second = {o.uid: o for o in send_all(sender, [email("retry"), email("refused")])}

    assert (first["retry"].status, first["retry"].error, first["retry"].retry_after) == (
        "retry",
        "503: try later",
        60.0,
    )
    assert second["retry"].status == "sent"  # once, then accepted
    assert first["refused"].status == second["refused"].status == "failed"
    assert first["lost"].status == first["dropped"].status == "ambiguous"
    assert first["lost"].provider_message_id is None  # the answer was lost...
    assert sender.accepted_ids() == ["lost", "retry"]  # ...yet the provider has it
    assert sender.sent_uids() == ["retry", "refused", "lost", "dropped", "retry", "refused"]
    with pytest.raises(ValueError, match="only an ambiguous outcome"):
        sender.fail("x", "failed", accepted=True)


def test_a_refusal_of_everything_stops_the_sending() -> None:
    sender = RecordingSender()
    sender.refuse_everything("401: bad key")
    [outcome] = send_all(sender, [email("a")])
    assert (outcome.status, outcome.stop_sending, outcome.error) == ("retry", True, "401: bad key")
    assert sender.accepted() == []


def test_concurrent_sends_are_each_recorded_once() -> None:
    sender = RecordingSender()
    uids = [f"m-{i}" for i in range(400)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda uid: sender.submit(email(uid)).result(), uids))
    sender.assert_accepted_once(uids)
    assert len({o.provider_message_id for o in outcomes}) == 400
    with pytest.raises(AssertionError, match="1 missing"):
        sender.assert_accepted_once([*uids, "m-never"])
