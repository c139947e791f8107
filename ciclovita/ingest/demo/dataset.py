"""The whole demo data set in memory, made concern by concern in the order they depend on.

Customers come first; their orders follow from them; referrals then mark referees and the
orders that carried a code; consents, events and surveys read all of the above. Nothing here
touches the database (``writing`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from ciclovita.ingest.demo.engagement import (
    Events,
    Surveys,
    latent_satisfaction,
    make_events,
    make_surveys,
)
from ciclovita.ingest.demo.people import Consents, Customers, make_consents, make_customers
from ciclovita.ingest.demo.purchases import Orders, Referrals, make_orders, make_referrals
from ciclovita.ingest.demo.timeline import Timeline


@dataclass
class DemoData:
    timeline: Timeline
    customers: Customers
    orders: Orders
    referrals: Referrals
    consents: Consents
    events: Events
    surveys: Surveys


def build(timeline: Timeline, n: int, mean_orders: float | None) -> DemoData:
    """``n`` customers and everything they did within ``timeline``."""
    customers = make_customers(timeline, n)
    orders = make_orders(timeline, customers, mean_orders)
    referrals = make_referrals(timeline, customers, orders)
    consents = make_consents(timeline, customers, orders.at_checkout(customers.created_t))
    satisfaction = latent_satisfaction(timeline, orders)
    events = make_events(timeline, customers, orders, referrals, consents, satisfaction)
    surveys = make_surveys(timeline, customers, orders, satisfaction)
    return DemoData(timeline, customers, orders, referrals, consents, events, surveys)
