"""The scheduled deployments: which flow runs when, with which parameters.

==================================  =================  ========================================
deployment                          schedule           does
==================================  =================  ========================================
``recompute-segments/nightly``      ``0 2 * * *``      scores, stages, value, segments
``run-campaigns/hourly``            ``30 * * * *``     plan every campaign, deliver what is due
``reconcile-events/every-5-minutes`` ``*/5 * * * *``   settle ambiguous sends from events
``lifecycle-cycle/on-demand``       none               all of it (what ``ciclovita run`` does)
==================================  =================  ========================================

Cron times are read in ``CICLOVITA_TIMEZONE`` (default ``Europe/Rome``; daylight saving is
followed). Each deployment runs one at a time (a late run waits for the previous one).

This module is the one place these facts live for ``ciclovita serve`` (one machine:
``prefect.serve``) and ``ciclovita deploy`` (a ``process`` work pool and its workers).
``prefect.yaml`` states the same for ``prefect deploy --all``; a test keeps the two equal.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

WORK_POOL = "ciclovita"
TAGS = ("ciclovita",)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: a flow, a name, a cron schedule (or none) and its parameters."""

    flow_name: str
    name: str
    module: str
    function: str
    cron: str | None
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"

    @property
    def entrypoint(self) -> str:
        """The file entrypoint, as written in ``prefect.yaml``."""
        return f"{self.module.replace('.', '/')}.py:{self.function}"

    @property
    def slug(self) -> str:
        return f"{self.flow_name}-{self.name}"

    def load_flow(self) -> Flow[Any, Any]:
        flow: Flow[Any, Any] = getattr(importlib.import_module(self.module), self.function)
        return flow


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        flow_name="recompute-segments",
        name="nightly",
        module="flows.recompute_segments",
        function="recompute_segments",
        cron="0 2 * * *",
        description="Nightly: recompute scores, lifecycle stages, customer value and segments.",
    ),
    DeploymentSpec(
        flow_name="run-campaigns",
        name="hourly",
        module="flows.run_campaigns",
        function="run_campaigns",
        cron="30 * * * *",
        description="Hourly, after the nightly recompute: plan every campaign and deliver "
        "the messages that are due.",
        parameters={"send": True, "batch_size": 500},
    ),
    DeploymentSpec(
        flow_name="reconcile-events",
        name="every-5-minutes",
        module="flows.reconcile_events",
        function="reconcile_events",
        cron="*/5 * * * *",
        description="Every five minutes: settle ambiguous sends from the provider's events.",
    ),
    DeploymentSpec(
        flow_name="lifecycle-cycle",
        name="on-demand",
        module="flows.lifecycle_cycle",
        function="lifecycle_cycle",
        cron=None,
        description="On demand: a whole cycle (recompute, segments, campaigns, delivery).",
        parameters={"send": True, "batch_size": 500},
    ),
)


def schedule_timezone() -> str:
    """The time zone cron schedules are read in: ``CICLOVITA_TIMEZONE``."""
    from ciclovita.settings import get_settings

    return get_settings().timezone


def runner_deployments(
    *, work_pool: str | None = None, timezone: str | None = None
) -> list[RunnerDeployment]:
    """Every deployment, ready for ``prefect.serve`` (no pool) or ``prefect.deploy``."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    timezone = timezone or schedule_timezone()
    deployments: list[RunnerDeployment] = []
    for spec in DEPLOYMENTS:
        schedules = (
            [Cron(spec.cron, timezone=timezone, parameters=spec.parameters, slug=spec.slug)]
            if spec.cron
            else []
        )
        deployment = cast(
            "RunnerDeployment",
            spec.load_flow().to_deployment(
                name=spec.name,
                schedules=schedules,
                parameters=None if spec.cron else spec.parameters,
                concurrency_limit=spec.concurrency_limit,
                description=spec.description,
                tags=list(TAGS),
                work_pool_name=work_pool,
                entrypoint_type=EntrypointType.MODULE_PATH,
            ),
        )
        deployments.append(deployment)
    return deployments


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the ``process`` work pool ``name`` unless it exists; True when created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description="ciclovita flows, run as processes by `prefect worker start`",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            return True


def deploy(work_pool: str = WORK_POOL, *, timezone: str | None = None) -> list[str]:
    """Register every deployment on ``work_pool`` (created if missing); their full names."""
    from prefect.deployments.runner import deploy as prefect_deploy

    ensure_work_pool(work_pool)
    prefect_deploy(
        *runner_deployments(work_pool=work_pool, timezone=timezone),
        work_pool_name=work_pool,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    return [spec.full_name for spec in DEPLOYMENTS]


def serve(*, limit: int | None = None, timezone: str | None = None) -> None:
    """Serve every deployment from this process until interrupted (one machine)."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(timezone=timezone), limit=limit)
