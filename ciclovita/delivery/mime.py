"""Real MIME messages: multipart/alternative (text, then HTML) with the right headers."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from ciclovita.rendering.outgoing import OutgoingEmail


def _address(email: str, name: str) -> Address:
    local, _, domain = email.partition("@")
    return Address(display_name=name, username=local, domain=domain)


def build_mime(email: OutgoingEmail) -> EmailMessage:
    """The message as an RFC 5322 document with a text and an HTML alternative."""
    message = EmailMessage(policy=SMTP)
    message["From"] = _address(email.from_email, email.from_name)
    message["To"] = _address(email.to_email, email.to_name)
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = email.from_email.partition("@")[2] or "localhost"
    message["Message-ID"] = f"<{email.uid}@{domain}>"
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["X-Ciclovita-Message-Id"] = email.uid
    message["X-Ciclovita-Campaign"] = email.campaign
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.text, subtype="plain", charset="utf-8")
    message.add_alternative(email.html, subtype="html", charset="utf-8")
    return message


# Headers are folded at RFC 5322's hard limit, not 78: a long List-Unsubscribe URL must stay a
# plain <URL>, never an encoded word. Bodies were already encoded in 76-character lines.
WIRE_POLICY = SMTP.clone(max_line_length=998)


def mime_bytes(email: OutgoingEmail) -> bytes:
    """The message as bytes ready for a .eml file or an SMTP DATA command."""
    return build_mime(email).as_bytes(policy=WIRE_POLICY)
