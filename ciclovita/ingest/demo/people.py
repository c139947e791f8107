"""The people of the demo: who the customers are, their names and addresses, and what they
consented to.

Customers sign up over the history with exponential growth (recent months have more
signups, the last days hold fresh prospects); 60% are Italian, 40% English-speaking (GB,
IE, US, CA, AU with their IANA time zones). Names come from small pools drawn once from
Faker per locale and sampled with numpy, so a million customers cost no more Faker calls
than a thousand. Addresses are on example.com/.org/.net only, unique by a number each.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from faker import Faker

from ciclovita.ingest.demo.parameters import (
    BIRTH_DATE_SHARE,
    CATEGORIES,
    CHANNELS,
    CONSENT_SHARES,
    CONSENT_SOURCES,
    EMAIL_DOMAIN_WEIGHTS,
    EMAIL_DOMAINS,
    EMAIL_PATTERN_WEIGHTS,
    ENGLISH_COUNTRIES,
    FAKER_LOCALES,
    IMPORTED_SHARE_OF_HISTORY,
    ITALIAN_SHARE,
    NAME_POOL_SIZE,
    NEWSLETTER_FREQUENCIES,
    NEWSLETTER_FREQUENCY_WEIGHTS,
    NO_EMAIL_SHARE,
    SIGNUP_GROWTH,
)
from ciclovita.ingest.demo.timeline import (
    F64,
    I64,
    Bools,
    Indices,
    Objects,
    Timeline,
    choice,
    or_none,
    render_json,
)
from ciclovita.vocabulary import DEFAULT_TIMEZONE, ConsentTopic, Locale


@dataclass
class Customers:
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


def make_customers(timeline: Timeline, n: int) -> Customers:
    """``n`` customers in signup order, with locale, zone, names, addresses and channel."""
    rng = timeline.rng("customers")
    clock = timeline.clock
    # Signups grow exponentially in operational time (so they follow the seasons too).
    total = float(clock.operational(np.array([timeline.horizon]))[0])
    u = np.sort(rng.random(n))
    created_t = clock.real(total * np.log1p(u * math.expm1(SIGNUP_GROWTH)) / SIGNUP_GROWTH)
    created_t = np.minimum(created_t, timeline.horizon)

    italian = rng.random(n) < ITALIAN_SHARE
    english = choice(rng, n, [c[1] for c in ENGLISH_COUNTRIES])
    countries = np.array([c[0] for c in ENGLISH_COUNTRIES], dtype=object)
    faker_locales = np.array([FAKER_LOCALES.index(c[2]) for c in ENGLISH_COUNTRIES])
    faker_locale = np.where(italian, FAKER_LOCALES.index("it_IT"), faker_locales[english])
    timezone = np.full(n, DEFAULT_TIMEZONE, dtype=object)  # Italians: the shop's own zone
    for index, (_, _, _, zones, weights) in enumerate(ENGLISH_COUNTRIES):
        members = np.flatnonzero(~italian & (english == index))
        timezone[members] = np.array(zones, dtype=object)[choice(rng, len(members), weights)]

    first_name, last_name, email = names_and_addresses(timeline, faker_locale)

    has_birth = rng.random(n) < BIRTH_DATE_SHARE
    age_days = (np.clip(rng.normal(41.0, 13.0, n), 18.0, 85.0) * 365.25).astype(np.int64)
    today = np.datetime64(timeline.end_s, "s").astype("datetime64[D]")
    birth = (today - age_days.astype("timedelta64[D]")).astype(str).astype(object)

    channel = choice(rng, n, [c[1] for c in CHANNELS])
    mean_cost = np.array([c[2] for c in CHANNELS], dtype=np.float64)[channel]
    cost = np.round(mean_cost * rng.lognormal(-0.125, 0.5, n)).astype(np.int64)  # mean 1×

    category = rng.integers(0, len(CATEGORIES), n)
    frequency = choice(rng, n, NEWSLETTER_FREQUENCY_WEIGHTS)
    attributes = render_json(
        [category, frequency],
        lambda c, f: {
            "favourite_category": CATEGORIES[c],
            "newsletter_frequency": NEWSLETTER_FREQUENCIES[f],
        },
    )
    return Customers(
        created_t=created_t,
        locale=np.where(italian, Locale.IT, Locale.EN).astype(object),
        country=np.where(italian, "IT", countries[english]).astype(object),
        timezone=timezone,
        first_name=first_name,
        last_name=last_name,
        email=email,
        birth_date=or_none(has_birth, birth),
        channel=channel,
        acquisition_cost=cost,
        attributes=attributes,
    )


def names_and_addresses(
    timeline: Timeline, faker_locale: Indices
) -> tuple[Objects, Objects, Objects]:
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
        keys = [np.array([email_key(name) for name in pool], dtype=object) for pool in pools]
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
    pattern = choice(rng, n, EMAIL_PATTERN_WEIGHTS)
    domain = np.array(EMAIL_DOMAINS, dtype=object)[choice(rng, n, EMAIL_DOMAIN_WEIGHTS)]
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


def email_key(name: str) -> str:
    """A name as it appears in an e-mail address: ASCII lower-case letters only."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in plain.lower() if "a" <= ch <= "z") or "cliente"


# --- consents --------------------------------------------------------------------------------


@dataclass
class Consents:
    customer: I64
    topic: Objects
    granted: Bools
    source: Objects
    t: F64
    marketing: npt.NDArray[np.int8]  # per customer: 1 granted, 0 refused, -1 no answer


def make_consents(timeline: Timeline, customers: Customers, at_checkout: Bools) -> Consents:
    """A marketing and a surveys answer for most customers, with source and time.

    ``at_checkout``: per customer, whether the account was made at the first checkout.
    """
    n = customers.n
    rng = timeline.rng("consents")
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
    for consent_topic, (yes, no) in CONSENT_SHARES.items():
        u = rng.random(n)
        answered = np.flatnonzero(u < yes + no).astype(np.int64)
        said_yes = u[answered] < yes
        # Half of the refusals came later, from the preference centre.
        later = ~said_yes & (rng.random(len(answered)) < 0.5)
        t = customers.created_t[answered].copy()
        t[later] += rng.random(int(later.sum())) * (timeline.horizon - t[later])
        customer.append(answered)
        topic.append(np.full(len(answered), consent_topic.value, dtype=object))
        granted.append(said_yes)
        origin.append(np.where(later, CONSENT_SOURCES.index("preference_center"), source[answered]))
        times.append(t)
        if consent_topic is ConsentTopic.MARKETING:
            marketing[answered] = said_yes.astype(np.int8)
    all_customers = np.concatenate(customer)
    order = np.argsort(all_customers, kind="stable")
    return Consents(
        customer=all_customers[order],
        topic=np.concatenate(topic)[order],
        granted=np.concatenate(granted)[order],
        source=np.array(CONSENT_SOURCES, dtype=object)[np.concatenate(origin)[order]],
        t=np.concatenate(times)[order],
        marketing=marketing,
    )
