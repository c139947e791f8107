"""The Typer application and what every command shares: settings, errors, output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from ciclovita.errors import CiclovitaError, ConfigurationError, InputError
from ciclovita.runtime import Runtime, get_runtime
from ciclovita.settings import load_settings

app = typer.Typer(
    name="ciclovita",
    help="Lifecycle marketing automation as code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The customer database: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def handles_errors(function: Callable[P, R]) -> Callable[P, R]:
    """Turn ciclovita's errors into a clear message and a non-zero exit."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except ConfigurationError as exc:
            errors.print(f"[bold red]configuration error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from exc
        except InputError as exc:
            errors.print(f"[bold red]{len(exc.problems)} problem(s):[/]", highlight=False)
            for problem in exc.problems:
                errors.print(f"  {problem}", highlight=False, markup=False)
            raise typer.Exit(1) from exc
        except CiclovitaError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper


def runtime() -> Runtime:
    """The runtime from the settings (a bad setting stops here, at start-up)."""
    return get_runtime(load_settings())


def parse_as_of(value: str | None) -> datetime:
    """``--as-of``: an ISO date or date-time (UTC when naive); default now."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError as exc:
            raise typer.BadParameter(f"{value!r} is not an ISO date or date-time") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def echo_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
