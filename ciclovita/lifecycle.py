"""Lifecycle stages: their names, their order, and the thresholds read from lifecycle.yaml.

A customer is in exactly one of eight stages. Buyers are checked in the order lapsed,
at_risk, advocate, loyal, new_customer, active (first match wins); customers without a
completed order are engaged or prospect. ``ciclovita.scoring.stages`` applies the rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ciclovita.yamlsource import load_model

Stage = Literal[
    "prospect", "engaged", "new_customer", "active", "loyal", "advocate", "at_risk", "lapsed"
]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)

RfmSegment = Literal[
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Cannot Lose Them",
    "Hibernating",
    "Lost",
]
RFM_SEGMENTS: Final[tuple[RfmSegment, ...]] = get_args(RfmSegment)

Days = Annotated[int, Field(ge=1, le=3650)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngagementRule(_Strict):
    """engaged: no purchase yet, but one of these events within ``window_days``."""

    window_days: Days = 30
    events: tuple[str, ...] = (
        "site_visit",
        "signup",
        "content_download",
        "newsletter_click",
        "review",
        "support_ticket",
        "referral_visit",
    )


class NewCustomerRule(_Strict):
    """new_customer: the first order was at most ``window_days`` ago."""

    window_days: Days = 30


class LoyalRule(_Strict):
    """loyal: a repeat buyer with a strong RFM profile who is likely still alive."""

    min_orders: Annotated[int, Field(ge=2)] = 3
    rfm_segments: tuple[RfmSegment, ...] = ("Champions", "Loyal", "Potential Loyalist")
    min_p_alive: Share = 0.5


class AdvocateRule(_Strict):
    """advocate: loyal, and a promoter (NPS at least ``min_nps``) or a converted referrer."""

    min_nps: Annotated[int, Field(ge=0, le=10)] = 9
    min_converted_referrals: Annotated[int, Field(ge=1)] = 1


class AtRiskRule(_Strict):
    """at_risk: recency past ``after_days``, past ``gap_multiplier`` × the customer's own
    average gap between orders, or P(alive) below ``max_p_alive`` (repeat buyers)."""

    after_days: Days = 120
    gap_multiplier: Annotated[float, Field(gt=1.0, le=20.0)] = 2.5
    max_p_alive: Share = 0.3


class LapsedRule(_Strict):
    """lapsed: no order for more than ``after_days``."""

    after_days: Days = 365


class ValueSettings(_Strict):
    """How lifetime value is predicted and when the model is refitted."""

    horizon_months: Annotated[int, Field(ge=1, le=120)] = 12
    annual_discount_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.10
    refit_after_days: Annotated[int, Field(ge=0, le=365)] = 7
    fit_sample_size: Annotated[int, Field(ge=100, le=5_000_000)] = 200_000
    time_unit: Literal["days", "weeks"] = "weeks"
    cost_per_message_cents: Annotated[int, Field(ge=0)] = 1
    seed: int = 20_240_101


class LifecycleConfig(_Strict):
    """The whole of lifecycle.yaml."""

    engaged: EngagementRule = EngagementRule()
    new_customer: NewCustomerRule = NewCustomerRule()
    loyal: LoyalRule = LoyalRule()
    advocate: AdvocateRule = AdvocateRule()
    lapsed: LapsedRule = LapsedRule()  # before at_risk: at_risk's check reads it
    at_risk: AtRiskRule = AtRiskRule()
    value: ValueSettings = ValueSettings()

    @field_validator("at_risk")
    @classmethod
    def _windows_are_ordered(cls, value: AtRiskRule, info: ValidationInfo) -> AtRiskRule:
        lapsed = info.data.get("lapsed", LapsedRule())
        if value.after_days >= lapsed.after_days:
            raise ValueError(
                f"at_risk.after_days ({value.after_days}) must be smaller than "
                f"lapsed.after_days ({lapsed.after_days})"
            )
        return value


LIFECYCLE_FILE: Final = "lifecycle.yaml"


def load_lifecycle(campaigns_dir: Path) -> LifecycleConfig:
    """Read ``lifecycle.yaml`` from the campaigns directory (defaults when it is absent)."""
    path = campaigns_dir / LIFECYCLE_FILE
    if not path.exists():
        return LifecycleConfig()
    return load_model(path, LifecycleConfig)
