"""The condition language, segment membership history and the editor schemas.

Conditions are parsed, compiled to SQL and evaluated in a real database (SQLite and
PostgreSQL) over hand-made customers whose scores come from a real ``recompute_scores``. Each
expected set is computed independently in Python from the stored scores (the oracle), and
every case is checked to be discriminating (neither empty nor everyone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ciclovita import cycle
from ciclovita.campaigns.catalog import Catalog, campaign_files, load_campaign, load_catalog
from ciclovita.campaigns.schema import SCHEMA_DIR, SCHEMAS, render
from ciclovita.campaigns.spec import Policy
from ciclovita.db.engine import make_engine
from ciclovita.db.models import (
    Consent,
    Customer,
    CustomerScore,
    Referral,
    SegmentMembership,
    SegmentRun,
)
from ciclovita.errors import InputError, Problem
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.lifecycle import LifecycleConfig
from ciclovita.planning.planner import audience_clause
from ciclovita.scoring.recompute import recompute_scores
from ciclovita.segments.conditions import compile_condition, parse_condition
from ciclovita.segments.definitions import Segment, read_segments
from ciclovita.segments.membership import recompute_segment
from ciclovita.yamlsource import parse_yaml
from tests.builders import World

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ROOT / "campaigns"
AS_OF = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SECOND = 1 / 86_400  # a second, in days
CONFIG = LifecycleConfig()

WORLD_SEGMENTS = """
segments:
  promoters:
    description: NPS 9 or 10
    where: {nps: {gte: 9}}
  english:
    where: {locale: en}
  big_spenders:
    where: {monetary: {gte: 500}}
"""

AUDIENCE_CAMPAIGN = """
description: a campaign whose audience names segments
trigger:
  event: order_placed
audience:
  segments: [promoters, big_spenders]
  exclude_segments: [english]
  where: {order_count: {gte: 2}}
content:
  template: thank_you
  subject: "Hi"
"""


def segments_from(text: str) -> list[Segment]:
    found = read_segments(parse_yaml(text, "segments.yaml"))
    if found.problems:
        raise InputError(found.problems)
    return found.segments


# ------------------------------------------------------------------ a hand-made world


@dataclass
class Built:
    engine: Engine
    ids: dict[str, int]
    scores: dict[int, dict[str, Any]]
    customers: dict[int, dict[str, Any]]
    consents: dict[int, set[str]]
    segments: list[Segment]

    @property
    def everyone(self) -> set[int]:
        return set(self.scores)

    def where(self, predicate: Callable[[dict[str, Any]], bool]) -> set[int]:
        """Customers whose score row (with the customer's own columns) satisfies it."""
        return {cid for cid, row in self.scores.items() if predicate(row)}

    def matching(self, data: Any, known_segments: list[str] | None = None) -> set[int]:
        condition = parse_condition(data, known_segments=known_segments)
        query = (
            select(Customer.id)
            .join(CustomerScore, CustomerScore.customer_id == Customer.id)
            .where(compile_condition(condition, AS_OF))
        )
        with self.engine.connect() as connection:
            return set(connection.execute(query).scalars())


def populate(engine: Engine) -> dict[str, int]:
    """Customers of every kind the tests need, plus enough buyers for a value-model fit."""
    w = World(engine, AS_OF)
    ids: dict[str, int] = {}
    for i in range(12):  # regulars: an order every 20-42 days until recently
        ids[f"regular{i}"] = w.customer(
            f"R{i}",
            orders_days_ago=tuple(range(2 + i, 400, 20 + 2 * i)),
            amount_cents=3000 + 500 * i,
        )
    for i in range(10):  # a burst of orders long ago, then nothing
        ids[f"stopped{i}"] = w.customer(
            f"S{i}", orders_days_ago=tuple(500 + 7 * k + i for k in range(6)), amount_cents=4000
        )
    for i in range(10):  # one order each
        ids[f"once{i}"] = w.customer(f"O{i}", orders_days_ago=(30 + 40 * i,), amount_cents=2500)
    # last orders around the day boundaries of days_since_last_order
    for name, days in {
        "day9": 10 - SECOND,
        "day10": 10,
        "day10_late": 11 - SECOND,
        "day11": 11,
        "day12": 12,
        "day13_late": 14 - SECOND,
        "day14": 14,
    }.items():
        ids[name] = w.customer(name.capitalize(), orders_days_ago=(days,))
    ids["promoter"] = w.customer(
        "Emma",
        locale="en",
        consents=("surveys",),
        orders_days_ago=(5, 60),
        amount_cents=40_000,
        attributes={"tier": "silver", "visits": 2, "vip": False},
    )
    w.nps(ids["promoter"], 10, days_ago=3)
    ids["changed_mind"] = w.customer("Carlo", orders_days_ago=(8, 90), amount_cents=30_000)
    w.nps(ids["changed_mind"], 10, days_ago=60)
    w.nps(ids["changed_mind"], 3, days_ago=2)
    ids["passive"] = w.customer("Paola", orders_days_ago=(20,))
    w.nps(ids["passive"], 8, days_ago=10)
    ids["gold"] = w.customer(
        "Gino",
        consents=("marketing", "newsletter"),
        orders_days_ago=(15,),
        amount_cents=70_000,
        attributes={"tier": "gold", "visits": 7, "vip": True},
    )
    ids["referrer"] = w.customer("Rita", orders_days_ago=(25, 70, 140), amount_cents=6_000)
    ids["prospect"] = w.customer("Piero", consents=())
    ids["english_prospect"] = w.customer("Liam", locale="en", consents=("newsletter",))
    with Session(engine) as session, session.begin():
        session.add(
            Referral(
                code="AMICO-WORLD1",
                referrer_id=ids["referrer"],
                referee_id=ids["day12"],
                created_at=w.ago(20),
                converted_at=w.ago(12),
            )
        )
    return ids


def build(engine: Engine) -> Built:
    ids = populate(engine)
    recompute_scores(engine, CONFIG, AS_OF)
    segments = segments_from(WORLD_SEGMENTS)
    with engine.begin() as connection:
        for segment in segments:
            recompute_segment(connection, segment, AS_OF)
    with engine.connect() as connection:
        scores = {
            row.customer_id: dict(row._mapping) for row in connection.execute(select(CustomerScore))
        }
        customers = {
            row.id: dict(row._mapping)
            for row in connection.execute(
                select(
                    Customer.id,
                    Customer.locale,
                    Customer.country,
                    Customer.attributes,
                    Customer.acquisition_channel,
                )
            )
        }
        consents: dict[int, set[str]] = {cid: set() for cid in customers}
        for cid, topic in connection.execute(
            select(Consent.customer_id, Consent.topic).where(Consent.granted.is_(True))
        ):
            consents[cid].add(topic)
    for cid, row in scores.items():
        row.update(customers[cid])
    return Built(engine, ids, scores, customers, consents, segments)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """One hand-made world per database, built once: the condition tests only read it."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("world") / "world.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = make_engine(f"sqlite:///{path}")
        yield build(engine)
        engine.dispose()
        return
    databases = request.getfixturevalue("postgres_databases")
    url = databases.new()
    engine = make_engine(url)
    try:
        yield build(engine)
    finally:
        engine.dispose()
        databases.drop(url)


# ------------------------------------------------------------------ the oracle


def holds(value: Any, op: str, operand: Any) -> bool:
    """SQL semantics of the condition language: NULL matches only ne, not_in and is_null."""
    if op == "is_null":
        return (value is None) is operand
    if value is None:
        return op in ("ne", "not_in")
    match op:
        case "eq":
            return bool(value == operand)
        case "ne":
            return bool(value != operand)
        case "in":
            return value in operand
        case "not_in":
            return value not in operand
        case "gt":
            return bool(value > operand)
        case "gte":
            return bool(value >= operand)
        case "lt":
            return bool(value < operand)
        case "lte":
            return bool(value <= operand)
        case "between":
            return bool(operand[0] <= value <= operand[1])
    raise AssertionError(op)


def compare(field: str, op: str, operand: Any, column: str | None = None, scale: int = 1) -> Any:
    data = {field: operand if op == "eq" else {op: operand}}
    if scale != 1:
        operand = operand * scale
    key = column or field
    return data, lambda row: holds(row[key], op, operand)


FIELD_CASES = {
    "stage-eq": compare("stage", "eq", "loyal"),
    "stage-in": compare("stage", "in", ["lapsed", "prospect"]),
    "stage-ne": compare("stage", "ne", "lapsed"),
    "rfm-eq": compare("rfm_segment", "eq", "Champions"),
    "rfm-not-in": compare("rfm_segment", "not_in", ["Champions", "Hibernating"]),
    "rfm-is-null": compare("rfm_segment", "is_null", True),
    "r-gte": compare("r_score", "gte", 4),
    "f-between": compare("f_score", "between", [2, 4]),
    "m-lt": compare("m_score", "lt", 3),
    "m-ne": compare("m_score", "ne", 5),
    "clv-quantile-gte": compare("clv_quantile", "gte", 0.8),
    "clv-quantile-between": compare("clv_quantile", "between", [0.3, 0.7]),
    "p-alive-lt": compare("p_alive", "lt", 0.5),
    "p-alive-gte": compare("p_alive", "gte", 0.9),
    "order-count-gte": compare("order_count", "gte", 3),
    "order-count-eq": compare("order_count", "eq", 1),
    "monetary-gte-eur": compare("monetary", "gte", 500, column="monetary_cents", scale=100),
    "nps-gte": compare("nps", "gte", 9),
    "nps-lt": compare("nps", "lt", 7),
    "nps-is-null-false": compare("nps", "is_null", False),
    "converted-referrals": compare("converted_referrals", "gte", 1),
    "locale-eq": compare("locale", "eq", "en"),
    "country-eq": compare("country", "eq", "GB"),
    "country-not-in": compare("country", "not_in", ["GB"]),
}


@pytest.mark.parametrize("case", list(FIELD_CASES), ids=list(FIELD_CASES))
def test_each_field_selects_what_the_scores_say(world: Built, case: str) -> None:
    data, predicate = FIELD_CASES[case]
    expected = world.where(predicate)
    assert expected and expected != world.everyone, f"{case} does not discriminate"
    assert world.matching(data) == expected


def test_the_world_has_the_scores_it_was_built_for(world: Built) -> None:
    ids, scores = world.ids, world.scores
    assert {scores[ids[f"stopped{i}"]]["stage"] for i in range(10)} == {"lapsed"}
    assert scores[ids["prospect"]]["stage"] == "prospect"
    assert scores[ids["promoter"]]["nps"] == 10
    assert scores[ids["changed_mind"]]["nps"] == 3  # the latest answer counts
    assert scores[ids["referrer"]]["converted_referrals"] == 1
    assert scores[ids["gold"]]["monetary_cents"] == 70_000
    # the value model was fitted: regulars are alive, the long-stopped are not
    regular = min(scores[ids[f"regular{i}"]]["p_alive"] for i in range(12))
    stopped = max(scores[ids[f"stopped{i}"]]["p_alive"] for i in range(10))
    assert regular > 0.5 > stopped
    assert len({row["clv_quantile"] for row in scores.values()}) > 5


DAY_NAMES = ("day9", "day10", "day10_late", "day11", "day12", "day13_late", "day14")
DAY_CASES = [
    ({"gt": 10}, {"day11", "day12", "day13_late", "day14"}),
    ({"gte": 10}, {"day10", "day10_late", "day11", "day12", "day13_late", "day14"}),
    ({"lt": 11}, {"day9", "day10", "day10_late"}),
    ({"lte": 10}, {"day9", "day10", "day10_late"}),
    ({"between": [11, 13]}, {"day11", "day12", "day13_late"}),
    ({"eq": 10}, {"day10", "day10_late"}),
    ({"ne": 10}, {"day9", "day11", "day12", "day13_late", "day14"}),
    ({"in": [9, 13]}, {"day9", "day13_late"}),
    ({"not_in": [9, 13]}, {"day10", "day10_late", "day11", "day12", "day14"}),
]


@pytest.mark.parametrize(("operators", "names"), DAY_CASES, ids=[str(c[0]) for c in DAY_CASES])
def test_days_since_last_order_at_day_boundaries(
    world: Built, operators: dict[str, Any], names: set[str]
) -> None:
    """A day counts when it is complete: 10 days minus a second is 9 days."""
    found = world.matching({"days_since_last_order": operators})
    boundary = {world.ids[name] for name in DAY_NAMES}
    assert {world.ids[name] for name in names} == found & boundary
    ((op, operand),) = operators.items()
    assert found == world.where(lambda row: holds(days_since_last_order(row), op, operand))


def days_since_last_order(row: dict[str, Any]) -> int | None:
    """Whole days from the last order to AS_OF (recency is derived, not stored)."""
    last = row["last_order_at"]
    return None if last is None else (AS_OF - last).days


def test_days_since_last_order_values(world: Built) -> None:
    stored = {name: days_since_last_order(world.scores[world.ids[name]]) for name in DAY_NAMES}
    assert stored == {
        "day9": 9,
        "day10": 10,
        "day10_late": 10,
        "day11": 11,
        "day12": 12,
        "day13_late": 13,
        "day14": 14,
    }
    never = world.matching({"days_since_last_order": {"is_null": True}})
    assert never == {world.ids["prospect"], world.ids["english_prospect"]}


def test_consent(world: Built) -> None:
    ids = world.ids
    assert world.matching({"consent": "surveys"}) == {ids["promoter"]}
    newsletter = world.matching({"consent": "newsletter"})
    assert newsletter == {ids["gold"], ids["english_prospect"]}
    without_marketing = world.matching({"not": {"consent": "marketing"}})
    assert without_marketing == {
        ids["promoter"],
        ids["prospect"],
        ids["english_prospect"],
    }
    assert without_marketing == world.where(lambda r: "marketing" not in world.consents[r["id"]])


ATTRIBUTE_CASES = [
    ({"name": "tier", "eq": "gold"}, {"gold"}),
    ({"name": "tier", "in": ["gold", "bronze"]}, {"gold"}),
    ({"name": "visits", "gte": 5}, {"gold"}),
    ({"name": "visits", "lt": 5}, {"promoter"}),
    ({"name": "visits", "between": [1, 2]}, {"promoter"}),
    ({"name": "visits", "in": [2, 7]}, {"gold", "promoter"}),
    ({"name": "vip", "eq": True}, {"gold"}),
    ({"name": "vip", "eq": False}, {"promoter"}),
]


@pytest.mark.parametrize(
    ("attribute", "names"), ATTRIBUTE_CASES, ids=[str(c[0]) for c in ATTRIBUTE_CASES]
)
def test_custom_attributes_string_int_bool(
    world: Built, attribute: dict[str, Any], names: set[str]
) -> None:
    assert world.matching({"attribute": attribute}) == {world.ids[n] for n in names}


def test_attribute_is_null(world: Built) -> None:
    with_tier = {world.ids["gold"], world.ids["promoter"]}
    assert world.matching({"attribute": {"name": "tier", "is_null": False}}) == with_tier
    assert world.matching({"attribute": {"name": "tier", "is_null": True}}) == (
        world.everyone - with_tier
    )


def test_attribute_ne_includes_customers_without_it(world: Built) -> None:
    """Like a field, ``ne`` also matches customers who have no such attribute."""
    found = world.matching({"attribute": {"name": "tier", "ne": "gold"}})
    assert found == world.everyone - {world.ids["gold"]}


def test_attribute_of_mixed_types_across_customers(engine: Engine) -> None:
    """Attributes are free-form (CSV imports): one customer's odd value must not break a
    segment for everyone, nor match a numeric comparison."""
    w = World(engine, AS_OF)
    seven = w.customer("Sette", attributes={"visits": 7})
    w.customer("Tanti", attributes={"visits": "lots"})
    w.customer("Mezzo", attributes={"visits": 2.5})
    recompute_scores(engine, CONFIG, AS_OF)
    condition = parse_condition({"attribute": {"name": "visits", "gte": 5}})
    query = (
        select(Customer.id)
        .join(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(compile_condition(condition, AS_OF))
    )
    with engine.connect() as connection:
        assert set(connection.execute(query).scalars()) == {seven}


def test_nps_is_the_latest_answer_by_time(engine: Engine) -> None:
    w = World(engine, AS_OF)
    customer = w.customer("Nina", orders_days_ago=(5,))
    w.nps(customer, 10, days_ago=1)
    w.nps(customer, 3, days_ago=30)  # an older answer, recorded afterwards
    recompute_scores(engine, CONFIG, AS_OF)
    condition = parse_condition({"nps": {"gte": 9}})
    query = (
        select(Customer.id)
        .join(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(compile_condition(condition, AS_OF))
    )
    with engine.connect() as connection:
        assert set(connection.execute(query).scalars()) == {customer}


def test_clv_quantile_without_a_value_model_is_not_top_for_everyone(engine: Engine) -> None:
    w = World(engine, AS_OF)
    buyers = {w.customer(f"B{i}", orders_days_ago=(10 + 30 * i,)) for i in range(5)}
    recompute_scores(engine, CONFIG, AS_OF)  # five buyers: too few to fit the model
    condition = parse_condition({"clv_quantile": {"gte": 0.8}})
    query = (
        select(Customer.id)
        .join(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(compile_condition(condition, AS_OF))
    )
    with engine.connect() as connection:
        assert set(connection.execute(query).scalars()) != buyers


def test_all_any_not_and_implicit_all(world: Built) -> None:
    loyal_en = world.where(lambda r: r["stage"] == "loyal" or r["locale"] == "en")
    assert world.matching({"any": [{"stage": "loyal"}, {"locale": "en"}]}) == loyal_en
    both = world.where(lambda r: holds(r["order_count"], "gte", 2) and r["locale"] == "it")
    assert both and both != world.everyone
    assert world.matching({"all": [{"order_count": {"gte": 2}}, {"locale": "it"}]}) == both
    assert world.matching({"order_count": {"gte": 2}, "locale": "it"}) == both
    assert world.matching({"not": {"all": [{"order_count": {"gte": 2}}, {"locale": "it"}]}}) == (
        world.everyone - both
    )
    nested = world.matching(
        {"any": [{"all": [{"nps": {"gte": 9}}, {"consent": "surveys"}]}, {"segment": "english"}]},
        known_segments=["english"],
    )
    english = world.where(lambda r: r["locale"] == "en")
    assert nested == english | {world.ids["promoter"]}
    ranges = world.matching({"order_count": {"gte": 2, "lte": 3}})
    assert ranges == world.where(lambda r: 2 <= r["order_count"] <= 3)


def test_segment_reference_in_a_campaign_audience(world: Built, tmp_path: Path) -> None:
    promoters = world.where(lambda r: holds(r["nps"], "gte", 9))
    big = world.where(lambda r: r["monetary_cents"] >= 50_000)
    english = world.where(lambda r: r["locale"] == "en")
    assert promoters and big and english
    names = [s.name for s in world.segments]
    assert world.matching({"segment": "promoters"}, names) == promoters
    assert world.matching({"not": {"segment": "english"}}, names) == world.everyone - english

    path = tmp_path / "audience_test.yaml"
    path.write_text(AUDIENCE_CAMPAIGN, encoding="utf-8")
    problems: list[Problem] = []
    campaign = load_campaign(path, names, problems)
    assert problems == [] and campaign is not None
    query = (
        select(Customer.id)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(audience_clause(campaign, AS_OF))
    )
    with world.engine.connect() as connection:
        audience = set(connection.execute(query).scalars())
    two_orders = world.where(lambda r: r["order_count"] >= 2)
    expected = ((promoters | big) - english) & two_orders
    assert expected and audience == expected


# ------------------------------------------------------------------ membership history


def memberships(engine: Engine, segment: str) -> list[tuple[int, datetime, datetime | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                SegmentMembership.customer_id,
                SegmentMembership.entered_at,
                SegmentMembership.exited_at,
            )
            .where(SegmentMembership.segment == segment)
            .order_by(SegmentMembership.customer_id, SegmentMembership.entered_at)
        )
        return [tuple(row) for row in rows]


def runs(engine: Engine, segment: str) -> list[tuple[datetime, int, int, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(SegmentRun.computed_at, SegmentRun.size, SegmentRun.entered, SegmentRun.exited)
            .where(SegmentRun.segment == segment)
            .order_by(SegmentRun.id)
        )
        return [tuple(row) for row in rows]


def test_entries_exits_and_reentries_are_kept_as_history(engine: Engine) -> None:
    (promoters,) = segments_from("segments:\n  promoters:\n    where: {nps: {gte: 9}}\n")
    w = World(engine, AS_OF)
    anna = w.customer("Anna", orders_days_ago=(30,))
    bruno = w.customer("Bruno", orders_days_ago=(40,))
    carla = w.customer("Carla", orders_days_ago=(50,))
    w.nps(anna, 10, days_ago=1)
    w.nps(bruno, 9, days_ago=1)
    w.nps(carla, 3, days_ago=1)

    def step(when: datetime) -> Any:
        recompute_scores(engine, CONFIG, when)
        with engine.begin() as connection:
            return recompute_segment(connection, promoters, when)

    t0, t1, t2 = AS_OF, AS_OF + timedelta(days=10), AS_OF + timedelta(days=20)
    first = step(t0)
    assert (first.size, first.entered, first.exited, first.previous_size) == (2, 2, 0, None)
    assert first.change is None
    assert memberships(engine, "promoters") == [(anna, t0, None), (bruno, t0, None)]

    w.nps(anna, 2, days_ago=-9)  # a day before t1: Anna is no longer a promoter
    second = step(t1)
    assert (second.size, second.entered, second.exited, second.previous_size) == (1, 0, 1, 2)
    assert second.change == -1
    assert memberships(engine, "promoters") == [(anna, t0, t1), (bruno, t0, None)]

    quiet = step(t1 + timedelta(hours=1))  # nothing changed: nothing written but the run
    assert (quiet.size, quiet.entered, quiet.exited, quiet.change) == (1, 0, 0, 0)
    assert memberships(engine, "promoters") == [(anna, t0, t1), (bruno, t0, None)]

    w.nps(anna, 9, days_ago=-19)  # promoter again: a new stay, the old one stays closed
    third = step(t2)
    assert (third.size, third.entered, third.exited, third.change) == (2, 1, 0, 1)
    assert memberships(engine, "promoters") == [
        (anna, t0, t1),
        (anna, t2, None),
        (bruno, t0, None),
    ]
    assert runs(engine, "promoters") == [
        (t0, 2, 2, 0),
        (t1, 1, 0, 1),
        (t1 + timedelta(hours=1), 1, 0, 0),
        (t2, 2, 1, 0),
    ]


def test_a_removed_segment_has_its_members_closed(engine: Engine, tmp_path: Path) -> None:
    segments = segments_from(
        "segments:\n  promoters:\n    where: {nps: {gte: 9}}\n"
        "  italians:\n    where: {locale: it}\n"
    )
    w = World(engine, AS_OF)
    anna = w.customer("Anna", orders_days_ago=(30,))
    emma = w.customer("Emma", locale="en", orders_days_ago=(30,))
    w.nps(anna, 10)
    w.nps(emma, 10)
    recompute_scores(engine, CONFIG, AS_OF)

    def catalog(kept: list[Segment]) -> Catalog:
        return Catalog((), tuple(kept), Policy(), CONFIG, tmp_path)

    changes = cycle.recompute_segments(engine, catalog(segments), AS_OF)
    assert [(c.segment, c.size) for c in changes] == [("promoters", 2), ("italians", 1)]
    later = AS_OF + timedelta(days=1)
    promoters_only = [s for s in segments if s.name == "promoters"]
    cycle.recompute_segments(engine, catalog(promoters_only), later)
    assert memberships(engine, "italians") == [(anna, AS_OF, later)]
    assert memberships(engine, "promoters") == [(anna, AS_OF, None), (emma, AS_OF, None)]
    assert [r[1] for r in runs(engine, "italians")] == [1]  # a removed segment gets no run

    end = AS_OF + timedelta(days=2)
    cycle.recompute_segments(engine, catalog([]), end)
    assert memberships(engine, "promoters") == [(anna, AS_OF, end), (emma, AS_OF, end)]


def test_segments_cli_lists_size_and_change(engine: Engine, database_url: str) -> None:
    as_of = datetime(2026, 6, 16, 9, 0, tzinfo=UTC)
    later = as_of + timedelta(days=60)
    generate_demo_data(engine, customers=300, seed=11, as_of=as_of)
    catalog = load_catalog(CAMPAIGNS)
    recompute_scores(engine, catalog.lifecycle, as_of)
    before = {c.segment: c for c in cycle.recompute_segments(engine, catalog, as_of)}
    recompute_scores(engine, catalog.lifecycle, later)
    after = {c.segment: c for c in cycle.recompute_segments(engine, catalog, later)}
    assert any(c.entered or c.exited for c in after.values()), "nothing changed in 60 days"

    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_DATABASE_URL=database_url,
        CICLOVITA_CAMPAIGNS_DIR=str(CAMPAIGNS),
        PYTHONPATH=str(ROOT),
        COLUMNS="250",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", "segments"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0] in after:
            rows[cells[0]] = cells
    assert set(rows) == {s.name for s in catalog.segments}
    with engine.connect() as connection:
        for segment in catalog.segments:
            name, size, change, entered, exited, computed, description = rows[segment.name]
            open_members = connection.execute(
                select(func.count()).where(
                    SegmentMembership.segment == name, SegmentMembership.exited_at.is_(None)
                )
            ).scalar_one()
            assert int(size) == open_members == after[name].size
            assert change == f"{after[name].size - before[name].size:+d}"
            assert (int(entered), int(exited)) == (after[name].entered, after[name].exited)
            assert computed == later.strftime("%Y-%m-%d %H:%M")
            assert description == segment.description


# ------------------------------------------------------------------ schemas for editors


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_current(name: str) -> None:
    committed = SCHEMA_DIR / f"{name}.schema.json"
    assert SCHEMA_DIR == ROOT / "schemas"
    assert committed.read_text(encoding="utf-8") == render(name), (
        f"schemas/{name}.schema.json is stale: run `ciclovita schema {name} --out {committed}`"
    )


def test_cli_schema_prints_the_committed_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(PYTHONPATH=str(ROOT))
    out = tmp_path / "campaign.schema.json"
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", "schema", "campaign", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == (SCHEMA_DIR / "campaign.schema.json").read_text(
        encoding="utf-8"
    )


def schema_validator(name: str) -> Any:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def as_editor_sees(text: str) -> Any:
    """YAML data as JSON (dates as strings, as a YAML 1.2 editor reads them)."""
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


def schema_errors(name: str, text: str) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in schema_validator(name).iter_errors(as_editor_sees(text))
    ]


@pytest.mark.parametrize("path", campaign_files(CAMPAIGNS), ids=lambda p: p.name)
def test_example_campaigns_validate_against_the_schema(path: Path) -> None:
    assert schema_errors("campaign", path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("name", "file"), [("segments", "segments.yaml"), ("policy", "policy.yaml")]
)
def test_segments_and_policy_validate_against_their_schema(name: str, file: str) -> None:
    assert schema_errors(name, (CAMPAIGNS / file).read_text(encoding="utf-8")) == []


THANK_YOU = (CAMPAIGNS / "thank_you.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("priority: 80", 'priority: "high"'),
        ("kind: marketing", "kind: promo"),
        ("event: order_placed", "when: order_placed"),
        ("delay: 1d", "delay: 1 day"),
        ("delay: 1d", "delay: 3"),
        ("  consent: marketing", "  consent: marketing\n  where: {nps: {gte: 11}}"),
        ("  consent: marketing", "  consent: marketing\n  where: {stage: {gt: loyal}}"),
        ("  consent: marketing", "  consent: marketing\n  where: {stag: loyal}"),
    ],
)
def test_schema_rejects_what_validate_rejects(old: str, new: str) -> None:
    assert THANK_YOU.count(old) == 1
    assert schema_errors("campaign", THANK_YOU.replace(old, new)) != []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  consent: marketing", "  consent: marketing\n  where: {stage: loyal, locale: it}"),
    ],
    ids=["implicit-all"],
)
def test_schema_accepts_what_validate_accepts(old: str, new: str, tmp_path: Path) -> None:
    from ciclovita.authoring.validation import validate

    campaigns = tmp_path / "campaigns"
    shutil.copytree(CAMPAIGNS, campaigns)
    path = campaigns / "thank_you.yaml"
    path.write_text(THANK_YOU.replace(old, new), encoding="utf-8")
    assert validate([path], campaigns_dir=campaigns, templates_dir=ROOT / "templates") == []
    assert schema_errors("campaign", path.read_text(encoding="utf-8")) == []


def test_schema_names_every_condition_field() -> None:
    from ciclovita.segments.conditions import FIELDS

    text = (SCHEMA_DIR / "segments.schema.json").read_text(encoding="utf-8")
    for field in FIELDS:
        assert re.search(rf'"{field}"', text), field
