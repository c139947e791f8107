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
from dataclasses import dataclass
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


def parse_segments(document: YamlDocument) -> list[Segment]:
    """Segments from a parsed ``segments.yaml``; InputError lists every problem."""
    problems: list[Problem] = []
    source = document.source
    data = document.data
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"segments"}:
        extra = sorted(set(data) - {"segments"}) if isinstance(data, dict) else []
        raise InputError(
            [
                Problem(
                    source,
                    f"expected a top-level 'segments:' mapping (found {extra or data!r})",
                    line=1,
                )
            ]
        )
    entries: Any = data.get("segments") or {}
    if not isinstance(entries, dict):
        raise InputError(
            [
                Problem(
                    source,
                    "'segments' must map names to definitions",
                    line=document.line_of(("segments",)),
                )
            ]
        )
    segments: list[Segment] = []
    for name, body in entries.items():
        loc = ("segments", name)
        line = document.line_of(loc)
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            problems.append(
                Problem(
                    source,
                    "segment names are lower_snake_case (a-z, 0-9, _)",
                    line=line,
                    column="segments",
                    value=str(name),
                )
            )
            continue
        if not isinstance(body, dict):
            problems.append(
                Problem(
                    source,
                    "a segment is a mapping with 'where' (and 'description')",
                    line=line,
                    column=name,
                )
            )
            continue
        unknown = set(body) - {"description", "where"}
        for key in sorted(unknown):
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
            continue
        try:
            condition = parse_condition(body["where"], (*loc, "where"), known_segments=[])
        except ConditionError as exc:
            problems.extend(condition_problems(exc, document))
            continue
        segments.append(Segment(name, str(body.get("description") or ""), condition, source, line))
    if problems:
        raise InputError(problems)
    return segments


def load_segments(campaigns_dir: Path) -> list[Segment]:
    """The segments of ``segments.yaml`` (none when the file is absent)."""
    path = campaigns_dir / SEGMENTS_FILE
    if not path.exists():
        return []
    return parse_segments(read_yaml(path))


def segment_names(segments: Sequence[Segment]) -> list[str]:
    return [segment.name for segment in segments]
