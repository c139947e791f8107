"""The error tree of ciclovita: every error the domain core raises on purpose.

::

    CiclovitaError
    ├── ConfigurationError          a setting or configuration value is not accepted
    ├── InputError                  user input (YAML, CSV, template, webhook body) is bad;
    │                               carries every Problem found, each with where and what
    ├── RenderError                 a template failed to render for one message
    ├── TransientError              worth retrying later: the same work may then succeed
    │   └── TransientDeliveryError  (also a DeliveryError, below)
    └── DeliveryError               the provider did not take a message
        ├── TransientDeliveryError  worth retrying later (network, 5xx, 429)
        │   └── RateLimitedError    429: retry after the provider's reset time
        └── PermanentDeliveryError  retrying cannot help (4xx other than 429)

``is_transient`` is the one answer to "may retrying this succeed?", for our own errors and
for the database's and the network's: the delivery pipeline retries its transactions by it,
and the Prefect tasks their runs (``tasks.retry``).

Skipping a customer (no consent, no email, suppressed) is not an error: it is recorded on the
outbox row as a skip reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy.exc import DBAPIError, OperationalError

__all__ = [
    "CiclovitaError",
    "ConfigurationError",
    "DeliveryError",
    "InputError",
    "PermanentDeliveryError",
    "Problem",
    "RateLimitedError",
    "RenderError",
    "TransientDeliveryError",
    "TransientError",
    "is_transient",
]


class CiclovitaError(Exception):
    """Base of every error ciclovita raises on purpose."""


class ConfigurationError(CiclovitaError):
    """A setting has a value ciclovita does not accept."""

    def __init__(self, setting: str, message: str, accepted: str | None = None) -> None:
        self.setting = setting
        self.accepted = accepted
        text = f"{setting}: {message}"
        if accepted:
            text += f" (accepted: {accepted})"
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located as precisely as the input allows."""

    source: str
    message: str
    line: int | None = None
    column: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.column:
            where += f": {self.column}"
        text = f"{where}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        return text


class InputError(CiclovitaError):
    """User input is bad. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("InputError needs at least one problem")
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s):\n{lines}{more}")


class RenderError(CiclovitaError):
    """A template could not be rendered for a message."""

    def __init__(self, campaign: str, template: str, customer_id: int | None, detail: str) -> None:
        self.campaign = campaign
        self.template = template
        self.customer_id = customer_id
        self.detail = detail
        super().__init__(
            f"campaign {campaign!r}, template {template!r}, customer {customer_id}: {detail}"
        )


class TransientError(CiclovitaError):
    """A failure worth retrying later: nothing is wrong with the work itself."""


class DeliveryError(CiclovitaError):
    """The provider did not accept a message."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        self.detail = detail
        self.status = status
        super().__init__(f"{status or 'network'}: {detail}")


class TransientDeliveryError(DeliveryError, TransientError):
    """A failure worth retrying: network error, timeout, 5xx, 429."""

    def __init__(self, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail, status)
        self.retry_after = retry_after


class RateLimitedError(TransientDeliveryError):
    """HTTP 429: wait until the provider's ``X-RateLimit-Reset`` before trying again."""


class PermanentDeliveryError(DeliveryError):
    """A failure retrying cannot fix (a 4xx other than 429): recorded, never retried."""


SCHEMA_ERRORS: Final = (
    "no such table",
    "no such column",
    "has no column named",
    "undefined table",
    "does not exist",
    "syntax error",
    "unable to open database file",
)
"""Texts of database ``OperationalError`` s that mean "the schema or the URL is wrong" (a
missing table or column, a bad statement, a file that cannot be opened): no retry fixes them."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the work that raised ``exc`` may succeed.

    Transient: a ``TransientError`` (SendGrid's 429 and 5xx, a network error before the
    provider accepted the request); a dropped database connection; a locked or busy
    database, a deadlock, a serialization failure, a server restarting (the database's
    ``OperationalError`` other than ``SCHEMA_ERRORS``); ``ConnectionError`` and
    ``TimeoutError``. Anything else (bad input, a setting, a template, a missing table, a
    bug) fails at once.
    """
    if isinstance(exc, TransientError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError):
            text = str(exc.orig).lower()
            return not any(marker in text for marker in SCHEMA_ERRORS)
    return False
