"""``ciclovita preview``: real emails for real or sample customers, written to a directory.

Nothing is sent and nothing is recorded: the database is only read. Each message is written
three ways: the complete ``.eml`` (headers and both parts), and its ``.html`` and ``.txt``
parts for a browser or an editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import Connection, Engine, exists, select

from ciclovita.authoring.samples import sample_details, sample_recipient, sample_row
from ciclovita.campaigns.catalog import LoadedCampaign
from ciclovita.campaigns.spec import EventTrigger
from ciclovita.db.models import Customer, CustomerScore, Order
from ciclovita.delivery.mime import mime_bytes
from ciclovita.delivery.outbox import OutboxRow
from ciclovita.delivery.recipients import load_recipients
from ciclovita.errors import InputError, Problem
from ciclovita.planning.guards import pick_variant
from ciclovita.planning.planner import audience_clause, message_uid
from ciclovita.rendering.builder import MessageBuilder
from ciclovita.rendering.context import Recipient
from ciclovita.segments.conditions import ConsentGiven, compile_condition
from ciclovita.vocabulary import BuiltInEvent, OrderStatus


@dataclass(frozen=True)
class PreviewFile:
    customer: str
    locale: str
    variant: str
    eml: Path
    subject: str


def _find_customers(connection: Connection, ids: list[str]) -> list[int]:
    found: list[int] = []
    for value in ids:
        condition = Customer.external_id == value
        if value.isdigit():
            condition = condition | (Customer.id == int(value))
        match = connection.execute(
            select(Customer.id).where(condition).limit(1)
        ).scalar_one_or_none()
        if match is None:
            raise InputError(
                [Problem("--customer", "no customer with this id or external id", value=value)]
            )
        found.append(int(match))
    return found


def _order_triggered(campaign: LoadedCampaign) -> bool:
    trigger = campaign.spec.trigger
    return isinstance(trigger, EventTrigger) and trigger.event == BuiltInEvent.ORDER_PLACED


def _sample_customers(
    connection: Connection, campaign: LoadedCampaign, n: int, as_of: datetime
) -> list[int]:
    """Up to ``n`` customers who could really get this campaign: an email, the audience, the
    required consent, and for order-triggered campaigns an order (lowest ids first)."""
    spec = campaign.spec
    conditions = [Customer.email.is_not(None), audience_clause(campaign, as_of)]
    if spec.required_consent:
        conditions.append(compile_condition(ConsentGiven(spec.required_consent), as_of))
    if _order_triggered(campaign):
        conditions.append(
            exists(
                select(Order.id).where(
                    Order.customer_id == Customer.id, Order.status == OrderStatus.COMPLETED
                )
            )
        )
    query = (
        select(Customer.id)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(*conditions)
        .order_by(Customer.id)
        .limit(n)
    )
    return [int(i) for i in connection.execute(query).scalars()]


def _trigger_row(
    connection: Connection, campaign: LoadedCampaign, recipient: Recipient, as_of: datetime
) -> SimpleNamespace:
    """A planner-shaped row; for order triggers, the customer's own latest order."""
    row = sample_row(recipient, as_of)
    if _order_triggered(campaign):
        order = connection.execute(
            select(Order.external_id, Order.amount_cents, Order.currency, Order.placed_at)
            .where(
                Order.customer_id == recipient.customer_id, Order.status == OrderStatus.COMPLETED
            )
            .order_by(Order.placed_at.desc())
            .limit(1)
        ).first()
        if order is not None:
            row.order_ref, row.amount_cents, row.currency, row.trigger_at = order
    return row


def preview(
    engine: Engine,
    campaign: LoadedCampaign,
    builder: MessageBuilder,
    out: Path,
    *,
    customers: list[str] | None = None,
    sample: int | None = None,
    locale: str | None = None,
    as_of: datetime,
    timezone: str,
) -> list[PreviewFile]:
    """Render ``campaign`` for the chosen customers into ``out``; returns what was written."""
    spec = campaign.spec
    if locale is not None and locale not in spec.content.locales:
        raise InputError(
            [
                Problem(
                    "--locale",
                    f"campaign {campaign.name!r} offers {', '.join(spec.content.locales)}",
                    value=locale,
                )
            ]
        )
    with engine.connect() as connection:
        if customers:
            recipients = load_recipients(connection, _find_customers(connection, customers))
        else:
            ids = _sample_customers(connection, campaign, sample or 3, as_of)
            recipients = load_recipients(connection, ids)
            if not recipients:  # an empty database: invented customers, one per locale
                recipients = [
                    sample_recipient(loc, i) for i, loc in enumerate(spec.content.locales)
                ][: sample or 3]
        rows = [(r, _trigger_row(connection, campaign, r, as_of)) for r in recipients]
    out.mkdir(parents=True, exist_ok=True)
    written: list[PreviewFile] = []
    for recipient, trigger_row in rows:
        chosen = locale or (
            recipient.locale
            if recipient.locale in spec.content.locales
            else spec.content.fallback_locale
        )
        variants = [pick_variant(campaign.name, recipient.customer_id, spec.variants)]
        if len(spec.variants) > 1 and customers:
            variants = list(spec.variant_names)  # an explicit customer: show every variant
        for variant in variants:
            uid = message_uid(campaign.name, recipient.customer_id, f"preview:{variant}")
            outbox_row = OutboxRow(
                id=0,
                uid=uid,
                campaign=campaign.name,
                kind=spec.kind,
                variant=variant,
                locale=chosen,
                to_email=recipient.email or "no-email@example.invalid",
                stage=recipient.stage,
                attempts=0,
                details=sample_details(campaign, chosen, as_of, timezone, row=trigger_row),
            )
            email = builder.build(outbox_row, recipient)
            stem = f"{campaign.name}-{recipient.external_id}-{chosen}-{variant}"
            eml = out / f"{stem}.eml"
            eml.write_bytes(mime_bytes(email))
            (out / f"{stem}.html").write_text(email.html, encoding="utf-8")
            (out / f"{stem}.txt").write_text(email.text, encoding="utf-8")
            written.append(PreviewFile(recipient.external_id, chosen, variant, eml, email.subject))
    return written
