"""A fake SendGrid ``/v3/mail/send`` for tests and benchmarks, over real HTTP.

The official client (or ciclovita's ``SendGridSender``) is pointed at it::

    with FakeSendGrid(api_key="SG.test") as fake:
        fake.script(server_error(503), message_id="m-2")   # m-2's first request fails
        SendGridSender("SG.test", host=fake.url) ...
        fake.assert_accepted_once(["m-1", "m-2"])

It does what Prism, serving SendGrid's OpenAPI description in the contract tests, cannot:
it records what it accepted, with our message id of each personalization (exactly-once
checks), and answers with scripted faults (429 with rate-limit headers, 5xx, 400, slow
answers, connections dropped before or after accepting, 401 for a wrong key). It checks
requests only as far as a fake must (a bearer token, a JSON body with personalizations):
whether a body is valid SendGrid is Prism's question.

* :mod:`.faults`: the fault scripts;
* :mod:`.app`: the Starlette app and the recorder;
* :mod:`.server`: :class:`FakeSendGrid` (a thread) and :class:`FakeSendGridProcess` (a
  process of its own, ``python -m ciclovita_testing.fake_sendgrid``).
"""

from ciclovita_testing.fake_sendgrid.app import (
    DEFAULT_ID_KEY,
    MAIL_SEND_PATH,
    FakeStats,
    RecordedRequest,
    Recorder,
    create_app,
)
from ciclovita_testing.fake_sendgrid.faults import (
    Fault,
    Rule,
    bad_request,
    delay,
    drop_connection,
    rate_limit,
    server_error,
)
from ciclovita_testing.fake_sendgrid.server import (
    FakeSendGrid,
    FakeSendGridProcess,
    SendGridDouble,
)

__all__ = [
    "DEFAULT_ID_KEY",
    "MAIL_SEND_PATH",
    "FakeSendGrid",
    "FakeSendGridProcess",
    "FakeStats",
    "Fault",
    "RecordedRequest",
    "Recorder",
    "Rule",
    "SendGridDouble",
    "bad_request",
    "create_app",
    "delay",
    "drop_connection",
    "rate_limit",
    "server_error",
]
