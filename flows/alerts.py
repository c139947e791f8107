"""A Prefect automation that tells people when a ciclovita run failed, crashed or is late.

It fires on ``prefect.flow-run.Failed``, ``Crashed``, ``TimedOut`` and ``Late`` events of
ciclovita's flows and sends a notification through a notification block ops already have
(Slack, Microsoft Teams, e-mail, PagerDuty, a custom webhook…): subject and body name the
flow, the run (whose name says what it did), its state and message, and link to the run.
``Late`` is set by the Prefect server's late-runs service when a scheduled run has not started
in time (``PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS``, 15 s by default): a worker or
``serve`` process that is down is noticed that way.

``ciclovita deploy --notify slack-webhook/ops`` (or ``serve --notify``) creates it, or updates
it when it exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast
from uuid import UUID

from flows.deployments import DEPLOYMENTS

if TYPE_CHECKING:
    from prefect.automations import Automation

AUTOMATION_NAME = "ciclovita: failed, crashed or late runs"
STATES = ("Failed", "Crashed", "TimedOut", "Late")
SUBJECT = "ciclovita: {{ flow.name }} run '{{ flow_run.name }}' is {{ flow_run.state.name }}"
BODY = """\
Flow run {{ flow.name }} / {{ flow_run.name }} entered state {{ flow_run.state.name }} \
at {{ flow_run.state.timestamp }}.
State message: {{ flow_run.state.message }}
Deployment: {{ deployment.name }}
Parameters: {{ flow_run.parameters }}
Flow run id: {{ flow_run.id }}
Open the run (logs, artifacts, failed tasks): {{ flow_run|ui_url }}
"""


def flow_names() -> list[str]:
    return sorted({spec.flow_name for spec in DEPLOYMENTS})


def block_document_id(block: str) -> UUID:
    """The id of a notification block given as ``<block-type-slug>/<name>``."""
    from prefect.blocks.core import Block

    if "/" not in block:
        raise ValueError(f"{block!r}: give the block as <type>/<name>, e.g. slack-webhook/ops")
    loaded = cast(Block, Block.load(block))
    identifier = loaded._block_document_id
    if identifier is None:
        raise ValueError(f"{block!r} has no id")
    return UUID(str(identifier))


def alert_automation(block_id: UUID) -> Automation:
    """The automation, not yet saved."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=AUTOMATION_NAME,
        description="Notifies when a ciclovita flow run fails, crashes, times out or is late.",
        enabled=True,
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in STATES},
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": flow_names()}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )


def ensure_alert_automation(block: str) -> UUID:
    """Create (or update) the automation so it notifies through ``block``; its id."""
    from prefect.automations import Automation

    wanted = alert_automation(block_document_id(block))
    try:
        existing = cast(Automation, Automation.read(name=AUTOMATION_NAME))
    except ValueError:
        created = cast(Automation, wanted.create())
        assert created.id is not None
        return created.id
    assert existing.id is not None
    wanted.id = existing.id
    wanted.update()
    return existing.id
