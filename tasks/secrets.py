"""The SendGrid key from a Prefect Secret block, when the environment does not give one.

Order: ``CICLOVITA_SENDGRID_API_KEY`` (environment or ``.env``) first; otherwise, when the
sender is ``sendgrid``, the Prefect Secret block ``ciclovita-sendgrid-api-key``. The value is
put into this process's environment (never printed, never logged) so that every later
``get_settings()`` — and every worker process this one starts, such as a local Dask cluster —
sees it. A process started elsewhere (a remote Dask worker) loads the block itself when its
``deliver-batch`` task starts, through the Prefect API it reports to.

Create the block once::

    prefect block create secret   # or, in Python:
    Secret(value="SG.xxx").save("ciclovita-sendgrid-api-key")
"""

from __future__ import annotations

import os
from typing import Any, Literal, cast

from pydantic import ValidationError

from ciclovita.settings import ENV_PREFIX, Settings, get_settings

SECRET_BLOCK = "ciclovita-sendgrid-api-key"  # noqa: S105 - a block name, not a secret
KEY_SETTING = ENV_PREFIX + "SENDGRID_API_KEY"

KeySource = Literal["environment", "prefect secret block", "missing", "not needed"]


def ensure_sendgrid_key() -> KeySource:
    """Make the SendGrid key available to ``get_settings()``; say where it came from."""
    try:
        settings = Settings()
    except ValidationError:
        return "not needed"  # a bad setting: load_settings reports it with its name
    if settings.sender != "sendgrid":
        return "not needed"
    if settings.sendgrid_api_key is not None and settings.sendgrid_api_key.get_secret_value():
        return "environment"
    value = _from_secret_block()
    if not value:
        return "missing"
    os.environ[KEY_SETTING] = value
    get_settings.cache_clear()
    return "prefect secret block"


def _from_secret_block() -> str | None:
    from prefect.blocks.system import Secret

    try:
        secret = cast(Secret[Any], Secret.load(SECRET_BLOCK))
    except ValueError:  # no such block
        return None
    value = secret.get()
    return value if isinstance(value, str) and value else None
