"""The Jinja2 environment for email templates: sandboxed, strict, autoescaped.

* Sandboxed: a template cannot reach Python internals.
* Strict: a variable the context does not provide is an error, not an empty string.
* Autoescaped for ``.html`` templates: a customer's own data (a name with markup in it) is
  shown as text and cannot break or inject into the email. ``.txt`` and subject templates are
  plain text and are not escaped (they are never interpreted as HTML).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ciclovita.rendering.formatting import long_date, money, number, short_datetime


def _filters() -> dict[str, Callable[..., str]]:
    return {
        "money": money,
        "number": number,
        "long_date": long_date,
        "short_datetime": short_datetime,
    }


def make_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    """A fresh environment loading from ``templates_dir``."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(_filters())
    return env


def text_environment() -> ImmutableSandboxedEnvironment:
    """For subject lines and other one-line templates written inline in YAML."""
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters.update(_filters())
    return env
