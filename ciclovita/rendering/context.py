"""What a template can use: the context of one message, and the list of its variables.

The context is built from the recipient (customer and scores), the outbox row (campaign,
variant, locale, and the trigger and offer details stored when the message was planned), and
signed links. ``context_variables`` says which top-level names a campaign's templates may use,
so that ``ciclovita validate`` can report a template using one the context does not provide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ciclovita.campaigns.spec import (
    Campaign,
    DateTrigger,
    EventTrigger,
    ScheduleTrigger,
    SegmentTrigger,
    StageTrigger,
)
from ciclovita.links import LinkBuilder
from ciclovita.vocabulary import BuiltInEvent

ALWAYS = frozenset(
    {
        "customer",
        "scores",
        "campaign",
        "message",
        "brand",
        "links",
        "locale",
        "subject",
        "preheader",
    }
)


@dataclass(frozen=True)
class Recipient:
    """A customer as templates see them (read in batches with the outbox rows)."""

    customer_id: int
    external_id: str
    email: str | None
    first_name: str
    last_name: str
    locale: str
    timezone: str
    country: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None
    rfm_segment: str | None = None
    order_count: int = 0
    monetary_cents: int = 0
    predicted_clv_cents: int = 0
    nps: int | None = None

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class Brand:
    name: str
    email: str
    reply_to: str | None = None
    website: str | None = None


def context_variables(campaign: Campaign) -> frozenset[str]:
    """Top-level names available to this campaign's templates."""
    names = set(ALWAYS)
    trigger = campaign.trigger
    if isinstance(trigger, EventTrigger) and trigger.event == BuiltInEvent.ORDER_PLACED:
        names.add("order")
    if isinstance(trigger, EventTrigger) and trigger.event != BuiltInEvent.ORDER_PLACED:
        names.add("event")
    if isinstance(trigger, StageTrigger):
        names.add("stage")
    if isinstance(trigger, SegmentTrigger):
        names.add("segment")
    if isinstance(trigger, DateTrigger):
        names.add("date")
    if isinstance(trigger, ScheduleTrigger):
        names.add("schedule")
    if campaign.offer is not None:
        names.add("offer" if campaign.offer.type == "coupon" else "referral")
    if campaign.survey:
        names.add("survey")
    return frozenset(names)


def build_context(
    *,
    recipient: Recipient,
    campaign_name: str,
    campaign: Campaign,
    message_uid: str,
    variant: str,
    locale: str,
    details: dict[str, Any],
    links: LinkBuilder,
    brand: Brand,
    unsubscribe_topic: str,
) -> dict[str, Any]:
    """The template context of one message."""
    context: dict[str, Any] = {
        "customer": {
            "id": recipient.customer_id,
            "first_name": recipient.first_name,
            "last_name": recipient.last_name,
            "name": recipient.display_name,
            "email": recipient.email,
            "country": recipient.country,
            "attributes": dict(recipient.attributes),
            "timezone": recipient.timezone,
        },
        "scores": {
            "stage": recipient.stage,
            "rfm_segment": recipient.rfm_segment,
            "order_count": recipient.order_count,
            "total_spent_cents": recipient.monetary_cents,
            "predicted_clv_cents": recipient.predicted_clv_cents,
            "nps": recipient.nps,
        },
        "campaign": {
            "name": campaign_name,
            "description": campaign.description,
            "kind": campaign.kind,
        },
        "message": {"uid": message_uid, "variant": variant},
        "brand": {"name": brand.name, "email": brand.email, "website": brand.website},
        "locale": locale,
        "links": {
            "unsubscribe": links.unsubscribe(recipient.customer_id, message_uid, unsubscribe_topic),
            "preferences": links.preferences(recipient.customer_id),
        },
    }
    for key in ("order", "event", "stage", "segment", "offer", "date", "schedule"):
        if key in details:
            context[key] = _with_times(details[key])
    if "referral" in details:
        code = details["referral"]["code"]
        context["referral"] = {**_with_times(details["referral"]), "url": links.referral(code)}
    if campaign.survey:
        context["survey"] = [
            {"score": score, "url": links.survey(recipient.customer_id, message_uid, score)}
            for score in range(11)
        ]
    return context


def _with_times(value: dict[str, Any]) -> dict[str, Any]:
    """ISO timestamps stored in the outbox details, back as datetimes for date filters."""
    out = dict(value)
    for key, item in value.items():
        if key.endswith("_at") and isinstance(item, str):
            out[key] = datetime.fromisoformat(item)
    return out
