"""The core's folders are layers: no folder imports a folder that imports it back.

Every module of the ``ciclovita`` package is read with ``ast`` (nothing is imported), and
each ``import`` of another part of the package becomes an edge between two units: a
sub-package (``ciclovita.delivery``, with everything below it) or a top-level module
(``ciclovita.errors``). Imports inside functions count too: a lazy import is still a
dependency. The graph must have no cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import ciclovita

PACKAGE = Path(ciclovita.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """The layer a module belongs to (None: the package itself, or not ciclovita)."""
    parts = module.split(".")
    if parts[0] != "ciclovita" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def _imported(tree: ast.AST, module: str) -> set[str]:
    names: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Unit → the other units it imports."""
    units = {_unit(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {unit: set() for unit in units if unit}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        source = _unit(module)
        if source is None:
            continue
        for name in _imported(ast.parse(path.read_text(encoding="utf-8")), module):
            target = _unit(name)
            if target in graph and target != source:
                graph[source].add(target)
    return graph


def test_the_folders_of_the_core_import_each_other_one_way() -> None:
    graph = import_graph()
    assert "ciclovita.delivery" in graph and "ciclovita.errors" in graph
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " → ".join(exc.args[1])
        raise AssertionError(f"folders import each other in a cycle: {cycle}") from None
    assert set(order) == set(graph)


def test_the_campaign_language_builds_on_nothing_that_builds_on_it() -> None:
    graph = import_graph()
    language = graph["ciclovita.campaigns"]
    for layer in ("planning", "authoring", "rendering", "delivery", "web", "cli"):
        assert f"ciclovita.{layer}" not in language, layer
    assert "ciclovita.authoring" not in graph["ciclovita.planning"]
    assert "ciclovita.delivery" not in graph["ciclovita.rendering"]


def test_the_graph_sees_a_cycle_when_there_is_one() -> None:
    """The check itself: a made-up back edge is found."""
    graph = import_graph()
    graph["ciclovita.campaigns"].add("ciclovita.delivery")
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("a cycle went unnoticed")
