"""What each SendGrid event means for the outbox: delivery status ranks and suppressions.

One table of facts, read by the webhook ingestion (``ciclovita.web.webhook``):

==================  =========================  ========================================
event               ``messages.delivery_status``  suppression (``suppressions.reason``)
==================  =========================  ========================================
processed           processed (rank 10)        —
deferred            deferred (rank 20)         —
delivered           delivered (rank 30)        —
open                open (rank 40) ¹           —
click               click (rank 50)            —
bounce              bounce (rank 60)           bounce (not for ``type: blocked``) ²
dropped             dropped (rank 60)          mirrored when SendGrid dropped the mail
                                               because it already suppresses the address ³
spamreport          —                          spamreport
unsubscribe         —                          unsubscribe
group_unsubscribe   —                          group_unsubscribe (until a later
                                               group_resubscribe)
group_resubscribe   —                          lifts a group_unsubscribe suppression
anything else       — (stored only)            —
==================  =========================  ========================================

The delivery status never goes backwards: an event only replaces the status when its rank is
strictly higher, so a late ``processed`` after ``delivered``, or a ``deferred`` retry after
``delivered``, changes nothing, and an ``open`` that overtook its ``delivered`` is not undone
by it. Bounces and drops rank highest: an asynchronous bounce after ``delivered`` is the truth
about the address.

¹ Opens that SendGrid flags as machine opens (``sg_machine_open: true``: Apple Mail Privacy
  Protection pre-loading images) are stored but do not make a message ``open``: no person
  opened it, and we do not report what did not happen.
² ``type: blocked`` is a temporary refusal by the receiving server; SendGrid itself does not
  suppress the address for it, and neither do we.
³ ``reason`` "Bounced Address", "Spam Reporting Address" or "Unsubscribed Address".

Any provider event for a message proves SendGrid accepted it: a message left ``ambiguous``
(or still ``sending``) by a lost answer becomes ``sent`` (``reconciles_send``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import case, literal

STATUS_RANK: Final[Mapping[str, int]] = {
    "processed": 10,
    "deferred": 20,
    "delivered": 30,
    "open": 40,
    "click": 50,
    "bounce": 60,
    "dropped": 60,
}
"""Rank of each delivery status: higher ranks replace lower ones, never the reverse."""

GROUP_EVENTS: Final = frozenset({"group_unsubscribe", "group_resubscribe"})
DROP_REASONS_SUPPRESSED: Final[Mapping[str, str]] = {
    "bounced address": "bounce",
    "spam reporting address": "spamreport",
    "unsubscribed address": "unsubscribe",
}
"""SendGrid drop reasons that mean "already on SendGrid's suppression list", and ours."""

RECONCILABLE_STATUSES: Final = ("ambiguous", "sending")
"""Outbox states that a provider event turns into ``sent``."""


def delivery_status(event: Mapping[str, Any]) -> str | None:
    """The delivery status an event stands for (None: it does not change the status)."""
    name = event.get("event")
    if name not in STATUS_RANK:
        return None
    if name == "open" and event.get("sg_machine_open") is True:
        return None
    return str(name)


def suppression_reason(event: Mapping[str, Any]) -> str | None:
    """The suppression an event adds (None: none). Group (un)subscribes are decided apart,
    by the latest of them per address (``GROUP_EVENTS``)."""
    name = event.get("event")
    if name == "bounce":
        return None if str(event.get("type", "")).lower() == "blocked" else "bounce"
    if name in ("spamreport", "unsubscribe"):
        return str(name)
    if name == "dropped":
        return DROP_REASONS_SUPPRESSED.get(str(event.get("reason", "")).strip().lower())
    return None


def rank_of(column: Any) -> Any:
    """SQL: the rank of a delivery-status column (0 when NULL or unknown)."""
    return case(
        *((column == status, literal(rank)) for status, rank in STATUS_RANK.items()),
        else_=literal(0),
    )
