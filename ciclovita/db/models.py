"""The schema of the customer database (SQLAlchemy 2 typed ORM).

Money is integer cents everywhere (``*_cents`` columns). Every timestamp is UTC
(``UtcDateTime``). History is kept, not overwritten: stage history and segment memberships
have ``entered_at`` / ``exited_at``; the outbox keeps one row per (campaign, customer,
occurrence), sent or skipped. Alembic migrations in ``ciclovita/db/migrations`` build this
schema; tests check the two never drift apart.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ciclovita.db.types import BigId, UtcDateTime, utcnow
from ciclovita.vocabulary import (
    DEFAULT_TIMEZONE,
    SHOP_LOCALE,
    CycleStatus,
    MessageKind,
    MessageStatus,
    OrderStatus,
    check_in,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSON(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class (typed as a Table, which it always is here)."""
    return cast(Table, model.__table__)


def _customer_fk(nullable: bool = False, ondelete: str = "CASCADE") -> Mapped[Any]:
    return mapped_column(
        BigId, ForeignKey("customers.id", ondelete=ondelete), nullable=nullable, index=True
    )


class Customer(Base):
    """A person the business knows: prospect or buyer."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    locale: Mapped[str] = mapped_column(String(8), default=SHOP_LOCALE)
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    country: Mapped[str | None] = mapped_column(String(2))
    birth_date: Mapped[date | None] = mapped_column(Date)
    acquisition_channel: Mapped[str | None] = mapped_column(String(32))
    acquisition_cost_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    referred_by_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (CheckConstraint("acquisition_cost_cents >= 0", name="acquisition_cost"),)


class Order(Base):
    """A purchase. ``amount_cents`` is the order total in the currency's minor unit."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.COMPLETED)
    referral_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_orders_customer_placed", "customer_id", "placed_at"),
        Index("ix_orders_placed_at", "placed_at"),
        Index(
            "ix_orders_referral_code",
            "referral_code",
            sqlite_where=text("referral_code IS NOT NULL"),
            postgresql_where=text("referral_code IS NOT NULL"),
        ),
        CheckConstraint("amount_cents >= 0", name="amount"),
        CheckConstraint(check_in("status", OrderStatus), name="status"),
    )


class Event(Base):
    """Something a customer did: a site visit, signup, download, support ticket, review…"""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(48))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)

    __table_args__ = (
        Index("ix_events_customer_occurred", "customer_id", "occurred_at"),
        Index("ix_events_type_occurred", "type", "occurred_at"),
    )


class Consent(Base):
    """A customer's current answer for one consent topic, with where and when it was given."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(32))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64), default="import")
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("customer_id", "topic", name="uq_consents_customer_topic"),)


class SurveyResponse(Base):
    """An answer to a satisfaction survey: NPS (0-10) or CSAT (1-5)."""

    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = _customer_fk()
    message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(8), default="nps")
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 10", name="score"),
        UniqueConstraint("message_id", name="uq_survey_responses_message"),
    )


class Referral(Base):
    """A referral code handed to a customer, and the friend it converted (if any)."""

    __tablename__ = "referrals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    referrer_id: Mapped[int] = _customer_fk()
    referee_id: Mapped[int | None] = _customer_fk(nullable=True, ondelete="SET NULL")
    campaign: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_visited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    visits: Mapped[int] = mapped_column(Integer, default=0)
    converted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    converted_order_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("orders.id", ondelete="SET NULL"), index=True
    )


class CustomerScore(Base):
    """The latest computed view of a customer: stage, RFM, value. One row per customer."""

    __tablename__ = "customer_scores"

    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[str] = mapped_column(String(16), index=True)
    stage_since: Mapped[datetime] = mapped_column(UtcDateTime)
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    repeat_purchases: Mapped[int] = mapped_column(Integer, default=0)
    first_order_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_order_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_engaged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    monetary_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_order_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    r_score: Mapped[int | None] = mapped_column(SmallInteger)
    f_score: Mapped[int | None] = mapped_column(SmallInteger)
    m_score: Mapped[int | None] = mapped_column(SmallInteger)
    rfm_segment: Mapped[str | None] = mapped_column(String(24), index=True)
    historical_clv_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    predicted_clv_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    clv_quantile: Mapped[float | None] = mapped_column(Float)
    expected_purchases: Mapped[float] = mapped_column(Float, default=0.0)
    p_alive: Mapped[float | None] = mapped_column(Float)
    expected_order_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    indirect_value_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    campaign_cost_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    net_value_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    nps: Mapped[int | None] = mapped_column(SmallInteger)
    converted_referrals: Mapped[int] = mapped_column(Integer, default=0)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StageHistory(Base):
    """When a customer entered and left each lifecycle stage. Open row: exited_at is NULL."""

    __tablename__ = "stage_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    previous_stage: Mapped[str | None] = mapped_column(String(16))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    exited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_stage_history_customer", "customer_id", "exited_at"),
        Index("ix_stage_history_stage_entered", "stage", "entered_at"),
        Index(
            "uq_stage_history_open",
            "customer_id",
            unique=True,
            sqlite_where=text("exited_at IS NULL"),
            postgresql_where=text("exited_at IS NULL"),
        ),
    )


class SegmentMembership(Base):
    """A customer's stay in a dynamic segment. Open row: exited_at is NULL."""

    __tablename__ = "segment_memberships"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    exited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_segment_memberships_segment_entered", "segment", "entered_at"),
        Index("ix_segment_memberships_customer", "customer_id"),
        Index(
            "uq_segment_memberships_open",
            "segment",
            "customer_id",
            unique=True,
            sqlite_where=text("exited_at IS NULL"),
            postgresql_where=text("exited_at IS NULL"),
        ),
    )


class SegmentRun(Base):
    """One recompute of one segment: its size and how many entered and left."""

    __tablename__ = "segment_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment: Mapped[str] = mapped_column(String(64), index=True)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    size: Mapped[int] = mapped_column(Integer)
    entered: Mapped[int] = mapped_column(Integer)
    exited: Mapped[int] = mapped_column(Integer)
    cycle_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cycle_runs.id"))


class ModelRun(Base):
    """One fit of a value model (BG/NBD or Gamma-Gamma): parameters and log-likelihood."""

    __tablename__ = "model_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(String(32))
    fitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    params: Mapped[dict[str, Any]] = mapped_column(Json)
    log_likelihood: Mapped[float | None] = mapped_column(Float)
    n_customers: Mapped[int] = mapped_column(Integer)
    n_fitted: Mapped[int] = mapped_column(Integer)
    converged: Mapped[bool] = mapped_column(Boolean)
    time_unit: Mapped[str] = mapped_column(String(8), default="days")
    cycle_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cycle_runs.id"))


class CycleRun(Base):
    """One lifecycle cycle (recompute, then campaigns) and its summary."""

    __tablename__ = "cycle_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16), default=CycleStatus.RUNNING)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Message(Base):
    """The outbox: one row per (campaign, customer, occurrence), whatever became of it.

    Status moves planned → claimed → sending → sent, or ends in skipped / failed. A row left
    in ``sending`` by a crash is ``ambiguous``: never sent again blindly, reconciled from the
    provider's events.
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    campaign: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(BigId, ForeignKey("customers.id", ondelete="CASCADE"))
    occurrence_key: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default=MessageKind.MARKETING)
    stage: Mapped[str | None] = mapped_column(String(16))
    variant: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(8))
    to_email: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    planned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sending_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    delivery_updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cycle_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("cycle_runs.id"))
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)

    __table_args__ = (
        UniqueConstraint(
            "campaign", "customer_id", "occurrence_key", name="uq_messages_occurrence"
        ),
        Index("ix_messages_status_due", "status", "due_at"),
        Index("ix_messages_customer_sent", "customer_id", "sent_at"),
        Index("ix_messages_campaign_status", "campaign", "status"),
        Index("ix_messages_provider_message_id", "provider_message_id"),
        CheckConstraint(check_in("status", MessageStatus), name="status"),
    )


class Coupon(Base):
    """A unique offer code generated for one recipient of one campaign."""

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    campaign: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = _customer_fk()
    message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL"), unique=True
    )
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    redeemed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DeliveryEvent(Base):
    """An event SendGrid reported for a message, stored once per ``sg_event_id``."""

    __tablename__ = "delivery_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sg_event_id: Mapped[str] = mapped_column(String(128), unique=True)
    message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(320))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)

    __table_args__ = (Index("ix_delivery_events_email_event", "email", "event"),)


class Suppression(Base):
    """An address that must not be mailed: bounce, spam report, unsubscribe, manual."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64), default="manual")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
