"""The ``reconcile-events`` flow (every few minutes): settle sends whose fate is unknown.

A message left in ``sending`` by a crash becomes ``ambiguous`` after its lease; ambiguous
messages the provider is known to have (from SendGrid's delivery events, received by the web
app's webhook) become ``sent``. Nothing is ever re-sent blindly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.naming import flow_run_namer, resolve_as_of
from tasks.delivery import reconcile_sends
from tasks.secrets import ensure_sendgrid_key


@flow(name="reconcile-events", flow_run_name=flow_run_namer("reconcile"), log_prints=True)
def reconcile_events(as_of: datetime | None = None) -> dict[str, Any]:
    """Mark stale sends ambiguous and resolve the ambiguous ones the provider confirms."""
    ensure_sendgrid_key()
    now = resolve_as_of(as_of)
    result = reconcile_sends(now)
    create_table_artifact(
        key="reconciliation",
        table=[
            {
                "what": "became ambiguous (worker stopped mid-send)",
                "messages": result.get("newly_ambiguous", 0),
            },
            {
                "what": "resolved as sent by the provider's events",
                "messages": result.get("resolved", 0),
            },
            {
                "what": "still ambiguous (held, never re-sent)",
                "messages": result.get("ambiguous", 0),
            },
        ],
        description=f"Reconciliation as of {now:%Y-%m-%d %H:%M} UTC",
    )
    return {"as_of": now.isoformat(), **result}
