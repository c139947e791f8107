"""What the demo customers buy: orders from a BG/NBD-like purchase process, and referrals.

Each buyer has a purchase rate drawn from a Gamma distribution and, after every purchase,
drops out with a probability drawn from a Beta distribution. Time runs on the seasonal clock
(November and December busy, August quiet, evenings busier than nights). Amounts are
lognormal around a customer's own mean (Gamma-Gamma-like), in integer cents; about 3% of
orders are cancelled or refunded. ``mean_orders`` rescales rates and dropout, calibrated on a
pilot run, to reach an average number of orders per customer. Frequent buyers get referral
codes; a converted code points at a referred customer whose first order carried it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from ciclovita.ingest.demo.parameters import (
    CALIBRATION_STEPS,
    CALIBRATION_TOLERANCE,
    CANCELLED_SHARE,
    CHANNELS,
    DROPOUT_BETA,
    FIRST_ORDER_DELAY_DAYS,
    MAX_RATE_PER_DAY,
    MIN_ORDER_CENTS,
    ORDER_STATUSES,
    PILOT_CUSTOMERS,
    RATE_MEAN_PER_DAY,
    RATE_SHAPE,
    RECENT_DAYS,
    REFERRAL_CODE_ALPHABET,
    REFERRAL_CODE_LENGTH,
    REFERRAL_CONVERSION,
    REFERRAL_REWARD_CENTS,
    REFERRER_MIN_ORDERS,
    REFERRER_SHARE,
    REFUNDED_SHARE,
    SPEND_CUSTOMER_SIGMA,
    SPEND_MEAN_CENTS,
    SPEND_ORDER_SIGMA,
)
from ciclovita.ingest.demo.people import Customers
from ciclovita.ingest.demo.timeline import F64, I64, Bools, Objects, Timeline
from ciclovita.vocabulary import Locale, OrderStatus

COMPLETED: Final = ORDER_STATUSES.index(OrderStatus.COMPLETED)  # the code of a completed order


@dataclass
class Orders:
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

    def at_checkout(self, created_t: F64) -> Bools:
        """Per customer: the account was made at the first checkout (within the hour)."""
        made_at_checkout: Bools = self.first_t - created_t < 1 / 24
        return made_at_checkout


def make_orders(timeline: Timeline, customers: Customers, mean_orders: float | None) -> Orders:
    """Every order until as_of: when, how much, and whether it was completed."""
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
    process = PurchaseProcess(timeline, first_t, rate, dropout)

    scale, buyer_share = 1.0, 1.0
    if mean_orders is not None:
        scale, buyer_share = process.calibrate(mean_orders, buy_u < buys)
    buyer = buy_u < buys * buyer_share
    customer, t, dropped = process.run(timeline.rng("orders"), buyer, scale)
    order = np.argsort(customer, kind="stable")  # purchases come in time order already
    customer, t = customer[order], t[order]
    customer, t = ensure_recent_order(timeline, customer, t, dropped)

    rng = timeline.rng("amounts")
    italian = customers.locale == Locale.IT
    mean = np.where(italian, SPEND_MEAN_CENTS[Locale.IT], SPEND_MEAN_CENTS[Locale.EN])
    sigma = SPEND_CUSTOMER_SIGMA
    own_mean = mean * rng.lognormal(-(sigma**2) / 2, sigma, n)
    sigma = SPEND_ORDER_SIGMA
    raw = own_mean[customer] * rng.lognormal(-(sigma**2) / 2, sigma, len(customer))
    # Shop prices: whole euros, half of them ending in .90.
    cents = np.round(raw / 100.0) * 100 - 10 * (rng.random(len(customer)) < 0.5)
    amount = np.maximum(cents, MIN_ORDER_CENTS).astype(np.int64)

    status_u = timeline.rng("statuses").random(len(customer))
    status = np.zeros(len(customer), dtype=np.int8)
    status[status_u < CANCELLED_SHARE + REFUNDED_SHARE] = ORDER_STATUSES.index(OrderStatus.REFUNDED)
    status[status_u < CANCELLED_SHARE] = ORDER_STATUSES.index(OrderStatus.CANCELLED)
    recent = np.flatnonzero(t > timeline.horizon - RECENT_DAYS)
    if len(recent) and not np.any(status[recent] == COMPLETED):
        status[recent[-1]] = COMPLETED  # the thank-you campaign needs a completed recent order

    count, start = groups(customer, n)
    bought = count > 0
    first = np.where(bought, start, -1)
    last = np.where(bought, start + count - 1, -1)
    padded_t = np.append(t, np.nan)  # index -1: never bought
    done = status == COMPLETED
    done_count, done_start = groups(customer[done], n)
    return Orders(
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


class PurchaseProcess:
    """BG/NBD-like buying: from the first order on, a buyer buys at their own rate
    (exponential gaps in operational time) and after each order stops for good with their
    own dropout probability."""

    def __init__(self, timeline: Timeline, first_t: F64, rate: F64, dropout: F64) -> None:
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


def ensure_recent_order(
    timeline: Timeline, customer: I64, t: F64, dropped: Bools
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


def groups(customer: I64, n: int) -> tuple[I64, I64]:
    """(count, start) per customer of rows sorted by customer."""
    counts = np.bincount(customer, minlength=n).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return counts, starts


# --- referrals -------------------------------------------------------------------------------


@dataclass
class Referrals:
    code: Objects
    referrer: I64
    referee: I64  # -1 = not converted
    created_t: F64
    visits: I64
    last_visit_t: F64  # NaN = never visited
    converted_order: I64  # index into the orders; -1 = not converted
    referred_by: I64  # per customer: the referrer's index; -1 = none


def make_referrals(timeline: Timeline, customers: Customers, orders: Orders) -> Referrals:
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
    code = referral_codes(rng, m)

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
    return Referrals(
        code=code,
        referrer=referrer,
        referee=referee,
        created_t=created_t,
        visits=visits,
        last_visit_t=np.where(visits > 0, last_visit_t, np.nan),
        converted_order=converted_order,
        referred_by=referred_by,
    )


def referral_codes(rng: np.random.Generator, m: int) -> Objects:
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
