"""YAML files that remember where everything came from.

Marketers' YAML (campaigns, segments, lifecycle thresholds) is parsed into plain data plus a
map from each key path to its line, so that a pydantic validation error can be reported as
``file:line: field: message (accepted: …)``. Duplicate keys, which PyYAML silently merges,
are reported as problems too.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ciclovita.errors import InputError, Problem

Path_ = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class YamlDocument:
    """Parsed YAML data with the line of every key path (1-based)."""

    source: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return None


def _walk(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    problems: list[Problem],
    source: str,
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                problems.append(
                    Problem(source, f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
                )
            seen.add(key)
            child = (*path, key if isinstance(key, str | int) else str(key))
            lines[child] = key_node.start_mark.line + 1
            _walk(loader, value_node, child, lines, problems, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(loader, item, (*path, index), lines, problems, source)


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys raise InputError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(source, None, {(): 1})
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise InputError([_syntax_problem(exc, source)]) from exc
    except yaml.YAMLError as exc:
        raise InputError([Problem(source, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    problems: list[Problem] = []
    _walk(yaml.SafeLoader(""), node, (), lines, problems, source)
    if problems:
        raise InputError(problems)
    return YamlDocument(source, data, lines)


def _syntax_problem(exc: yaml.MarkedYAMLError, source: str) -> Problem:
    """A YAML syntax error at the line where the broken construct starts (the parser's
    ``context``, e.g. an unclosed ``[``), saying where the parser noticed it."""
    problem = exc.problem or "syntax error"
    noticed = exc.problem_mark.line + 1 if exc.problem_mark else None
    if exc.context and exc.context_mark is not None:
        started = exc.context_mark.line + 1
        what = exc.context.removeprefix("while parsing ").removeprefix("while scanning ")
        message = f"invalid YAML: {what} starts here, but {problem}"
        if noticed and noticed != started:
            message += f" (noticed at line {noticed})"
        return Problem(source, message, line=started)
    return Problem(source, f"invalid YAML: {problem}", line=noticed)


def read_yaml(path: Path) -> YamlDocument:
    """Read and parse a YAML file; an unreadable file is an InputError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(str(path), f"cannot read file: {exc}")]) from exc
    return parse_yaml(text, str(path))


def _unwrap(annotation: Any) -> list[Any]:
    """The classes an annotation may hold (Optional/Union/Annotated/list/dict unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset, dict):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(model: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """Follow ``loc`` through nested models; None where it leaves them."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            # a union member tag (pydantic puts the tag in loc): find it among nested models
            return current if part not in current.model_fields else None
        candidates = [
            c for c in _unwrap(info.annotation) if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if not candidates:
            return None
        current = candidates[0]
    return current


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def problems_from_validation(
    error: ValidationError, document: YamlDocument, model: type[BaseModel]
) -> list[Problem]:
    """Translate pydantic's errors into located, readable problems."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc: Path_ = tuple(item["loc"])
        data_loc = _data_path(document.data, loc)
        field_name = ".".join(str(part) for part in data_loc) or "(document)"
        message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        ctx = item.get("ctx") or {}
        if item["type"] == "extra_forbidden":
            parent = _model_at(model, data_loc[:-1])
            accepted = _field_names(parent) if parent else []
            close = difflib.get_close_matches(str(data_loc[-1]), accepted, n=1)
            message = "unknown field" + (f", did you mean {close[0]!r}?" if close else "")
            if accepted:
                message += f" (accepted: {', '.join(accepted)})"
        elif item["type"] in {"literal_error", "enum"} and "expected" in ctx:
            message = f"{message}"
        elif item["type"] == "union_tag_invalid":
            message = f"unknown kind {ctx.get('tag')!r} (accepted: {ctx.get('expected_tags')})"
        elif item["type"] == "missing":
            message = "required field is missing"
        value = item.get("input")
        shown = None
        if item["type"] != "missing" and not isinstance(value, dict | list):
            shown = str(value)
        problems.append(
            Problem(
                document.source,
                message,
                line=document.line_of(data_loc),
                column=field_name,
                value=shown,
            )
        )
    return problems


def _data_path(data: Any, loc: Path_) -> Path_:
    """The part of a pydantic ``loc`` that names real keys in the data.

    Pydantic inserts union tags (model or function names, or a tag that may also be a key,
    like ``event``) into ``loc``. Each part is either followed into the data or dropped,
    whichever explains more of the rest of ``loc``. A last part missing from the data (a
    required field, an unknown key) is kept.
    """

    def walk(node: Any, index: int) -> tuple[int, Path_]:
        if index == len(loc):
            return 0, ()
        part = loc[index]
        skipped = walk(node, index + 1)
        best = skipped
        child: Any = _MISSING
        if isinstance(node, dict):
            child = node.get(part, _MISSING)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            child = node[part]
        if child is not _MISSING:
            score, rest = walk(child, index + 1)
            if score + 1 > best[0]:
                best = (score + 1, (part, *rest))
        elif index == len(loc) - 1 and isinstance(node, dict) and best[0] == 0:
            best = (1, (part,))
        return best

    return walk(data, 0)[1]


_MISSING = object()


def validate_document(document: YamlDocument, model: type[ModelT]) -> ModelT:
    """Validate a parsed document against ``model``; every problem raised at once."""
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        raise InputError(problems_from_validation(exc, document, model)) from exc


def load_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it as ``model``, with located errors."""
    return validate_document(read_yaml(path), model)
