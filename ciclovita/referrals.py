"""Referral conversion: crediting referral codes used in completed orders.

For each completed order carrying a ``referral_code`` of an open referral (no referee yet),
the referral gets its ``referee_id`` (the order's customer), ``converted_at`` (the order time)
and ``converted_order_id``, and the referee's ``customers.referred_by_id`` is set. The
recompute then credits the referrer's indirect value (``ciclovita.scoring.facts``) and a
campaign can trigger on ``event: referral_converted`` (the planner reads ``converted_at``).

Rules, so that a code is credited once and honestly: the earliest qualifying order converts
the referral; a customer cannot convert their own code; a customer is the referee of at most
one referral and is not re-attributed when already referred by someone else; the order must
be placed no earlier than the code was created and no later than ``as_of``. Codes are
compared case-insensitively (shoppers type them). Called after an orders import and at the
start of every cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from ciclovita.db.models import Customer, Order, Referral, table_of
from ciclovita.vocabulary import OrderStatus


@dataclass
class ConversionReport:
    """Referrals converted by one run of :func:`convert_referrals`."""

    converted: int = 0
    referrals: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"converted": self.converted, "referrals": self.referrals[:100]}


def convert_referrals(connection: Connection, as_of: datetime) -> ConversionReport:
    """Convert open referrals whose code was used in a completed order (see module doc).

    Idempotent and set-based: one query finds the candidates, two executemany updates write
    them, each guarded so that a concurrent run cannot convert a referral twice.
    """
    other = aliased(Referral)
    candidates = connection.execute(
        select(
            Referral.id.label("referral_id"),
            Referral.code,
            Referral.referrer_id,
            Order.id.label("order_id"),
            Order.customer_id,
            Order.placed_at,
        )
        .select_from(Order)
        .join(Referral, func.upper(Referral.code) == func.upper(func.trim(Order.referral_code)))
        .join(Customer, Customer.id == Order.customer_id)
        .where(
            Order.referral_code.is_not(None),
            Order.status == OrderStatus.COMPLETED,
            Order.placed_at <= as_of,
            Order.placed_at >= Referral.created_at,
            Referral.referee_id.is_(None),
            Referral.converted_at.is_(None),
            Order.customer_id != Referral.referrer_id,
            or_(
                Customer.referred_by_id.is_(None),
                Customer.referred_by_id == Referral.referrer_id,
            ),
            ~exists(select(other.id).where(other.referee_id == Order.customer_id)),
        )
        .order_by(Order.placed_at, Order.id)
    ).all()
    chosen: list[dict[str, Any]] = []
    referrals: set[int] = set()
    referees: set[int] = set()
    for row in candidates:
        if row.referral_id in referrals or row.customer_id in referees:
            continue
        referrals.add(row.referral_id)
        referees.add(row.customer_id)
        chosen.append(
            {
                "_referral": row.referral_id,
                "_referee": row.customer_id,
                "_referrer": row.referrer_id,
                "_order": row.order_id,
                "_at": row.placed_at,
                "code": row.code,
            }
        )
    report = ConversionReport()
    if not chosen:
        return report
    referral_table = table_of(Referral)
    converted = connection.execute(
        update(referral_table)
        .where(
            referral_table.c.id == bindparam("_referral", type_=Integer),
            referral_table.c.referee_id.is_(None),
        )
        .values(
            referee_id=bindparam("_referee"),
            converted_at=bindparam("_at"),
            converted_order_id=bindparam("_order"),
        ),
        [{k: v for k, v in c.items() if k != "code"} for c in chosen],
    )
    customers = table_of(Customer)
    connection.execute(
        update(customers)
        .where(
            customers.c.id == bindparam("_referee", type_=Integer),
            or_(
                customers.c.referred_by_id.is_(None),
                customers.c.referred_by_id == bindparam("_referrer", type_=Integer),
            ),
        )
        .values(referred_by_id=bindparam("_referrer", type_=Integer)),
        [{"_referee": c["_referee"], "_referrer": c["_referrer"]} for c in chosen],
    )
    report.converted = converted.rowcount if converted.rowcount >= 0 else len(chosen)
    report.referrals = [
        {
            "code": c["code"],
            "referrer_id": c["_referrer"],
            "referee_id": c["_referee"],
            "order_id": c["_order"],
            "converted_at": c["_at"].isoformat(),
        }
        for c in chosen
    ]
    return report
