"""Small builders for hand-made customers, orders, events and consents in a real database."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ciclovita.db.models import Consent, Customer, Event, Order, SurveyResponse

_ids = itertools.count(1)


class World:
    """Writes rows relative to ``as_of`` ("ordered 3 days ago")."""

    def __init__(self, engine: Engine, as_of: datetime) -> None:
        self.engine = engine
        self.as_of = as_of

    def ago(self, days: float) -> datetime:
        return self.as_of - timedelta(days=days)

    def customer(
        self,
        name: str = "Giulia",
        *,
        email: str | None = "auto",
        locale: str = "it",
        timezone: str = "Europe/Rome",
        created_days_ago: float = 500,
        consents: tuple[str, ...] = ("marketing",),
        orders_days_ago: tuple[float, ...] = (),
        amount_cents: int = 5_000,
        **fields: Any,
    ) -> int:
        n = next(_ids)
        with Session(self.engine) as session, session.begin():
            customer = Customer(
                external_id=f"t-{n}",
                email=f"{name.lower()}.{n}@example.com" if email == "auto" else email,
                first_name=name,
                last_name="Test",
                locale=locale,
                timezone=timezone,
                country="IT" if locale == "it" else "GB",
                created_at=self.ago(created_days_ago),
                **fields,
            )
            session.add(customer)
            session.flush()
            for topic in consents:
                session.add(
                    Consent(
                        customer_id=customer.id,
                        topic=topic,
                        granted=True,
                        source="test",
                        recorded_at=self.ago(created_days_ago),
                    )
                )
            for days in orders_days_ago:
                session.add(
                    Order(
                        external_id=f"o-{next(_ids)}",
                        customer_id=customer.id,
                        placed_at=self.ago(days),
                        amount_cents=amount_cents,
                        currency="EUR",
                        status="completed",
                    )
                )
            return int(customer.id)

    def order(
        self,
        customer_id: int,
        days_ago: float,
        amount_cents: int = 5_000,
        status: str = "completed",
    ) -> int:
        with Session(self.engine) as session, session.begin():
            order = Order(
                external_id=f"o-{next(_ids)}",
                customer_id=customer_id,
                placed_at=self.ago(days_ago),
                amount_cents=amount_cents,
                currency="EUR",
                status=status,
            )
            session.add(order)
            session.flush()
            return int(order.id)

    def event(self, customer_id: int, kind: str, days_ago: float) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                Event(
                    external_id=f"e-{next(_ids)}",
                    customer_id=customer_id,
                    type=kind,
                    occurred_at=self.ago(days_ago),
                    properties={},
                )
            )

    def nps(self, customer_id: int, score: int, days_ago: float = 1) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                SurveyResponse(
                    customer_id=customer_id, kind="nps", score=score, answered_at=self.ago(days_ago)
                )
            )


def dict_of(rows: Iterable[Any]) -> dict[Any, Any]:
    """Two-column query rows as a dict."""
    return {key: value for key, value in rows}
