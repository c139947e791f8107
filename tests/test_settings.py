"""Settings: defaults, bad values and unknown names fail at start-up, secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciclovita.errors import ConfigurationError
from ciclovita.settings import REPOSITORY_ROOT, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CICLOVITA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_set_up(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'ciclovita.db'}"
    assert settings.sender == "file"
    assert settings.outbox_dir == tmp_path / "outbox"
    assert settings.campaigns_dir == REPOSITORY_ROOT / "campaigns"
    assert settings.templates_dir == REPOSITORY_ROOT / "templates"


def test_values_from_environment_and_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CICLOVITA_SENDER=console\nCICLOVITA_OUTBOX_DIR=/tmp/x\n")
    monkeypatch.setenv("CICLOVITA_SENDGRID_HOST", "http://127.0.0.1:4010/")
    settings = load_settings()
    assert settings.sender == "console"
    assert settings.outbox_dir == Path("/tmp/x")
    assert settings.sendgrid_host == "http://127.0.0.1:4010"


def test_bad_sender_names_the_setting_and_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLOVITA_SENDER", "smtp")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    text = str(caught.value)
    assert "CICLOVITA_SENDER" in text
    assert "'file', 'console' or 'sendgrid'" in text
    assert "smtp" in text


def test_bad_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLOVITA_DATABASE_URL", "mysql://localhost/x")
    with pytest.raises(
        ConfigurationError, match=r"CICLOVITA_DATABASE_URL.*sqlite:// and postgresql://"
    ):
        load_settings()


def test_unknown_setting_suggests_the_close_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLOVITA_SENDR", "file")
    with pytest.raises(
        ConfigurationError, match="CICLOVITA_SENDR: unknown setting, did you mean CICLOVITA_SENDER"
    ):
        load_settings()


def test_unknown_setting_in_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CICLOVITA_OUTBOX=/tmp/x\n")
    with pytest.raises(ConfigurationError, match="CICLOVITA_OUTBOX: unknown setting"):
        load_settings()


def test_sendgrid_needs_a_key_and_never_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLOVITA_SENDER", "sendgrid")
    with pytest.raises(ConfigurationError, match="CICLOVITA_SENDGRID_API_KEY"):
        load_settings()
    monkeypatch.setenv("CICLOVITA_SENDGRID_API_KEY", "SG.very-secret")
    settings = load_settings()
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.model_dump())
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.very-secret"


def test_bad_number_and_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICLOVITA_SENDGRID_CONCURRENCY", "lots")
    with pytest.raises(ConfigurationError, match="CICLOVITA_SENDGRID_CONCURRENCY"):
        load_settings()
    monkeypatch.delenv("CICLOVITA_SENDGRID_CONCURRENCY")
    monkeypatch.setenv("CICLOVITA_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigurationError, match=r"CICLOVITA_TIMEZONE.*IANA"):
        load_settings()
