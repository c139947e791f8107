"""``ciclovita doctor``: each check against the real thing, and what it says to fix.

Real SQLite and PostgreSQL databases (migrated, empty, unreachable), the repository's
campaigns and a broken copy, a local HTTP server standing in for SendGrid's ``/v3/scopes``
(it checks the bearer key), and the session's Prefect server (and a closed port).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ciclovita.doctor import Check, check_prefect, check_sendgrid, run_checks
from ciclovita.settings import REPOSITORY_ROOT, load_settings

GOOD_KEY = "SG.doctor-good-key-0123456789"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Set ``CICLOVITA_*`` for this test only (and no ``.env`` from the working directory)."""
    for name in list(os.environ):
        if name.startswith("CICLOVITA_") and name != "CICLOVITA_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def use(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"CICLOVITA_{name.upper()}", value)

    return use


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_a_ready_machine_passes_every_check_from_the_command_line(
    database_url: str, tmp_path: Path, prefect_server: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_DATABASE_URL=database_url,
        PYTHONPATH=str(REPOSITORY_ROOT),
        PREFECT_API_URL=prefect_server,
        COLUMNS="200",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("settings", "database", "migrations", "campaigns and templates", "Prefect API"):
        assert any(line.startswith(f"✓ {name}:") for line in lines), result.stdout
    assert f"✓ Prefect API: {prefect_server} is healthy" in result.stdout
    assert lines[-1] == "ready"


def test_what_is_wrong_and_how_to_fix_it(
    tmp_path: Path, settings_env: Any, prefect_server: str
) -> None:
    campaigns = tmp_path / "campaigns"
    shutil.copytree(REPOSITORY_ROOT / "campaigns", campaigns)
    broken = campaigns / "survey.yaml"
    broken.write_text(broken.read_text().replace("priority:", "priorty:"), encoding="utf-8")
    settings_env(database_url=f"sqlite:///{tmp_path / 'empty.db'}", campaigns_dir=str(campaigns))

    checks = _by_name(list(run_checks(prefect_api_url=f"http://127.0.0.1:{_closed_port()}/api")))
    assert checks["settings"].outcome == "ok"
    assert checks["database"].outcome == "ok"  # SQLite creates the file; it answers
    migrations = checks["migrations"]
    assert migrations.failed and "empty (never migrated)" in migrations.detail
    assert "run `ciclovita db upgrade`" in migrations.line()
    campaigns_check = checks["campaigns and templates"]
    assert campaigns_check.failed and f"{broken}:" in campaigns_check.detail
    assert "priorty" in campaigns_check.detail and "ciclovita validate" in campaigns_check.line()
    prefect = checks["Prefect API"]
    assert prefect.failed and "unreachable" in prefect.detail
    assert "prefect server start" in prefect.line()
    assert prefect.line().startswith("✗ Prefect API:")

    # the command exits 1 and says how many checks failed
    env = {k: v for k, v in os.environ.items()}
    env.update(PYTHONPATH=str(REPOSITORY_ROOT), COLUMNS="200", PREFECT_API_URL=prefect_server)
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ migrations:" in result.stdout and "→ run `ciclovita db upgrade`" in result.stdout
    assert "2 check(s) failed" in result.stdout


def test_an_unreachable_database_skips_the_migration_check(
    settings_env: Any, prefect_server: str
) -> None:
    port = _closed_port()
    settings_env(database_url=f"postgresql://ciclovita:hunter2@127.0.0.1:{port}/ciclovita")
    checks = _by_name(list(run_checks(prefect_api_url=prefect_server)))
    database = checks["database"]
    assert database.failed and "does not answer" in database.detail
    assert f"postgresql://ciclovita:***@127.0.0.1:{port}/ciclovita" in database.detail
    assert "hunter2" not in database.line()
    assert checks["migrations"].outcome == "skipped"
    assert checks["Prefect API"].outcome == "ok"


def test_settings_that_do_not_load_are_named(settings_env: Any) -> None:
    settings_env(sender="sendgrid")  # and no key anywhere
    checks = list(run_checks(prefect_api_url=None, sendgrid=True))
    assert checks[0].failed and "CICLOVITA_SENDGRID_API_KEY" in checks[0].detail
    assert [c.outcome for c in checks[1:-1]] == ["skipped"] * 4
    assert checks[-1].outcome == "ok" and "ephemeral mode" in checks[-1].detail


def test_prefect_in_ephemeral_mode_is_fine_on_a_laptop() -> None:
    check = check_prefect(None)
    assert check.outcome == "ok" and "PREFECT_API_URL is not set" in check.detail


class _Scopes(http.server.BaseHTTPRequestHandler):
    """SendGrid's ``GET /v3/scopes``: 200 for the right bearer key, 401 otherwise."""

    def do_GET(self) -> None:
        ok = self.path == "/v3/scopes" and self.headers.get("Authorization") == f"Bearer {GOOD_KEY}"
        body = b'{"scopes": ["mail.send"]}' if ok else b'{"errors": [{"message": "denied"}]}'
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scopes_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sendgrid_reachability_with_the_key_never_shown(
    settings_env: Any, scopes_server: str
) -> None:
    settings_env(sender="sendgrid", sendgrid_host=scopes_server, sendgrid_api_key=GOOD_KEY)
    good = check_sendgrid(load_settings())
    assert good.outcome == "ok" and "accepts the key (HTTP 200)" in good.detail

    settings_env(sendgrid_api_key="SG.revoked-key")
    refused = check_sendgrid(load_settings())
    assert refused.failed and "refuses the key (HTTP 401)" in refused.detail
    assert "Mail Send" in refused.line()

    settings_env(sendgrid_host=f"http://127.0.0.1:{_closed_port()}")
    unreachable = check_sendgrid(load_settings())
    assert unreachable.failed and "unreachable" in unreachable.detail
    for check in (good, refused, unreachable):
        assert GOOD_KEY not in check.line() and "SG.revoked-key" not in check.line()
