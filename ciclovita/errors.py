"""The error tree of ciclovita: every error the domain core raises on purpose.

::

    CiclovitaError
    ├── ConfigurationError          a setting or configuration value is not accepted
    ├── InputError                  user input (YAML, CSV, template, webhook body) is bad;
    │                               carries every Problem found, each with where and what
    ├── RenderError                 a template failed to render for one message
    └── DeliveryError               the provider did not take a message
        ├── TransientDeliveryError  worth retrying later (network, 5xx, 429)
        │   └── RateLimitedError    429: retry after the provider's reset time
        └── PermanentDeliveryError  retrying cannot help (4xx other than 429)

Skipping a customer (no consent, no email, suppressed) is not an error: it is recorded on the
outbox row as a skip reason.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class DeliveryError(CiclovitaError):
    """The provider did not accept a message."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        self.detail = detail
        self.status = status
        super().__init__(f"{status or 'network'}: {detail}")


class TransientDeliveryError(DeliveryError):
    """A failure worth retrying: network error, timeout, 5xx, 429."""

    def __init__(self, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail, status)
        self.retry_after = retry_after


class RateLimitedError(TransientDeliveryError):
    """HTTP 429: wait until the provider's ``X-RateLimit-Reset`` before trying again."""


class PermanentDeliveryError(DeliveryError):
    """A failure retrying cannot fix (a 4xx other than 429): recorded, never retried."""
