"""The sender interface and the registry of senders (a name may be registered once).

A sender takes one rendered message at a time with ``submit`` and answers a future of its
``SendOutcome``; the future never raises for the message's own failure (a refusal, a timeout,
a network error are outcomes). ``concurrency`` says how many messages it works on at once, so
the dispatcher keeps that many (and a few more) in flight. ``prepare`` builds a message's
request ahead of time, where it is rendered (a render worker process), so that the
delivering process only sends; it raises ``PermanentDeliveryError`` for a message the
provider would refuse. ``reconcile`` tells, for messages whose fate is unknown after a
crash, which ones the provider has, when the sender can know.

Senders that finish a message on the spot (file, console) derive from ``InlineSender``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from ciclovita.delivery.message import SendOutcome
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.settings import Settings


@runtime_checkable
class Sender(Protocol):
    name: str
    concurrency: int

    def submit(self, email: OutgoingEmail) -> Future[SendOutcome]:
        """Start sending one message; the future's result is its outcome."""
        ...

    def prepare(self, email: OutgoingEmail) -> OutgoingEmail:
        """The message with its request built ahead (or as it is)."""
        ...

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        """Provider ids of the given messages the provider is known to have."""
        ...

    def close(self) -> None: ...


def send_all(sender: Sender, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
    """Send every message (concurrently, as the sender allows); outcomes in the same order."""
    futures = [sender.submit(email) for email in emails]
    return [future.result() for future in futures]


class InlineSender:
    """Base of senders that deliver a message within ``submit`` (no pool, no waiting)."""

    name = "inline"
    concurrency = 1

    def send_one(self, email: OutgoingEmail) -> SendOutcome:
        raise NotImplementedError

    def submit(self, email: OutgoingEmail) -> Future[SendOutcome]:
        future: Future[SendOutcome] = Future()
        future.set_result(self.send_one(email))
        return future

    def prepare(self, email: OutgoingEmail) -> OutgoingEmail:
        return email

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None


SenderFactory = Callable[[Settings], Sender]
_REGISTRY: dict[str, SenderFactory] = {}


def register_sender(name: str, factory: SenderFactory) -> None:
    """Add a sender; a second sender under the same name is refused."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a sender named {name!r} is already registered")
    _REGISTRY[name] = factory


def sender_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_sender(settings: Settings) -> Sender:
    """The sender named by ``CICLOVITA_SENDER``."""
    _load_builtin()
    return _REGISTRY[settings.sender](settings)


def _load_builtin() -> None:
    from ciclovita.delivery.senders import console, file, sendgrid  # noqa: F401
