"""Reading recipients (customer + current scores) from the database in one query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from ciclovita.db.models import Customer, CustomerScore
from ciclovita.rendering.context import Recipient

RECIPIENT_COLUMNS = (
    Customer.id.label("customer_id"),
    Customer.external_id,
    Customer.email.label("customer_email"),
    Customer.first_name,
    Customer.last_name,
    Customer.locale.label("customer_locale"),
    Customer.timezone,
    Customer.country,
    Customer.attributes,
    CustomerScore.stage.label("current_stage"),
    CustomerScore.rfm_segment,
    CustomerScore.order_count,
    CustomerScore.monetary_cents,
    CustomerScore.predicted_clv_cents,
    CustomerScore.nps,
)


def recipient_from_row(row: Any, email: str | None = None) -> Recipient:
    return Recipient(
        customer_id=row.customer_id,
        external_id=row.external_id,
        email=email if email is not None else row.customer_email,
        first_name=row.first_name or "",
        last_name=row.last_name or "",
        locale=row.customer_locale,
        timezone=row.timezone,
        country=row.country,
        attributes=dict(row.attributes or {}),
        stage=row.current_stage,
        rfm_segment=row.rfm_segment,
        order_count=row.order_count or 0,
        monetary_cents=row.monetary_cents or 0,
        predicted_clv_cents=row.predicted_clv_cents or 0,
        nps=row.nps,
    )


def load_recipients(connection: Connection, customer_ids: Sequence[int]) -> list[Recipient]:
    rows = connection.execute(
        select(*RECIPIENT_COLUMNS)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(Customer.id.in_(list(customer_ids)))
        .order_by(Customer.id)
    ).all()
    return [recipient_from_row(row) for row in rows]
