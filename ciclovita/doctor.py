"""``ciclovita doctor``: is this machine ready to run ciclovita, and if not, what to fix.

Each check answers with one line — passed, failed or skipped — and, when it fails, what to
do about it. In order: the settings load; the database answers; its schema is at the newest
migration; campaigns, segments, lifecycle, policy and their templates validate; SendGrid
accepts the key (only when asked: it is a request to SendGrid); the Prefect API answers (or
ephemeral mode is in use). A check that cannot run because an earlier one failed is skipped.

This module never imports Prefect (the domain core does not); the Prefect API is checked over
HTTP at its ``/health`` endpoint. Secrets are never printed: URLs are shown without password
and the SendGrid key is only ever sent to SendGrid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import httpx

from ciclovita.errors import ConfigurationError
from ciclovita.settings import Settings, load_settings

Outcome = Literal["ok", "failed", "skipped"]
MARKS = {"ok": "✓", "failed": "✗", "skipped": "–"}
TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    """The result of one check: what was checked, how it went, and what to do."""

    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def line(self) -> str:
        text = f"{MARKS[self.outcome]} {self.name}: {self.detail}"
        if self.fix and self.outcome != "ok":
            text += f"\n    → {self.fix}"
        return text


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_settings() -> tuple[Check, Settings | None]:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        fix = "fix that setting (environment or .env)"
        if exc.setting == "CICLOVITA_SENDGRID_API_KEY":
            fix = (
                "set CICLOVITA_SENDGRID_API_KEY, or save the key in the Prefect Secret block "
                "ciclovita-sendgrid-api-key (read when PREFECT_API_URL is set)"
            )
        return Check("settings", "failed", str(exc), fix), None
    return Check("settings", "ok", f"loaded; sender {settings.sender}"), settings


def check_database(settings: Settings) -> Check:
    from sqlalchemy import text

    from ciclovita.db.engine import make_engine

    url = _safe_url(settings.database_url)
    engine = make_engine(settings.database_url, pool_pre_ping=False)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        return Check(
            "database",
            "failed",
            f"{url} does not answer: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}",
            "check CICLOVITA_DATABASE_URL, that the server runs and accepts this user",
        )
    finally:
        engine.dispose()
    return Check("database", "ok", f"{url} answers")


def check_migrations(settings: Settings) -> Check:
    from ciclovita.db.engine import make_engine
    from ciclovita.db.migrate import current_revision, head_revision

    engine = make_engine(settings.database_url)
    try:
        current, head = current_revision(engine), head_revision()
    finally:
        engine.dispose()
    if current == head:
        return Check("migrations", "ok", f"schema at the newest revision ({head})")
    state = "empty (never migrated)" if current is None else f"at revision {current}"
    return Check(
        "migrations",
        "failed",
        f"schema is {state}; the newest is {head}",
        "run `ciclovita db upgrade`",
    )


def check_campaigns(settings: Settings) -> Check:
    from ciclovita.authoring.validation import validate

    problems = validate(
        [], campaigns_dir=settings.campaigns_dir, templates_dir=settings.templates_dir
    )
    if not problems:
        return Check(
            "campaigns and templates",
            "ok",
            f"{settings.campaigns_dir} and {settings.templates_dir} validate",
        )
    shown = "; ".join(str(p) for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return Check(
        "campaigns and templates",
        "failed",
        f"{len(problems)} problem(s): {shown}{more}",
        "run `ciclovita validate` for every problem with its file and line",
    )


def check_sendgrid(settings: Settings, client: httpx.Client | None = None) -> Check:
    """A GET of ``/v3/scopes`` with the key: does SendGrid answer, and accept the key?"""
    key = settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else ""
    if not key:
        return Check(
            "SendGrid",
            "failed",
            "no API key",
            "set CICLOVITA_SENDGRID_API_KEY or the Prefect Secret block ciclovita-sendgrid-api-key",
        )
    url = f"{settings.sendgrid_host}/v3/scopes"
    http = client or httpx.Client(timeout=TIMEOUT)
    try:
        response = http.get(url, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        return Check(
            "SendGrid",
            "failed",
            f"{settings.sendgrid_host} unreachable: {exc.__class__.__name__}",
            "check network access to CICLOVITA_SENDGRID_HOST",
        )
    finally:
        if client is None:
            http.close()
    if response.status_code == 200:
        return Check("SendGrid", "ok", f"{settings.sendgrid_host} accepts the key (HTTP 200)")
    if response.status_code in (401, 403):
        return Check(
            "SendGrid",
            "failed",
            f"{settings.sendgrid_host} refuses the key (HTTP {response.status_code})",
            "create a key with Mail Send permission and set it again",
        )
    return Check(
        "SendGrid",
        "failed",
        f"{settings.sendgrid_host} answered HTTP {response.status_code}",
        "retry later; check https://status.sendgrid.com",
    )


def check_prefect(api_url: str | None) -> Check:
    """The Prefect API's ``/health``; without a URL, flows start a temporary local server."""
    if not api_url:
        return Check(
            "Prefect API",
            "ok",
            "PREFECT_API_URL is not set: ephemeral mode (a temporary local server per command, "
            "fine on a laptop; set PREFECT_API_URL for scheduled runs and the UI)",
        )
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return Check(
            "Prefect API",
            "failed",
            f"{api_url} unreachable: {exc.__class__.__name__}",
            "start it (`prefect server start`) or fix PREFECT_API_URL",
        )
    if response.status_code == 200:
        return Check("Prefect API", "ok", f"{api_url} is healthy")
    return Check(
        "Prefect API",
        "failed",
        f"{api_url}/health answered HTTP {response.status_code}",
        "check the Prefect server's logs",
    )


def run_checks(*, prefect_api_url: str | None, sendgrid: bool = False) -> Iterator[Check]:
    """Every check, in order, as it completes."""
    settings_check, settings = check_settings()
    yield settings_check
    if settings is None:
        for name in ("database", "migrations", "campaigns and templates", "SendGrid"):
            if name != "SendGrid" or sendgrid:
                yield Check(name, "skipped", "the settings do not load")
    else:
        database = check_database(settings)
        yield database
        if database.failed:
            yield Check("migrations", "skipped", "the database does not answer")
        else:
            yield check_migrations(settings)
        yield check_campaigns(settings)
        if sendgrid:
            yield check_sendgrid(settings)
    yield check_prefect(prefect_api_url)
