"""One delivery's send loop: keep the sender busy, commit before and after every call.

::

    prepared rows ─▶ start_sending (commit) ─▶ sender ─▶ record (commit) ─┐
          ▲                                                              │
          └──────────── more rows when places in the window free up ◀────┘

The sender works on ``concurrency`` messages at once; the pipeline keeps a window of rows in
``sending`` (that many, plus as many again queued, at least 32, shared by every delivery of
the process with the same sender) and records outcomes as they come, in the same
transaction that starts the next messages. A crash therefore leaves at most one window of
rows in doubt (``sending``, later ``ambiguous``), and those are never re-sent blindly.

A pipeline transaction that meets a transient database error (``is_transient``) is tried
again with backoff: every step is guarded by status and worker, so one that did commit (its
answer lost) changes nothing the second time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from ciclovita.delivery import outbox
from ciclovita.delivery.message import SendOutcome
from ciclovita.delivery.provider_events import EVENTS_PROVIDER
from ciclovita.delivery.reports import DeliveryReport
from ciclovita.delivery.senders.base import Sender
from ciclovita.delivery.shared import SharedPer
from ciclovita.errors import is_transient
from ciclovita.rendering.builder import Prepared
from ciclovita.vocabulary import DeliveryCount, SendResult

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

RECORD_EVERY = 0.02
"""Seconds a finished outcome may wait for others before they are recorded together."""
DB_ATTEMPTS = 5
"""Tries of one pipeline transaction when the database fails transiently."""


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("outbox write failed (%s), trying again", error.__class__.__name__)


class Window:
    """How many rows may be ``sending`` at once for one sender, across every delivery of the
    process that shares it (parallel batch tasks): what the sender works on, and as many
    again queued behind it (at least 32), to keep it busy while outcomes are recorded and
    the next rows rendered. A crash leaves at most this many rows in doubt."""

    def __init__(self, concurrency: int) -> None:
        self.size = concurrency + max(concurrency, 32)
        self._free = self.size
        self._changed = threading.Condition()

    def take(self, wanted: int, *, wait: bool) -> int:
        """Up to ``wanted`` places; with ``wait``, waits a little for one to free up."""
        with self._changed:
            if wait and self._free == 0:
                self._changed.wait(timeout=RECORD_EVERY)
            taken = min(wanted, self._free)
            self._free -= taken
            return taken

    def give(self, count: int) -> None:
        if count:
            with self._changed:
                self._free += count
                self._changed.notify_all()


_WINDOWS: SharedPer[Sender, Window] = SharedPer(lambda sender: Window(sender.concurrency))


class Pipeline:
    """One delivery's send loop: keeps the sender busy, commits before and after each call."""

    def __init__(
        self,
        engine: Engine,
        sender: Sender,
        worker: str,
        report: DeliveryReport,
        sent_at: Clock,
        clock: Clock,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.worker = worker
        self.report = report
        self.sent_at = sent_at
        self.clock = clock
        # a commit costs about as much as recording ten outcomes: outcomes are recorded
        # together, every RECORD_EVERY at most, or when half the window is done
        self.window = _WINDOWS.of(sender)
        self.step = self.window.size // 2
        self.held = 0  # places of the window this delivery holds
        self.in_flight: dict[str, Prepared] = {}
        self.finished: queue.SimpleQueue[tuple[Prepared, Future[SendOutcome]]] = queue.SimpleQueue()

    def run(self, source: Iterator[Prepared]) -> None:
        """Send everything ``source`` yields (or until the sender says stop)."""
        exhausted = False
        done: list[tuple[Prepared, SendOutcome]] = []
        try:
            while True:
                fresh: list[Prepared] = []
                if not exhausted and self.report.stopped is None:
                    room = self.window.size - len(self.in_flight)
                    places = self.window.take(room, wait=not self.in_flight)
                    self.held += places
                    while len(fresh) < places and not exhausted:
                        item = next(source, None)
                        if item is None:
                            exhausted = True
                        else:
                            fresh.append(item)
                started = self._commit(done, fresh)
                # places of recorded rows, and of fresh rows not sent, free up
                self._give(self.held - len(self.in_flight) - len(started))
                done = []
                if self._step(started, exhausted):
                    return
                if self.in_flight:
                    done = self._collect()
        finally:
            self._give(self.held)

    def _give(self, count: int) -> None:
        self.window.give(count)
        self.held -= count

    def _step(self, started: list[Prepared], exhausted: bool) -> bool:
        """Hand the started rows to the sender; True when the delivery is over."""
        for item in started:
            assert item.email is not None
            self.in_flight[item.uid] = item
            self.sender.submit(item.email).add_done_callback(self._finisher(item))
        return not self.in_flight and (exhausted or self.report.stopped is not None)

    def _finisher(self, item: Prepared) -> Callable[[Future[SendOutcome]], None]:
        def finished(future: Future[SendOutcome]) -> None:
            self.finished.put((item, future))

        return finished

    def drain(self) -> None:
        """After a failure: wait for the requests in flight and try once to record them."""
        done: list[tuple[Prepared, SendOutcome]] = []
        while self.in_flight:
            done += self._collect()
        if not done:
            return
        try:
            with self.engine.begin() as connection:
                applied = self._record(connection, done)
        except SQLAlchemyError:
            self._log_unrecorded(done)
        else:
            self._account(done, applied, [])

    def _collect(self) -> list[tuple[Prepared, SendOutcome]]:
        """Wait for at least one outcome, then gather what finishes soon after."""
        want = min(self.step, len(self.in_flight))
        done = [self.finished.get()]
        deadline = time.monotonic() + RECORD_EVERY
        while len(done) < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                done.append(self.finished.get(timeout=remaining))
            except queue.Empty:
                break
        while True:  # and whatever else has finished meanwhile
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                break
        outcomes = []
        for item, future in done:
            self.in_flight.pop(item.uid, None)
            try:
                outcome = future.result()
            except Exception as exc:
                log.exception("sender failed on message %s", item.uid)
                outcome = SendOutcome(
                    item.uid, SendResult.AMBIGUOUS, error=f"sender error: {exc!r}"
                )
            outcomes.append((item, outcome))
        return outcomes

    def _commit(
        self, done: list[tuple[Prepared, SendOutcome]], fresh: list[Prepared]
    ) -> list[Prepared]:
        """One transaction: record finished outcomes, settle fresh rows that must not be
        sent, and mark the others ``sending``. Returns the rows now safe to send.

        Retried as a whole on transient database errors: every step is guarded by status
        and worker, so a transaction that did commit (its answer lost) changes nothing the
        second time, and rows it had marked are then not sent (they become ambiguous)."""
        if not done and not fresh:
            return []
        try:
            applied, settled, started = self._transaction(done, fresh)
        except DBAPIError:
            self._log_unrecorded(done)
            raise
        self._account(done, applied, settled)
        self.report.rendered += sum(1 for item in fresh if item.email is not None)
        return started

    @retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(DB_ATTEMPTS),
        wait=wait_exponential(multiplier=0.2),
        before_sleep=_log_retry,
        reraise=True,
    )
    def _transaction(
        self, done: list[tuple[Prepared, SendOutcome]], fresh: list[Prepared]
    ) -> tuple[dict[str, DeliveryCount], list[tuple[Prepared, DeliveryCount]], list[Prepared]]:
        with self.engine.begin() as connection:
            applied = self._record(connection, done)
            settled, started = self._start(connection, fresh)
        return applied, settled, started

    def _record(
        self, connection: Connection, done: list[tuple[Prepared, SendOutcome]]
    ) -> dict[str, DeliveryCount]:
        if not done:
            return {}
        return outbox.record_outcomes(
            connection,
            [outcome for _, outcome in done],
            {item.uid: item.id for item, _ in done},
            self.worker,
            self.sender.name,
            self.sent_at(),
        )

    def _start(
        self, connection: Connection, fresh: list[Prepared]
    ) -> tuple[list[tuple[Prepared, DeliveryCount]], list[Prepared]]:
        """Settle fresh rows that must not be sent; mark the rest ``sending``."""
        worker, now = self.worker, self.clock()
        settled: list[tuple[Prepared, DeliveryCount]] = []
        for item in fresh:
            if item.error is not None and outbox.mark_failed(
                connection, {item.id: item.error}, worker
            ):
                settled.append((item, DeliveryCount.FAILED))
            elif item.skip is not None and outbox.mark_skipped(
                connection, {item.id: item.skip}, worker
            ):
                settled.append((item, DeliveryCount.SKIPPED))
        sendable = [p for p in fresh if p.email is not None]
        retried = [p.id for p in sendable if p.attempts > 0]
        if retried:
            # an earlier attempt got an error answer, yet the provider reported on it
            known = outbox.provider_events(connection, retried)
            if known:
                outbox.mark_sent_by_events(connection, known, worker, EVENTS_PROVIDER, now)
                settled += [(p, DeliveryCount.SENT) for p in sendable if p.id in known]
                sendable = [p for p in sendable if p.id not in known]
        marked = set(outbox.start_sending(connection, [p.id for p in sendable], worker, now))
        return settled, [p for p in sendable if p.id in marked]

    def _account(
        self,
        done: list[tuple[Prepared, SendOutcome]],
        applied: dict[str, DeliveryCount],
        settled: list[tuple[Prepared, DeliveryCount]],
    ) -> None:
        """Count what was written to the outbox (so the run summary matches the table)."""
        report = self.report
        for item, outcome in done:
            if outcome.stop_sending and report.stopped is None:
                report.stopped = outcome.error or "the provider refuses to send"
            if outcome.status != SendResult.SENT and outcome.error:
                report.error(f"{item.campaign} {item.uid}: {outcome.error}")
            if item.uid in applied:
                report.count(item.campaign, applied[item.uid])
        for item, status in settled:
            report.count(item.campaign, status)
            if item.error:
                report.error(item.error)

    def _log_unrecorded(self, done: list[tuple[Prepared, SendOutcome]]) -> None:
        for item, outcome in done:
            log.error(
                "outcome not recorded, the row stays in doubt until provider events settle "
                "it: message %s %s (provider id %s) %s",
                item.uid,
                outcome.status,
                outcome.provider_message_id,
                outcome.error or "",
            )
