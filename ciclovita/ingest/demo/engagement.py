"""What the demo customers do besides buying: engagement events and NPS survey answers.

Signups, site visits, content downloads, newsletter clicks, reviews, support tickets and
referral visits, each with small JSON properties; NPS answers a few days after a completed
order. A latent satisfaction per customer, higher for frequent buyers, drives review
ratings and NPS scores alike, so promoters are more common among frequent buyers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ciclovita.ingest.demo.parameters import (
    ASSETS,
    CATEGORIES,
    CHANNEL_NAMES,
    CLICKS_PER_SUBSCRIBER,
    DEVICE_WEIGHTS,
    DEVICES,
    DOWNLOADS_PER_CUSTOMER,
    DROPPED_ACTIVITY_DAYS,
    EVENT_TYPES,
    NEWSLETTER_LINKS,
    NPS_BASE_SHARE,
    NPS_CENTRE,
    NPS_COMMENT_SHARE,
    NPS_COMMENTS,
    NPS_REPEAT_BONUS,
    PAGES,
    PRODUCTS,
    PROSPECT_INTEREST_DAYS,
    RECENT_VISIT_SHARE,
    REFERRER_MIN_ORDERS,
    REVIEW_SHARE,
    TICKET_CHANNELS,
    TICKET_SHARE,
    TICKET_TOPICS,
    VISITS_PER_CUSTOMER,
)
from ciclovita.ingest.demo.people import Consents, Customers
from ciclovita.ingest.demo.purchases import Orders, Referrals
from ciclovita.ingest.demo.timeline import (
    F64,
    I64,
    Objects,
    Timeline,
    choice,
    or_none,
    render_json,
    render_text,
)
from ciclovita.vocabulary import Locale


def latent_satisfaction(timeline: Timeline, orders: Orders) -> F64:
    """A latent satisfaction per customer, higher for frequent buyers (NPS and ratings)."""
    frequency = np.log1p(orders.done_count.astype(np.float64))
    bought = orders.done_count > 0
    mean = float(frequency[bought].mean()) if bought.any() else 0.0
    sd = float(frequency[bought].std()) if bought.sum() > 1 else 1.0
    noise = timeline.rng("satisfaction").normal(0.0, 1.0, len(frequency))
    return 0.8 * (frequency - mean) / max(sd, 1e-9) + noise


@dataclass
class Events:
    customer: I64
    kind: npt.NDArray[np.int8]  # index into EVENT_TYPES
    seconds: I64
    properties: Objects  # JSON text


def make_events(
    timeline: Timeline,
    customers: Customers,
    orders: Orders,
    referrals: Referrals,
    consents: Consents,
    satisfaction: F64,
) -> Events:
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
    at_checkout = orders.at_checkout(customers.created_t)
    signup = render_json(
        [at_checkout, customers.channel + 1],
        lambda checkout, channel: {
            "form": "checkout" if checkout else "account",
            "channel": CHANNEL_NAMES[channel],
        },
    )
    parts.append((everyone, "signup", customers.created_t, signup))

    who = np.repeat(everyone, rng.poisson(VISITS_PER_CUSTOMER, n))
    parts.append((who, "site_visit", spread(who), visit_properties(rng, len(who))))
    # Prospects who looked around lately: the "engaged" stage.
    lately = np.flatnonzero(
        ~bought & (start < horizon - 14.0) & (rng.random(n) < RECENT_VISIT_SHARE)
    ).astype(np.int64)
    lately_t = horizon - rng.uniform(0.05, 14.0, len(lately))
    parts.append((lately, "site_visit", lately_t, visit_properties(rng, len(lately))))

    who = np.repeat(everyone, rng.poisson(DOWNLOADS_PER_CUSTOMER, n))
    asset = rng.integers(0, len(ASSETS), len(who))
    downloads = render_json([asset], lambda a: {"asset": ASSETS[a]})
    parts.append((who, "content_download", spread(who), downloads))

    subscribed = np.flatnonzero(consents.marketing == 1).astype(np.int64)
    who = np.repeat(subscribed, rng.poisson(CLICKS_PER_SUBSCRIBER, len(subscribed)))
    t = spread(who)
    month = timeline.seconds(t).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    link = rng.integers(0, len(NEWSLETTER_LINKS), len(who))
    clicks = render_json(
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
    reviews = render_json(
        [product, rating], lambda p, r: {"product": f"P-{p + 1:04d}", "rating": r}
    )
    parts.append((who, "review", t, reviews))

    who = buyers[rng.random(len(buyers)) < TICKET_SHARE]
    t = orders.pick_completed(rng, who) + rng.uniform(0.2, 10.0, len(who))
    who, t = who[t <= horizon], t[t <= horizon]
    topic = rng.integers(0, len(TICKET_TOPICS), len(who))
    channel = choice(rng, len(who), (0.5, 0.4, 0.1))
    tickets = render_json(
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
    return Events(customer[order], kind[order], seconds[order], properties[order])


def visit_properties(rng: np.random.Generator, n: int) -> Objects:
    """Pages seen and device: half home/cart/blog/offers, half categories and products."""
    page = rng.integers(0, len(PAGES) + len(CATEGORIES) + PRODUCTS, n)
    page = np.where(rng.random(n) < 0.5, page, rng.integers(0, len(PAGES), n))
    device = choice(rng, n, DEVICE_WEIGHTS)

    def render(p: int, d: int) -> dict[str, Any]:
        if p < len(PAGES):
            path = PAGES[p]
        elif p < len(PAGES) + len(CATEGORIES):
            path = f"/category/{CATEGORIES[p - len(PAGES)]}"
        else:
            path = f"/product/P-{p - len(PAGES) - len(CATEGORIES) + 1:04d}"
        return {"page": path, "device": DEVICES[d]}

    return render_json([page, device], render)


# --- surveys ---------------------------------------------------------------------------------


@dataclass
class Surveys:
    customer: I64
    seconds: I64
    score: I64
    comment: Objects


def make_surveys(
    timeline: Timeline, customers: Customers, orders: Orders, satisfaction: F64
) -> Surveys:
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
    italian = customers.locale[who] == Locale.IT
    comment = render_text(
        [italian, band, rng.integers(0, 6, len(who))],
        lambda it, b, pick: nps_comment(Locale.IT if it else Locale.EN, b, pick),
    )
    order = np.lexsort((who, t))
    return Surveys(
        customer=who[order],
        seconds=timeline.seconds(t[order]),
        score=score[order],
        comment=or_none(with_comment, comment)[order],
    )


def nps_comment(locale: Locale, band: int, pick: int) -> str:
    options = NPS_COMMENTS[locale][("promoter", "passive", "detractor")[band]]
    return options[pick % len(options)]
