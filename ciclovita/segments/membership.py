"""Segment membership recompute, in the database: entries and exits as set operations.

For one segment: customers matching its condition who have no open membership enter (a new
row with ``entered_at``); open members who no longer match exit (``exited_at`` set). History
is kept, so a campaign can trigger on "entered segment". Each recompute is recorded in
``segment_runs`` with the size and the counts of entries and exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, exists, func, insert, literal, select, update

from ciclovita.db.bulk import refresh_statistics
from ciclovita.db.models import Customer, CustomerScore, SegmentMembership, SegmentRun
from ciclovita.segments.conditions import compile_condition
from ciclovita.segments.definitions import Segment


@dataclass(frozen=True)
class SegmentChange:
    """One segment's recompute: size after, entries, exits, and the previous size."""

    segment: str
    size: int
    entered: int
    exited: int
    previous_size: int | None

    @property
    def change(self) -> int | None:
        return None if self.previous_size is None else self.size - self.previous_size


def _matching(segment: Segment, as_of: datetime):  # type: ignore[no-untyped-def]
    return (
        select(Customer.id)
        .join(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(compile_condition(segment.condition, as_of))
    )


def recompute_segment(
    connection: Connection, segment: Segment, as_of: datetime, cycle_id: int | None = None
) -> SegmentChange:
    """Bring ``segment``'s open memberships in line with its condition as of ``as_of``."""
    m = SegmentMembership
    matching = _matching(segment, as_of).subquery()
    previous = connection.execute(
        select(SegmentRun.size)
        .where(SegmentRun.segment == segment.name)
        .order_by(SegmentRun.computed_at.desc(), SegmentRun.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    open_count = select(func.count()).where(m.segment == segment.name, m.exited_at.is_(None))
    before = connection.execute(open_count).scalar_one()
    exited = connection.execute(
        update(m)
        .where(
            m.segment == segment.name,
            m.exited_at.is_(None),
            ~m.customer_id.in_(select(matching.c.id)),
        )
        .values(exited_at=as_of)
        .execution_options(synchronize_session=False)
    ).rowcount
    open_member = exists(
        select(m.id).where(
            and_(m.segment == segment.name, m.customer_id == matching.c.id, m.exited_at.is_(None))
        )
    )
    entering = select(literal(segment.name), matching.c.id, literal(as_of, m.entered_at.type))
    if before:
        # with no open member (a first run) everyone matching enters: no anti-join, which
        # PostgreSQL plans as a nested loop over the table being filled when its statistics
        # say it is empty (measured: 69 s instead of 2.4 s for 100,000 entries)
        entering = entering.where(~open_member)
    connection.execute(insert(m).from_select(["segment", "customer_id", "entered_at"], entering))
    size = connection.execute(open_count).scalar_one()
    if abs(size - before) + exited > max(10_000, size // 10):
        refresh_statistics(connection, "segment_memberships")
    # INSERT … SELECT row counts are not reliable across drivers: count instead
    entered = size - before + exited
    connection.execute(
        insert(SegmentRun).values(
            segment=segment.name,
            computed_at=as_of,
            size=size,
            entered=entered,
            exited=exited,
            cycle_id=cycle_id,
        )
    )
    return SegmentChange(segment.name, size, entered, exited, previous)


def close_removed_segments(connection: Connection, defined: list[str], as_of: datetime) -> int:
    """Close open memberships of segments no longer defined (removed from the YAML)."""
    m = SegmentMembership
    return connection.execute(
        update(m)
        .where(m.exited_at.is_(None), m.segment.not_in(defined) if defined else literal(True))
        .values(exited_at=as_of)
        .execution_options(synchronize_session=False)
    ).rowcount
