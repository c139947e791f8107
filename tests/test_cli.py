"""The ``ciclovita`` command as users run it: real subprocesses, real database, real Prefect."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ciclovita.db.models import Customer, Message
from ciclovita.settings import REPOSITORY_ROOT

CLI = [sys.executable, "-m", "ciclovita"]


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_DATABASE_URL=database_url,
        CICLOVITA_OUTBOX_DIR=str(tmp_path / "outbox"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPOSITORY_ROOT),
        COLUMNS="200",
    )
    return env


@pytest.mark.prefect
def test_demo_data_then_run_twice_sends_nothing_twice(
    engine: Engine, cli_env: dict[str, str], tmp_path: Path, prefect_server: str
) -> None:
    as_of = "2026-06-16T09:00:00"
    made = run_cli(
        "demo-data",
        "--customers",
        "300",
        "--seed",
        "5",
        "--as-of",
        as_of,
        env=cli_env,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Customer)).scalar_one() == 300

    rehearsal = run_cli("run", "--dry-run", "--as-of", as_of, env=cli_env, cwd=tmp_path)
    assert rehearsal.returncode == 0, rehearsal.stderr + rehearsal.stdout
    assert "Campaigns (nothing is sent or recorded)" in rehearsal.stdout
    found = re.search(r"dry run: (\d+) due messages rendered, 0 would fail", rehearsal.stdout)
    assert found, rehearsal.stdout
    assert not (tmp_path / "outbox").exists()
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Message)).scalar_one() == 0

    first = run_cli("run", "--as-of", as_of, env=cli_env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "Lifecycle stages" in first.stdout
    assert "thank_you" in first.stdout
    files = sorted((tmp_path / "outbox").glob("*/*.eml"))
    with engine.connect() as connection:
        sent = connection.execute(select(func.count()).where(Message.status == "sent")).scalar_one()
    assert sent == len(files) == int(found.group(1)) > 0

    second = run_cli("run", "--as-of", "2026-06-16T09:20:00", env=cli_env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert sorted((tmp_path / "outbox").glob("*/*.eml")) == files
    with engine.connect() as connection:
        assert (
            connection.execute(select(func.count()).where(Message.status == "sent")).scalar_one()
            == sent
        )


def test_bad_campaign_file_stops_everything_with_file_and_line(
    engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    campaigns = tmp_path / "campaigns"
    shutil.copytree(REPOSITORY_ROOT / "campaigns", campaigns)
    broken = campaigns / "thank_you.yaml"
    broken.write_text(
        broken.read_text()
        .replace("  delay: 1d ", "  delay: one day ")
        .replace("priority: 80", "priority: 80\ncolour: red")
    )
    cli_env["CICLOVITA_CAMPAIGNS_DIR"] = str(campaigns)
    result = run_cli("run", "--no-send", env=cli_env, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{broken}:5: colour: unknown field" in result.stderr
    assert "trigger.delay" in result.stderr
    assert "a duration with its unit, such as 30m" in result.stderr
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Message)).scalar_one() == 0


def test_unknown_setting_fails_at_start_up(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli_env["CICLOVITA_SENDR"] = "console"
    result = run_cli("db", "upgrade", env=cli_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CICLOVITA_SENDR: unknown setting, did you mean CICLOVITA_SENDER?" in result.stderr


def test_bad_csv_row_imports_nothing(
    engine: Engine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    csv = tmp_path / "customers.csv"
    csv.write_text("customer_id,email,locale\nC1,anna@example.com,it\nC2,bruno@example.com,fr\n")
    result = run_cli("import", "customers", str(csv), env=cli_env, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{csv}:3: locale" in result.stderr and "'fr'" in result.stderr
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Customer)).scalar_one() == 0
    skipped = run_cli("import", "customers", str(csv), "--skip-bad-rows", env=cli_env, cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped" in skipped.stdout
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Customer)).scalar_one() == 1
