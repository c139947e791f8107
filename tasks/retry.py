"""When a task is worth retrying: only for transient errors (network, provider, database lock)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from ciclovita.errors import TransientDeliveryError


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientDeliveryError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures, fail fast on the rest."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception, classified
        return is_transient(exc)
    return False
