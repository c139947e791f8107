"""Segment definitions: ``segments.yaml`` in the campaigns directory, parsed and located.

::

    segments:
      champions:
        description: Recent, frequent, high spenders
        where: {rfm_segment: Champions}

Every problem (unknown field, wrong type, bad operator, bad name) is reported with file,
line and the accepted choices. Segments may not refer to other segments (no cycles).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ciclovita.errors import InputError, Problem
from ciclovita.segments.conditions import Condition, ConditionError, parse_condition
from ciclovita.yamlsource import YamlDocument, read_yaml

SEGMENTS_FILE: Final = "segments.yaml"
NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    condition: Condition
    source: str
    line: int | None


def condition_problems(error: ConditionError, document: YamlDocument) -> list[Problem]:
    """Located problems from a condition's errors."""
    return [
        Problem(
            document.source,
            message,
            line=document.line_of(loc),
            column=".".join(str(part) for part in loc),
            value=None if value is None or isinstance(value, dict | list) else str(value),
        )
        for loc, message, value in error.problems
    ]


@dataclass
class SegmentFile:
    """What ``segments.yaml`` holds: the valid segments, every declared name (valid or not,
    so campaigns naming a broken segment are not also told it is unknown), and problems."""

    segments: list[Segment] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_segments(document: YamlDocument) -> SegmentFile:
    """Parse ``segments.yaml``: a bad segment is a problem; the good ones still load."""
    result = SegmentFile()
    source = document.source
    data = document.data
    if data is None:
        return result
    if not isinstance(data, dict) or set(data) - {"segments"}:
        extra = sorted(set(data) - {"segments"}) if isinstance(data, dict) else []
        message = f"expected a top-level 'segments:' mapping (found {extra or data!r})"
        result.problems.append(Problem(source, message, line=1))
        return result
    entries: Any = data.get("segments") or {}
    if not isinstance(entries, dict):
        line = document.line_of(("segments",))
        result.problems.append(
            Problem(source, "'segments' must map names to definitions", line=line)
        )
        return result
    for name, body in entries.items():
        loc = ("segments", name)
        line = document.line_of(loc)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            result.problems.append(
                Problem(
                    source,
                    "segment names are lower_snake_case (a-z, 0-9, _)",
                    line=line,
                    column="segments",
                    value=str(name),
                )
            )
            continue
        result.declared.append(name)
        segment = _read_segment(document, name, body, result.problems)
        if segment is not None:
            result.segments.append(segment)
    return result


def _read_segment(
    document: YamlDocument, name: str, body: Any, problems: list[Problem]
) -> Segment | None:
    source = document.source
    loc = ("segments", name)
    line = document.line_of(loc)
    if not isinstance(body, dict):
        message = "a segment is a mapping with 'where' (and 'description')"
        problems.append(Problem(source, message, line=line, column=name))
        return None
    found = len(problems)
    for key in sorted(set(body) - {"description", "where"}):
        problems.append(
            Problem(
                source,
                "unknown key; accepted: description, where",
                line=document.line_of((*loc, key)),
                column=f"{name}.{key}",
                value=str(key),
            )
        )
    if "where" not in body:
        problems.append(Problem(source, "missing 'where' condition", line=line, column=name))
        return None
    try:
        condition = parse_condition(body["where"], (*loc, "where"), segment_refs=False)
    except ConditionError as exc:
        problems.extend(condition_problems(exc, document))
        return None
    if len(problems) > found:
        return None
    return Segment(name, str(body.get("description") or ""), condition, source, line)


def collect_segments(campaigns_dir: Path) -> SegmentFile:
    """``segments.yaml`` of the campaigns directory (empty when the file is absent)."""
    path = campaigns_dir / SEGMENTS_FILE
    if not path.exists():
        return SegmentFile()
    try:
        document = read_yaml(path)
    except InputError as exc:
        return SegmentFile(problems=list(exc.problems))
    return read_segments(document)


def load_segments(campaigns_dir: Path) -> list[Segment]:
    """The segments of ``segments.yaml``; InputError lists every problem."""
    found = collect_segments(campaigns_dir)
    if found.problems:
        raise InputError(found.problems)
    return found.segments


def segment_names(segments: Sequence[Segment]) -> list[str]:
    return [segment.name for segment in segments]
