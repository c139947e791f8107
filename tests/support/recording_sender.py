"""An in-memory ``Sender`` that records what it is asked to send, for outbox tests.

Like dlt's recording sinks (STYLE.md point 9): no HTTP, no provider, just the calls the
dispatcher made and the outcome each got. By default every message is accepted with a
provider id ``rec-<n>``; a test tells it which messages fail, and how::

    sender = RecordingSender()
    sender.fail(uid_a, "retry", error="503: try later")      # once; then accepted
    sender.fail(uid_b, "failed", error="400: bad address")    # refused for good
    sender.fail(uid_c, "ambiguous", accepted=True)            # taken, answer lost
    sender.refuse_everything("401: bad key")                  # the provider stops us
    deliver(engine, builder, sender, as_of=AS_OF)
    sender.assert_accepted_once(uids)

``accepted`` marks what the provider has, whatever the answer said: an ambiguous outcome
with ``accepted=True`` is a message the provider took (its events will settle it), without
it one the provider never saw. ``reconcile`` answers ``{}``, as SendGrid's sender does:
only provider events settle ambiguous messages. Thread safe (concurrent deliveries may
share one); ``delay`` makes each send take that long, to interleave concurrent deliveries.
The SendGrid-specific behaviour (requests, headers, status codes, backoff) is tested over
HTTP against the fake SendGrid in ``ciclovita_testing.fake_sendgrid``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from ciclovita.delivery.message import SendOutcome
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.vocabulary import SendResult
from ciclovita_testing.exactly_once import ExactlyOnceChecks

Failure = Literal["retry", "failed", "ambiguous"]


@dataclass(frozen=True)
class RecordedSend:
    """One ``submit``: the message, the outcome handed back and, when the provider has the
    message (even if the answer said otherwise), the provider's id of it."""

    email: OutgoingEmail
    outcome: SendOutcome
    provider_message_id: str | None

    @property
    def accepted(self) -> bool:
        return self.provider_message_id is not None


@dataclass
class _Script:
    outcome: SendOutcome
    accepted: bool
    times: int | None


class RecordingSender(ExactlyOnceChecks):
    """A ``Sender`` that keeps every message it is given and answers as it was told."""

    name = "recording"

    def __init__(self, *, concurrency: int = 8, delay: float = 0.0) -> None:
        self.concurrency = concurrency
        self.delay = delay
        self.sends: list[RecordedSend] = []
        self.closed = False
        self._scripts: dict[str, _Script] = {}
        self._refusal: str | None = None
        self._lock = threading.Lock()

    # -- what to answer -----------------------------------------------------------------------

    def fail(
        self,
        uid: str,
        how: Failure,
        *,
        times: int | None = 1,
        error: str | None = None,
        accepted: bool = False,
        retry_after: float = 60.0,
    ) -> None:
        """Answer ``how`` to the next ``times`` sends of ``uid`` (``None``: every one)."""
        if accepted and how != "ambiguous":
            raise ValueError("only an ambiguous outcome can hide an accepted message")
        outcome = SendOutcome(
            uid,
            SendResult(how),
            error=error or f"{how} (scripted)",
            retry_after=retry_after if how == "retry" else None,
        )
        with self._lock:
            self._scripts[uid] = _Script(outcome, accepted, times)

    def refuse_everything(self, error: str = "401: the API key was refused") -> None:
        """From now on every send comes back ``retry`` with ``stop_sending`` (a bad API key)."""
        with self._lock:
            self._refusal = error

    # -- the Sender protocol ------------------------------------------------------------------

    def submit(self, email: OutgoingEmail) -> Future[SendOutcome]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            provider_id = f"rec-{len(self.sends)}"
            outcome, accepted = self._answer(email.uid, provider_id)
            self.sends.append(RecordedSend(email, outcome, provider_id if accepted else None))
        future: Future[SendOutcome] = Future()
        future.set_result(outcome)
        return future

    def _answer(self, uid: str, provider_id: str) -> tuple[SendOutcome, bool]:
        if self._refusal is not None:
            return SendOutcome(uid, SendResult.RETRY, error=self._refusal, stop_sending=True), False
        script = self._scripts.get(uid)
        if script is None:
            return SendOutcome(uid, SendResult.SENT, provider_message_id=provider_id), True
        if script.times is not None:
            script.times -= 1
            if script.times == 0:
                del self._scripts[uid]
        return script.outcome, script.accepted

    def prepare(self, email: OutgoingEmail) -> OutgoingEmail:
        return email

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self.closed = True

    # -- what was sent ------------------------------------------------------------------------

    def accepted(self) -> list[RecordedSend]:
        """The sends the provider has (answered ``sent``, or ambiguous but taken)."""
        with self._lock:
            return [send for send in self.sends if send.accepted]

    def accepted_ids(self) -> list[str]:
        return [send.email.uid for send in self.accepted()]

    def accepted_messages(self) -> list[tuple[str, str | None]]:
        """(our id, the provider's id) of each accepted message, as the fake SendGrid's."""
        return [(send.email.uid, send.provider_message_id) for send in self.accepted()]

    def sent_uids(self) -> list[str]:
        """Every uid given to ``submit``, in order, whatever became of it."""
        with self._lock:
            return [send.email.uid for send in self.sends]
