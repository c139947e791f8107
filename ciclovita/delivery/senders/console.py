"""The console sender: prints each message's headers and text part (for trying things out)."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.senders.base import InlineSender, register_sender
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.vocabulary import SendResult


class ConsoleSender(InlineSender):
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send_one(self, email: OutgoingEmail) -> SendOutcome:
        with self._lock:
            self.stream.write(
                f"--- message {email.uid} ({email.campaign})\n"
                f"From: {email.from_name} <{email.from_email}>\n"
                f"To: {email.to_name} <{email.to_email}>\n"
                f"Subject: {email.subject}\n\n{email.text.strip()}\n\n"
            )
            self.stream.flush()
        return SendOutcome(email.uid, SendResult.SENT, provider_message_id=f"console:{email.uid}")


register_sender("console", lambda settings: ConsoleSender())
