"""The console sender: prints each message's headers and text part (for trying things out)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from ciclovita.delivery.message import OutgoingEmail, SendOutcome
from ciclovita.delivery.senders.base import register_sender


class ConsoleSender:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
        for email in emails:
            self.stream.write(
                f"--- message {email.uid} ({email.campaign})\n"
                f"From: {email.from_name} <{email.from_email}>\n"
                f"To: {email.to_name} <{email.to_email}>\n"
                f"Subject: {email.subject}\n\n{email.text.strip()}\n\n"
            )
        self.stream.flush()
        return [SendOutcome(e.uid, "sent", provider_message_id=f"console:{e.uid}") for e in emails]

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None


register_sender("console", lambda settings: ConsoleSender())
