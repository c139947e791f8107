"""The catalogue: every campaign file, the policy, segments and lifecycle, loaded together.

Loading checks each file on its own (syntax, fields, types, with file and line) and then the
references between them (segments a campaign names exist; trigger segment exists; conditions
parse). All problems of all files are reported at once; a catalogue with problems is never
used to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ciclovita.campaigns.spec import Campaign, Policy, SegmentTrigger
from ciclovita.errors import InputError, Problem
from ciclovita.lifecycle import LIFECYCLE_FILE, LifecycleConfig, load_lifecycle
from ciclovita.segments.conditions import Condition, ConditionError, parse_condition
from ciclovita.segments.definitions import (
    SEGMENTS_FILE,
    Segment,
    collect_segments,
    condition_problems,
)
from ciclovita.yamlsource import YamlDocument, load_model, read_yaml, validate_document

POLICY_FILE: Final = "policy.yaml"
RESERVED: Final = frozenset({LIFECYCLE_FILE, SEGMENTS_FILE, POLICY_FILE})


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with its compiled audience conditions and where it came from."""

    name: str
    spec: Campaign
    source: Path
    where: Condition | None
    exclude: Condition | None
    document: YamlDocument

    def line_of(self, *path: str | int) -> int | None:
        return self.document.line_of(tuple(path))


@dataclass(frozen=True)
class Catalog:
    campaigns: tuple[LoadedCampaign, ...]
    segments: tuple[Segment, ...]
    policy: Policy
    lifecycle: LifecycleConfig
    directory: Path

    def campaign(self, name: str) -> LoadedCampaign:
        for campaign in self.campaigns:
            if campaign.name == name:
                return campaign
        known = ", ".join(c.name for c in self.campaigns)
        raise InputError([Problem(str(self.directory), f"no campaign {name!r} (known: {known})")])

    @property
    def by_priority(self) -> list[LoadedCampaign]:
        """Enabled campaigns, highest priority first (name breaks ties)."""
        enabled = [c for c in self.campaigns if c.spec.enabled]
        return sorted(enabled, key=lambda c: (-c.spec.priority, c.name))


def campaign_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.glob("*.yaml") if p.name not in RESERVED and not p.name.startswith(".")
    )


def load_campaign(
    path: Path, segment_names: Sequence[str], problems: list[Problem]
) -> LoadedCampaign | None:
    """One campaign file; its problems are appended to ``problems``."""
    try:
        document = read_yaml(path)
        spec = validate_document(document, Campaign)
    except InputError as exc:
        problems.extend(exc.problems)
        return None
    source = str(path)
    name = spec.name or path.stem
    if spec.name and spec.name != path.stem:
        problems.append(
            Problem(
                source,
                f"name {spec.name!r} differs from the file name {path.stem!r}",
                line=document.line_of(("name",)),
                column="name",
                value=spec.name,
            )
        )
    known = list(segment_names)
    for key in ("segments", "exclude_segments"):
        for index, segment in enumerate(getattr(spec.audience, key)):
            if segment not in known:
                problems.append(
                    Problem(
                        source,
                        f"unknown segment; accepted: {', '.join(known) or '(none)'}",
                        line=document.line_of(("audience", key, index)),
                        column=f"audience.{key}",
                        value=segment,
                    )
                )
    if isinstance(spec.trigger, SegmentTrigger) and spec.trigger.segment_entered not in known:
        problems.append(
            Problem(
                source,
                f"unknown segment; accepted: {', '.join(known) or '(none)'}",
                line=document.line_of(("trigger", "segment_entered")),
                column="trigger.segment_entered",
                value=spec.trigger.segment_entered,
            )
        )
    conditions: dict[str, Condition | None] = {"where": None, "exclude": None}
    for key in conditions:
        data = getattr(spec.audience, key)
        if data is None:
            continue
        try:
            conditions[key] = parse_condition(data, ("audience", key), known_segments=known)
        except ConditionError as exc:
            problems.extend(condition_problems(exc, document))
    return LoadedCampaign(name, spec, path, conditions["where"], conditions["exclude"], document)


def load_catalog(directory: Path) -> Catalog:
    """Everything in the campaigns directory; InputError lists every problem found."""
    catalog, problems = collect_catalog(directory)
    if problems:
        raise InputError(problems)
    return catalog


def collect_catalog(directory: Path) -> tuple[Catalog, list[Problem]]:
    """What loads of the campaigns directory, and every problem found (for validation)."""
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(Problem(str(directory), "campaigns directory not found"))
        return Catalog((), (), Policy(), LifecycleConfig(), directory), problems
    lifecycle = LifecycleConfig()
    try:
        lifecycle = load_lifecycle(directory)
    except InputError as exc:
        problems.extend(exc.problems)
    segment_file = collect_segments(directory)
    problems.extend(segment_file.problems)
    segments = segment_file.segments
    policy = Policy()
    if (directory / POLICY_FILE).exists():
        try:
            policy = load_model(directory / POLICY_FILE, Policy)
        except InputError as exc:
            problems.extend(exc.problems)
    names = segment_file.declared
    campaigns = [load_campaign(path, names, problems) for path in campaign_files(directory)]
    loaded = tuple(c for c in campaigns if c is not None)
    return Catalog(loaded, tuple(segments), policy, lifecycle, directory), problems
