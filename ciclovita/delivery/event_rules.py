"""What each SendGrid event means for the outbox: delivery status ranks and suppressions.

One table of facts, read when events are applied (``ciclovita.delivery.event_effects``):

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
(or still ``sending``) by a lost answer becomes ``sent`` (``outbox.settle_by_events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import case, literal

from ciclovita.vocabulary import DeliveryStatus, ProviderEvent, SuppressionReason

STATUS_RANK: Final[Mapping[DeliveryStatus, int]] = {
    DeliveryStatus.PROCESSED: 10,
    DeliveryStatus.DEFERRED: 20,
    DeliveryStatus.DELIVERED: 30,
    DeliveryStatus.OPEN: 40,
    DeliveryStatus.CLICK: 50,
    DeliveryStatus.BOUNCE: 60,
    DeliveryStatus.DROPPED: 60,
}
"""Rank of each delivery status: higher ranks replace lower ones, never the reverse."""

GROUP_EVENTS: Final = frozenset({ProviderEvent.GROUP_UNSUBSCRIBE, ProviderEvent.GROUP_RESUBSCRIBE})
DROP_REASONS_SUPPRESSED: Final[Mapping[str, SuppressionReason]] = {
    "bounced address": SuppressionReason.BOUNCE,
    "spam reporting address": SuppressionReason.SPAM_REPORT,
    "unsubscribed address": SuppressionReason.UNSUBSCRIBE,
}
"""SendGrid drop reasons that mean "already on SendGrid's suppression list", and ours."""
_SUPPRESSING: Final[Mapping[str, SuppressionReason]] = {
    ProviderEvent.SPAM_REPORT: SuppressionReason.SPAM_REPORT,
    ProviderEvent.UNSUBSCRIBE: SuppressionReason.UNSUBSCRIBE,
}
"""Events that suppress the address whatever they carry."""


def delivery_status(event: Mapping[str, Any]) -> DeliveryStatus | None:
    """The delivery status an event stands for (None: it does not change the status)."""
    name = event.get("event")
    if name not in STATUS_RANK:
        return None
    if name == ProviderEvent.OPEN and event.get("sg_machine_open") is True:
        return None
    return DeliveryStatus(str(name))


def suppression_reason(event: Mapping[str, Any]) -> SuppressionReason | None:
    """The suppression an event adds (None: none). Group (un)subscribes are decided apart,
    by the latest of them per address (``GROUP_EVENTS``)."""
    name = event.get("event")
    if name == ProviderEvent.BOUNCE:
        blocked = str(event.get("type", "")).lower() == "blocked"
        return None if blocked else SuppressionReason.BOUNCE
    if name == ProviderEvent.DROPPED:
        return DROP_REASONS_SUPPRESSED.get(str(event.get("reason", "")).strip().lower())
    return _SUPPRESSING.get(name) if isinstance(name, str) else None


def rank_of(column: Any) -> Any:
    """SQL: the rank of a delivery-status column (0 when NULL or unknown)."""
    return case(
        *((column == status, literal(rank)) for status, rank in STATUS_RANK.items()),
        else_=literal(0),
    )
