"""The file sender: one ``.eml`` file per message in the outbox directory.

The embedded default for a first run: nothing leaves the machine. Files are written
atomically and named by the message uid, so writing the same message again replaces the
same file and can never make a second copy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ciclovita.delivery.message import OutgoingEmail, SendOutcome
from ciclovita.delivery.mime import mime_bytes
from ciclovita.delivery.senders.base import register_sender


class FileSender:
    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, campaign: str, uid: str) -> Path:
        return self.directory / campaign / f"{uid}.eml"

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendOutcome]:
        outcomes = []
        for email in emails:
            target = self.path_of(email.campaign, email.uid)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                data = mime_bytes(email)
                handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                Path(temporary).replace(target)
            except OSError as exc:
                outcomes.append(SendOutcome(email.uid, "retry", error=str(exc), retry_after=60))
                continue
            outcomes.append(
                SendOutcome(email.uid, "sent", provider_message_id=f"file:{target.name}")
            )
        return outcomes

    def reconcile(self, uids: Sequence[str]) -> dict[str, str]:
        wanted = set(uids)
        found: dict[str, str] = {}
        for path in self.directory.glob("*/*.eml"):
            if path.stem in wanted:
                found[path.stem] = f"file:{path.name}"
        return found

    def close(self) -> None:
        return None


register_sender("file", lambda settings: FileSender(settings.outbox_dir))
