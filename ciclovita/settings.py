"""Settings: every ``CICLOVITA_*`` value, read from the environment or a ``.env`` file.

This module is the one place that knows the names, defaults and accepted values of the
settings. A bad or unknown setting fails at start-up with a ``ConfigurationError`` naming the
setting and what it accepts. Secrets are ``SecretStr`` and never appear in logs or reprs.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ciclovita.errors import ConfigurationError
from ciclovita.vocabulary import DEFAULT_TIMEZONE

ENV_PREFIX = "CICLOVITA_"
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def _repository_dir(name: str) -> Path:
    """The repository's own ``campaigns/`` or ``templates/`` when installed from a checkout."""
    bundled = REPOSITORY_ROOT / name
    return bundled if bundled.is_dir() else Path.cwd() / name


SECRET_FIELDS = frozenset({"sendgrid_api_key", "secret_key"})

SenderName = Literal["file", "console", "sendgrid"]


class Settings(BaseSettings):
    """ciclovita's configuration. Each field is the setting ``CICLOVITA_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'ciclovita.db'}",
        description="SQLAlchemy URL of the customer database.",
    )
    sender: SenderName = Field("file", description="Where messages go: file, console or sendgrid.")
    outbox_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "outbox",
        description="Directory of .eml files written by the file sender.",
    )
    campaigns_dir: Path = Field(
        default_factory=lambda: _repository_dir("campaigns"),
        description="Directory of campaign, segment and lifecycle YAML files.",
    )
    templates_dir: Path = Field(
        default_factory=lambda: _repository_dir("templates"),
        description="Directory of Jinja2 email templates.",
    )
    sendgrid_api_key: SecretStr | None = Field(None, description="SendGrid API key (secret).")
    sendgrid_host: str = Field(
        "https://api.sendgrid.com", description="SendGrid API base URL (regional or test host)."
    )
    sendgrid_sandbox: bool = Field(False, description="Send with SendGrid's sandbox mode on.")
    sendgrid_concurrency: int = Field(
        16, ge=1, le=256, description="Requests in flight at once to SendGrid."
    )
    sendgrid_asm_group_id: int | None = Field(
        None, description="SendGrid unsubscribe group for marketing mail."
    )
    sendgrid_webhook_public_key: str | None = Field(
        None, description="Public key (base64) that verifies SendGrid's signed event webhook."
    )
    sendgrid_webhook_max_age_seconds: int = Field(
        600, ge=30, le=86_400, description="Oldest signed webhook timestamp accepted (replays)."
    )
    send_cap_per_run: int = Field(
        100_000, ge=0, description="Most messages one run may send before it stops (0: none)."
    )
    secret_key: SecretStr = Field(
        SecretStr("ciclovita-development-secret-change-me"),
        description="Signs unsubscribe, preference and survey links (secret).",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of `ciclovita serve-web` in email links."
    )
    from_email: str = Field("hello@example.com", description="Default sender address.")
    from_name: str = Field("Ciclovita", description="Default sender name.")
    timezone: str = Field(DEFAULT_TIMEZONE, description="Time zone of schedules and reports.")
    dask_address: str | None = Field(
        None,
        description="Dask for the delivery batches: unset (threads in the flow's process), "
        "`local` or `local:N` (a temporary LocalCluster of N processes) or a scheduler "
        "address such as tcp://dask-scheduler:8786.",
    )
    sendgrid_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Seconds SendGrid has to answer one request (no answer: the message is "
        "ambiguous, never re-sent blindly).",
    )
    render_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes that render messages for delivery (0: render in the "
        "delivering thread). Rendering is CPU work; in processes it no longer competes with "
        "sending for one interpreter.",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("not a SQLAlchemy URL such as sqlite:///ciclovita.db") from exc
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite:// and postgresql:// databases are supported")
        return value

    @field_validator("sendgrid_host", "public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("not an IANA time zone such as Europe/Rome") from exc
        return value

    def require_sendgrid_key(self) -> SecretStr:
        """The SendGrid key, or a ConfigurationError saying how to provide it."""
        if self.sendgrid_api_key is None or not self.sendgrid_api_key.get_secret_value():
            raise ConfigurationError(
                "CICLOVITA_SENDGRID_API_KEY",
                "is required when CICLOVITA_SENDER=sendgrid",
                "a SendGrid API key, from the environment, .env or a Prefect Secret block",
            )
        return self.sendgrid_api_key


def setting_names() -> list[str]:
    """Every accepted ``CICLOVITA_*`` name."""
    return sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)


def _unknown_names(env_file: Path) -> list[str]:
    names = {k for k in os.environ if k.startswith(ENV_PREFIX)}
    if env_file.is_file():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
            if key.startswith(ENV_PREFIX):
                names.add(key)
    return sorted(names - set(setting_names()))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, failing with a ConfigurationError that names the bad setting."""
    for name in _unknown_names(Path(".env")):
        close = difflib.get_close_matches(name, setting_names(), n=1)
        hint = f"did you mean {close[0]}?" if close else "not a ciclovita setting"
        raise ConfigurationError(name, f"unknown setting, {hint}", ", ".join(setting_names()))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        accepted = None
        if error["type"] == "literal_error":
            accepted = str(error.get("ctx", {}).get("expected", ""))
        shown = "a hidden value" if field in SECRET_FIELDS else repr(error.get("input"))
        raise ConfigurationError(
            ENV_PREFIX + field.upper(), f"{error['msg']} (got {shown})", accepted
        ) from exc
    if settings.sender == "sendgrid":
        settings.require_sendgrid_key()
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
