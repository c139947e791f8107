"""The condition language shared by segments and campaign audiences.

A condition is a typed tree, written in YAML:

* ``{all: [c, …]}``, ``{any: [c, …]}``, ``{not: c}``;
* ``{<field>: value}`` (equality) or ``{<field>: {<operator>: value, …}}`` for a field of
  ``FIELDS`` (stage, RFM scores and segment, CLV and its quantile, P(alive), days since the
  last order, order count, NPS, referrals, locale, country, …);
* ``{consent: topic}``: the customer granted that consent topic;
* ``{attribute: {name: key, <operator>: value}}``: a custom attribute of the customer;
* ``{segment: name}``: a member of another segment (open membership), for audiences.

Operators: eq, ne, in, not_in, gt, gte, lt, lte, between, is_null. Each field has a type
and accepts only the operators and values that make sense for it; anything else is a
``Problem`` naming the path and the accepted choices. ``compile_condition`` turns a tree into
a SQLAlchemy expression over customers joined with customer_scores, evaluated in the database.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Union

from sqlalchemy import ColumnElement, String, and_, exists, false, literal, not_, or_, select, true

from ciclovita.db.models import Consent, Customer, CustomerScore, SegmentMembership
from ciclovita.db.sqlfunctions import json_bool, json_number, json_text
from ciclovita.lifecycle import RFM_SEGMENTS, STAGES
from ciclovita.vocabulary import ConsentTopic, Locale, values

Loc = tuple[str | int, ...]
Operator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null"]
OPERATORS: tuple[Operator, ...] = (
    "eq",
    "ne",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "is_null",
)
ORDERED = ("gt", "gte", "lt", "lte", "between")


@dataclass(frozen=True)
class FieldType:
    """What a field holds: kind, allowed values or range, and how to read it in SQL."""

    kind: Literal["int", "float", "money", "choice", "text"]
    column: Callable[[], Any]
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    @property
    def operators(self) -> tuple[Operator, ...]:
        if self.kind in ("choice", "text"):
            return ("eq", "ne", "in", "not_in", "is_null")
        return OPERATORS


S, C = CustomerScore, Customer
FIELDS: dict[str, FieldType] = {
    "stage": FieldType("choice", lambda: S.stage, STAGES, description="lifecycle stage"),
    "rfm_segment": FieldType(
        "choice", lambda: S.rfm_segment, RFM_SEGMENTS, description="named RFM segment"
    ),
    "r_score": FieldType("int", lambda: S.r_score, minimum=1, maximum=5),
    "f_score": FieldType("int", lambda: S.f_score, minimum=1, maximum=5),
    "m_score": FieldType("int", lambda: S.m_score, minimum=1, maximum=5),
    "order_count": FieldType("int", lambda: S.order_count, minimum=0),
    "days_since_last_order": FieldType(
        "int", lambda: S.last_order_at, minimum=0, description="days since the last order"
    ),
    "monetary": FieldType("money", lambda: S.monetary_cents, minimum=0, description="spent, EUR"),
    "historical_clv": FieldType("money", lambda: S.historical_clv_cents, minimum=0),
    "predicted_clv": FieldType("money", lambda: S.predicted_clv_cents, minimum=0),
    "net_value": FieldType("money", lambda: S.net_value_cents),
    "clv_quantile": FieldType("float", lambda: S.clv_quantile, minimum=0, maximum=1),
    "p_alive": FieldType("float", lambda: S.p_alive, minimum=0, maximum=1),
    "expected_purchases": FieldType("float", lambda: S.expected_purchases, minimum=0),
    "nps": FieldType("int", lambda: S.nps, minimum=0, maximum=10),
    "converted_referrals": FieldType("int", lambda: S.converted_referrals, minimum=0),
    "locale": FieldType("choice", lambda: C.locale, values(Locale)),
    "country": FieldType("text", lambda: C.country),
    "acquisition_channel": FieldType("text", lambda: C.acquisition_channel),
}


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class Compare:
    field: str
    op: Operator
    value: Any


@dataclass(frozen=True)
class ConsentGiven:
    topic: str


@dataclass(frozen=True)
class AttributeCompare:
    name: str
    op: Operator
    value: Any


@dataclass(frozen=True)
class InSegment:
    name: str


Condition = Union[All, AnyOf, Not, Compare, ConsentGiven, AttributeCompare, InSegment]  # noqa: UP007

KEYWORDS = ("all", "any", "not", "consent", "attribute", "segment")


class ConditionError(Exception):
    """Every problem found in a condition tree, each with its location."""

    def __init__(self, problems: list[tuple[Loc, str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in problems))


class _Parser:
    def __init__(self, known_segments: Sequence[str] | None, segment_refs: bool = True) -> None:
        self.known_segments = known_segments
        self.segment_refs = segment_refs
        self.problems: list[tuple[Loc, str, Any]] = []

    def fail(self, loc: Loc, message: str, value: Any = None) -> None:
        self.problems.append((loc, message, value))

    def parse(self, data: Any, loc: Loc) -> Condition | None:
        if not isinstance(data, dict) or not data:
            self.fail(loc, "a condition is a mapping such as {stage: loyal} or {all: [...]}", data)
            return None
        if len(data) > 1:
            parts = [self.parse({key: value}, loc) for key, value in data.items()]
            found = tuple(p for p in parts if p is not None)
            return All(found) if len(found) == len(parts) else None
        ((key, value),) = data.items()
        here = (*loc, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                self.fail(here, f"'{key}' takes a non-empty list of conditions", value)
                return None
            items = [self.parse(item, (*here, i)) for i, item in enumerate(value)]
            if any(item is None for item in items):
                return None
            kept = tuple(item for item in items if item is not None)
            return All(kept) if key == "all" else AnyOf(kept)
        if key == "not":
            inner = self.parse(value, here)
            return Not(inner) if inner is not None else None
        if key == "consent":
            if value not in values(ConsentTopic):
                self.fail(
                    here,
                    f"unknown consent topic; accepted: {', '.join(values(ConsentTopic))}",
                    value,
                )
                return None
            return ConsentGiven(str(value))
        if key == "segment":
            if not self.segment_refs:
                message = "a segment cannot refer to another segment (campaign audiences can)"
                self.fail(here, message, value)
                return None
            if not isinstance(value, str):
                self.fail(here, "'segment' takes a segment name", value)
                return None
            if self.known_segments is not None and value not in self.known_segments:
                names = ", ".join(sorted(self.known_segments)) or "(none defined)"
                self.fail(here, f"unknown segment; accepted: {names}", value)
                return None
            return InSegment(value)
        if key == "attribute":
            return self._attribute(value, here)
        if key in FIELDS:
            return self._compare(str(key), value, here)
        accepted = [*FIELDS, *KEYWORDS]
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        self.fail(here, f"unknown field.{hint} accepted: {', '.join(accepted)}", key)
        return None

    def _operators(
        self, value: Any, loc: Loc, allowed: Sequence[str]
    ) -> list[tuple[str, Any, Loc]]:
        if not isinstance(value, dict):
            return [("eq", value, loc)]
        out = []
        for op, operand in value.items():
            if op not in allowed:
                self.fail((*loc, op), f"unknown operator; accepted: {', '.join(allowed)}", op)
                continue
            out.append((str(op), operand, (*loc, op)))
        if not value:
            self.fail(loc, f"no operator given; accepted: {', '.join(allowed)}")
        return out

    def _compare(self, name: str, value: Any, loc: Loc) -> Condition | None:
        field = FIELDS[name]
        parts: list[Condition] = []
        before = len(self.problems)
        for op, operand, here in self._operators(value, loc, field.operators):
            checked = self._operand(field, op, operand, here)
            if checked is not _INVALID:
                parts.append(Compare(name, op, checked))  # type: ignore[arg-type]
        if len(self.problems) > before or not parts:
            return None
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def _attribute(self, value: Any, loc: Loc) -> Condition | None:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            self.fail(loc, "'attribute' takes {name: key, <operator>: value}", value)
            return None
        ops = {k: v for k, v in value.items() if k != "name"}
        if not ops:
            self.fail(loc, f"no operator given; accepted: {', '.join(OPERATORS)}")
            return None
        parts: list[Condition] = []
        before = len(self.problems)
        for op, operand, here in self._operators(ops, loc, OPERATORS):
            if op == "is_null" and not isinstance(operand, bool):
                self.fail(here, "is_null takes true or false", operand)
            elif op in ("in", "not_in") and not isinstance(operand, list):
                self.fail(here, f"'{op}' takes a list", operand)
            elif op == "between" and not (isinstance(operand, list) and len(operand) == 2):
                self.fail(here, "'between' takes a list of two values [low, high]", operand)
            elif op not in ("in", "not_in", "between", "is_null") and isinstance(
                operand, list | dict
            ):
                self.fail(here, "takes a single value", operand)
            else:
                parts.append(AttributeCompare(value["name"], op, operand))  # type: ignore[arg-type]
        if len(self.problems) > before:
            return None
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def _scalar(self, field: FieldType, operand: Any, loc: Loc) -> Any:
        if field.kind in ("choice", "text"):
            if not isinstance(operand, str):
                self.fail(loc, "expected text", operand)
                return _INVALID
            if field.choices and operand not in field.choices:
                close = difflib.get_close_matches(operand, field.choices, n=1)
                hint = f" did you mean {close[0]!r}?" if close else ""
                self.fail(
                    loc, f"not a valid value.{hint} accepted: {', '.join(field.choices)}", operand
                )
                return _INVALID
            return operand
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            self.fail(loc, f"expected a number ({field.kind})", operand)
            return _INVALID
        if field.kind == "int" and not float(operand).is_integer():
            self.fail(loc, "expected a whole number", operand)
            return _INVALID
        if (field.minimum is not None and operand < field.minimum) or (
            field.maximum is not None and operand > field.maximum
        ):
            low = "-∞" if field.minimum is None else f"{field.minimum:g}"
            high = "∞" if field.maximum is None else f"{field.maximum:g}"
            bounds = f"{low}…{high}"
            self.fail(loc, f"out of range; accepted: {bounds}", operand)
            return _INVALID
        if field.kind == "money":
            return round(float(operand) * 100)  # cents
        return operand

    def _operand(self, field: FieldType, op: str, operand: Any, loc: Loc) -> Any:
        if op == "is_null":
            if not isinstance(operand, bool):
                self.fail(loc, "is_null takes true or false", operand)
                return _INVALID
            return operand
        if op in ("in", "not_in"):
            if not isinstance(operand, list) or not operand:
                self.fail(loc, f"'{op}' takes a non-empty list", operand)
                return _INVALID
            values = [self._scalar(field, item, (*loc, i)) for i, item in enumerate(operand)]
            return _INVALID if any(v is _INVALID for v in values) else tuple(values)
        if op == "between":
            if not isinstance(operand, list) or len(operand) != 2:
                self.fail(loc, "'between' takes a list of two values [low, high]", operand)
                return _INVALID
            low, high = (self._scalar(field, item, (*loc, i)) for i, item in enumerate(operand))
            if low is _INVALID or high is _INVALID:
                return _INVALID
            if low > high:
                self.fail(loc, "low is greater than high", operand)
                return _INVALID
            return (low, high)
        return self._scalar(field, operand, loc)


_INVALID = object()


def parse_condition(
    data: Any,
    loc: Loc = (),
    known_segments: Sequence[str] | None = None,
    *,
    segment_refs: bool = True,
) -> Condition:
    """Parse YAML data into a condition; ``ConditionError`` lists every problem with its path."""
    parser = _Parser(known_segments, segment_refs)
    result = parser.parse(data, loc)
    if parser.problems or result is None:
        raise ConditionError(parser.problems or [(loc, "invalid condition", data)])
    return result


def segments_referenced(condition: Condition) -> set[str]:
    """Names of segments a condition refers to."""
    if isinstance(condition, InSegment):
        return {condition.name}
    if isinstance(condition, All | AnyOf):
        return set().union(*(segments_referenced(c) for c in condition.items))
    if isinstance(condition, Not):
        return segments_referenced(condition.item)
    return set()


def _apply(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    match op:
        case "eq":
            return column == value  # type: ignore[no-any-return]
        case "ne":
            return or_(column != value, column.is_(None))
        case "in":
            return column.in_(list(value))  # type: ignore[no-any-return]
        case "not_in":
            return or_(column.not_in(list(value)), column.is_(None))
        case "gt":
            return column > value  # type: ignore[no-any-return]
        case "gte":
            return column >= value  # type: ignore[no-any-return]
        case "lt":
            return column < value  # type: ignore[no-any-return]
        case "lte":
            return column <= value  # type: ignore[no-any-return]
        case "between":
            return column.between(value[0], value[1])  # type: ignore[no-any-return]
        case "is_null":
            return column.is_(None) if value else column.is_not(None)  # type: ignore[no-any-return]
    raise ValueError(f"unknown operator {op}")


def _days_since(op: str, value: Any, as_of: datetime) -> ColumnElement[bool]:
    """days_since_last_order compared at ``as_of``, through last_order_at (always current)."""
    column = S.last_order_at
    if op == "is_null":
        return _apply(column, "is_null", value)

    def at(days: float) -> datetime:
        return as_of - timedelta(days=days)

    # floor((as_of - last) / 1 day) >= v  ⇔  last <= as_of - v days
    if op == "gte":
        return column <= at(value)
    if op == "gt":
        return column <= at(value + 1)
    if op == "lt":
        return column > at(value)
    if op == "lte":
        return column > at(value + 1)
    if op == "between":
        return and_(column <= at(value[0]), column > at(value[1] + 1))
    if op in ("eq", "ne", "in", "not_in"):
        values = value if op in ("in", "not_in") else (value,)
        hits = or_(*(and_(column <= at(v), column > at(v + 1)) for v in values))
        return hits if op in ("eq", "in") else or_(not_(hits), column.is_(None))
    raise ValueError(op)


def compile_condition(condition: Condition, as_of: datetime) -> ColumnElement[bool]:
    """A WHERE clause over ``customers`` joined with ``customer_scores``."""
    match condition:
        case All(items):
            return and_(true(), *(compile_condition(c, as_of) for c in items))
        case AnyOf(items):
            return or_(false(), *(compile_condition(c, as_of) for c in items))
        case Not(item):
            return not_(compile_condition(item, as_of))
        case Compare("days_since_last_order", op, value):
            return _days_since(op, value, as_of)
        case Compare(name, op, value):
            return _apply(FIELDS[name].column(), op, value)
        case ConsentGiven(topic):
            return exists(
                select(Consent.id).where(
                    Consent.customer_id == Customer.id,
                    Consent.topic == topic,
                    Consent.granted.is_(True),
                )
            )
        case AttributeCompare(name, op, value):
            key = literal(name, String)
            sample = value[0] if isinstance(value, tuple | list) and value else value
            column: Any
            if op == "is_null" or isinstance(sample, str):
                column = json_text(Customer.attributes, key)
            elif isinstance(sample, bool):
                column = json_bool(Customer.attributes, key)
            else:  # a number: customers whose value is not a number never match
                column = json_number(Customer.attributes, key)
            return _apply(column, op, tuple(value) if isinstance(value, list) else value)
        case InSegment(name):
            return exists(
                select(SegmentMembership.id).where(
                    SegmentMembership.customer_id == Customer.id,
                    SegmentMembership.segment == name,
                    SegmentMembership.exited_at.is_(None),
                )
            )
    raise TypeError(f"not a condition: {condition!r}")


def condition_json_schema() -> dict[str, Any]:
    """JSON Schema of the condition language (for editors), built from ``FIELDS``."""

    def operand_schema(field: FieldType) -> dict[str, Any]:
        if field.kind in ("choice", "text"):
            return {"type": "string", **({"enum": list(field.choices)} if field.choices else {})}
        schema: dict[str, Any] = {"type": "integer" if field.kind == "int" else "number"}
        if field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
        return schema

    def field_schema(name: str, field: FieldType) -> dict[str, Any]:
        scalar = operand_schema(field)
        ops: dict[str, Any] = {}
        for op in field.operators:
            if op in ("in", "not_in"):
                ops[op] = {"type": "array", "items": scalar, "minItems": 1}
            elif op == "between":
                ops[op] = {"type": "array", "items": scalar, "minItems": 2, "maxItems": 2}
            elif op == "is_null":
                ops[op] = {"type": "boolean"}
            else:
                ops[op] = scalar
        return {
            "type": "object",
            "properties": {
                name: {
                    "description": field.description or name,
                    "anyOf": [
                        scalar,
                        {
                            "type": "object",
                            "properties": ops,
                            "additionalProperties": False,
                            "minProperties": 1,
                        },
                    ],
                }
            },
            "required": [name],
            "additionalProperties": False,
        }

    ref = {"$ref": "#/$defs/condition"}
    variants: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"all": {"type": "array", "items": ref, "minItems": 1}},
            "required": ["all"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"any": {"type": "array", "items": ref, "minItems": 1}},
            "required": ["any"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"not": ref},
            "required": ["not"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"consent": {"enum": list(values(ConsentTopic))}},
            "required": ["consent"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"segment": {"type": "string"}},
            "required": ["segment"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "attribute": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                }
            },
            "required": ["attribute"],
            "additionalProperties": False,
        },
    ]
    variants += [field_schema(name, field) for name, field in FIELDS.items()]
    # several keys in one mapping are an implicit `all` (as parse_condition reads them)
    combined: dict[str, Any] = {}
    for variant in variants:
        combined.update(variant["properties"])
    variants.append(
        {
            "type": "object",
            "properties": combined,
            "additionalProperties": False,
            "minProperties": 2,
        }
    )
    return {"anyOf": variants}
