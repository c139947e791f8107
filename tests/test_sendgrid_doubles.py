"""Tests of the SendGrid test doubles, driven by the official ``sendgrid`` client over HTTP.

* :mod:`tests.support.fake_sendgrid`: acceptance and recording, each scripted fault,
  SendGrid's validation rules, latency, process mode, a throughput smoke check.
* :mod:`tests.support.prism`: Stoplight Prism serving SendGrid's OpenAPI spec accepts what
  the fake accepts and rejects, with an ``sl-violations`` header, what breaks the spec.
"""

from __future__ import annotations

import copy
import gzip
import http.client
import json
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    HTTPError,
    InternalServerError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Category,
    Content,
    CustomArg,
    From,
    Mail,
    Personalization,
    To,
)

from tests.support.fake_sendgrid import (
    DEFAULT_ID_KEY,
    FakeSendGrid,
    FakeSendGridProcess,
    SendGridDouble,
    bad_request,
    delay,
    drop_connection,
    rate_limit,
    server_error,
    validate_mail_send,
)
from tests.support.prism import PrismServer, prism_or_skip, sl_violation_messages, sl_violations

# Connection-level failures the official client lets through (it only wraps HTTP statuses).
TRANSPORT_ERRORS = (ConnectionError, http.client.HTTPException, urllib.error.URLError, OSError)


def make_mail(message_id: str = "m-1", email: str = "ana@example.com", *, n: int = 1) -> Mail:
    """A campaign-like mail: one personalization per recipient with its own message id."""
    mail = Mail(from_email=From("news@ciclovita.example", "Ciclovita"), subject="Hola")
    for i in range(n):
        personalization = Personalization()
        suffix = "" if n == 1 else f"-{i}"
        local, _, domain = email.partition("@")
        personalization.add_to(To(f"{local}{suffix}@{domain}"))
        personalization.add_custom_arg(CustomArg(DEFAULT_ID_KEY, f"{message_id}{suffix}"))
        mail.add_personalization(personalization, index=i)  # default index=0 prepends
    mail.add_content(Content("text/plain", "Hola, ¿qué tal?"))
    mail.add_content(Content("text/html", "<p>Hola, ¿qué tal?</p>"))
    mail.add_category(Category("welcome"))
    mail.add_category(Category("lifecycle"))
    return mail


def body_of(mail: Mail) -> dict[str, Any]:
    return copy.deepcopy(mail.get())


def client_for(double: SendGridDouble | PrismServer, api_key: str = "SG.test") -> SendGridAPIClient:
    return SendGridAPIClient(api_key=api_key, host=double.url)


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST bytes to /v3/mail/send without the official client (for malformed bodies)."""
    host_port = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host_port, timeout=10)
    try:
        conn.request("POST", "/v3/mail/send", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
def client(fake: FakeSendGrid) -> SendGridAPIClient:
    return client_for(fake)


# --------------------------------------------------------------------------------------------
# Acceptance and recording
# --------------------------------------------------------------------------------------------


def test_valid_mail_is_accepted_and_recorded(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    mail = make_mail("m-1", "ana@example.com")
    response = client.send(mail)

    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert message_id

    [record] = fake.accepted()
    assert fake.rejected() == []
    assert record.status == 202 and record.accepted and record.answered
    assert record.message_id == message_id
    assert record.method == "POST" and record.path == "/v3/mail/send"
    assert record.body == mail.get()
    assert record.header("authorization") == "Bearer SG.test"
    assert (record.header("User-Agent") or "").startswith("sendgrid/")
    assert record.received_at <= record.responded_at
    assert fake.accepted_ids() == ["m-1"]
    assert fake.accepted_recipients() == ["ana@example.com"]
    fake.assert_accepted_once(["m-1"])

    stats = fake.stats()
    assert (stats.requests, stats.accepted, stats.rejected) == (1, 1, 0)
    assert stats.by_status == {202: 1}
    assert stats.accepted_personalizations == 1 and stats.accepted_recipients == 1


def test_message_ids_are_unique_and_batches_are_counted(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    ids = {client.send(make_mail(f"batch{i}", n=3)).headers["X-Message-Id"] for i in range(20)}
    assert len(ids) == 20
    assert len(fake.accepted_ids()) == 60
    assert fake.accepted_id_counts()["batch7-2"] == 1
    assert fake.stats().accepted_recipients == 60
    assert fake.duplicate_ids() == {}


def test_top_level_custom_args_and_other_keys(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    body = body_of(make_mail("m-1", n=2))
    body["custom_args"] = {"campaign": "spring"}
    client.send(body)
    assert fake.accepted_ids("campaign") == ["spring", "spring"]
    assert fake.accepted_ids() == ["m-1-0", "m-1-1"]


def test_gzip_body_is_accepted(fake: FakeSendGrid) -> None:
    raw = gzip.compress(json.dumps(body_of(make_mail("gz-1"))).encode())
    status, headers, _ = post_raw(
        fake.url,
        raw,
        {
            "Authorization": "Bearer SG.test",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert status == 202 and headers["X-Message-Id"]
    assert fake.accepted_ids() == ["gz-1"]


def test_keep_alive_connection_serves_several_requests() -> None:
    with FakeSendGrid() as fake:
        conn = http.client.HTTPConnection(f"127.0.0.1:{fake.port}", timeout=10)
        body = json.dumps(body_of(make_mail("ka"))).encode()
        headers = {"Authorization": "Bearer SG.test", "Content-Type": "application/json"}
        for _ in range(3):
            conn.request("POST", "/v3/mail/send", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 202
        conn.close()
        assert fake.accepted_id_counts()["ka"] == 3


# --------------------------------------------------------------------------------------------
# Authorization
# --------------------------------------------------------------------------------------------


def test_missing_authorization_is_401(fake: FakeSendGrid) -> None:
    client = client_for(fake)
    client.client.request_headers.pop("Authorization")
    with pytest.raises(UnauthorizedError) as caught:
        client.send(make_mail())
    error = caught.value
    assert error.status_code == 401
    assert error.to_dict == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    assert fake.accepted() == []
    [record] = fake.rejected()
    assert record.status == 401 and record.outcome == "rejected"


def test_unset_api_key_is_401(fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    client = SendGridAPIClient(host=fake.url)  # sends "Bearer None"
    with pytest.raises(UnauthorizedError):
        client.send(make_mail())


def test_api_key_can_be_pinned() -> None:
    with FakeSendGrid(api_key="SG.right") as fake:
        assert client_for(fake, "SG.right").send(make_mail()).status_code == 202
        with pytest.raises(UnauthorizedError):
            client_for(fake, "SG.wrong").send(make_mail())


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_reset_header(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(rate_limit(30, limit=600))
    before = time.time()
    with pytest.raises(TooManyRequestsError) as caught:
        client.send(make_mail("m-1"))
    error = caught.value
    assert error.status_code == 429
    assert error.headers["X-RateLimit-Limit"] == "600"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    reset = int(error.headers["X-RateLimit-Reset"])
    assert before + 29 <= reset <= time.time() + 31
    assert error.to_dict["errors"][0]["message"] == "too many requests"
    assert error.to_dict["errors"][0]["field"] is None

    assert client.send(make_mail("m-1")).status_code == 202  # the retry goes through
    [rejected] = fake.rejected()
    assert rejected.status == 429 and rejected.injected == "rate_limit"
    assert rejected.ids == ("m-1",)
    fake.assert_accepted_once(["m-1"])


@pytest.mark.parametrize(
    ("status", "exception"), [(500, InternalServerError), (503, ServiceUnavailableError)]
)
def test_server_error(
    fake: FakeSendGrid, client: SendGridAPIClient, status: int, exception: type[HTTPError]
) -> None:
    fake.enqueue(server_error(status))
    with pytest.raises(exception) as caught:
        client.send(make_mail())
    assert caught.value.status_code == status
    assert caught.value.to_dict["errors"][0]["message"] == "internal server error"
    assert fake.stats().by_status == {status: 1}
    assert fake.accepted() == []


def test_server_error_rejects_non_5xx() -> None:
    with pytest.raises(ValueError, match="5xx"):
        server_error(404)


def test_bad_request_fault(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.enqueue(bad_request("The from address does not match a verified Sender", "from"))
    with pytest.raises(BadRequestsError) as caught:
        client.send(make_mail())
    assert caught.value.to_dict == {
        "errors": [
            {
                "message": "The from address does not match a verified Sender",
                "field": "from",
                "help": None,
            }
        ]
    }
    assert fake.rejected()[0].injected == "bad_request"


def test_enqueued_faults_apply_in_order_then_normal(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.enqueue(rate_limit(1), server_error(), bad_request("no"))
    outcomes: list[str] = []
    for _ in range(4):
        try:
            outcomes.append(str(client.send(make_mail("m-1")).status_code))
        except HTTPError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["TooManyRequestsError", "InternalServerError", "BadRequestsError", "202"]
    assert fake.pending_rules() == []
    assert [r.status for r in fake.rejected()] == [429, 500, 400]
    fake.assert_accepted_once(["m-1"])


def test_delay_slows_the_answer(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.enqueue(delay(0.4))
    started = time.monotonic()
    assert client.send(make_mail()).status_code == 202
    assert time.monotonic() - started >= 0.4
    assert fake.accepted()[0].injected == "delay"


def test_delay_then_fault(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.enqueue(delay(0.2, then=rate_limit(5)))
    started = time.monotonic()
    with pytest.raises(TooManyRequestsError):
        client.send(make_mail())
    assert time.monotonic() - started >= 0.2


def test_timed_out_request_is_still_accepted(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    """The no-idempotency trap: the client gives up, SendGrid queues the mail anyway."""
    fake.enqueue(delay(0.6))
    mail = make_mail("m-timeout")
    with pytest.raises(TRANSPORT_ERRORS):
        client.client.mail.send.post(request_body=mail.get(), timeout=0.2)
    fake.wait_for_accepted(1, timeout=5)
    client.send(mail)  # a naive retry
    assert fake.duplicate_ids() == {"m-timeout": 2}
    with pytest.raises(AssertionError, match="1 duplicated"):
        fake.assert_accepted_once(["m-timeout"])


def test_drop_connection_closes_without_answer(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.enqueue(drop_connection())
    with pytest.raises(TRANSPORT_ERRORS):
        client.send(make_mail("m-1"))
    [record] = fake.rejected()
    assert (record.status, record.outcome, record.answered) == (0, "dropped", False)
    assert fake.stats().dropped == 1
    assert fake.accepted() == []


def test_drop_after_accept_makes_a_naive_retry_deliver_twice(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(drop_connection(after_accept=True), message_id="m-2")
    client.send(make_mail("m-1"))
    with pytest.raises(TRANSPORT_ERRORS):
        client.send(make_mail("m-2"))
    client.send(make_mail("m-2"))
    assert fake.accepted_id_counts() == {"m-1": 1, "m-2": 2}
    lost = [r for r in fake.accepted() if not r.answered]
    assert [r.ids for r in lost] == [("m-2",)]
    assert fake.rejected() == []


def test_rules_match_by_message_id_recipient_and_custom_arg(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(server_error(), times=2, message_id="m-2")
    fake.script(bad_request("blocked"), recipient="BOB@example.com")
    fake.script(rate_limit(1), custom_arg=("campaign", "spring"))

    assert client.send(make_mail("m-1")).status_code == 202
    for _ in range(2):
        with pytest.raises(InternalServerError):
            client.send(make_mail("m-2"))
    assert client.send(make_mail("m-2")).status_code == 202
    with pytest.raises(BadRequestsError):
        client.send(make_mail("m-3", "bob@example.com"))
    spring = body_of(make_mail("m-4"))
    spring["personalizations"][0]["custom_args"]["campaign"] = "spring"
    with pytest.raises(TooManyRequestsError):
        client.send(spring)
    assert fake.pending_rules() == []
    assert fake.accepted_ids() == ["m-1", "m-2"]
    assert [r.ids for r in fake.rejected()] == [("m-2",), ("m-2",), ("m-3",), ("m-4",)]


def test_unlimited_rule_lasts_until_reset(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.script(server_error(502), times=None)
    for _ in range(3):
        with pytest.raises(HTTPError):
            client.send(make_mail())
    assert len(fake.pending_rules()) == 1
    fake.reset()
    assert fake.stats().requests == 0 and fake.pending_rules() == []
    assert client.send(make_mail()).status_code == 202


def test_window_rate_limit(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.set_rate_limit(3, window_seconds=60)
    statuses = []
    for i in range(5):
        try:
            statuses.append(client.send(make_mail(f"w{i}")).status_code)
        except TooManyRequestsError as exc:
            statuses.append(exc.status_code)
            assert int(exc.headers["X-RateLimit-Reset"]) > time.time()
    assert statuses == [202, 202, 202, 429, 429]
    fake.set_rate_limit(None)
    assert client.send(make_mail("w5")).status_code == 202


def test_latency_applies_to_every_request_concurrently(fake: FakeSendGrid) -> None:
    fake.latency = 0.2
    assert fake.latency == 0.2

    def send(i: int) -> int:
        return int(client_for(fake).send(make_mail(f"lat{i}")).status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(send, range(20)))
    elapsed = time.monotonic() - started
    assert statuses == [202] * 20
    assert 0.2 <= elapsed < 2.0, elapsed  # 20 requests in parallel, not 4 s in series
    assert fake.stats().max_in_flight > 1
    fake.assert_accepted_once(f"lat{i}" for i in range(20))


def test_concurrent_scripts_are_consumed_exactly(fake: FakeSendGrid) -> None:
    fake.script(server_error(), times=25)
    failures = 0
    lock = threading.Lock()

    def send(i: int) -> None:
        nonlocal failures
        try:
            client_for(fake).send(make_mail(f"c{i}"))
        except InternalServerError:
            with lock:
                failures += 1

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(100)))
    assert failures == 25
    assert fake.stats().accepted == 75


def test_stop_does_not_wait_for_delayed_answers() -> None:
    fake = FakeSendGrid().start()
    fake.script(delay(30), times=None)
    errors: list[OSError] = []

    def send() -> None:
        try:
            client_for(fake).send(make_mail())
        except OSError as exc:  # what a lost connection looks like to the client
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 5
    while fake.stats().in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    sender.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not sender.is_alive()
    assert len(errors) == 1
    assert fake.stats().in_flight == 0


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _many_personalizations(body: dict[str, Any], n: int) -> None:
    body["personalizations"] = [
        {"to": [{"email": f"u{i}@example.com"}], "custom_args": {DEFAULT_ID_KEY: f"p{i}"}}
        for i in range(n)
    ]


INVALID_BODIES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "no personalizations": (
        lambda b: b.pop("personalizations"),
        "personalizations",
        "at least one personalization",
    ),
    "empty personalizations": (
        lambda b: b.update(personalizations=[]),
        "personalizations",
        "at least one personalization",
    ),
    "1001 personalizations": (
        lambda b: _many_personalizations(b, 1001),
        "personalizations",
        "limited to 1000 personalizations",
    ),
    "1001 recipients": (
        lambda b: b.update(
            personalizations=[
                {"to": [{"email": f"u{i}@example.com"}], "cc": [{"email": f"c{i}@example.com"}]}
                for i in range(501)
            ]
        ),
        "personalizations",
        "limit of 1000 total recipients",
    ),
    "no to": (
        lambda b: b["personalizations"][0].pop("to"),
        "personalizations.0.to",
        "to array is required",
    ),
    "bad address": (
        lambda b: b["personalizations"][0]["to"][0].update(email="not-an-address"),
        "personalizations.0.to.0.email",
        "valid address",
    ),
    "duplicate address": (
        lambda b: b["personalizations"][0].update(cc=[{"email": "ANA@example.com"}]),
        "personalizations.0",
        "should be unique",
    ),
    "no from": (lambda b: b.pop("from"), "from.email", "from object must be provided"),
    "no content": (lambda b: b.pop("content"), "content", "content parameter is required"),
    "empty content": (
        lambda b: b.update(content=[{"type": "text/plain", "value": ""}]),
        "content.0.value",
        "at least one character",
    ),
    "no subject": (lambda b: b.pop("subject"), "subject", "The subject is required"),
    "11 categories": (
        lambda b: b.update(categories=[f"c{i}" for i in range(11)]),
        "categories",
        "more than 10 categories",
    ),
    "category over 255 characters": (
        lambda b: b.update(categories=["x" * 256]),
        "categories.0",
        "at most 255 characters",
    ),
    "custom_args over 10000 bytes": (
        lambda b: b["personalizations"][0]["custom_args"].update(blob="x" * 10_000),
        "personalizations.0.custom_args",
        "less than 10000 bytes",
    ),
    "top-level custom_args as string": (
        lambda b: b.update(custom_args="campaign=spring"),
        "custom_args",
        "Expected: object",
    ),
    "send_at beyond 72 h": (
        lambda b: b.update(send_at=int(time.time()) + 73 * 3600),
        "send_at",
        "72 hours",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_bodies_are_rejected(
    fake: FakeSendGrid, client: SendGridAPIClient, case: str
) -> None:
    mutate, field, message = INVALID_BODIES[case]
    body = body_of(make_mail("bad", "ana@example.com"))
    mutate(body)
    with pytest.raises(BadRequestsError) as caught:
        client.send(body)
    errors = caught.value.to_dict["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    assert fake.accepted() == []
    [record] = fake.rejected()
    assert record.status == 400 and record.body == body
    assert any(e.field == field for e in record.errors)


def test_invalid_json_is_rejected(fake: FakeSendGrid) -> None:
    status, _, raw = post_raw(
        fake.url,
        b'{"personalizations": [',
        {"Authorization": "Bearer SG.test", "Content-Type": "application/json"},
    )
    assert status == 400
    [error] = json.loads(raw)["errors"]
    assert error["message"].startswith("Bad Request: the request body is not valid JSON")
    assert error["field"] is None
    assert fake.rejected()[0].body is None


def test_valid_edge_cases_are_accepted(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    exactly_1000 = body_of(make_mail())
    _many_personalizations(exactly_1000, 1000)
    template = body_of(make_mail("tpl"))
    del template["content"], template["subject"]
    template["template_id"] = "d-0123456789abcdef"
    subject_per_personalization = body_of(make_mail("subj"))
    del subject_per_personalization["subject"]
    subject_per_personalization["personalizations"][0]["subject"] = "Hola Ana"
    ten_categories = body_of(make_mail("cats"))
    ten_categories["categories"] = [f"c{i}" for i in range(10)]
    for body in (exactly_1000, template, subject_per_personalization, ten_categories):
        assert client.send(body).status_code == 202
    assert fake.stats().accepted_personalizations == 1003


def test_validate_mail_send_is_usable_directly() -> None:
    assert validate_mail_send(body_of(make_mail())) == []
    assert [e.field for e in validate_mail_send({})] == [
        "personalizations",
        "from.email",
        "content",
        "subject",
    ]


def test_unknown_path_and_method(fake: FakeSendGrid) -> None:
    client = client_for(fake)
    with pytest.raises(HTTPError) as caught:
        client.client.mail.batch.post()
    assert caught.value.status_code == 404
    with pytest.raises(HTTPError) as caught:
        client.client.mail.send.get()
    assert caught.value.status_code == 405
    assert [r.status for r in fake.rejected()] == [404, 405]


# --------------------------------------------------------------------------------------------
# Process mode
# --------------------------------------------------------------------------------------------


def test_process_mode_end_to_end() -> None:
    with FakeSendGridProcess() as fake:
        assert fake.pid is not None
        client = client_for(fake)
        response = client.send(make_mail("p-1", "ana@example.com"))
        assert response.status_code == 202

        fake.enqueue(rate_limit(10))
        fake.script(server_error(503), message_id="p-2")
        fake.script(drop_connection(), recipient="eve@example.com")
        assert len(fake.pending_rules()) == 3
        with pytest.raises(TooManyRequestsError) as caught:
            client.send(make_mail("p-2"))
        assert int(caught.value.headers["X-RateLimit-Reset"]) >= time.time() + 8
        with pytest.raises(ServiceUnavailableError):
            client.send(make_mail("p-2"))
        with pytest.raises(TRANSPORT_ERRORS):
            client.send(make_mail("p-3", "eve@example.com"))
        client.send(make_mail("p-2"))
        with pytest.raises(BadRequestsError):
            client.send({"personalizations": []})

        stats = fake.stats()
        assert (stats.accepted, stats.rejected, stats.dropped) == (2, 4, 1)
        assert stats.by_status == {202: 2, 429: 1, 503: 1, 0: 1, 400: 1}
        assert fake.accepted_ids() == ["p-1", "p-2"]
        fake.assert_accepted_once(["p-1", "p-2"])
        [first, _] = fake.accepted()
        assert first.message_id == response.headers["X-Message-Id"]
        assert first.body == make_mail("p-1", "ana@example.com").get()
        assert fake.accepted_recipients() == ["ana@example.com", "ana@example.com"]
        assert [r.status for r in fake.rejected()] == [429, 503, 0, 400]

        fake.latency = 0.15
        started = time.monotonic()
        client.send(make_mail("p-4"))
        assert time.monotonic() - started >= 0.15
        assert fake.latency == 0.15

        fake.reset()
        assert fake.stats().requests == 0 and fake.accepted_ids() == []
        with pytest.raises(ValueError, match="unknown behaviour"):
            fake._call("POST", "script", {"behaviour": {"kind": "explode"}})
    assert fake.pid is None


def test_process_mode_without_bodies_keeps_ids_and_counts() -> None:
    with FakeSendGridProcess(keep_bodies=False, id_key="job") as fake:
        client = client_for(fake)
        body = body_of(make_mail("x", n=2))
        for i, personalization in enumerate(body["personalizations"]):
            personalization["custom_args"] = {"job": f"j{i}"}
        client.send(body)
        [record] = fake.accepted()
        assert record.body is None and record.headers is None
        assert record.ids == ("j0", "j1") and record.recipients == 2
        assert fake.accepted_ids() == ["j0", "j1"]
        with pytest.raises(ValueError, match="keep_bodies"):
            fake.accepted_ids(DEFAULT_ID_KEY)


def test_process_mode_cli_writes_port_file(tmp_path: Any) -> None:
    import subprocess
    import sys

    from tests.support.fake_sendgrid import _REPO_ROOT

    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_sendgrid",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        cwd=_REPO_ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        port = int(port_file.read_text())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/__fake/health")
        assert json.loads(conn.getresponse().read()) == {"ok": True, "port": port}
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------------------------
# Throughput smoke check (prints only)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # a throughput measure, not a check of behaviour
@pytest.mark.parametrize("mode", ["in-process", "process"])
def test_throughput_smoke(mode: str) -> None:
    total, threads = 3000, 16
    double: SendGridDouble = (
        FakeSendGrid() if mode == "in-process" else FakeSendGridProcess(keep_bodies=False)
    )
    with double as fake:

        def worker(k: int) -> None:
            client = client_for(fake)
            for i in range(k, total, threads):
                client.send(make_mail(f"t{i}"))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(worker, range(threads)))
        elapsed = time.perf_counter() - started
        stats = fake.stats()
        print(
            f"\nfake SendGrid ({mode}): {total} requests from {threads} threads of the official "
            f"client in {elapsed:.2f} s = {total / elapsed:.0f} requests/s"
        )
        assert stats.accepted == total
        fake.assert_accepted_once(f"t{i}" for i in range(total))


# --------------------------------------------------------------------------------------------
# Contract: Stoplight Prism serving SendGrid's OpenAPI spec
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prism() -> Iterator[PrismServer]:
    with prism_or_skip() as server:
        print(f"\nPrism answered {server.start_seconds:.1f} s after start")
        yield server


def test_prism_accepts_a_campaign_mail(prism: PrismServer) -> None:
    mail = make_mail("m-1", "ana@example.com")
    response = client_for(prism).send(mail)
    assert response.status_code == 202
    assert sl_violations(response) is None


def test_prism_rejects_1001_personalizations(prism: PrismServer) -> None:
    body = body_of(make_mail())
    _many_personalizations(body, 1001)
    with pytest.raises(BadRequestsError) as caught:
        client_for(prism).send(body)
    assert caught.value.status_code == 400
    violations = sl_violations(caught.value)
    assert violations is not None
    assert "personalizations must NOT have more than 1000 items" in violations
    assert sl_violation_messages(caught.value) == [
        "Request body property personalizations must NOT have more than 1000 items"
    ]


def test_prism_wants_a_bearer_token(prism: PrismServer) -> None:
    client = client_for(prism)
    client.client.request_headers.pop("Authorization")
    with pytest.raises(UnauthorizedError) as caught:
        client.send(make_mail())
    assert sl_violation_messages(caught.value) == ["Invalid security scheme used"]


def test_prism_or_skip_skips_without_the_spec(tmp_path: Any) -> None:
    missing = tmp_path / "nowhere" / "tsg_mail_v3.json"
    with pytest.raises(pytest.skip.Exception, match="absent"), prism_or_skip(missing):
        pass


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_prism_or_skip_without_node(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    import tests.support.prism as prism_module

    spec = tmp_path / "tsg_mail_v3.json"
    spec.write_text("{}")
    monkeypatch.setattr(prism_module, "PRISM_BIN", tmp_path / "no-prism")
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="node and npm not found"), prism_or_skip(spec):
        pass


# Bodies both doubles must reject. Prism only sees what the spec encodes; the fake adds the
# documented limits the spec cannot express (recipient total, custom_args size, subject...).
SHARED_REJECTIONS = [
    "1001 personalizations",
    "no to",
    "bad address",
    "no from",
    "empty content",
    "11 categories",
    "category over 255 characters",
]


@pytest.mark.parametrize("case", SHARED_REJECTIONS)
def test_prism_and_fake_agree_on_invalid_bodies(
    prism: PrismServer, fake: FakeSendGrid, case: str
) -> None:
    mutate, _, _ = INVALID_BODIES[case]
    body = body_of(make_mail())
    mutate(body)
    for double in (prism, fake):
        with pytest.raises(BadRequestsError):
            client_for(double).send(body)
    assert fake.accepted() == []


def test_prism_and_fake_agree_on_valid_bodies(prism: PrismServer, fake: FakeSendGrid) -> None:
    bodies = [body_of(make_mail()), body_of(make_mail("b", n=50))]
    template = body_of(make_mail("tpl"))
    del template["content"], template["subject"]
    template["template_id"] = "d-0123456789abcdef"
    template["personalizations"][0]["dynamic_template_data"] = {"first_name": "Ana"}
    bodies.append(template)
    for body in bodies:
        response = client_for(prism).send(body)
        assert response.status_code == 202, sl_violations(response)
        assert sl_violations(response) is None
        assert client_for(fake).send(body).status_code == 202


def test_socket_level_sanity(fake: FakeSendGrid) -> None:
    """A garbage request line gets a 400 instead of hanging the connection."""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
