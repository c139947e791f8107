"""Offers generated per recipient: a coupon or a referral code, in the message and stored.

The planner draws a code for every planned message of a campaign with an ``offer``, puts it
in the message's details (what templates show) and, once the message row is really inserted,
stores it (``coupons`` or ``referrals``), so that a code exists exactly when its message does.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from ciclovita.batching import IN_LIST_SIZE, chunks
from ciclovita.campaigns.catalog import LoadedCampaign
from ciclovita.campaigns.spec import localized
from ciclovita.db.inserts import insert_ignoring_duplicates
from ciclovita.db.models import Coupon, Message, Referral, table_of
from ciclovita.planning.triggers import iso_utc

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""Letters and digits of a code: none that reads like another (no I/1, O/0)."""


def new_code(prefix: str, length: int = 8) -> str:
    """A fresh random code such as ``AMICO-7KQ2ZP3M``."""
    return f"{prefix}-{''.join(secrets.choice(CODE_ALPHABET) for _ in range(length))}"


def offer_details(
    campaign: LoadedCampaign, locale: str, as_of: datetime, code: str
) -> tuple[str, dict[str, Any]]:
    """The outbox details of a generated offer: ``("offer" | "referral", {code, …})``."""
    spec = campaign.spec
    assert spec.offer is not None
    expires = as_of + timedelta(days=spec.offer.valid_days) if spec.offer.valid_days else None
    key = "offer" if spec.offer.type == "coupon" else "referral"
    text = localized(spec.offer.description, locale, spec.content.fallback_locale)
    return key, {"code": code, "description": text, "expires_at": iso_utc(expires)}


def store_offers(
    connection: Connection,
    campaign: LoadedCampaign,
    offers: Sequence[tuple[str, dict[str, Any]]],
    as_of: datetime,
) -> None:
    """Coupons or referral codes of the messages that were really inserted (``offers``:
    message uid → the offer's details)."""
    if not offers or campaign.spec.offer is None:
        return
    by_uid = dict(offers)
    ids: dict[str, tuple[int, int]] = {}
    for part in chunks(list(by_uid), IN_LIST_SIZE):
        for uid, message_id, customer_id in connection.execute(
            select(Message.uid, Message.id, Message.customer_id).where(Message.uid.in_(part))
        ):
            ids[uid] = (message_id, customer_id)
    if campaign.spec.offer.type == "coupon":
        rows = [
            {
                "code": by_uid[uid]["code"],
                "campaign": campaign.name,
                "customer_id": customer_id,
                "message_id": message_id,
                "description": by_uid[uid]["description"][:200],
                "created_at": as_of,
                "expires_at": _moment(by_uid[uid]["expires_at"]),
            }
            for uid, (message_id, customer_id) in ids.items()
        ]
        insert_ignoring_duplicates(connection, table_of(Coupon), rows)
    else:
        rows = [
            {
                "code": by_uid[uid]["code"],
                "referrer_id": customer_id,
                "campaign": campaign.name,
                "created_at": as_of,
                "visits": 0,
            }
            for uid, (_message_id, customer_id) in ids.items()
        ]
        insert_ignoring_duplicates(connection, table_of(Referral), rows)


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
