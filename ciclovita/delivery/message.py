"""What travels from the outbox to a sender, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeStatus = Literal["sent", "failed", "retry", "ambiguous"]


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered message for one recipient.

    ``uid`` is the outbox row's stable id: senders put it where the provider echoes it back
    (SendGrid: the personalization's ``custom_args``), so every later event names the row.
    ``prepared`` is the sender's request for it, when built ahead (``Sender.prepare``, in a
    render worker); the request then holds the content and ``html`` and ``text`` are empty.
    """

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
    variant: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
    custom_args: dict[str, str] = field(default_factory=dict)
    asm_group_id: int | None = None
    prepared: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SendOutcome:
    """What became of one message at the provider.

    * ``sent``: accepted; ``provider_message_id`` identifies it there (None when the
      provider did not say).
    * ``failed``: permanently refused (``error`` says why, in the provider's words); never
      retried.
    * ``retry``: certainly not accepted, safe to send again after ``retry_after`` seconds.
    * ``ambiguous``: the provider may or may not have it (the request left and no answer
      came back); never re-sent blindly, reconciled later from the provider's events.

    ``stop_sending`` says the provider refuses every request, not just this one (SendGrid
    answering 401 to our API key): the dispatcher stops the run and leaves the rest due.
    """

    uid: str
    status: OutcomeStatus
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    stop_sending: bool = False
