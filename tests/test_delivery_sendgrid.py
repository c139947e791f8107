"""The SendGrid sender over real HTTP against the local fake SendGrid (no database here).

Request shape (one request per message, our id in the personalization's custom_args,
categories, ASM group, sandbox, reply-to, headers), concurrency, and what each answer does:
429 waits for ``X-RateLimit-Reset``, 5xx and network errors are retried with backoff, other
4xx fail at once with SendGrid's text, 401 stops the sender, and an answer that never comes
(dropped connection, read timeout) is ambiguous and never retried.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from ciclovita.delivery.senders.base import send_all
from ciclovita.delivery.senders.sendgrid import (
    MESSAGE_ID_ARG,
    AmbiguousDelivery,
    RetryPolicy,
    SendGridSender,
    categories_of,
    classify,
    request_body,
)
from ciclovita.errors import PermanentDeliveryError, RateLimitedError, TransientDeliveryError
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita_testing.fake_sendgrid import (
    FakeSendGrid,
    bad_request,
    delay,
    drop_connection,
    rate_limit,
    server_error,
)

QUICK = RetryPolicy(base_backoff=0.01, max_backoff=0.05, deadline=10.0)


def email(uid: str = "m-1", **fields: Any) -> OutgoingEmail:
    values: dict[str, Any] = {
        "uid": uid,
        "campaign": "thank_you",
        "kind": "marketing",
        "to_email": f"{uid}@example.com",
        "to_name": "Zoë Müller",
        "from_email": "ciao@ciclovita.example",
        "from_name": "Ciclovita",
        "subject": "Grazie, Zoë",
        "html": "<p>Grazie!</p>",
        "text": "Grazie!",
        "stage": "new_customer",
        "headers": {"List-Unsubscribe": "<https://ciclovita.example/u/x>"},
    }
    values.update(fields)
    return OutgoingEmail(**values)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.right") as server:
        yield server


@pytest.fixture
def sender(fake: FakeSendGrid) -> Iterator[SendGridSender]:
    sender = SendGridSender("SG.right", host=fake.url, concurrency=8, policy=QUICK)
    yield sender
    sender.close()


def test_one_request_per_message_with_our_id_categories_and_settings(fake: FakeSendGrid) -> None:
    sender = SendGridSender("SG.right", host=fake.url, sandbox=True, policy=QUICK)
    message = email(
        "m-1", reply_to="aiuto@ciclovita.example", asm_group_id=4242, categories=("autumn",)
    )
    [outcome] = send_all(sender, [message])
    sender.close()

    [record] = fake.accepted()
    assert outcome.status == "sent"
    assert outcome.provider_message_id == record.message_id
    body = record.body
    [personalization] = body["personalizations"]
    assert personalization["to"] == [{"email": "m-1@example.com", "name": "Zoë Müller"}]
    assert personalization["custom_args"] == {
        MESSAGE_ID_ARG: "m-1",
        "ciclovita_campaign": "thank_you",
    }
    assert body["categories"] == ["thank_you", "stage:new_customer", "autumn"]
    assert body["asm"] == {"group_id": 4242}
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert body["reply_to"] == {"email": "aiuto@ciclovita.example"}
    assert body["from"] == {"email": "ciao@ciclovita.example", "name": "Ciclovita"}
    assert body["headers"] == {"List-Unsubscribe": "<https://ciclovita.example/u/x>"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert record.header("Authorization") == "Bearer SG.right"


def test_messages_go_concurrently_each_accepted_once(
    fake: FakeSendGrid, sender: SendGridSender
) -> None:
    fake.set_latency(0.05)
    messages = [email(f"m-{i}") for i in range(64)]
    started = time.monotonic()
    outcomes = send_all(sender, messages)
    elapsed = time.monotonic() - started

    assert {o.status for o in outcomes} == {"sent"}
    assert [o.uid for o in outcomes] == [m.uid for m in messages]
    fake.assert_accepted_once(m.uid for m in messages)
    assert 1 < fake.stats().max_in_flight <= 8
    assert elapsed < 64 * 0.05 / 2  # far from one at a time


def test_rate_limit_waits_until_the_reset_time(fake: FakeSendGrid, sender: SendGridSender) -> None:
    fake.enqueue(rate_limit(1.0))
    [outcome] = send_all(sender, [email("m-429")])

    limited, accepted = fake.requests()
    assert (limited.status, accepted.status) == (429, 202)
    # X-RateLimit-Reset is whole Unix seconds, rounded up: the retry came after it
    assert accepted.received_at >= int(limited.received_at + 1.0)
    assert outcome.status == "sent"
    fake.assert_accepted_once(["m-429"])


def test_a_rate_limit_pauses_every_thread(fake: FakeSendGrid) -> None:
    sender = SendGridSender("SG.right", host=fake.url, concurrency=8, policy=QUICK)
    fake.set_rate_limit(20, window_seconds=1.0)
    messages = [email(f"m-{i}") for i in range(50)]
    outcomes = send_all(sender, messages)
    sender.close()

    assert {o.status for o in outcomes} == {"sent"}
    fake.assert_accepted_once(m.uid for m in messages)
    limited = [r for r in fake.requests() if r.status == 429]
    # at most the requests already in flight when a window closed are refused
    assert len(limited) <= 3 * 8


def test_server_errors_are_retried_with_backoff(fake: FakeSendGrid, sender: SendGridSender) -> None:
    fake.enqueue(server_error(), server_error(503, "unavailable"))
    [outcome] = send_all(sender, [email("m-5xx")])

    assert [r.status for r in fake.requests()] == [500, 503, 202]
    assert outcome.status == "sent"
    fake.assert_accepted_once(["m-5xx"])


def test_server_errors_past_the_attempts_come_back_as_retry(fake: FakeSendGrid) -> None:
    sender = SendGridSender(
        "SG.right", host=fake.url, policy=RetryPolicy(max_attempts=3, base_backoff=0.01)
    )
    fake.script(server_error(502, "bad gateway"), times=None)
    [outcome] = send_all(sender, [email("m-down")])
    sender.close()

    assert outcome.status == "retry"
    assert "502" in (outcome.error or "") and "bad gateway" in (outcome.error or "")
    assert outcome.retry_after == 60.0
    assert len(fake.requests()) == 3
    assert fake.accepted() == []


def test_bad_request_fails_at_once_with_sendgrid_text(
    fake: FakeSendGrid, sender: SendGridSender
) -> None:
    fake.script(
        bad_request("The from address does not match a verified Sender Identity.", "from"),
        message_id="m-400",
    )
    outcomes = send_all(sender, [email("m-400"), email("m-ok")])

    assert outcomes[0].status == "failed"
    assert outcomes[0].error == (
        "400: from: The from address does not match a verified Sender Identity."
    )
    assert outcomes[1].status == "sent"
    assert sorted(r.ids[0] for r in fake.requests()) == ["m-400", "m-ok"]  # never retried


def test_an_answer_lost_after_acceptance_is_ambiguous_never_retried(
    fake: FakeSendGrid, sender: SendGridSender
) -> None:
    fake.script(drop_connection(after_accept=True), message_id="m-lost")
    [outcome] = send_all(sender, [email("m-lost")])

    assert outcome.status == "ambiguous"
    assert "no answer" in (outcome.error or "")
    assert len(fake.requests()) == 1
    fake.assert_accepted_once(["m-lost"])


def test_a_dropped_connection_is_ambiguous_too(fake: FakeSendGrid, sender: SendGridSender) -> None:
    fake.enqueue(drop_connection())
    [outcome] = send_all(sender, [email("m-drop")])
    assert outcome.status == "ambiguous"
    assert len(fake.requests()) == 1


def test_a_read_timeout_is_ambiguous_and_not_retried(fake: FakeSendGrid) -> None:
    sender = SendGridSender("SG.right", host=fake.url, timeout=0.3, policy=QUICK)
    fake.enqueue(delay(1.0))
    [outcome] = send_all(sender, [email("m-slow")])
    sender.close()

    assert outcome.status == "ambiguous"
    fake.wait_for_accepted(1, timeout=5)  # SendGrid took it after all: a retry would double
    fake.assert_accepted_once(["m-slow"])
    assert len(fake.requests()) == 1


def test_a_refused_connection_is_retried_then_handed_back() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = SendGridSender(
        "SG.right",
        host=f"http://127.0.0.1:{port}",
        policy=RetryPolicy(max_attempts=2, base_backoff=0.01),
    )
    [outcome] = send_all(sender, [email("m-nowhere")])
    sender.close()
    assert outcome.status == "retry"
    assert "connection failed before the request was sent" in (outcome.error or "")


def test_a_refused_api_key_stops_the_sender(fake: FakeSendGrid) -> None:
    sender = SendGridSender("SG.wrong", host=fake.url, concurrency=1, policy=QUICK)
    outcomes = send_all(sender, [email(f"m-{i}") for i in range(5)])
    sender.close()

    assert {o.status for o in outcomes} == {"retry"}
    assert all(o.stop_sending for o in outcomes)
    assert "401" in (outcomes[0].error or "")
    assert len(fake.requests()) == 1  # one refusal is enough: no hammering with a bad key


def test_a_rate_limit_beyond_the_deadline_hands_the_message_back(fake: FakeSendGrid) -> None:
    sender = SendGridSender(
        "SG.right", host=fake.url, policy=RetryPolicy(deadline=0.5, max_rate_limit_wait=30)
    )
    fake.enqueue(rate_limit(20.0))
    [outcome] = send_all(sender, [email("m-later")])
    sender.close()

    assert outcome.status == "retry"
    assert outcome.retry_after is not None and 15 < outcome.retry_after <= 21
    assert len(fake.requests()) == 1


def test_requests_beyond_sendgrid_limits_are_refused_before_sending(
    fake: FakeSendGrid, sender: SendGridSender
) -> None:
    too_big = email("m-big", custom_args={"note": "x" * 10_000})
    reserved = email("m-hdr", headers={"Subject": "sneaky"})
    edge = email(
        "m-edge",
        custom_args={"note": "é" * 4_000},  # 8,000 bytes with our own: under 10,000
        categories=tuple(f"c{i}" for i in range(20)),
    )
    outcomes = {o.uid: o for o in send_all(sender, [too_big, reserved, edge])}

    assert outcomes["m-big"].status == "failed"
    assert "custom_args" in (outcomes["m-big"].error or "")
    assert outcomes["m-hdr"].status == "failed"
    assert "reserved" in (outcomes["m-hdr"].error or "")
    assert outcomes["m-edge"].status == "sent"
    [record] = fake.requests()
    assert record.ids == ("m-edge",)
    assert len(record.body["categories"]) == 10


def test_categories_are_unique_and_at_most_ten() -> None:
    message = email(categories=("thank_you", "x" * 300, *(f"c{i}" for i in range(12))))
    assert categories_of(message) == [
        "thank_you",
        "stage:new_customer",
        *(f"c{i}" for i in range(8)),
    ]


def test_an_empty_part_is_left_out() -> None:
    body = request_body(email(text=""), sandbox=False)
    assert [c["type"] for c in body["content"]] == ["text/html"]


def _raised(client: SendGridAPIClient) -> BaseException:
    try:
        client.send(request_body(email(), sandbox=False))
    except Exception as exc:  # noqa: BLE001 - the error under test
        return exc
    raise AssertionError("the request succeeded")


def test_errors_are_typed(fake: FakeSendGrid) -> None:
    client = SendGridAPIClient(api_key="SG.right", host=fake.url)
    fake.enqueue(rate_limit(3.0), server_error(503), bad_request("nope", "subject"))

    limited = classify(_raised(client))
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after is not None and 1.5 < limited.retry_after <= 4.0
    unavailable = classify(_raised(client))
    assert isinstance(unavailable, TransientDeliveryError)
    assert not isinstance(unavailable, RateLimitedError)
    assert unavailable.status == 503
    refused = classify(_raised(client))
    assert isinstance(refused, PermanentDeliveryError)
    assert str(refused) == "400: subject: nope"

    fake.enqueue(drop_connection())
    dropped = _raised(client)
    assert not isinstance(dropped, HTTPError)
    assert isinstance(classify(dropped), AmbiguousDelivery)
    assert isinstance(classify(TimeoutError("read timed out")), AmbiguousDelivery)
    nobody = SendGridAPIClient(api_key="SG.right", host="http://127.0.0.1:9")
    assert type(classify(_raised(nobody))) is TransientDeliveryError
