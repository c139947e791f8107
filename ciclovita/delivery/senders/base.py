"""The sender interface and the registry of senders (a name may be registered once).

A sender takes a batch of rendered messages and answers one ``SendOutcome`` per message; it
never raises for a single message's failure. ``reconcile`` tells, for messages whose fate is
unknown after a crash, which ones the provider has (when the sender can know).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ciclovita.delivery.message import OutgoingEmail, SendOutcome
from ciclovita.settings import Settings


@runtime_checkable
class Sender(Protocol):
    name: str

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
        """Send each message once; one outcome per message, in the same order."""
        ...

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        """Provider ids of the given messages the provider is known to have."""
        ...

    def close(self) -> None: ...


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
