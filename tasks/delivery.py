"""Tasks that deliver due messages in batches and reconcile ambiguous sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task

from ciclovita.delivery.dispatch import deliver, reconcile
from ciclovita.runtime import get_runtime
from tasks.retry import retry_transient_only


@task(
    name="deliver-batch",
    task_run_name="deliver batch {batch} (up to {size} messages)",
    retries=3,
    retry_delay_seconds=[10, 30, 90],
    retry_condition_fn=retry_transient_only,
)
def deliver_batch(batch: int, size: int, as_of: datetime | None = None) -> dict[str, Any]:
    """Claim and send up to ``size`` due messages (claims keep parallel batches apart)."""
    runtime = get_runtime()
    sender = runtime.shared_sender()
    report = deliver(
        runtime.engine,
        runtime.builder,
        sender,
        as_of=as_of,
        batch_size=size,
        max_messages=size,
        single_batch=True,
    )
    logger = get_run_logger()
    logger.info(
        "batch %d: %d claimed, %d sent, %d failed, %d retried, %d ambiguous in %.1fs",
        batch,
        report.claimed,
        report.sent,
        report.failed,
        report.retried,
        report.ambiguous,
        report.seconds,
    )
    for error in report.errors[:10]:
        logger.error(error)
    return report.as_dict()


@task(name="reconcile-sends", task_run_name="reconcile ambiguous sends")
def reconcile_sends(now: datetime | None = None) -> dict[str, int]:
    runtime = get_runtime()
    result = reconcile(runtime.engine, runtime.shared_sender(), now)
    if result["ambiguous"]:
        get_run_logger().warning(
            "%d messages are ambiguous (sent or not is unknown): held, not re-sent",
            result["ambiguous"],
        )
    return result
