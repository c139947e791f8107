"""The file sender: one ``.eml`` file per message in the outbox directory.

The embedded default for a first run: nothing leaves the machine. Files are written
atomically and named by the message uid, so writing the same message again replaces the
same file and can never make a second copy; ``reconcile`` finds a message by its file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.mime import mime_bytes
from ciclovita.delivery.senders.base import InlineSender, register_sender
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.vocabulary import SendResult

RETRY_AFTER_SECONDS = 60.0


class FileSender(InlineSender):
    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, campaign: str, uid: str) -> Path:
        return self.directory / campaign / f"{uid}.eml"

    def send_one(self, email: OutgoingEmail) -> SendOutcome:
        target = self.path_of(email.campaign, email.uid)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            data = mime_bytes(email)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            Path(temporary).replace(target)
        except OSError as exc:
            return SendOutcome(
                email.uid,
                SendResult.RETRY,
                error=f"cannot write {target}: {exc}",
                retry_after=RETRY_AFTER_SECONDS,
            )
        return SendOutcome(email.uid, SendResult.SENT, provider_message_id=f"file:{target.name}")

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        wanted = set(uids)
        found: dict[str, str] = {}
        for path in self.directory.glob("*/*.eml"):
            if path.stem in wanted:
                found[path.stem] = f"file:{path.name}"
        return found


register_sender("file", lambda settings: FileSender(settings.outbox_dir))
