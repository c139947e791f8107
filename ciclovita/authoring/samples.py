"""Sample recipients and trigger details, for validating and previewing templates.

The details come from the planner's own builders (``trigger_query(...).details``) applied to
a sample row, and offers from ``offer_details``, so a template that renders here sees exactly
the shape of context a planned message will have.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from ciclovita.campaigns.catalog import LoadedCampaign
from ciclovita.campaigns.spec import ScheduleTrigger
from ciclovita.planning.offers import offer_details
from ciclovita.planning.triggers import last_slot, trigger_query
from ciclovita.rendering.context import Recipient
from ciclovita.vocabulary import DEFAULT_TIMEZONE, FALLBACK_LOCALE, Locale

SAMPLE_PEOPLE: dict[str, list[tuple[str, str, str, str]]] = {
    Locale.IT: [
        ("Giulia", "Rossi", DEFAULT_TIMEZONE, "IT"),
        ("Marco", "Bianchi", DEFAULT_TIMEZONE, "IT"),
    ],
    Locale.EN: [
        ("Emma", "Clarke", "Europe/London", "GB"),
        ("Liam", "Walsh", "Europe/Dublin", "IE"),
    ],
}


def sample_recipient(locale: str, index: int = 0) -> Recipient:
    people = SAMPLE_PEOPLE.get(locale, SAMPLE_PEOPLE[FALLBACK_LOCALE])
    first, last, timezone, country = people[index % len(people)]
    return Recipient(
        customer_id=900_000 + index,
        external_id=f"sample-{index}",
        email=f"{first.lower()}.{last.lower()}@example.com",
        first_name=first,
        last_name=last,
        locale=locale,
        timezone=timezone,
        country=country,
        attributes={"favourite_category": "libri"},
        stage="loyal",
        rfm_segment="Champions",
        order_count=4,
        monetary_cents=123_456,
        predicted_clv_cents=45_600,
        nps=9,
    )


def sample_row(recipient: Recipient, as_of: datetime, **overrides: Any) -> SimpleNamespace:
    """A row shaped like the planner's trigger query result."""
    values: dict[str, Any] = {
        "customer_id": recipient.customer_id,
        "email": recipient.email,
        "locale": recipient.locale,
        "timezone": recipient.timezone,
        "current_stage": recipient.stage,
        "occurrence_key": "sample:2026",
        "trigger_at": as_of - timedelta(days=1),
        "order_ref": "ORD-1042",
        "amount_cents": 12_345,
        "currency": "EUR",
        "previous_stage": "active",
        "score": 9,
        "code": "AMICO-SAMPLE",
        "properties": {"page": "/guida"},
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def sample_details(
    campaign: LoadedCampaign,
    locale: str,
    as_of: datetime,
    timezone: str = DEFAULT_TIMEZONE,
    row: SimpleNamespace | None = None,
) -> dict[str, Any]:
    """The details the planner would store for this campaign's message (JSON round-tripped)."""
    row = row or sample_row(sample_recipient(locale), as_of)
    trigger = campaign.spec.trigger
    found = trigger_query(trigger, as_of, timezone)
    if found is None and isinstance(trigger, ScheduleTrigger):  # between two editions
        slot = last_slot(trigger.schedule, as_of, timezone) or as_of
        found = trigger_query(trigger, slot, timezone)
    details: dict[str, Any] = found.details(row) if found else {}  # type: ignore[arg-type]
    if campaign.spec.offer is not None:
        key, offer = offer_details(campaign, locale, as_of, f"{campaign.spec.offer.prefix}-PREVIEW")
        details[key] = offer
    loaded: dict[str, Any] = json.loads(json.dumps(details))
    return loaded
