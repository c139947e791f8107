"""Tasks that deliver due messages in batches and reconcile ambiguous sends.

A ``deliver-batch`` task names itself in the outbox after its task run (``task:<id>``): the
id is the same for every retry of the run, so a retry resumes the rows its failed attempt
had claimed and counts what that attempt already started against its size — a retry never
takes more than the batch it was given, and the run's send cap holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import task_run

from ciclovita.delivery.dispatch import deliver, reconcile
from ciclovita.errors import ConfigurationError
from ciclovita.runtime import get_runtime
from tasks.retry import retry_transient_only
from tasks.secrets import ensure_sendgrid_key


def _task_worker() -> tuple[str | None, bool]:
    """This task run's outbox name, and whether this is a retry of it."""
    run_id = task_run.get_id()
    if not run_id:
        return None, False
    return f"task:{run_id}", int(task_run.get_run_count() or 1) > 1


@task(
    name="deliver-batch",
    task_run_name="deliver batch {batch} (up to {size} messages)",
    retries=3,
    retry_delay_seconds=[10, 30, 90],
    retry_condition_fn=retry_transient_only,
)
def deliver_batch(batch: int, size: int, as_of: datetime | None = None) -> dict[str, Any]:
    """Claim and send up to ``size`` due messages (claims keep parallel batches apart);
    returns the batch's ``DeliveryReport`` in JSON form."""
    ensure_sendgrid_key()  # on a remote Dask worker, the key may only be in the Secret block
    runtime = get_runtime()
    worker, resume = _task_worker()
    report = deliver(
        runtime.engine,
        runtime.builder,
        runtime.shared_sender(),
        as_of=as_of,
        batch_size=size,
        max_messages=size,
        single_batch=True,
        worker=worker,
        resume=resume,
    )
    logger = get_run_logger()
    logger.info(
        "batch %d: %d claimed, %d sent, %d failed, %d retried later, %d ambiguous, "
        "%d skipped in %.1fs",
        batch,
        report.claimed,
        report.sent,
        report.failed,
        report.retried,
        report.ambiguous,
        report.skipped,
        report.seconds,
    )
    for error in report.errors[:10]:
        logger.error(error)
    if report.stopped:
        # every message would fail alike (the provider refuses our account): fail the run
        # loudly; the messages not sent stay due for the next run
        raise ConfigurationError(
            "CICLOVITA_SENDGRID_API_KEY", report.stopped, "a valid SendGrid API key"
        )
    return report.model_dump(mode="json")


@task(name="reconcile-sends", task_run_name="reconcile ambiguous sends")
def reconcile_sends(now: datetime | None = None) -> dict[str, int]:
    """Settle messages whose fate is unknown; returns the ``ReconcileReport`` in JSON form.
    ``now`` is accepted for the flows' sake; the leases are always measured on the wall
    clock, whatever time a run is for."""
    del now
    runtime = get_runtime()
    result = reconcile(runtime.engine, runtime.shared_sender())
    logger = get_run_logger()
    if result.ambiguous:
        logger.warning(
            "%d messages are ambiguous (sent or not is unknown): held, not re-sent",
            result.ambiguous,
        )
    if result.sending:
        logger.warning(
            "%d messages are being sent, or their worker stopped less than a lease ago",
            result.sending,
        )
    return result.model_dump()
