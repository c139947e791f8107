"""``ciclovita db``: schema migrations."""

from __future__ import annotations

from ciclovita.cli.app import console, db_app, handles_errors, runtime
from ciclovita.db.migrate import current_revision, head_revision, upgrade


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version."""
    rt = runtime()
    before = current_revision(rt.engine)
    upgrade(rt.engine)
    after = current_revision(rt.engine)
    url = rt.engine.url.render_as_string(hide_password=True)
    if before == after:
        console.print(f"database {url} is up to date (revision {after})")
    else:
        console.print(f"database {url} migrated {before or 'empty'} → {after}")


@db_app.command("current")
@handles_errors
def db_current() -> None:
    """Show the schema revision of the database and the latest one."""
    rt = runtime()
    console.print(f"current: {current_revision(rt.engine)}  latest: {head_revision()}")
