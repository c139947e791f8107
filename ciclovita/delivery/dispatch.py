"""Delivering due messages: claim, render each once, send, record — exactly once.

One delivery is a pipeline over the outbox (``ciclovita.delivery.outbox`` holds the rules)::

    claim a batch ─▶ prepare (late guards, render) ─▶ start_sending (commit) ─▶ sender
         ▲                                                                       │
         └────────── next batch when this one is all started ◀── record (commit) ◀┘

``deliver`` claims batches and hands them, rendered (``render_pool``), to the send loop
(``pipeline``). ``render_due`` (and ``deliver(..., dry_run=True)``) renders what is due
without claiming, writing or calling the provider. ``reconcile`` settles rows whose fate is
unknown.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ciclovita.delivery import outbox
from ciclovita.delivery.outbox import OutboxRow, wall_clock
from ciclovita.delivery.pipeline import Clock, Pipeline
from ciclovita.delivery.provider_events import EVENTS_PROVIDER
from ciclovita.delivery.render_pool import pool_of
from ciclovita.delivery.reports import DeliveryReport, ReconcileReport
from ciclovita.delivery.senders.base import Sender
from ciclovita.rendering.builder import MessageBuilder, Prepared
from ciclovita.rendering.context import Recipient
from ciclovita.vocabulary import DeliveryCount, MessageStatus, SkipReason

log = logging.getLogger(__name__)


def worker_name() -> str:
    """A name no other live delivery has (the outbox column holds 64 characters)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def deliver(
    engine: Engine,
    builder: MessageBuilder,
    sender: Sender | None,
    *,
    as_of: datetime | None = None,
    batch_size: int = 500,
    max_messages: int | None = None,
    campaigns: Sequence[str] | None = None,
    worker: str | None = None,
    single_batch: bool = False,
    resume: bool = False,
    dry_run: bool = False,
    clock: Clock = wall_clock,
) -> DeliveryReport:
    """Send due messages until none is left, ``max_messages`` were taken, or one batch was
    (``single_batch``).

    ``as_of`` is the run's business time: what is due, and the ``sent_at`` recorded
    (default: now). Leases are measured on ``clock``, the wall clock. ``worker`` names this
    delivery in the outbox; with ``resume`` (a retried task under the same name) it first
    takes back the rows it had claimed and counts what it already started against
    ``max_messages``. ``dry_run`` renders what is due and calls no one (``sender`` unused).
    """
    if dry_run:  # read what is due, let go of the database, then render
        with engine.connect() as connection:
            due_rows = _due_for_preview(
                connection, builder, as_of or clock(), max_messages, campaigns
            )
        return _preview(builder, *due_rows)
    if sender is None:
        raise ValueError("deliver needs a sender unless dry_run=True")
    started = time.perf_counter()
    report = DeliveryReport(started_at=time.time())
    name = worker or worker_name()
    budget = max_messages
    resumed: list[int] = []
    if resume:
        with engine.connect() as connection:
            resumed = outbox.claimed_by(connection, name)
            if budget is not None:
                budget = max(0, budget - outbox.started_by(connection, name))
    renderers = pool_of(builder)

    def batches() -> Generator[Prepared, None, None]:
        nonlocal budget, resumed
        while budget is None or budget > 0:
            limit = batch_size if budget is None else min(batch_size, budget)
            if resumed:
                ids, resumed = resumed[:limit], resumed[limit:]
            else:
                with engine.begin() as connection:
                    ids = outbox.claim(
                        connection, name, limit, as_of or clock(), campaigns, clock()
                    )
            if not ids:
                return
            report.claimed += len(ids)
            if budget is not None:
                budget -= len(ids)
            yield from renderers.prepared(builder, engine, ids)
            if single_batch:
                return

    pipeline = Pipeline(engine, sender, name, report, lambda: as_of or clock(), clock)
    source = batches()
    try:
        pipeline.run(source)
    except BaseException:
        pipeline.drain()
        raise
    finally:
        source.close()
        _release_unstarted(engine, name)
    if budget is not None and budget <= 0:
        with engine.connect() as connection:
            report.cap_reached = outbox.count_due(connection, as_of or clock(), campaigns) > 0
    report.finished_at = time.time()
    report.seconds = time.perf_counter() - started
    return report


def _release_unstarted(engine: Engine, worker: str) -> None:
    """Rows this worker claimed and did not start go back to ``planned`` at once (after a
    stop or an error), rather than waiting for the claim lease."""
    try:
        with engine.begin() as connection:
            left = outbox.claimed_by(connection, worker)
            if left:
                outbox.release(connection, left, worker)
                log.info("released %d claimed messages not sent by %s", len(left), worker)
    except SQLAlchemyError:
        log.exception("could not release the claims of %s (they expire with the lease)", worker)


def render_due(
    connection: Connection,
    builder: MessageBuilder,
    *,
    as_of: datetime,
    limit: int | None = None,
    campaigns: Sequence[str] | None = None,
) -> DeliveryReport:
    """Dry run: render the messages a delivery would send now (at most ``limit``, in claim
    order), apply the late guards, and report; nothing is claimed, written or sent.

    Runs on the caller's connection, so it also sees rows planned inside the caller's own
    (rolled back) transaction.
    """
    return _preview(builder, *_due_for_preview(connection, builder, as_of, limit, campaigns))


def _due_for_preview(
    connection: Connection,
    builder: MessageBuilder,
    as_of: datetime,
    limit: int | None,
    campaigns: Sequence[str] | None,
) -> tuple[list[tuple[OutboxRow, Recipient]], dict[int, SkipReason], int]:
    batch = outbox.load_due(connection, as_of, limit, campaigns)
    skips = outbox.late_skips(connection, batch, builder.consent_topics)
    return batch, skips, outbox.count_due(connection, as_of, campaigns)


def _preview(
    builder: MessageBuilder,
    batch: list[tuple[OutboxRow, Recipient]],
    skips: Mapping[int, SkipReason],
    due_count: int,
) -> DeliveryReport:
    started = time.perf_counter()
    report = DeliveryReport(dry_run=True, started_at=time.time())
    report.claimed = len(batch)
    for item in builder.prepare_rows(batch, skips):
        if item.skip is not None:
            report.count(item.campaign, DeliveryCount.SKIPPED)
        elif item.error is not None:
            report.count(item.campaign, DeliveryCount.FAILED)
            report.error(item.error)
        else:
            report.count(item.campaign, DeliveryCount.RENDERED)
    report.cap_reached = due_count > len(batch)
    report.finished_at = time.time()
    report.seconds = time.perf_counter() - started
    return report


def reconcile(engine: Engine, sender: Sender, now: datetime | None = None) -> ReconcileReport:
    """Settle rows whose fate is unknown: stale ``sending`` rows become ambiguous; rows in
    doubt the provider reported on (stored webhook events), or the sender can confirm,
    become sent. The rest stay held, never re-sent blindly. ``now`` is the wall clock
    (default: now)."""
    now = now or wall_clock()
    with engine.begin() as connection:
        newly = outbox.mark_stale_sending_ambiguous(connection, now)
        resolved = outbox.resolve_from_events(connection, EVENTS_PROVIDER)
        pending = outbox.ambiguous_uids(connection)
    found = sender.reconcile(list(pending)) if pending else {}
    with engine.begin() as connection:
        resolved += outbox.resolve_ambiguous(connection, found, pending, sender.name, now)
        doubt = outbox.count_in_doubt(connection)
    return ReconcileReport(
        newly_ambiguous=newly,
        resolved=resolved,
        ambiguous=doubt[MessageStatus.AMBIGUOUS],
        sending=doubt[MessageStatus.SENDING],
    )
