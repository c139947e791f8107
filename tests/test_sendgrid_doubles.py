"""Tests of the SendGrid test doubles, driven by the official ``sendgrid`` client over HTTP.

* :mod:`ciclovita_testing.fake_sendgrid`: recording is exact (our id per personalization,
  SendGrid's id per request), each fault script does what it says, the few checks it makes
  (and the validation it leaves to Prism), the exactly-once checks, the process runner (it
  outlives a killed client; its command line), a throughput smoke check.
* :mod:`tests.support.prism`: Stoplight Prism serving SendGrid's OpenAPI description accepts
  a campaign mail and refuses, with an ``sl-violations`` header, what breaks the spec: the
  validation the fake does not do.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
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
from sendgrid.helpers.mail import Category, Content, CustomArg, From, Mail, Personalization, To

from ciclovita_testing.fake_sendgrid import (
    DEFAULT_ID_KEY,
    FakeSendGrid,
    FakeSendGridProcess,
    SendGridDouble,
    bad_request,
    delay,
    drop_connection,
    rate_limit,
    server_error,
)
from tests.support.prism import PrismServer, prism_or_skip, sl_violation_messages, sl_violations

# Connection-level failures the official client lets through (it only wraps HTTP statuses).
TRANSPORT_ERRORS = (ConnectionError, http.client.HTTPException, urllib.error.URLError, OSError)
REPOSITORY = Path(__file__).resolve().parents[1]


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
    return mail


def body_of(mail: Mail) -> dict[str, Any]:
    return copy.deepcopy(mail.get())


def client_for(double: SendGridDouble | PrismServer, api_key: str = "SG.test") -> SendGridAPIClient:
    return SendGridAPIClient(api_key=api_key, host=double.url)


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST bytes to /v3/mail/send without the official client (for malformed bodies)."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        conn.request("POST", "/v3/mail/send", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
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
# Recording
# --------------------------------------------------------------------------------------------


def test_an_accepted_mail_is_recorded_exactly(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    mail = make_mail("m-1", "ana@example.com")
    response = client.send(mail)

    assert (response.status_code, response.body) == (202, b"")
    message_id = response.headers["X-Message-Id"]
    [record] = fake.requests()
    assert fake.accepted() == [record] and fake.rejected() == []
    assert (record.status, record.outcome, record.answered, record.fault) == (
        202,
        "accepted",
        True,
        None,
    )
    assert record.message_id == message_id
    assert record.body == mail.get()
    assert record.header("Authorization") == "Bearer SG.test"
    assert (record.header("user-agent") or "").startswith("sendgrid/")
    assert fake.accepted_ids() == ["m-1"]
    assert fake.accepted_messages() == [("m-1", message_id)]
    stats = fake.stats()
    assert (stats.requests, stats.accepted, stats.rejected, stats.by_status) == (1, 1, 0, {202: 1})


def test_each_personalization_id_is_recorded_and_message_ids_are_unique(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    ids = {client.send(make_mail(f"b{i}", n=3)).headers["X-Message-Id"] for i in range(10)}
    assert len(ids) == 10
    assert fake.accepted_ids()[:3] == ["b0-0", "b0-1", "b0-2"]
    assert len(fake.accepted_ids()) == 30 and fake.duplicate_ids() == {}
    assert {provider_id for _, provider_id in fake.accepted_messages()} == ids
    assert [r.ids for r in fake.requests(bodies=False)][1] == ("b1-0", "b1-1", "b1-2")
    assert all(r.body is None and r.headers is None for r in fake.requests(bodies=False))


def test_without_bodies_only_ids_are_kept() -> None:
    with FakeSendGrid(keep_bodies=False, id_key="job") as fake:
        body = body_of(make_mail("x", n=2))
        for i, personalization in enumerate(body["personalizations"]):
            personalization["custom_args"] = {"job": f"j{i}"}
        client_for(fake).send(body)
        [record] = fake.accepted()
        assert record.body is None and record.headers is None
        assert fake.accepted_ids() == ["j0", "j1"]


def test_the_exactly_once_checks(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    for uid in ("a", "b", "b"):
        client.send(make_mail(uid))
    assert fake.accepted_id_counts() == {"a": 1, "b": 2}
    assert fake.duplicate_ids() == {"b": 2}
    with pytest.raises(AssertionError, match=r"1 missing \['c'\].*1 duplicated \{'b': 2\}"):
        fake.assert_accepted_once(["a", "b", "c"])
    with pytest.raises(AssertionError, match=r"1 unexpected \['b'\]"):
        fake.assert_accepted_once(["a"])
    with pytest.raises(ValueError, match="not unique"):
        fake.assert_accepted_once(["a", "a"])
    fake.reset()
    client.send(make_mail("a"))
    fake.assert_accepted_once(["a"])


# --------------------------------------------------------------------------------------------
# What the fake checks, and what it leaves to Prism
# --------------------------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_401_with_sendgrid_s_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    with FakeSendGrid(api_key="SG.right") as fake:
        assert client_for(fake, "SG.right").send(make_mail()).status_code == 202
        anonymous = client_for(fake)
        anonymous.client.request_headers.pop("Authorization")
        for client in (client_for(fake, "SG.wrong"), anonymous, SendGridAPIClient(host=fake.url)):
            with pytest.raises(UnauthorizedError) as caught:  # the last sends "Bearer None"
                client.send(make_mail())
            assert caught.value.to_dict == {
                "errors": [
                    {
                        "message": "The provided authorization grant is invalid, expired, or "
                        "revoked",
                        "field": None,
                        "help": None,
                    }
                ]
            }
        assert [r.status for r in fake.rejected()] == [401, 401, 401]
        assert fake.accepted_ids() == ["m-1"]


def test_a_body_that_is_not_json_or_has_no_personalizations_is_400(fake: FakeSendGrid) -> None:
    headers = {"Authorization": "Bearer SG.test", "Content-Type": "application/json"}
    status, raw = post_raw(fake.url, b'{"personalizations": [', headers)
    assert status == 400
    assert json.loads(raw)["errors"][0]["message"].startswith("Bad Request: the request body")
    bodies: list[Any] = [{}, {"personalizations": []}, []]
    for body in bodies:
        status, raw = post_raw(fake.url, json.dumps(body).encode(), headers)
        assert status == 400
    assert json.loads(raw)["errors"][0]["field"] is None  # a JSON array: not an object
    assert [r.status for r in fake.rejected()] == [400] * 4 and fake.accepted() == []


def test_the_fake_leaves_sendgrid_s_rules_to_prism(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    """Bodies SendGrid's spec refuses (see the Prism tests below) are accepted: checking
    them is the contract tests' job, against the official description."""
    body = body_of(make_mail())
    body["categories"] = [f"c{i}" for i in range(11)]
    del body["from"]
    assert client.send(body).status_code == 202


# --------------------------------------------------------------------------------------------
# Fault scripts
# --------------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_the_rate_limit_headers(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(rate_limit(30, limit=600))
    before = time.time()
    with pytest.raises(TooManyRequestsError) as caught:
        client.send(make_mail("m-1"))
    error = caught.value
    assert error.headers["X-RateLimit-Limit"] == "600"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert before + 29 <= int(error.headers["X-RateLimit-Reset"]) <= time.time() + 31
    assert error.to_dict["errors"][0] == {
        "message": "too many requests",
        "field": None,
        "help": None,
    }

    assert client.send(make_mail("m-1")).status_code == 202  # the retry goes through
    [limited] = fake.rejected()
    assert (limited.status, limited.fault, limited.ids) == (429, "rate_limit", ("m-1",))
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
    assert caught.value.to_dict["errors"][0]["message"] == "internal server error"
    assert fake.stats().by_status == {status: 1}
    assert fake.accepted() == []
    with pytest.raises(ValueError, match="5xx"):
        server_error(404)


def test_bad_request_carries_sendgrid_s_error_body(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
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
    assert fake.rejected()[0].fault == "bad_request"


def test_enqueued_faults_apply_in_order_then_mail_is_accepted(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.enqueue(rate_limit(1), server_error(), bad_request("no"))
    assert fake.stats().pending_rules == 3
    outcomes: list[str] = []
    for _ in range(4):
        try:
            outcomes.append(str(client.send(make_mail("m-1")).status_code))
        except HTTPError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["TooManyRequestsError", "InternalServerError", "BadRequestsError", "202"]
    assert fake.stats().pending_rules == 0
    assert [r.status for r in fake.rejected()] == [429, 500, 400]
    fake.assert_accepted_once(["m-1"])


def test_rules_match_their_message_id_for_their_number_of_times(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(server_error(), times=2, message_id="m-2")
    assert client.send(make_mail("m-1")).status_code == 202
    for _ in range(2):
        with pytest.raises(InternalServerError):
            client.send(make_mail("m-2"))
    assert client.send(make_mail("m-2")).status_code == 202
    assert fake.accepted_ids() == ["m-1", "m-2"]
    assert [r.ids for r in fake.rejected()] == [("m-2",), ("m-2",)]


def test_an_unlimited_rule_lasts_until_reset(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
    fake.script(server_error(502), times=None)
    for _ in range(3):
        with pytest.raises(HTTPError):
            client.send(make_mail())
    assert fake.stats().pending_rules == 1
    fake.reset()
    assert fake.stats().requests == 0 and fake.stats().pending_rules == 0
    assert client.send(make_mail()).status_code == 202


def test_delay_slows_the_answer_then_accepts_or_applies_a_fault(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.enqueue(delay(0.3), delay(0.2, then=rate_limit(5)))
    started = time.monotonic()
    assert client.send(make_mail()).status_code == 202
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    with pytest.raises(TooManyRequestsError):
        client.send(make_mail())
    assert time.monotonic() - started >= 0.2
    assert [r.fault for r in fake.requests()] == ["delay", "rate_limit"]
    with pytest.raises(ValueError, match="add the seconds"):
        delay(1, then=delay(1))


def test_a_request_timed_out_by_the_client_is_accepted_all_the_same(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    """SendGrid's no-idempotency trap: the client gives up, the mail is queued anyway."""
    fake.enqueue(delay(0.6))
    mail = make_mail("m-timeout")
    with pytest.raises(TRANSPORT_ERRORS):
        client.client.mail.send.post(request_body=mail.get(), timeout=0.2)
    fake.wait_for_accepted(1, timeout=5)
    client.send(mail)  # a naive retry
    assert fake.duplicate_ids() == {"m-timeout": 2}


def test_a_dropped_connection_gets_no_answer_at_all(fake: FakeSendGrid) -> None:
    fake.enqueue(drop_connection())
    conn = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
    body = json.dumps(body_of(make_mail("m-1"))).encode()
    conn.request("POST", "/v3/mail/send", body, {"Authorization": "Bearer SG.test"})
    with pytest.raises(http.client.RemoteDisconnected):  # not even a status line
        conn.getresponse()
    conn.close()
    [record] = fake.rejected()
    assert (record.status, record.outcome, record.answered, record.ids) == (
        0,
        "dropped",
        False,
        ("m-1",),
    )
    assert fake.stats().dropped == 1 and fake.accepted() == []


def test_a_drop_after_acceptance_makes_a_naive_retry_deliver_twice(
    fake: FakeSendGrid, client: SendGridAPIClient
) -> None:
    fake.script(drop_connection(after_accept=True), message_id="m-2")
    client.send(make_mail("m-1"))
    with pytest.raises(TRANSPORT_ERRORS):
        client.send(make_mail("m-2"))
    client.send(make_mail("m-2"))
    assert fake.accepted_id_counts() == {"m-1": 1, "m-2": 2}
    assert [r.ids for r in fake.accepted() if not r.answered] == [("m-2",)]
    assert fake.rejected() == []


def test_the_window_rate_limit(fake: FakeSendGrid, client: SendGridAPIClient) -> None:
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
    fake.set_latency(0.2)

    def send(i: int) -> int:
        return int(client_for(fake).send(make_mail(f"lat{i}")).status_code)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(send, range(20)))
    elapsed = time.monotonic() - started
    assert statuses == [202] * 20
    assert 0.2 <= elapsed < 2.0, elapsed  # 20 requests in parallel, not 4 s in series
    assert fake.stats().max_in_flight > 1 and fake.stats().latency == 0.2
    fake.assert_accepted_once(f"lat{i}" for i in range(20))


def test_concurrent_requests_consume_a_rule_exactly(fake: FakeSendGrid) -> None:
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


def test_stopping_does_not_wait_for_delayed_answers() -> None:
    fake = FakeSendGrid().start()
    fake.script(delay(30), times=None)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client_for(fake).send(make_mail())
        except TRANSPORT_ERRORS as exc:  # what a lost connection looks like to the client
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    fake.wait_for(lambda stats: stats.in_flight == 1, 5)
    started = time.monotonic()
    fake.stop()
    sender.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not sender.is_alive() and len(errors) == 1
    assert (fake.stats().accepted, fake.stats().in_flight) == (0, 0)


# --------------------------------------------------------------------------------------------
# In its own process
# --------------------------------------------------------------------------------------------


def test_the_process_fake_records_and_applies_scripts_like_the_thread_fake() -> None:
    with FakeSendGridProcess(api_key="SG.test") as fake:
        assert fake.pid is not None
        client = client_for(fake)
        response = client.send(make_mail("p-1"))
        fake.enqueue(rate_limit(10))
        fake.script(server_error(503), message_id="p-2")
        fake.script(drop_connection(), message_id="p-3")
        with pytest.raises(TooManyRequestsError) as caught:
            client.send(make_mail("p-2"))
        assert int(caught.value.headers["X-RateLimit-Reset"]) >= time.time() + 8
        with pytest.raises(ServiceUnavailableError):
            client.send(make_mail("p-2"))
        with pytest.raises(TRANSPORT_ERRORS):
            client.send(make_mail("p-3"))
        client.send(make_mail("p-2"))

        stats = fake.stats()
        assert (stats.accepted, stats.rejected, stats.dropped) == (2, 3, 1)
        assert stats.by_status == {202: 2, 429: 1, 503: 1, 0: 1}
        assert fake.accepted_messages()[0] == ("p-1", response.headers["X-Message-Id"])
        assert fake.accepted()[0].body == make_mail("p-1").get()
        fake.assert_accepted_once(["p-1", "p-2"])

        fake.set_latency(0.15)
        started = time.monotonic()
        client.send(make_mail("p-4"))
        assert time.monotonic() - started >= 0.15
        fake.reset()
        assert fake.stats().requests == 0 and fake.accepted_ids() == []
        with pytest.raises(ValueError, match=r"400.*latency must be >= 0"):
            fake.set_latency(-1)
    assert fake.pid is None


KILLED_CLIENT = """
import sys
from sendgrid import SendGridAPIClient
body = {"personalizations": [{"to": [{"email": "k@example.com"}],
        "custom_args": {"ciclovita_message_id": "killed"}}],
        "from": {"email": "news@ciclovita.example"}, "subject": "Hola",
        "content": [{"type": "text/plain", "value": "Hola"}]}
SendGridAPIClient(api_key="SG.test", host=sys.argv[1]).send(body)
"""


def test_the_process_fake_outlives_a_client_killed_mid_request() -> None:
    with FakeSendGridProcess(api_key="SG.test") as fake:
        fake.enqueue(delay(1.0))
        client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, fake.url])
        fake.wait_for(lambda stats: stats.in_flight == 1, 20)
        client.send_signal(signal.SIGKILL)
        assert client.wait(timeout=10) == -signal.SIGKILL
        fake.wait_for_accepted(1, timeout=5)  # SendGrid keeps what it was given
        assert client_for(fake).send(make_mail("after")).status_code == 202
        fake.assert_accepted_once(["killed", "after"])


def test_the_command_line_writes_the_port_once_serving(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    command = [sys.executable, "-m", "ciclovita_testing.fake_sendgrid", "--port", "0"]
    command += ["--port-file", str(port_file), "--api-key", "SG.cli", "--latency", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    proc = subprocess.Popen(command, cwd=REPOSITORY, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        assert httpx.post(f"{url}/__fake/health", trust_env=False).json() == {"ok": True}
        assert httpx.post(f"{url}/__fake/nothing", trust_env=False).status_code == 404
        with pytest.raises(UnauthorizedError):
            SendGridAPIClient(api_key="SG.other", host=url).send(make_mail())
        assert SendGridAPIClient(api_key="SG.cli", host=url).send(make_mail()).status_code == 202
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.stderr is not None and b"fake SendGrid on" in proc.stderr.read()


@pytest.mark.slow  # a throughput measure, not a check of behaviour
def test_throughput_smoke() -> None:
    total, threads = 2000, 16
    with FakeSendGridProcess(keep_bodies=False) as fake:

        def worker(k: int) -> None:
            client = client_for(fake)
            for i in range(k, total, threads):
                client.send(make_mail(f"t{i}"))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(worker, range(threads)))
        elapsed = time.perf_counter() - started
        print(
            f"\nfake SendGrid (process): {total} requests from {threads} threads of the official "
            f"client in {elapsed:.2f} s = {total / elapsed:.0f} requests/s"
        )
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
    response = client_for(prism).send(make_mail("m-1", n=50))
    assert response.status_code == 202
    assert sl_violations(response) is None


def _personalizations(body: dict[str, Any], n: int) -> None:
    body["personalizations"] = [
        {"to": [{"email": f"u{i}@example.com"}], "custom_args": {DEFAULT_ID_KEY: f"p{i}"}}
        for i in range(n)
    ]


# What SendGrid's description refuses, which the fake accepts: Prism is the one to ask.
SPEC_VIOLATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "1001 personalizations": (
        lambda b: _personalizations(b, 1001),
        "personalizations must NOT have more than 1000 items",
    ),
    "no to": (lambda b: b["personalizations"][0].pop("to"), "must have required property 'to'"),
    "bad address": (
        lambda b: b["personalizations"][0]["to"][0].update(email="not-an-address"),
        'must match format "email"',
    ),
    "no from": (lambda b: b.pop("from"), "must have required property 'from'"),
    "empty content": (
        lambda b: b.update(content=[{"type": "text/plain", "value": ""}]),
        "must NOT have fewer than 1 characters",
    ),
    "11 categories": (
        lambda b: b.update(categories=[f"c{i}" for i in range(11)]),
        "categories must NOT have more than 10 items",
    ),
    "category over 255 characters": (
        lambda b: b.update(categories=["x" * 256]),
        "must NOT have more than 255 characters",
    ),
}


@pytest.mark.parametrize("case", list(SPEC_VIOLATIONS))
def test_prism_refuses_what_breaks_the_spec(prism: PrismServer, case: str) -> None:
    mutate, message = SPEC_VIOLATIONS[case]
    body = body_of(make_mail())
    mutate(body)
    with pytest.raises(BadRequestsError) as caught:
        client_for(prism).send(body)
    violations = sl_violation_messages(caught.value)
    assert any(message in v for v in violations), violations


def test_prism_wants_a_bearer_token(prism: PrismServer) -> None:
    client = client_for(prism)
    client.client.request_headers.pop("Authorization")
    with pytest.raises(UnauthorizedError) as caught:
        client.send(make_mail())
    assert sl_violation_messages(caught.value) == ["Invalid security scheme used"]


def test_prism_or_skip_skips_without_the_spec(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tsg_mail_v3.json"
    with pytest.raises(pytest.skip.Exception, match="absent"), prism_or_skip(missing):
        pass


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_prism_or_skip_without_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    import tests.support.prism as prism_module

    spec = tmp_path / "tsg_mail_v3.json"
    spec.write_text("{}")
    monkeypatch.setattr(prism_module, "PRISM_BIN", tmp_path / "no-prism")
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="node and npm not found"), prism_or_skip(spec):
        pass
