"""The ``ciclovita`` command line.

Commands that need Prefect (``run``, ``demo``, ``deploy``, ``serve``) live in ``flows/`` and
join this app through the ``ciclovita.commands`` entry-point group, so that the domain core
never imports Prefect.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ciclovita.cli import campaigns as _campaigns  # noqa: F401 - registers its commands
from ciclovita.cli import data as _data  # noqa: F401
from ciclovita.cli import db as _db  # noqa: F401
from ciclovita.cli import outbox as _outbox  # noqa: F401
from ciclovita.cli import value as _value  # noqa: F401
from ciclovita.cli import web as _web  # noqa: F401
from ciclovita.cli.app import app

__all__ = ["app", "main"]


def _load_plugins() -> None:
    for entry in entry_points(group="ciclovita.commands"):
        register = entry.load()
        register(app)


def main() -> None:
    _load_plugins()
    app()
