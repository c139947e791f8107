"""Segment sizes now and their change since the previous recompute (``ciclovita segments``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from ciclovita.db.models import SegmentMembership, SegmentRun
from ciclovita.segments.definitions import Segment


@dataclass(frozen=True)
class SegmentSize:
    name: str
    description: str
    size: int
    change: int | None
    entered: int
    exited: int
    computed_at: datetime | None


def segment_sizes(engine: Engine, segments: Sequence[Segment]) -> list[SegmentSize]:
    out = []
    with engine.connect() as connection:
        for segment in segments:
            size = connection.execute(
                select(func.count()).where(
                    SegmentMembership.segment == segment.name, SegmentMembership.exited_at.is_(None)
                )
            ).scalar_one()
            runs = connection.execute(
                select(
                    SegmentRun.size, SegmentRun.entered, SegmentRun.exited, SegmentRun.computed_at
                )
                .where(SegmentRun.segment == segment.name)
                .order_by(SegmentRun.computed_at.desc(), SegmentRun.id.desc())
                .limit(2)
            ).all()
            last = runs[0] if runs else None
            change = None
            if len(runs) == 2:
                change = runs[0].size - runs[1].size
            out.append(
                SegmentSize(
                    segment.name,
                    segment.description,
                    int(size),
                    change,
                    int(last.entered) if last else 0,
                    int(last.exited) if last else 0,
                    last.computed_at if last else None,
                )
            )
    return out
