"""Demo data: a realistic, deterministic customer base to try ciclovita end to end.

``generate_demo_data`` writes customers, orders, engagement events, consents, NPS answers and
referrals that exercise every lifecycle stage, the RFM and CLV models and every campaign
(thank-you, onboarding, NPS survey, loyalty reward, referral request, win-back, nurture).

How the data is made (all vectorised with numpy; the only loop is over purchase index):

- **Customers** sign up over ``history_days`` with exponential growth, so recent months have
  more signups and the last days hold fresh prospects. 60% Italian, 40% English-speaking
  (GB, IE, US, CA, AU with their IANA time zones). Names come from small pools drawn once
  from Faker per locale and sampled with numpy, so a million customers cost no more Faker
  calls than a thousand. E-mail addresses are on example.com/.org/.net only.
- **Orders** follow a BG/NBD-like process: each buyer has a purchase rate drawn from a Gamma
  distribution and, after every purchase, drops out with a probability drawn from a Beta
  distribution. Time is warped by a seasonal clock (November and December busy, August
  quiet, evenings busier than nights). Amounts are lognormal around a customer's own mean
  (Gamma-Gamma-like), in integer cents (EUR). About 3% of orders are cancelled or refunded.
  ``mean_orders`` rescales rates and dropout, calibrated on a pilot run, to reach an average
  number of orders per customer.
- **Events**, **consents**, **NPS answers** (more promoters among frequent buyers) and
  **referrals** (codes for frequent buyers; converted codes point at a referred customer
  whose first order carried the code) complete the picture.

The same ``(customers, seed, as_of, history_days, mean_orders)`` always writes the same rows:
every random draw comes from a numpy ``Generator`` seeded from ``seed`` (one independent
stream per concern) or from Faker seeded with ``seed``; the wall clock is never read. Rows
are written in one transaction through ``insert_frame`` (COPY on PostgreSQL), in chunks, so
a failure writes nothing; a large load into PostgreSQL checks foreign keys and builds the
secondary indexes once at the end, as PostgreSQL's manual advises for bulk loads. A database
that already holds demo customers (``external_id`` starting with ``demo-``) is left alone.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from faker import Faker
from sqlalchemy import ColumnElement, Connection, Engine, Select, Table, func, select, text
from sqlalchemy.exc import DBAPIError

from ciclovita.db.bulk import BULK_WRITE_ROWS, insert_frame, vacuum
from ciclovita.db.models import Consent, Customer, Event, Order, Referral, SurveyResponse

__all__ = ["DEMO_PREFIX", "DemoSummary", "generate_demo_data"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
Indices = npt.NDArray[np.intp]

DEMO_PREFIX: Final = "demo-"
DAY_S: Final = 86_400
WRITE_CHUNK_ROWS: Final = 250_000
# Loads of at least this many rows into PostgreSQL check foreign keys and build secondary
# indexes once at the end instead of row by row (see _deferred_checks).
BULK_LOAD_MIN_ROWS: Final = 250_000
PILOT_CUSTOMERS: Final = 50_000
NAME_POOL_SIZE: Final = 3_000
CURRENCY: Final = "EUR"
RECENT_DAYS: Final = 3.0  # a demo always has a completed order this recent
CALIBRATION_STEPS: Final = 40
CALIBRATION_TOLERANCE: Final = 0.003

# --- who the customers are -------------------------------------------------------------------

ITALIAN_SHARE: Final = 0.60
# English-speaking countries: (country, share among English customers, Faker locale,
# time zones, their weights).
ENGLISH_COUNTRIES: Final = (
    ("GB", 0.45, "en_GB", ("Europe/London",), (1.0,)),
    ("IE", 0.12, "en_GB", ("Europe/Dublin",), (1.0,)),
    (
        "US",
        0.30,
        "en_US",
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
        (0.45, 0.25, 0.08, 0.22),
    ),
    ("CA", 0.06, "en_US", ("America/Toronto", "America/Vancouver"), (0.6, 0.4)),
    ("AU", 0.07, "en_GB", ("Australia/Sydney", "Australia/Melbourne"), (0.6, 0.4)),
)
FAKER_LOCALES: Final = ("it_IT", "en_GB", "en_US")
# Address patterns: giulia.rossi.123@, giuliarossi123@, g.rossi123@ (123: a number unique to
# the customer).
EMAIL_PATTERN_WEIGHTS: Final = (0.6, 0.25, 0.15)
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net")
EMAIL_DOMAIN_WEIGHTS: Final = (0.5, 0.25, 0.25)
NO_EMAIL_SHARE: Final = 0.03
BIRTH_DATE_SHARE: Final = 0.70

# Acquisition channels a customer can arrive from by itself ("referral" is given to the
# customers a converted referral code brought in). Per channel: share, mean acquisition cost
# in cents (0 = free), chance to ever buy, chance that the account was created at checkout
# (first order at signup), multiplier on the dropout probability.
CHANNELS: Final = (
    ("organic_search", 0.27, 0, 0.72, 0.45, 1.0),
    ("paid_search", 0.18, 2_800, 0.75, 0.55, 1.1),
    ("social_ads", 0.20, 1_900, 0.62, 0.45, 1.2),
    ("marketplace", 0.09, 1_100, 0.92, 0.80, 1.3),
    ("direct", 0.14, 0, 0.78, 0.50, 0.8),
    ("newsletter", 0.12, 250, 0.45, 0.25, 0.9),
)
REFERRAL_CHANNEL: Final = "referral"
REFERRAL_REWARD_CENTS: Final = 1_000

CATEGORIES: Final = ("apparel", "shoes", "home", "beauty", "sport", "books", "electronics")
NEWSLETTER_FREQUENCIES: Final = ("weekly", "monthly", "never")
NEWSLETTER_FREQUENCY_WEIGHTS: Final = (0.35, 0.50, 0.15)

# --- how they buy ----------------------------------------------------------------------------

SIGNUP_GROWTH: Final = 1.2  # signups per day grow by e^1.2 ≈ 3.3× over the history
FIRST_ORDER_DELAY_DAYS: Final = 30.0  # mean wait before the first order (not at checkout)
RATE_SHAPE: Final = 0.9  # Gamma shape of purchase rates (heterogeneity)
RATE_MEAN_PER_DAY: Final = 1 / 35  # mean purchase rate while alive
MAX_RATE_PER_DAY: Final = 0.5  # nobody buys more than every other day on average
DROPOUT_BETA: Final = (1.5, 2.8)  # Beta(a, b) of the dropout probability after a purchase
SPEND_MEAN_CENTS: Final = {"it": 6_800, "en": 7_600}  # mean order value by locale
SPEND_CUSTOMER_SIGMA: Final = 0.55  # spread of customers' own mean order value (log scale)
SPEND_ORDER_SIGMA: Final = 0.35  # spread of one customer's orders around their mean
MIN_ORDER_CENTS: Final = 490
CANCELLED_SHARE: Final = 0.015
REFUNDED_SHARE: Final = 0.015
ORDER_STATUSES: Final = ("completed", "cancelled", "refunded")

# Relative activity by calendar month (Jan..Dec) and by hour of the day (UTC).
MONTH_ACTIVITY: Final = (0.95, 0.85, 0.95, 1.0, 1.0, 0.95, 0.9, 0.6, 1.0, 1.05, 1.45, 1.6)
HOUR_ACTIVITY: Final = (
    0.35, 0.2, 0.15, 0.15, 0.2, 0.35, 0.6, 0.85, 1.0, 1.1, 1.15, 1.2,
    1.25, 1.2, 1.15, 1.15, 1.2, 1.3, 1.5, 1.7, 1.7, 1.45, 1.0, 0.6,
)  # fmt: skip

# --- what else they do ------------------------------------------------------------------------

VISITS_PER_CUSTOMER: Final = 1.4
DOWNLOADS_PER_CUSTOMER: Final = 0.25
CLICKS_PER_SUBSCRIBER: Final = 0.6
REVIEW_SHARE: Final = 0.25  # of buyers
TICKET_SHARE: Final = 0.12  # of buyers
RECENT_VISIT_SHARE: Final = 0.08  # of prospects: a site visit in the last two weeks
PROSPECT_INTEREST_DAYS: Final = 150.0  # mean time a prospect keeps looking around
DROPPED_ACTIVITY_DAYS: Final = 120.0  # a customer who stopped buying fades out after this
PRODUCTS: Final = 400
PAGES: Final = ("/", "/cart", "/blog", "/offers")
DEVICES: Final = ("mobile", "desktop", "tablet")
DEVICE_WEIGHTS: Final = (0.62, 0.32, 0.06)
ASSETS: Final = (
    "size-guide.pdf",
    "care-guide.pdf",
    "catalogue-spring.pdf",
    "catalogue-autumn.pdf",
    "gift-guide.pdf",
)
NEWSLETTER_LINKS: Final = ("hero", "product", "offer", "blog")
TICKET_TOPICS: Final = ("shipping", "returns", "payment", "product", "account")
TICKET_CHANNELS: Final = ("email", "chat", "phone")

# consent topic -> (share granted, share refused); the rest never answered
CONSENT_SHARES: Final = {"marketing": (0.75, 0.10), "surveys": (0.60, 0.12)}
IMPORTED_SHARE_OF_HISTORY: Final = 0.15  # the oldest customers came from an imported list

NPS_BASE_SHARE: Final = 0.11  # of buyers answer the NPS survey...
NPS_REPEAT_BONUS: Final = 0.12  # ...more of the repeat buyers (3+ orders)
NPS_COMMENT_SHARE: Final = 0.3
NPS_CENTRE: Final = 7.6  # the score of an average buyer
NPS_COMMENTS: Final = {
    "it": {
        "promoter": (
            "Servizio eccellente, consegna velocissima.",
            "Prodotti di ottima qualità, tornerò sicuramente!",
            "Vi consiglio sempre ai miei amici.",
        ),
        "passive": ("Tutto bene, prezzi un po' alti.", "Buona esperienza nel complesso."),
        "detractor": ("Consegna in ritardo.", "L'assistenza ha risposto dopo giorni."),
    },
    "en": {
        "promoter": (
            "Excellent service, super fast delivery.",
            "Great quality, I'll definitely be back!",
            "I always recommend you to my friends.",
        ),
        "passive": ("All fine, a bit pricey.", "Good experience overall."),
        "detractor": ("Delivery was late.", "Support took days to answer."),
    },
}

REFERRER_MIN_ORDERS: Final = 3
REFERRER_SHARE: Final = 0.40  # of customers with 3+ completed orders get a referral code
REFERRAL_CONVERSION: Final = 0.35  # of codes bring in a friend who buys
REFERRAL_CODE_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
REFERRAL_CODE_LENGTH: Final = 6
REFERRAL_CAMPAIGN: Final = "referral_request"

EVENT_TYPES: Final = (
    "signup",
    "site_visit",
    "content_download",
    "newsletter_click",
    "review",
    "support_ticket",
    "referral_visit",
)
CONSENT_SOURCES: Final = ("signup_form", "checkout", "import", "preference_center")

# One independent random stream per concern: changing one never shifts the others.
_STREAMS: Final = {
    name: number
    for number, name in enumerate(
        (
            "customers",
            "names",
            "behaviour",
            "orders",
            "pilot",
            "recent",
            "amounts",
            "statuses",
            "events",
            "consents",
            "satisfaction",
            "surveys",
            "referrals",
        )
    )
}


@dataclass(frozen=True)
class DemoSummary:
    """Rows of demo data per table: written now, or already there when ``existing``."""

    customers: int
    orders: int
    events: int
    consents: int
    survey_responses: int
    referrals: int
    existing: bool = False


def generate_demo_data(
    engine: Engine,
    *,
    customers: int,
    seed: int,
    as_of: datetime,
    history_days: int = 3 * 365,
    mean_orders: float | None = None,
) -> DemoSummary:
    """Write a demo data set of ``customers`` customers with ``history_days`` of history
    ending at ``as_of`` (a naive datetime is taken as UTC); nothing happens after ``as_of``.

    ``mean_orders`` sets the average number of orders per customer, prospects included
    (by default the natural behaviour gives about 2). The same arguments always give the
    same rows. If demo customers already exist, nothing is written and the counts of the
    demo rows there are returned with ``existing=True``.
    """
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if history_days < 1:
        raise ValueError(f"history_days must be at least 1, got {history_days}")
    if mean_orders is not None and not (math.isfinite(mean_orders) and mean_orders > 0):
        raise ValueError(f"mean_orders must be a positive number, got {mean_orders}")
    end = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)

    with engine.begin() as connection:
        if _has_demo_customers(connection):
            return _existing_summary(connection)
        data = _build(_Timeline.create(seed, end, history_days), customers, mean_orders)
        summary = _write(connection, data)
    if summary.customers + summary.orders + summary.events > BULK_WRITE_ROWS:
        vacuum(engine, *_TABLES)
    return summary


_TABLES = ("customers", "orders", "events", "consents", "survey_responses", "referrals")


# --- existing data ---------------------------------------------------------------------------


def _demo_customer_ids() -> Select[tuple[int]]:
    return select(Customer.id).where(Customer.external_id.startswith(DEMO_PREFIX))


def _has_demo_customers(connection: Connection) -> bool:
    return connection.execute(_demo_customer_ids().limit(1)).first() is not None


def _existing_summary(connection: Connection) -> DemoSummary:
    def count(table: Table, where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(table).where(where)
        return int(connection.execute(query).scalar_one())

    ids = _demo_customer_ids()
    return DemoSummary(
        customers=count(_table(Customer), Customer.external_id.startswith(DEMO_PREFIX)),
        orders=count(_table(Order), Order.external_id.startswith(f"{DEMO_PREFIX}o-")),
        events=count(_table(Event), Event.external_id.startswith(f"{DEMO_PREFIX}e-")),
        consents=count(_table(Consent), Consent.customer_id.in_(ids)),
        survey_responses=count(_table(SurveyResponse), SurveyResponse.customer_id.in_(ids)),
        referrals=count(_table(Referral), Referral.referrer_id.in_(ids)),
        existing=True,
    )


# --- randomness and time ---------------------------------------------------------------------


class _SeasonalClock:
    """Maps real time to "operational" time, in which activity is uniform.

    Times are days since the start of the history. Activity per hour is the month's factor
    times the hour-of-day factor, so a process with a constant rate in operational time has
    more events in November and December, fewer in August and at night.
    """

    def __init__(self, start_s: int, horizon_days: float) -> None:
        first_hour = start_s // 3600
        hours = np.arange(first_hour, first_hour + math.ceil(horizon_days * 24) + 49)
        months = hours.astype("datetime64[h]").astype("datetime64[M]").astype(np.int64) % 12
        month_activity = np.asarray(MONTH_ACTIVITY) / np.mean(MONTH_ACTIVITY)
        hour_activity = np.asarray(HOUR_ACTIVITY) / np.mean(HOUR_ACTIVITY)
        activity = month_activity[months] * hour_activity[hours % 24]
        self._real: F64 = (hours * 3600 - start_s).astype(np.float64) / DAY_S
        operational = np.concatenate(([0.0], np.cumsum(activity[:-1]) / 24.0))
        self._operational: F64 = operational - np.interp(0.0, self._real, operational)

    def operational(self, t: F64) -> F64:
        return np.interp(t, self._real, self._operational)

    def real(self, tau: F64) -> F64:
        """The real time of operational time ``tau``; ``inf`` past the end of the grid."""
        t = np.interp(tau, self._operational, self._real)
        return np.where(tau > self._operational[-1], np.inf, t)


@dataclass(frozen=True)
class _Timeline:
    """The seed and the history window: ``horizon`` days ending at ``end_s`` (as_of)."""

    seed: int
    start_s: int
    end_s: int
    horizon: float
    clock: _SeasonalClock

    @classmethod
    def create(cls, seed: int, as_of: datetime, history_days: int) -> _Timeline:
        end_s = math.floor(as_of.timestamp())
        start_s = end_s - history_days * DAY_S
        return cls(seed, start_s, end_s, float(history_days), _SeasonalClock(start_s, history_days))

    def rng(self, concern: str) -> np.random.Generator:
        """The random stream of one concern; streams are independent of each other."""
        entropy = [self.seed % (1 << 64), _STREAMS[concern]]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))

    def seconds(self, t: F64) -> I64:
        """Unix seconds of ``t`` days since the start (never after as_of)."""
        return np.minimum(self.start_s + np.floor(t * DAY_S).astype(np.int64), self.end_s)

    def spread(self, rng: np.random.Generator, start: F64, end: F64) -> F64:
        """One random time between ``start`` and ``end`` each, following the seasons."""
        a = self.clock.operational(start)
        b = self.clock.operational(end)
        return np.clip(self.clock.real(a + rng.random(len(a)) * (b - a)), start, end)


def _choice(rng: np.random.Generator, n: int, weights: Sequence[float]) -> Indices:
    """``n`` indices drawn with probabilities proportional to ``weights``."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    picked = np.searchsorted(cdf, rng.random(n), side="right")
    return np.minimum(picked, len(cdf) - 1).astype(np.intp)


def _render(codes: Sequence[npt.NDArray[Any]], render: Callable[..., str]) -> Objects:
    """``render(*row)`` for every row of the parallel non-negative integer ``codes``,
    computed once per distinct combination (JSON properties and other small strings)."""
    n = len(codes[0])
    if n == 0:
        return np.empty(0, dtype=object)
    columns = [np.asarray(c, dtype=np.int64) for c in codes]
    radix = [int(c.max()) + 1 for c in columns]
    key = np.zeros(n, dtype=np.int64)
    for column, base in zip(columns, radix, strict=True):
        key = key * base + column
    unique, inverse = np.unique(key, return_inverse=True)
    parts: list[list[int]] = []
    rest = unique.copy()
    for base in reversed(radix):
        parts.append((rest % base).tolist())
        rest //= base
    rows = zip(*reversed(parts), strict=True)
    rendered = np.array([render(*row) for row in rows], dtype=object)
    return rendered[inverse.reshape(-1)]


def _or_none(keep: Bools, values: Objects) -> Objects:
    """``values`` where ``keep``, None (NULL) elsewhere."""
    out = values.copy()
    out[~keep] = None
    return out


def _render_json(
    codes: Sequence[npt.NDArray[Any]], build: Callable[..., dict[str, Any]]
) -> Objects:
    """JSON text of ``build(*row)`` for every row of ``codes`` (see ``_render``)."""
    return _render(codes, lambda *row: json.dumps(build(*row)))


def _groups(customer: I64, n: int) -> tuple[I64, I64]:
    """(count, start) per customer of rows sorted by customer."""
    counts = np.bincount(customer, minlength=n).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return counts, starts


# --- the data set ----------------------------------------------------------------------------


@dataclass
class _Customers:
    created_t: F64  # days since the start of the history, ascending
    locale: Objects
    country: Objects
    timezone: Objects
    first_name: Objects
    last_name: Objects
    email: Objects
    birth_date: Objects  # ISO dates or None
    channel: Indices  # index into CHANNELS; -1 = brought in by a referral
    acquisition_cost: I64
    attributes: Objects  # JSON text

    @property
    def n(self) -> int:
        return len(self.created_t)


@dataclass
class _Orders:
    """Every order, grouped by customer, in time order within a customer."""

    customer: I64
    t: F64
    amount: I64
    status: npt.NDArray[np.int8]  # index into ORDER_STATUSES
    referral_code: I64  # index into the referral codes; -1 = none
    first: I64  # per customer: index of the first order; -1 = never bought
    first_t: F64  # per customer: time of the first order; inf = never bought
    last_t: F64  # per customer: time of the last order; -inf = never bought
    first_completed: Bools  # per customer: bought, and the first order was completed
    dropped: Bools  # per customer: stopped buying ("dead" in BG/NBD terms) before as_of
    done_t: F64  # completed orders' times, grouped by customer...
    done_count: I64  # ...how many per customer...
    done_start: I64  # ...and where each customer's run starts in done_t

    def pick_completed(self, rng: np.random.Generator, who: I64) -> F64:
        """The time of one random completed order of each customer in ``who``."""
        offset = (rng.random(len(who)) * self.done_count[who]).astype(np.int64)
        picked: F64 = self.done_t[self.done_start[who] + offset]
        return picked


@dataclass
class _Referrals:
    code: Objects
    referrer: I64
    referee: I64  # -1 = not converted
    created_t: F64
    visits: I64
    last_visit_t: F64  # NaN = never visited
    converted_order: I64  # index into the orders; -1 = not converted
    referred_by: I64  # per customer: the referrer's index; -1 = none


@dataclass
class _Consents:
    customer: I64
    topic: Objects
    granted: Bools
    source: Objects
    t: F64
    marketing: npt.NDArray[np.int8]  # per customer: 1 granted, 0 refused, -1 no answer


@dataclass
class _Events:
    customer: I64
    kind: npt.NDArray[np.int8]  # index into EVENT_TYPES
    seconds: I64
    properties: Objects  # JSON text


@dataclass
class _Surveys:
    customer: I64
    seconds: I64
    score: I64
    comment: Objects


@dataclass
class _DemoData:
    timeline: _Timeline
    customers: _Customers
    orders: _Orders
    referrals: _Referrals
    consents: _Consents
    events: _Events
    surveys: _Surveys


def _build(timeline: _Timeline, n: int, mean_orders: float | None) -> _DemoData:
    customers = _make_customers(timeline, n)
    orders = _make_orders(timeline, customers, mean_orders)
    referrals = _make_referrals(timeline, customers, orders)
    consents = _make_consents(timeline, customers, orders)
    satisfaction = _satisfaction(timeline, orders)
    events = _make_events(timeline, customers, orders, referrals, consents, satisfaction)
    surveys = _make_surveys(timeline, customers, orders, satisfaction)
    return _DemoData(timeline, customers, orders, referrals, consents, events, surveys)


# --- customers -------------------------------------------------------------------------------


def _make_customers(timeline: _Timeline, n: int) -> _Customers:
    rng = timeline.rng("customers")
    clock = timeline.clock
    # Signups grow exponentially in operational time (so they follow the seasons too).
    total = float(clock.operational(np.array([timeline.horizon]))[0])
    u = np.sort(rng.random(n))
    created_t = clock.real(total * np.log1p(u * math.expm1(SIGNUP_GROWTH)) / SIGNUP_GROWTH)
    created_t = np.minimum(created_t, timeline.horizon)

    italian = rng.random(n) < ITALIAN_SHARE
    english = _choice(rng, n, [c[1] for c in ENGLISH_COUNTRIES])
    countries = np.array([c[0] for c in ENGLISH_COUNTRIES], dtype=object)
    faker_locales = np.array([FAKER_LOCALES.index(c[2]) for c in ENGLISH_COUNTRIES])
    faker_locale = np.where(italian, FAKER_LOCALES.index("it_IT"), faker_locales[english])
    timezone = np.full(n, "Europe/Rome", dtype=object)
    for index, (_, _, _, zones, weights) in enumerate(ENGLISH_COUNTRIES):
        members = np.flatnonzero(~italian & (english == index))
        timezone[members] = np.array(zones, dtype=object)[_choice(rng, len(members), weights)]

    first_name, last_name, email = _names(timeline, faker_locale)

    has_birth = rng.random(n) < BIRTH_DATE_SHARE
    age_days = (np.clip(rng.normal(41.0, 13.0, n), 18.0, 85.0) * 365.25).astype(np.int64)
    today = np.datetime64(timeline.end_s, "s").astype("datetime64[D]")
    birth = (today - age_days.astype("timedelta64[D]")).astype(str).astype(object)

    channel = _choice(rng, n, [c[1] for c in CHANNELS])
    mean_cost = np.array([c[2] for c in CHANNELS], dtype=np.float64)[channel]
    cost = np.round(mean_cost * rng.lognormal(-0.125, 0.5, n)).astype(np.int64)  # mean 1×

    category = rng.integers(0, len(CATEGORIES), n)
    frequency = _choice(rng, n, NEWSLETTER_FREQUENCY_WEIGHTS)
    attributes = _render_json(
        [category, frequency],
        lambda c, f: {
            "favourite_category": CATEGORIES[c],
            "newsletter_frequency": NEWSLETTER_FREQUENCIES[f],
        },
    )
    return _Customers(
        created_t=created_t,
        locale=np.where(italian, "it", "en").astype(object),
        country=np.where(italian, "IT", countries[english]).astype(object),
        timezone=timezone,
        first_name=first_name,
        last_name=last_name,
        email=email,
        birth_date=_or_none(has_birth, birth),
        channel=channel,
        acquisition_cost=cost,
        attributes=attributes,
    )


def _names(timeline: _Timeline, faker_locale: Indices) -> tuple[Objects, Objects, Objects]:
    """First and last names sampled from per-locale Faker pools, and unique addresses."""
    n = len(faker_locale)
    rng = timeline.rng("names")
    first = np.empty(n, dtype=object)
    last = np.empty(n, dtype=object)
    first_key = np.empty(n, dtype=object)
    first_initial = np.empty(n, dtype=object)
    last_key = np.empty(n, dtype=object)
    female = rng.random(n) < 0.5
    for index, locale in enumerate(FAKER_LOCALES):
        members = np.flatnonzero(faker_locale == index)
        faker = Faker(locale)
        faker.seed_instance(timeline.seed)
        pools = [
            [faker.first_name_female() for _ in range(NAME_POOL_SIZE)],
            [faker.first_name_male() for _ in range(NAME_POOL_SIZE)],
            [faker.last_name() for _ in range(NAME_POOL_SIZE)],
        ]
        names = [np.array(pool, dtype=object) for pool in pools]
        keys = [np.array([_email_key(name) for name in pool], dtype=object) for pool in pools]
        pick_first = rng.integers(0, NAME_POOL_SIZE, len(members))
        pick_last = rng.integers(0, NAME_POOL_SIZE, len(members))
        is_female = female[members]
        first[members] = np.where(is_female, names[0][pick_first], names[1][pick_first])
        first_key[members] = np.where(is_female, keys[0][pick_first], keys[1][pick_first])
        first_initial[members] = np.array([key[0] for key in first_key[members]], dtype=object)
        last[members] = names[2][pick_last]
        last_key[members] = keys[2][pick_last]

    # A distinct number per customer keeps addresses unique whatever the names: the digits
    # at the end of an address are exactly that number.
    number = (rng.permutation(n) + 1 + int(rng.integers(0, 9_000))).astype(str).astype(object)
    pattern = _choice(rng, n, EMAIL_PATTERN_WEIGHTS)
    domain = np.array(EMAIL_DOMAINS, dtype=object)[_choice(rng, n, EMAIL_DOMAIN_WEIGHTS)]
    without = rng.random(n) < NO_EMAIL_SHARE
    email = np.empty(n, dtype=object)
    for index, parts in enumerate(
        (
            (first_key, ".", last_key, ".", number),
            (first_key, last_key, number),
            (first_initial, ".", last_key, number),
        )
    ):
        members = np.flatnonzero((pattern == index) & ~without)
        local = np.full(len(members), "", dtype=object)
        for part in parts:
            local = local + (part if isinstance(part, str) else part[members])
        email[members] = local + "@" + domain[members]
    return first, last, email


def _email_key(name: str) -> str:
    """A name as it appears in an e-mail address: ASCII lower-case letters only."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in plain.lower() if "a" <= ch <= "z") or "cliente"


# --- orders ----------------------------------------------------------------------------------


def _make_orders(timeline: _Timeline, customers: _Customers, mean_orders: float | None) -> _Orders:
    n = customers.n
    clock = timeline.clock
    rng = timeline.rng("behaviour")
    buys = np.array([c[3] for c in CHANNELS])[customers.channel]
    at_checkout_share = np.array([c[4] for c in CHANNELS])[customers.channel]
    dropout_factor = np.array([c[5] for c in CHANNELS])[customers.channel]
    buy_u = rng.random(n)
    at_checkout = rng.random(n) < at_checkout_share
    minutes = rng.uniform(1.0, 30.0, n)
    delay = rng.exponential(FIRST_ORDER_DELAY_DAYS, n)
    rate = rng.gamma(RATE_SHAPE, RATE_MEAN_PER_DAY / RATE_SHAPE, n)
    dropout = np.minimum(rng.beta(*DROPOUT_BETA, n) * dropout_factor, 1.0)
    first_t = np.where(
        at_checkout,
        customers.created_t + minutes / (24 * 60),
        clock.real(clock.operational(customers.created_t) + delay),
    )
    process = _PurchaseProcess(timeline, first_t, rate, dropout)

    scale, buyer_share = 1.0, 1.0
    if mean_orders is not None:
        scale, buyer_share = process.calibrate(mean_orders, buy_u < buys)
    buyer = buy_u < buys * buyer_share
    customer, t, dropped = process.run(timeline.rng("orders"), buyer, scale)
    order = np.argsort(customer, kind="stable")  # purchases come in time order already
    customer, t = customer[order], t[order]
    customer, t = _ensure_recent_order(timeline, customer, t, dropped)

    rng = timeline.rng("amounts")
    mean = np.where(customers.locale == "it", SPEND_MEAN_CENTS["it"], SPEND_MEAN_CENTS["en"])
    sigma = SPEND_CUSTOMER_SIGMA
    own_mean = mean * rng.lognormal(-(sigma**2) / 2, sigma, n)
    sigma = SPEND_ORDER_SIGMA
    raw = own_mean[customer] * rng.lognormal(-(sigma**2) / 2, sigma, len(customer))
    # Shop prices: whole euros, half of them ending in .90.
    cents = np.round(raw / 100.0) * 100 - 10 * (rng.random(len(customer)) < 0.5)
    amount = np.maximum(cents, MIN_ORDER_CENTS).astype(np.int64)

    status_u = timeline.rng("statuses").random(len(customer))
    status = np.zeros(len(customer), dtype=np.int8)
    status[status_u < CANCELLED_SHARE + REFUNDED_SHARE] = ORDER_STATUSES.index("refunded")
    status[status_u < CANCELLED_SHARE] = ORDER_STATUSES.index("cancelled")
    recent = np.flatnonzero(t > timeline.horizon - RECENT_DAYS)
    if len(recent) and not np.any(status[recent] == 0):
        status[recent[-1]] = 0  # the thank-you campaign needs a completed recent order

    count, start = _groups(customer, n)
    bought = count > 0
    first = np.where(bought, start, -1)
    last = np.where(bought, start + count - 1, -1)
    padded_t = np.append(t, np.nan)  # index -1: never bought
    done = status == 0
    done_count, done_start = _groups(customer[done], n)
    return _Orders(
        customer=customer,
        t=t,
        amount=amount,
        status=status,
        referral_code=np.full(len(customer), -1, dtype=np.int64),
        first=first,
        first_t=np.where(bought, padded_t[first], np.inf),
        last_t=np.where(bought, padded_t[last], -np.inf),
        first_completed=bought & np.append(done, False)[first],
        dropped=dropped,
        done_t=t[done],
        done_count=done_count,
        done_start=done_start,
    )


class _PurchaseProcess:
    """BG/NBD-like buying: from the first order on, a buyer buys at their own rate
    (exponential gaps in operational time) and after each order stops for good with their
    own dropout probability."""

    def __init__(self, timeline: _Timeline, first_t: F64, rate: F64, dropout: F64) -> None:
        self.timeline = timeline
        self.first_t = first_t
        self.rate = rate
        self.dropout = dropout

    def run(
        self,
        rng: np.random.Generator,
        buyer: Bools,
        scale: float,
        subset: I64 | None = None,
    ) -> tuple[I64, F64, Bools]:
        """(customer, time) of every order until as_of, and who dropped out. ``scale``
        multiplies the purchase rates and divides the dropout probabilities. ``subset``
        runs a sample of the customers (numbered within the sample)."""
        first_t, rate, dropout = self.first_t, self.rate, self.dropout
        if subset is not None:
            first_t, rate, dropout = first_t[subset], rate[subset], dropout[subset]
        clock, horizon = self.timeline.clock, self.timeline.horizon
        buyers = np.flatnonzero(buyer & (first_t <= horizon)).astype(np.int64)
        rates = np.minimum(rate[buyers] * scale, MAX_RATE_PER_DAY)
        drops = np.minimum(dropout[buyers] / scale, 1.0)
        dropped = np.zeros(len(first_t), dtype=bool)
        active = np.arange(len(buyers))
        t = first_t[buyers]
        tau = clock.operational(t)
        out_customer: list[I64] = [buyers]
        out_t: list[F64] = [t]
        while len(active):
            leaves = rng.random(len(active)) < drops[active]
            dropped[buyers[active[leaves]]] = True
            active, tau = active[~leaves], tau[~leaves]
            tau = tau + rng.exponential(1.0, len(active)) / rates[active]
            t = clock.real(tau)
            within = t <= horizon
            active, tau, t = active[within], tau[within], t[within]
            out_customer.append(buyers[active])
            out_t.append(t)
        return np.concatenate(out_customer), np.concatenate(out_t), dropped

    def calibrate(self, target: float, buyer: Bools) -> tuple[float, float]:
        """(scale, buyer share) giving about ``target`` orders per customer, found by
        bisection on the log scale over a pilot run of (a systematic sample of) customers.
        A target below one order per buyer also thins the buyers."""
        n = len(buyer)
        step = max(1, math.ceil(n / PILOT_CUSTOMERS))
        subset = np.arange(0, n, step, dtype=np.int64)
        stream = "orders" if step == 1 else "pilot"  # a full-size pilot is the real run

        def orders_per_customer(log_scale: float) -> float:
            rng = self.timeline.rng(stream)
            customer, _, _ = self.run(rng, buyer[subset], math.exp(log_scale), subset)
            return len(customer) / len(subset)

        low, high = -8.0, 8.0
        at_low = orders_per_customer(low)
        if target <= at_low:
            return math.exp(low), (target / at_low if at_low > 0 else 1.0)
        at_high = orders_per_customer(high)
        if at_high < target:
            raise ValueError(
                f"mean_orders={target} is more than {self.timeline.horizon:.0f} days of "
                f"history can hold (at most about {at_high:.1f})"
            )
        for _ in range(CALIBRATION_STEPS):
            middle = (low + high) / 2
            value = orders_per_customer(middle)
            if abs(value - target) <= CALIBRATION_TOLERANCE * target:
                return math.exp(middle), 1.0
            low, high = (middle, high) if value < target else (low, middle)
        return math.exp((low + high) / 2), 1.0


def _ensure_recent_order(
    timeline: _Timeline, customer: I64, t: F64, dropped: Bools
) -> tuple[I64, F64]:
    """If nobody bought in the last days (a tiny demo), a customer still buying does."""
    if np.any(t > timeline.horizon - RECENT_DAYS):
        return customer, t
    bought = np.zeros(len(dropped), dtype=bool)
    bought[customer] = True
    candidates = np.flatnonzero(bought & ~dropped)
    if not len(candidates):
        return customer, t
    rng = timeline.rng("recent")
    who = int(candidates[rng.integers(0, len(candidates))])
    when = timeline.horizon - rng.uniform(1.0, 47.0) / 24.0
    at = int(np.searchsorted(customer, who, side="right"))
    return np.insert(customer, at, who), np.insert(t, at, when)


# --- referrals -------------------------------------------------------------------------------


def _make_referrals(timeline: _Timeline, customers: _Customers, orders: _Orders) -> _Referrals:
    """Referral codes for frequent buyers, some converted into a referred customer.

    Updates ``customers`` (the referees' channel and cost) and ``orders`` (the code on the
    referee's first order).
    """
    rng = timeline.rng("referrals")
    n = customers.n
    eligible = np.flatnonzero(orders.done_count >= REFERRER_MIN_ORDERS)
    chosen = eligible[rng.random(len(eligible)) < REFERRER_SHARE]
    # The referral request follows the third completed order by a few days.
    third = orders.done_t[orders.done_start[chosen] + REFERRER_MIN_ORDERS - 1]
    created_t = third + rng.uniform(1.0, 10.0, len(chosen))
    keep = created_t <= timeline.horizon
    by_time = np.argsort(created_t[keep], kind="stable")
    referrer = chosen[keep][by_time].astype(np.int64)
    created_t = created_t[keep][by_time]
    m = len(referrer)
    code = _referral_codes(rng, m)

    # A converted code's referee signed up after the code was handed out and their first
    # order (completed) carried the code; each referee belongs to one code.
    converts = rng.random(m) < REFERRAL_CONVERSION
    skip = rng.geometric(0.08, m) - 1
    first = orders.first
    candidate = np.flatnonzero(orders.first_completed)
    position = np.searchsorted(customers.created_t[candidate], created_t, side="right") + skip
    taken = np.zeros(len(candidate), dtype=bool)
    referee = np.full(m, -1, dtype=np.int64)
    for i in np.flatnonzero(converts).tolist():
        j = int(position[i])
        while j < len(candidate) and (taken[j] or candidate[j] == referrer[i]):
            j += 1
        if j < len(candidate):
            taken[j] = True
            referee[i] = candidate[j]
    converted = referee >= 0
    converted_order = np.where(converted, first[np.maximum(referee, 0)], -1)
    orders.referral_code[converted_order[converted]] = np.flatnonzero(converted)
    customers.channel[referee[converted]] = -1
    customers.acquisition_cost[referee[converted]] = REFERRAL_REWARD_CENTS
    referred_by = np.full(n, -1, dtype=np.int64)
    referred_by[referee[converted]] = referrer[converted]

    visits = np.where(converted, 1 + rng.poisson(1.5, m), rng.poisson(1.2, m)).astype(np.int64)
    # A converted code was last followed by the friend who then signed up.
    last_visit_t = np.where(
        converted,
        customers.created_t[np.maximum(referee, 0)],
        created_t + rng.random(m) * (timeline.horizon - created_t),
    )
    return _Referrals(
        code=code,
        referrer=referrer,
        referee=referee,
        created_t=created_t,
        visits=visits,
        last_visit_t=np.where(visits > 0, last_visit_t, np.nan),
        converted_order=converted_order,
        referred_by=referred_by,
    )


def _referral_codes(rng: np.random.Generator, m: int) -> Objects:
    """``m`` distinct codes "CV-XXXXXX" (upper-case letters and digits)."""
    base = len(REFERRAL_CODE_ALPHABET)
    numbers = np.empty(0, dtype=np.int64)
    while len(numbers) < m:
        draw = np.concatenate([numbers, rng.integers(0, base**REFERRAL_CODE_LENGTH, m)])
        _, first_seen = np.unique(draw, return_index=True)
        numbers = draw[np.sort(first_seen)][:m]
    alphabet = np.array(list(REFERRAL_CODE_ALPHABET), dtype=object)
    letters = [alphabet[(numbers // base**k) % base] for k in reversed(range(REFERRAL_CODE_LENGTH))]
    return np.array(["CV-" + "".join(chars) for chars in zip(*letters, strict=True)], dtype=object)


# --- consents --------------------------------------------------------------------------------


def _make_consents(timeline: _Timeline, customers: _Customers, orders: _Orders) -> _Consents:
    """A marketing and a surveys answer for most customers, with source and time."""
    n = customers.n
    rng = timeline.rng("consents")
    at_checkout = orders.first_t - customers.created_t < 1 / 24
    imported = customers.created_t < IMPORTED_SHARE_OF_HISTORY * timeline.horizon
    source = np.where(
        imported,
        CONSENT_SOURCES.index("import"),
        np.where(at_checkout, CONSENT_SOURCES.index("checkout"), 0),
    )
    customer: list[I64] = []
    topic: list[Objects] = []
    granted: list[Bools] = []
    origin: list[I64] = []
    times: list[F64] = []
    marketing = np.full(n, -1, dtype=np.int8)
    for name, (yes, no) in CONSENT_SHARES.items():
        u = rng.random(n)
        answered = np.flatnonzero(u < yes + no).astype(np.int64)
        said_yes = u[answered] < yes
        # Half of the refusals came later, from the preference centre.
        later = ~said_yes & (rng.random(len(answered)) < 0.5)
        t = customers.created_t[answered].copy()
        t[later] += rng.random(int(later.sum())) * (timeline.horizon - t[later])
        customer.append(answered)
        topic.append(np.full(len(answered), name, dtype=object))
        granted.append(said_yes)
        origin.append(np.where(later, CONSENT_SOURCES.index("preference_center"), source[answered]))
        times.append(t)
        if name == "marketing":
            marketing[answered] = said_yes.astype(np.int8)
    all_customers = np.concatenate(customer)
    order = np.argsort(all_customers, kind="stable")
    return _Consents(
        customer=all_customers[order],
        topic=np.concatenate(topic)[order],
        granted=np.concatenate(granted)[order],
        source=np.array(CONSENT_SOURCES, dtype=object)[np.concatenate(origin)[order]],
        t=np.concatenate(times)[order],
        marketing=marketing,
    )


# --- events ----------------------------------------------------------------------------------


def _satisfaction(timeline: _Timeline, orders: _Orders) -> F64:
    """A latent satisfaction per customer, higher for frequent buyers (NPS and ratings)."""
    frequency = np.log1p(orders.done_count.astype(np.float64))
    bought = orders.done_count > 0
    mean = float(frequency[bought].mean()) if bought.any() else 0.0
    sd = float(frequency[bought].std()) if bought.sum() > 1 else 1.0
    noise = timeline.rng("satisfaction").normal(0.0, 1.0, len(frequency))
    return 0.8 * (frequency - mean) / max(sd, 1e-9) + noise


def _make_events(
    timeline: _Timeline,
    customers: _Customers,
    orders: _Orders,
    referrals: _Referrals,
    consents: _Consents,
    satisfaction: F64,
) -> _Events:
    """Signups, site visits, downloads, newsletter clicks, reviews, support tickets and
    referral visits, each with small JSON properties."""
    n = customers.n
    horizon = timeline.horizon
    rng = timeline.rng("events")
    bought = orders.first >= 0
    # Customers who stopped buying fade out, prospects lose interest after a while; the
    # others stay around until as_of.
    start = customers.created_t
    interest = start + rng.exponential(PROSPECT_INTEREST_DAYS, n)
    end = np.where(
        orders.dropped, orders.last_t + DROPPED_ACTIVITY_DAYS, np.where(bought, horizon, interest)
    )
    end = np.minimum(end, horizon)
    parts: list[tuple[I64, str, F64, Objects]] = []

    def spread(who: I64) -> F64:
        return timeline.spread(rng, start[who], end[who])

    everyone = np.arange(n, dtype=np.int64)
    at_checkout = orders.first_t - customers.created_t < 1 / 24
    channel_names = [REFERRAL_CHANNEL, *(c[0] for c in CHANNELS)]
    signup = _render_json(
        [at_checkout, customers.channel + 1],
        lambda checkout, channel: {
            "form": "checkout" if checkout else "account",
            "channel": channel_names[channel],
        },
    )
    parts.append((everyone, "signup", customers.created_t, signup))

    who = np.repeat(everyone, rng.poisson(VISITS_PER_CUSTOMER, n))
    parts.append((who, "site_visit", spread(who), _visit_properties(rng, len(who))))
    # Prospects who looked around lately: the "engaged" stage.
    lately = np.flatnonzero(
        ~bought & (start < horizon - 14.0) & (rng.random(n) < RECENT_VISIT_SHARE)
    ).astype(np.int64)
    lately_t = horizon - rng.uniform(0.05, 14.0, len(lately))
    parts.append((lately, "site_visit", lately_t, _visit_properties(rng, len(lately))))

    who = np.repeat(everyone, rng.poisson(DOWNLOADS_PER_CUSTOMER, n))
    asset = rng.integers(0, len(ASSETS), len(who))
    downloads = _render_json([asset], lambda a: {"asset": ASSETS[a]})
    parts.append((who, "content_download", spread(who), downloads))

    subscribed = np.flatnonzero(consents.marketing == 1).astype(np.int64)
    who = np.repeat(subscribed, rng.poisson(CLICKS_PER_SUBSCRIBER, len(subscribed)))
    t = spread(who)
    month = timeline.seconds(t).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    link = rng.integers(0, len(NEWSLETTER_LINKS), len(who))
    clicks = _render_json(
        [month, link],
        lambda mo, li: {
            "newsletter": f"{1970 + mo // 12:04d}-{mo % 12 + 1:02d}",
            "link": NEWSLETTER_LINKS[li],
        },
    )
    parts.append((who, "newsletter_click", t, clicks))

    # Reviews and support tickets follow a completed order.
    buyers = np.flatnonzero(orders.done_count > 0).astype(np.int64)
    who = buyers[rng.random(len(buyers)) < REVIEW_SHARE]
    t = orders.pick_completed(rng, who) + rng.uniform(3.0, 21.0, len(who))
    who, t = who[t <= horizon], t[t <= horizon]
    product = rng.integers(0, PRODUCTS, len(who))
    noise = rng.normal(0.0, 0.5, len(who))
    rating = np.clip(np.round(3.9 + 0.9 * satisfaction[who] + noise), 1, 5).astype(np.int64)
    reviews = _render_json(
        [product, rating], lambda p, r: {"product": f"P-{p + 1:04d}", "rating": r}
    )
    parts.append((who, "review", t, reviews))

    who = buyers[rng.random(len(buyers)) < TICKET_SHARE]
    t = orders.pick_completed(rng, who) + rng.uniform(0.2, 10.0, len(who))
    who, t = who[t <= horizon], t[t <= horizon]
    topic = rng.integers(0, len(TICKET_TOPICS), len(who))
    channel = _choice(rng, len(who), (0.5, 0.4, 0.1))
    tickets = _render_json(
        [topic, channel],
        lambda to, ch: {"topic": TICKET_TOPICS[to], "channel": TICKET_CHANNELS[ch]},
    )
    parts.append((who, "support_ticket", t, tickets))

    # The friend who followed a referral link and signed up.
    converted = np.flatnonzero(referrals.referee >= 0)
    who = referrals.referee[converted]
    codes = [json.dumps({"code": code}) for code in referrals.code[converted].tolist()]
    parts.append((who, "referral_visit", customers.created_t[who], np.array(codes, dtype=object)))

    customer = np.concatenate([p[0] for p in parts])
    kind = np.concatenate([np.full(len(p[0]), EVENT_TYPES.index(p[1]), np.int8) for p in parts])
    seconds = timeline.seconds(np.concatenate([p[2] for p in parts]))
    properties = np.concatenate([p[3] for p in parts])
    order = np.lexsort((kind, customer, seconds))
    return _Events(customer[order], kind[order], seconds[order], properties[order])


def _visit_properties(rng: np.random.Generator, n: int) -> Objects:
    """Pages seen and device: half home/cart/blog/offers, half categories and products."""
    page = rng.integers(0, len(PAGES) + len(CATEGORIES) + PRODUCTS, n)
    page = np.where(rng.random(n) < 0.5, page, rng.integers(0, len(PAGES), n))
    device = _choice(rng, n, DEVICE_WEIGHTS)

    def render(p: int, d: int) -> dict[str, Any]:
        if p < len(PAGES):
            path = PAGES[p]
        elif p < len(PAGES) + len(CATEGORIES):
            path = f"/category/{CATEGORIES[p - len(PAGES)]}"
        else:
            path = f"/product/P-{p - len(PAGES) - len(CATEGORIES) + 1:04d}"
        return {"page": path, "device": DEVICES[d]}

    return _render_json([page, device], render)


# --- surveys ---------------------------------------------------------------------------------


def _make_surveys(
    timeline: _Timeline, customers: _Customers, orders: _Orders, satisfaction: F64
) -> _Surveys:
    """NPS answers a few days after a completed order; promoters among frequent buyers."""
    rng = timeline.rng("surveys")
    counts = orders.done_count
    share = NPS_BASE_SHARE + NPS_REPEAT_BONUS * (counts >= REFERRER_MIN_ORDERS)
    who = np.flatnonzero((counts > 0) & (rng.random(customers.n) < share)).astype(np.int64)
    t = orders.pick_completed(rng, who) + rng.uniform(1.0, 14.0, len(who))
    keep = t <= timeline.horizon
    who, t = who[keep], t[keep]
    score = np.clip(np.round(NPS_CENTRE + 1.6 * satisfaction[who]), 0, 10).astype(np.int64)
    band = np.where(score >= 9, 0, np.where(score >= 7, 1, 2))
    with_comment = rng.random(len(who)) < NPS_COMMENT_SHARE
    italian = customers.locale[who] == "it"
    comment = _render(
        [italian, band, rng.integers(0, 6, len(who))],
        lambda it, b, pick: _nps_comment("it" if it else "en", b, pick),
    )
    order = np.lexsort((who, t))
    return _Surveys(
        customer=who[order],
        seconds=timeline.seconds(t[order]),
        score=score[order],
        comment=_or_none(with_comment, comment)[order],
    )


def _nps_comment(locale: str, band: int, pick: int) -> str:
    options = NPS_COMMENTS[locale][("promoter", "passive", "detractor")[band]]
    return options[pick % len(options)]


# --- writing ---------------------------------------------------------------------------------

_MODELS: Final[dict[str, type[Any]]] = {  # in the order they are written
    "customers": Customer,
    "orders": Order,
    "referrals": Referral,
    "events": Event,
    "consents": Consent,
    "survey_responses": SurveyResponse,
}


@dataclass(frozen=True)
class _Keys:
    """Primary keys for the new rows, following the ids already in the database."""

    base: dict[str, int]  # first id per table
    customer: I64  # per customer
    order: I64  # per order (orders are numbered in the order they were placed)
    order_in_time: I64  # order indices sorted by time
    placed_s: I64  # per order

    @classmethod
    def reserve(cls, connection: Connection, data: _DemoData) -> _Keys:
        base = {name: _next_id(connection, model) for name, model in _MODELS.items()}
        placed_s = data.timeline.seconds(data.orders.t)
        in_time = np.lexsort((data.orders.customer, placed_s)).astype(np.int64)
        rank = np.empty(len(in_time), dtype=np.int64)
        rank[in_time] = np.arange(len(in_time), dtype=np.int64)
        return cls(
            base=base,
            customer=base["customers"] + np.arange(data.customers.n, dtype=np.int64),
            order=base["orders"] + rank,
            order_in_time=in_time,
            placed_s=placed_s,
        )


def _write(connection: Connection, data: _DemoData) -> DemoSummary:
    """Insert everything, table by table in chunks, within the caller's transaction."""
    keys = _Keys.reserve(connection, data)
    frames: dict[str, Iterator[pd.DataFrame]] = {
        "customers": _customer_frames(data, keys),
        "orders": _order_frames(data, keys),
        "referrals": _referral_frames(data, keys),
        "events": _event_frames(data, keys),
        "consents": _consent_frames(data, keys),
        "survey_responses": _survey_frames(data, keys),
    }
    rows = (
        data.customers.n
        + len(data.orders.customer)
        + len(data.events.customer)
        + len(data.consents.customer)
    )
    with _deferred_checks(connection, list(_MODELS), rows):
        written = {
            name: sum(insert_frame(connection, _table(_MODELS[name]), frame) for frame in chunks)
            for name, chunks in frames.items()
        }
    if connection.dialect.name == "postgresql":
        for name in _MODELS:
            # Explicit ids bypass the sequences: move them past what was written, and give
            # the planner statistics for the freshly loaded tables.
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT max(id) FROM {name}))"
            )
            connection.exec_driver_sql(f"ANALYZE {name}")
    return DemoSummary(
        customers=written["customers"],
        orders=written["orders"],
        events=written["events"],
        consents=written["consents"],
        survey_responses=written["survey_responses"],
        referrals=written["referrals"],
    )


_FOREIGN_KEYS: Final = """
SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
WHERE co.contype = 'f' AND cl.relname = ANY(:tables)
  AND cl.relnamespace = current_schema()::regnamespace
ORDER BY cl.relname, co.conname
"""
_SECONDARY_INDEXES: Final = """
SELECT i.indexname, i.indexdef
FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename = ANY(:tables)
  AND i.indexdef NOT LIKE 'CREATE UNIQUE %'
  AND NOT EXISTS (
    SELECT 1 FROM pg_constraint co
    WHERE co.conindid = to_regclass(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))
  )
ORDER BY i.tablename, i.indexname
"""


@contextmanager
def _deferred_checks(connection: Connection, tables: Sequence[str], rows: int) -> Iterator[None]:
    """A large load into PostgreSQL follows its manual ("Populating a Database"): the loaded
    tables' foreign keys and non-unique indexes are dropped before and re-created after,
    from their own definitions in the catalog. It all happens in the load's transaction, so
    a failure restores them, and re-adding a foreign key checks every row once. Primary keys
    and unique constraints stay. A role that may not alter the tables loads with the checks
    in place. Other sessions wait for the tables until the load commits.
    """
    if connection.dialect.name != "postgresql" or rows < BULK_LOAD_MIN_ROWS:
        yield
        return
    quote = connection.dialect.identifier_preparer.quote
    names = {"tables": list(tables)}
    foreign_keys = connection.execute(text(_FOREIGN_KEYS), names).tuples().all()
    indexes = connection.execute(text(_SECONDARY_INDEXES), names).tuples().all()
    try:
        with connection.begin_nested():
            for table, name, _ in foreign_keys:
                connection.exec_driver_sql(
                    f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}"
                )
            for name, _ in indexes:
                connection.exec_driver_sql(f"DROP INDEX {quote(name)}")
    except DBAPIError:  # not the tables' owner: check row by row
        yield
        return
    yield
    connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for _, definition in indexes:
        connection.exec_driver_sql(definition)
    for table, name, definition in foreign_keys:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {definition}"
        )


def _customer_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    customers = data.customers
    channels = np.array([REFERRAL_CHANNEL, *(c[0] for c in CHANNELS)], dtype=object)
    for part in _chunks(np.arange(customers.n, dtype=np.int64)):
        created = _utc(data.timeline.seconds(customers.created_t[part]))
        yield pd.DataFrame(
            {
                "id": keys.customer[part],
                "external_id": _external_ids("c", part, customers.n, 6),
                "email": customers.email[part],
                "first_name": customers.first_name[part],
                "last_name": customers.last_name[part],
                "locale": customers.locale[part],
                "timezone": customers.timezone[part],
                "country": customers.country[part],
                "birth_date": customers.birth_date[part],
                "acquisition_channel": channels[customers.channel[part] + 1],
                "acquisition_cost_cents": customers.acquisition_cost[part],
                "referred_by_id": _nullable(keys.customer, data.referrals.referred_by[part]),
                "attributes": customers.attributes[part],
                "created_at": created,
                "updated_at": created,
            }
        )


def _order_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    orders = data.orders
    statuses = np.array(ORDER_STATUSES, dtype=object)
    codes = np.array([*data.referrals.code.tolist(), None], dtype=object)  # -1: no code
    rank = keys.order - keys.base["orders"]
    for part in _chunks(keys.order_in_time):
        placed = _utc(keys.placed_s[part])
        yield pd.DataFrame(
            {
                "id": keys.order[part],
                "external_id": _external_ids("o", rank[part], len(rank), 7),
                "customer_id": keys.customer[orders.customer[part]],
                "placed_at": placed,
                "amount_cents": orders.amount[part],
                "currency": CURRENCY,
                "status": statuses[orders.status[part]],
                "referral_code": codes[orders.referral_code[part]],
                "created_at": placed,
            }
        )


def _referral_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    referrals = data.referrals
    seconds = data.timeline.seconds
    converted = referrals.referee >= 0
    order = np.maximum(referrals.converted_order, 0)
    converted_s = keys.placed_s[order] if len(keys.placed_s) else np.zeros(len(order), np.int64)
    yield pd.DataFrame(
        {
            "id": keys.base["referrals"] + np.arange(len(referrals.code), dtype=np.int64),
            "code": referrals.code,
            "referrer_id": keys.customer[referrals.referrer],
            "referee_id": _nullable(keys.customer, referrals.referee),
            "campaign": REFERRAL_CAMPAIGN,
            "created_at": _utc(seconds(referrals.created_t)),
            "last_visited_at": _utc(seconds(np.nan_to_num(referrals.last_visit_t))).where(
                referrals.visits > 0
            ),
            "visits": referrals.visits,
            "converted_at": _utc(converted_s).where(converted),
            "converted_order_id": _nullable(keys.order, referrals.converted_order),
        }
    )


def _event_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    events = data.events
    types = np.array(EVENT_TYPES, dtype=object)
    for part in _chunks(np.arange(len(events.customer), dtype=np.int64)):
        yield pd.DataFrame(
            {
                "id": keys.base["events"] + part,
                "external_id": _external_ids("e", part, len(events.customer), 8),
                "customer_id": keys.customer[events.customer[part]],
                "type": types[events.kind[part]],
                "occurred_at": _utc(events.seconds[part]),
                "properties": events.properties[part],
            }
        )


def _consent_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    consents = data.consents
    yield pd.DataFrame(
        {
            "id": keys.base["consents"] + np.arange(len(consents.customer), dtype=np.int64),
            "customer_id": keys.customer[consents.customer],
            "topic": consents.topic,
            "granted": consents.granted,
            "source": consents.source,
            "recorded_at": _utc(data.timeline.seconds(consents.t)),
        }
    )


def _survey_frames(data: _DemoData, keys: _Keys) -> Iterator[pd.DataFrame]:
    surveys = data.surveys
    yield pd.DataFrame(
        {
            "id": keys.base["survey_responses"] + np.arange(len(surveys.customer), dtype=np.int64),
            "customer_id": keys.customer[surveys.customer],
            "kind": "nps",
            "score": surveys.score,
            "comment": surveys.comment,
            "answered_at": _utc(surveys.seconds),
        }
    )


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _next_id(connection: Connection, model: type[Any]) -> int:
    current = connection.execute(select(func.max(_table(model).c.id))).scalar_one()
    return int(current or 0) + 1


def _external_ids(kind: str, index: I64, total: int, width: int) -> list[str]:
    """``demo-c-000001``-style ids of 0-based ``index``, zero-padded to fit ``total``."""
    width = max(width, len(str(total)))
    return [f"{DEMO_PREFIX}{kind}-{i + 1:0{width}d}" for i in index.tolist()]


def _nullable(ids: I64, index: I64) -> pd.arrays.IntegerArray:
    """``ids[index]`` where ``index >= 0``, NULL elsewhere."""
    values = pd.array(ids[np.maximum(index, 0)] if len(ids) else index, dtype="Int64")
    values[index < 0] = pd.NA
    return values


def _utc(seconds: I64) -> pd.Series:
    """Unix seconds as a UTC datetime64 column."""
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def _chunks(index: I64) -> Iterator[I64]:
    for start in range(0, len(index), WRITE_CHUNK_ROWS):
        yield index[start : start + WRITE_CHUNK_ROWS]
