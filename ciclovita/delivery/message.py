"""What travels from the outbox to a sender, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OutcomeStatus = Literal["sent", "failed", "retry", "ambiguous"]


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered message for one recipient."""

    uid: str
    campaign: str
    kind: str
    to_email: str
    to_name: str
    from_email: str
    from_name: str
    subject: str
    html: str
    text: str
    reply_to: str | None = None
    stage: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
    asm_group_id: int | None = None


@dataclass(frozen=True)
class SendOutcome:
    """What became of one message at the provider.

    * ``sent``: accepted; ``provider_message_id`` identifies it there.
    * ``failed``: permanently refused (``error`` says why); never retried.
    * ``retry``: not accepted, safe to try again after ``retry_after`` seconds.
    * ``ambiguous``: the provider may or may not have it (timeout after the request left);
      never re-sent blindly, reconciled later from the provider's events.
    """

    uid: str
    status: OutcomeStatus
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
