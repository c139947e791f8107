"""The campaign language: pydantic models of one campaign file and of the delivery policy.

A campaign file (``campaigns/<name>.yaml``) says when a message is due (trigger), to whom
(audience), what it says (content, variants, offer), and what may hold it back (guards).
``policy.yaml`` holds what spans campaigns: the global frequency cap, default quiet hours and
the default sender. ``ciclovita.campaigns.catalog`` loads and cross-checks them; the JSON
Schema for editors comes from these models (``ciclovita schema``).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    EmailStr,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ciclovita.campaigns.durations import Duration, TimeOfDay
from ciclovita.lifecycle import Stage
from ciclovita.vocabulary import FALLBACK_LOCALE, ConsentTopic, Locale, MessageKind

LOCALES: tuple[Locale, ...] = tuple(Locale)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAME = r"^[a-z][a-z0-9_]{0,62}$"
DEFAULT_VARIANT = "default"
"""The one variant of a campaign without A/B variants."""

DateAttribute = Literal["birth_date", "first_order", "signup"]
"""Dates whose anniversary a campaign can celebrate (the planner reads each from its column)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- triggers


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero, or nothing could ever be due")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


class EventTrigger(_Strict):
    """Due ``delay`` after each event of this kind (one message per event): order_placed,
    survey_answered, referral_converted, signup, or an engagement event type."""

    event: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,47}$")]
    delay: Duration = timedelta(0)
    expires_after: PositiveDuration = timedelta(days=3)


class StageTrigger(_Strict):
    """Due ``delay`` after the customer enters a lifecycle stage."""

    stage_entered: Stage
    delay: Duration = timedelta(0)
    expires_after: PositiveDuration = timedelta(days=7)


class SegmentTrigger(_Strict):
    """Due ``delay`` after the customer enters a segment."""

    segment_entered: Annotated[str, Field(pattern=NAME)]
    delay: Duration = timedelta(0)
    expires_after: PositiveDuration = timedelta(days=7)
    include_initial_members: bool = Field(
        False,
        description="Also message customers who were members when the segment was first computed.",
    )


class DateTrigger(_Strict):
    """Every year on the anniversary of a date (birthday, first order, signup)."""

    date: DateAttribute
    days_before: Annotated[int, Field(ge=0, le=60)] = 0
    expires_after: PositiveDuration = timedelta(days=2)


class ScheduleTrigger(_Strict):
    """On a recurring schedule (cron, in the policy time zone) to the whole audience."""

    schedule: str
    expires_after: PositiveDuration = timedelta(hours=12)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        from ciclovita.db.types import utcnow

        try:
            CronSim(value, utcnow())
        except CronSimError as exc:
            raise ValueError(f"not a cron expression such as '0 10 * * mon' ({exc})") from exc
        return value


def _trigger_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    for key in ("event", "stage_entered", "segment_entered", "date", "schedule"):
        if key in value:
            return key
    return None


Trigger = Annotated[
    Union[  # noqa: UP007 - pydantic needs the explicit Union for tagged members
        Annotated[EventTrigger, Tag("event")],
        Annotated[StageTrigger, Tag("stage_entered")],
        Annotated[SegmentTrigger, Tag("segment_entered")],
        Annotated[DateTrigger, Tag("date")],
        Annotated[ScheduleTrigger, Tag("schedule")],
    ],
    Discriminator(
        _trigger_kind,
        custom_error_type="invalid_trigger",
        custom_error_message=(
            "a trigger needs one of: event, stage_entered, segment_entered, date, schedule"
        ),
    ),
]

# ---------------------------------------------------------------- audience and content


class Audience(_Strict):
    """Who may receive it: members of any listed segment, matching ``where``, minus
    exclusions, with the required consent."""

    segments: tuple[Annotated[str, Field(pattern=NAME)], ...] = ()
    where: dict[str, Any] | None = None
    exclude_segments: tuple[Annotated[str, Field(pattern=NAME)], ...] = ()
    exclude: dict[str, Any] | None = None
    consent: ConsentTopic | None = Field(
        None, description="Required consent topic; marketing mail defaults to 'marketing'."
    )


class Sender(_Strict):
    email: EmailStr
    name: str = ""


LocalizedText = Union[str, dict[Locale, str]]  # noqa: UP007


class Content(_Strict):
    """What the message says: a template folder, a subject template per locale."""

    # locales first: the checks of the fields after it can see them
    locales: tuple[Locale, ...] = LOCALES
    fallback_locale: Locale = FALLBACK_LOCALE
    template: Annotated[str, Field(pattern=NAME)]
    subject: LocalizedText
    preheader: LocalizedText | None = None
    sender: Sender | None = Field(None, alias="from")
    reply_to: EmailStr | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("fallback_locale")
    @classmethod
    def _fallback_is_offered(cls, value: str, info: ValidationInfo) -> str:
        locales = info.data.get("locales", LOCALES)
        if value not in locales:
            raise ValueError(f"{str(value)!r} is not one of locales {', '.join(locales)}")
        return value

    @field_validator("subject", "preheader")
    @classmethod
    def _every_locale_has_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            missing = [loc for loc in info.data.get("locales", LOCALES) if loc not in value]
            if missing:
                raise ValueError(f"no text for locale(s) {', '.join(missing)}")
        return value


class Variant(_Strict):
    """An A/B variant: its share of recipients and what it changes."""

    name: Annotated[str, Field(pattern=NAME)]
    weight: Annotated[int, Field(ge=1, le=1000)] = 1
    template: Annotated[str, Field(pattern=NAME)] | None = None
    subject: LocalizedText | None = None


class Offer(_Strict):
    """A unique code generated per recipient and stored: a coupon or a referral code."""

    type: Literal["coupon", "referral_code"]
    prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{1,11}$")] = "CV"
    description: LocalizedText = ""
    valid_days: Annotated[int, Field(ge=1, le=3650)] | None = 30


# ---------------------------------------------------------------- guards


class EveryDays(_Strict):
    every_days: Annotated[int, Field(ge=1, le=3650)]


Resend = Union[Literal["once_per_occurrence", "once_ever"], EveryDays]  # noqa: UP007


class Window(_Strict):
    """Hours (customer's local time) when sending is allowed, on the given weekdays."""

    start: TimeOfDay
    end: TimeOfDay
    days: tuple[Weekday, ...] = WEEKDAYS

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class QuietHours(_Strict):
    """Hours (customer's local time) when nothing is sent; may cross midnight."""

    start: TimeOfDay
    end: TimeOfDay


class Guards(_Strict):
    holdout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    resend: Resend = "once_per_occurrence"
    frequency_cap: bool = Field(True, description="Counts towards and obeys the global cap.")
    send_window: Window | None = None
    quiet_hours: QuietHours | None = None


class Campaign(_Strict):
    """One campaign file."""

    name: Annotated[str, Field(pattern=NAME)] | None = None
    description: str = ""
    enabled: bool = True
    kind: MessageKind = MessageKind.MARKETING
    priority: Annotated[int, Field(ge=0, le=1000)] = 50
    start: date | None = None
    end: date | None = None
    trigger: Trigger
    audience: Audience = Audience()
    content: Content
    variants: tuple[Variant, ...] = ()
    offer: Offer | None = None
    guards: Guards = Guards()
    survey: bool = Field(False, description="Adds signed NPS score links (0-10) to the context.")

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start")
        if value and start and value < start:
            raise ValueError(f"end {value} is before start {start}")
        return value

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, value: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [v.name for v in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names repeat: {', '.join(repeated)}")
        return value

    @field_validator("guards")
    @classmethod
    def _no_holdout_on_transactional(cls, value: Guards, info: ValidationInfo) -> Guards:
        if info.data.get("kind") == MessageKind.TRANSACTIONAL and value.holdout:
            raise ValueError("a transactional message cannot have a holdout")
        return value

    @property
    def required_consent(self) -> ConsentTopic | None:
        """The consent a recipient must have given: the audience's, else marketing for
        marketing mail (transactional mail needs none)."""
        if self.audience.consent:
            return self.audience.consent
        return ConsentTopic.MARKETING if self.kind == MessageKind.MARKETING else None

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants) or (DEFAULT_VARIANT,)


class FrequencyCap(_Strict):
    """At most ``max_messages`` marketing emails per customer in any ``per_days`` days."""

    max_messages: Annotated[int, Field(ge=1, le=100)] = 3
    per_days: Annotated[int, Field(ge=1, le=365)] = 7


class Policy(_Strict):
    """``policy.yaml``: rules across campaigns."""

    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours | None = None
    sender: Sender | None = None
    unsubscribe_topic: ConsentTopic = Field(
        ConsentTopic.MARKETING,
        description="Consent an unsubscribe link withdraws when the campaign requires none.",
    )
    website: str | None = Field(None, description="The shop's address, for links in emails.")


def localized(text: LocalizedText, locale: str, fallback: str) -> str:
    """The text for ``locale`` (or the fallback locale's)."""
    if isinstance(text, str):
        return text
    return text.get(locale) or text.get(fallback) or next(iter(text.values()), "")  # type: ignore[call-overload]
