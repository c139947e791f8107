"""What rendering hands to a sender: one rendered, addressed ``OutgoingEmail``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ciclovita.vocabulary import MessageKind


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
    kind: MessageKind
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
