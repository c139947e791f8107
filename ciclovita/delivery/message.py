"""What a sender answers for one message: its ``SendOutcome``.

What travels to a sender is the rendered, addressed ``OutgoingEmail``
(``ciclovita.rendering.outgoing``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ciclovita.vocabulary import SendResult


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
    status: SendResult
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    stop_sending: bool = False
