"""When a task is worth retrying: only for transient errors (network, provider, database lock).

Transient — a retry may succeed, so the task decorator retries with a delay:

* ``TransientDeliveryError`` (and ``RateLimitedError``): the provider's network error, 5xx, 429;
* a database connection that dropped (``connection_invalidated``), a lock or busy database,
  a deadlock or serialisation failure, a server that is restarting (``OperationalError``);
* ``ConnectionError`` and ``TimeoutError`` from the standard library.

Everything else fails the task at once, with its typed error in the log: a bad campaign file
(``InputError``), a setting (``ConfigurationError``), a template (``RenderError``), a missing
table or column (an ``OperationalError`` that no retry can fix), a bug.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from ciclovita.errors import TransientDeliveryError

# OperationalError texts that mean "the schema is wrong", not "try again later".
PERMANENT_DATABASE_ERRORS = (
    "no such table",
    "no such column",
    "has no column named",
    "syntax error",
    "unable to open database file",
    "does not exist",
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the work that raised ``exc`` may succeed."""
    if isinstance(exc, TransientDeliveryError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError):
            text = str(exc.orig).lower()
            return not any(marker in text for marker in PERMANENT_DATABASE_ERRORS)
    return False


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures, fail fast on the rest."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception, classified
        return is_transient(exc)
    return False
