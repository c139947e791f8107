"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every test that asks.

``engine`` is parametrised over both databases. Each test gets its own fresh database, copied
from a template migrated once per session (a file copy on SQLite, ``CREATE DATABASE …
TEMPLATE`` on PostgreSQL). Without a reachable PostgreSQL the PostgreSQL cases skip with the
reason — unless ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from ciclovita.db.engine import make_engine
from ciclovita.db.migrate import upgrade

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Fixtures that start an outside part (a real Prefect server, headless Chromium, Prism): a
# test that uses one is slow, and ``make test-fast`` (``-m "not slow"``) leaves it out.
SLOW_FIXTURES = frozenset({"prefect_server", "chromium", "prism"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow what starts an outside part or runs real Prefect flows (``prefect``)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or item.get_closest_marker("prefect"):
            item.add_marker(pytest.mark.slow)


POSTGRES_ADMIN_URL = os.environ.get(
    "CICLOVITA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_unavailable() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            server_now = connection.execute(text("SELECT now()")).scalar_one()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc.__class__.__name__}"
    # libfaketime moves this process's clock (and its children's), not the server's
    gap = abs(server_now - datetime.now(UTC))
    if gap > timedelta(minutes=5):
        return (
            f"PostgreSQL's clock ({server_now:%Y-%m-%d %H:%M} UTC) is {gap} away from this "
            "process's: the test clock is moved (libfaketime?), and the server keeps its own"
        )
    return None


class PostgresDatabases:
    """Creates throw-away databases from one migrated template."""

    def __init__(self, admin_url: str) -> None:
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.base_url = self.admin.url
        self.template = f"ciclovita_tpl_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = [self.template]
        self.spare: str | None = None
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.template}"'))
        template_engine = make_engine(self.url(self.template))
        upgrade(template_engine)
        template_engine.dispose()

    def url(self, name: str) -> str:
        return self.base_url.set(database=name).render_as_string(hide_password=False)

    def new(self) -> str:
        name = f"ciclovita_t_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self.url(name)

    def reuse(self) -> str:
        """A migrated database emptied of rows: made once per session, then truncated.

        Creating a database from the template and dropping it costs about 0.4 s; emptying
        the tables of this one (sequences restarted) a few milliseconds. Whatever a previous
        test left connected to it is disconnected first.
        """
        if self.spare is None:
            self.spare = self.new()
            return self.spare
        name = self.spare.rsplit("/", 1)[-1]
        self.disconnect(name)
        engine = create_engine(self.spare, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                tables = connection.execute(
                    text(
                        "SELECT quote_ident(tablename) FROM pg_tables "
                        "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                ).scalars()
                connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        finally:
            engine.dispose()
        return self.spare

    def disconnect(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )

    def drop(self, name_or_url: str) -> None:
        name = name_or_url.rsplit("/", 1)[-1]
        self.disconnect(name)
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))

    def close(self) -> None:
        for name in reversed(self.created):
            self.drop(name)
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    reason = _postgres_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"{reason} — CI=true requires the PostgreSQL tests to run")
        pytest.skip(reason)
    databases = PostgresDatabases(POSTGRES_ADMIN_URL)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection closing checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, migrated database (SQLite file or PostgreSQL)."""
    if request.param == "sqlite":
        path = tmp_path / "ciclovita.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.reuse()
    yield url
    from ciclovita.db.engine import dispose_engines

    dispose_engines()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh, migrated database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    """A migrated SQLite database only (for tests that do not depend on the dialect)."""
    path = tmp_path / "ciclovita.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real, temporary Prefect server for the test session; yields its API URL.

    The URL is also exported as ``PREFECT_API_URL`` so that ``ciclovita`` subprocesses run
    their flows against the same server.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = str(PREFECT_API_URL.value())
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture
def app_settings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point ciclovita's settings (through the environment) at the test database and a fresh
    outbox; yields the outbox directory."""
    from ciclovita.runtime import reset_runtimes

    for name in list(os.environ):
        if name.startswith("CICLOVITA_") and name != "CICLOVITA_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("CICLOVITA_DATABASE_URL", database_url)
    monkeypatch.setenv("CICLOVITA_OUTBOX_DIR", str(outbox))
    monkeypatch.setenv("CICLOVITA_SENDER", "file")
    reset_runtimes()
    yield outbox
    reset_runtimes()
