"""The domain's closed vocabularies: every status, reason, topic and default, said once.

Code compares against these members, never against string literals; the database's CHECK
constraints are built from them (``check_in``), and the campaign language's JSON Schema lists
them. Each member *is* its string (``StrEnum``), so rows, JSON and YAML hold plain text.

The outbox's life cycle (``ciclovita.delivery.outbox`` draws the state machine)::

    planned → claimed → sending → sent
                     ↘ skipped (with a SkipReason) · failed · ambiguous (fate unknown)

Lifecycle stages and RFM segment names live with their rules in ``ciclovita.lifecycle``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final


class MessageStatus(StrEnum):
    """Where an outbox row is in its life."""

    PLANNED = "planned"
    """Due now, or held until the send window opens (``due_at``)."""
    CLAIMED = "claimed"
    """Taken by a delivery worker (a lease), not yet handed to the provider."""
    SENDING = "sending"
    """Committed before the provider call: never sent again blindly."""
    SENT = "sent"
    SKIPPED = "skipped"
    """Not sent, on purpose: ``skip_reason`` says why. Skipped is not failed."""
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    """The provider may or may not have it: held until its events settle it."""


ACTIVE_STATUSES: Final = frozenset(
    {
        MessageStatus.PLANNED,
        MessageStatus.CLAIMED,
        MessageStatus.SENDING,
        MessageStatus.SENT,
        MessageStatus.AMBIGUOUS,
    }
)
"""Statuses of a message that went out or may still go out: they count for caps and resends."""

IN_DOUBT_STATUSES: Final = frozenset({MessageStatus.SENDING, MessageStatus.AMBIGUOUS})
"""Statuses whose fate only the provider knows: a provider event for them proves it was sent."""


class SendResult(StrEnum):
    """What a sender says became of one message (``SendOutcome.status``)."""

    SENT = "sent"
    """Accepted by the provider."""
    FAILED = "failed"
    """Refused for good: never retried."""
    RETRY = "retry"
    """Certainly not accepted: safe to send again later."""
    AMBIGUOUS = "ambiguous"
    """The request left and no answer came: the provider may have it."""


class DeliveryCount(StrEnum):
    """What a delivery report counts, in total and per campaign: the rows a delivery took
    and what became of them (``retried``: due again later; ``rendered``: a dry run's)."""

    CLAIMED = "claimed"
    RENDERED = "rendered"
    SENT = "sent"
    FAILED = "failed"
    RETRIED = "retried"
    AMBIGUOUS = "ambiguous"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    """Why an occurrence got no message (recorded on the outbox row)."""

    NO_EMAIL = "no_email"
    SUPPRESSED = "suppressed"
    NO_CONSENT = "no_consent"
    HOLDOUT = "holdout"
    RESEND_RULE = "resend_rule"
    FREQUENCY_CAP = "frequency_cap"


class MessageKind(StrEnum):
    """Marketing mail needs consent and obeys caps and holdouts; transactional mail does not."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class ConsentTopic(StrEnum):
    """What a customer agreed to receive."""

    MARKETING = "marketing"
    SURVEYS = "surveys"
    NEWSLETTER = "newsletter"


class OrderStatus(StrEnum):
    COMPLETED = "completed"
    PENDING = "pending"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class CycleStatus(StrEnum):
    """A cycle run's own status column (``cycle_runs.status``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class ExitReason(StrEnum):
    """Why a journey entry ended (journeys)."""

    COMPLETED = "completed"
    CONVERTED = "converted"
    EXIT_WHEN = "exit_when"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"
    CAMPAIGN_DISABLED = "campaign_disabled"


class SuppressionReason(StrEnum):
    """Why an address must not be mailed (``suppressions.reason``)."""

    BOUNCE = "bounce"
    SPAM_REPORT = "spamreport"
    UNSUBSCRIBE = "unsubscribe"
    GROUP_UNSUBSCRIBE = "group_unsubscribe"
    MANUAL = "manual"


class ProviderEvent(StrEnum):
    """The events SendGrid's Event Webhook reports (any other name is stored, not acted on)."""

    PROCESSED = "processed"
    DROPPED = "dropped"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCE = "bounce"
    OPEN = "open"
    CLICK = "click"
    SPAM_REPORT = "spamreport"
    UNSUBSCRIBE = "unsubscribe"
    GROUP_UNSUBSCRIBE = "group_unsubscribe"
    GROUP_RESUBSCRIBE = "group_resubscribe"


class DeliveryStatus(StrEnum):
    """How far the provider got with a sent message (``messages.delivery_status``), from its
    events; ``ciclovita.delivery.event_rules`` ranks them."""

    PROCESSED = "processed"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    OPEN = "open"
    CLICK = "click"
    BOUNCE = "bounce"
    DROPPED = "dropped"


class BuiltInEvent(StrEnum):
    """Events a campaign can wait for that come from their own tables (orders, survey
    answers, converted referrals, sign-ups); any other event name is an engagement event type
    in the events table."""

    ORDER_PLACED = "order_placed"
    SURVEY_ANSWERED = "survey_answered"
    REFERRAL_CONVERTED = "referral_converted"
    SIGNUP = "signup"


class Locale(StrEnum):
    """Locales the shipped templates and web pages are written in."""

    IT = "it"
    EN = "en"


SHOP_LOCALE: Final = Locale.IT
"""The locale of a customer whose locale is unknown (an import without one): the shop's own."""

FALLBACK_LOCALE: Final = Locale.EN
"""What a reader of a language we have no text for gets (a campaign's default
``fallback_locale``, and the web pages for a browser asking for another language)."""

DEFAULT_TIMEZONE: Final = "Europe/Rome"
"""The time zone of schedules and reports (``CICLOVITA_TIMEZONE``) and of customers with none."""


def values(members: Iterable[StrEnum]) -> tuple[str, ...]:
    """The members' plain strings, in order (``x in values(ConsentTopic)`` for any text)."""
    return tuple(member.value for member in members)


def check_in(column: str, members: Iterable[StrEnum]) -> str:
    """The SQL of a CHECK constraint: ``column`` holds one of ``members``."""
    values = ", ".join(f"'{member.value}'" for member in members)
    return f"{column} IN ({values})"
