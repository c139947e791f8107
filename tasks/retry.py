"""When a task is worth retrying: only for transient errors (``ciclovita.errors.is_transient``).

A transient failure (the provider's network error, 5xx or 429; a dropped database
connection, a locked or busy database, a deadlock or serialization failure) is retried by
the task decorator with a delay. Everything else fails the task at once, with its typed
error in the log: a bad campaign file (``InputError``), a setting (``ConfigurationError``),
a template (``RenderError``), a missing table or column, a bug.
"""

from __future__ import annotations

from typing import Any

from ciclovita.errors import is_transient


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures, fail fast on the rest."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception, classified
        return is_transient(exc)
    return False
