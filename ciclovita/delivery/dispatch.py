"""Delivering due messages: claim, render each once, send, record — exactly once.

One delivery is a pipeline over the outbox (``ciclovita.delivery.outbox`` holds the rules)::

    claim a batch ─▶ prepare (late guards, render) ─▶ start_sending (commit) ─▶ sender
         ▲                                                                       │
         └────────── next batch when this one is all started ◀── record (commit) ◀┘

The sender works on ``concurrency`` messages at once; the dispatcher keeps a window of rows
in ``sending`` (that many, plus as many again queued, at least 32) and records outcomes as
they come, in the same transaction that starts the next messages. A crash therefore leaves
at most one window of rows in doubt (``sending``, later ``ambiguous``), and those are never
re-sent blindly.

Rendering is CPU work: with ``CICLOVITA_RENDER_PROCESSES`` > 0 it runs in worker processes
(each reads its rows from the database and renders them), so it does not compete with the
sending threads for this interpreter; with 0 it runs in the delivering thread.

``render_due`` (and ``deliver(..., dry_run=True)``) renders what is due without claiming,
writing or calling the provider. ``reconcile`` settles rows whose fate is unknown.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import socket
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign
from ciclovita.delivery import outbox
from ciclovita.delivery.message import OutgoingEmail, SendOutcome
from ciclovita.delivery.outbox import OutboxRow, wall_clock
from ciclovita.delivery.senders.base import Sender
from ciclovita.errors import PermanentDeliveryError, RenderError
from ciclovita.links import LinkBuilder
from ciclovita.rendering.context import Brand, Recipient, build_context
from ciclovita.rendering.render import Renderer
from ciclovita.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

EVENTS_PROVIDER = "sendgrid"
"""Whose events the webhook stores (what reconciliation from events records as provider)."""
RENDER_CHUNK = 64
"""Rows prepared (loaded, checked, rendered) together, in this thread or in one worker."""
RECORD_EVERY = 0.02
"""Seconds a finished outcome may wait for others before they are recorded together."""
DB_ATTEMPTS = 5
"""Tries of one pipeline transaction when the database fails transiently."""
MAX_ERRORS_KEPT = 100


@dataclass
class DeliveryReport:
    """What one delivery did (or, dry run, would do)."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    ambiguous: int = 0
    skipped: int = 0
    rendered: int = 0
    cap_reached: bool = False
    dry_run: bool = False
    stopped: str | None = None
    by_campaign: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0

    def count(self, campaign: str, status: str, n: int = 1) -> None:
        if n:
            setattr(self, status, getattr(self, status) + n)
            self.by_campaign.setdefault(campaign, Counter())[status] += n

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    def merge(self, other: DeliveryReport) -> None:
        for name in ("claimed", "sent", "failed", "retried", "ambiguous", "skipped", "rendered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cap_reached = self.cap_reached or other.cap_reached
        self.stopped = self.stopped or other.stopped
        for campaign, counts in other.by_campaign.items():
            self.by_campaign.setdefault(campaign, Counter()).update(counts)
        self.errors.extend(other.errors[: MAX_ERRORS_KEPT - len(self.errors)])
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "ambiguous": self.ambiguous,
            "skipped": self.skipped,
            "rendered": self.rendered,
            "cap_reached": self.cap_reached,
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "by_campaign": {k: dict(v) for k, v in self.by_campaign.items()},
            "errors": self.errors[:20],
            "seconds": round(self.seconds, 3),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def worker_name() -> str:
    """A name no other live delivery has (the outbox column holds 64 characters)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Prepared:
    """A claimed row made ready to send: its email, or why it must not be sent."""

    id: int
    uid: str
    campaign: str
    attempts: int
    email: OutgoingEmail | None = None
    error: str | None = None
    skip: str | None = None


class MessageBuilder:
    """Turns outbox rows into rendered, addressed emails."""

    def __init__(self, catalog: Catalog, renderer: Renderer, settings: Settings) -> None:
        self.catalog = catalog
        self.renderer = renderer
        self.settings = settings
        self.links = LinkBuilder(settings.public_base_url, settings.secret_key.get_secret_value())
        self.campaigns = {c.name: c for c in catalog.campaigns}
        self.consent_topics = {c.name: c.spec.required_consent for c in catalog.campaigns}
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def brand(self, campaign: LoadedCampaign) -> Brand:
        sender = campaign.spec.content.sender or self.catalog.policy.sender
        website = self.catalog.policy.website
        if sender is not None:
            return Brand(sender.name or self.settings.from_name, str(sender.email), website=website)
        return Brand(self.settings.from_name, self.settings.from_email, website=website)

    def build(self, row: Any, recipient: Recipient) -> OutgoingEmail:
        """The email of one outbox row (anything with the row's fields) for its recipient."""
        campaign = self.campaigns.get(row.campaign)
        if campaign is None:
            raise RenderError(
                row.campaign, "-", recipient.customer_id, "campaign no longer defined"
            )
        spec = campaign.spec
        brand = self.brand(campaign)
        topic = spec.required_consent or self.catalog.policy.unsubscribe_topic
        variant = row.variant or "default"
        locale = row.locale or spec.content.fallback_locale
        context = build_context(
            recipient=recipient,
            campaign_name=campaign.name,
            campaign=spec,
            message_uid=row.uid,
            variant=variant,
            locale=locale,
            details=dict(row.details or {}),
            links=self.links,
            brand=brand,
            unsubscribe_topic=topic,
        )
        rendered = self.renderer.render(campaign.name, spec, variant, locale, context)
        headers: dict[str, str] = {}
        if spec.kind == "marketing":
            headers["List-Unsubscribe"] = f"<{context['links']['unsubscribe']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return OutgoingEmail(
            uid=row.uid,
            campaign=campaign.name,
            kind=spec.kind,
            to_email=row.to_email,
            to_name=recipient.display_name,
            from_email=brand.email,
            from_name=brand.name,
            reply_to=str(spec.content.reply_to) if spec.content.reply_to else None,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            stage=row.stage,
            variant=variant,
            headers=headers,
            asm_group_id=self.settings.sendgrid_asm_group_id if spec.kind == "marketing" else None,
        )

    def prepare_rows(
        self,
        batch: Sequence[tuple[OutboxRow, Recipient]],
        skips: dict[int, str],
        sender: Sender | None = None,
    ) -> list[Prepared]:
        """Render each row once (and have ``sender`` build its request, when given); a row
        that cannot be rendered or sent is a permanent failure of that row alone (logged
        with its cause), never of the batch."""
        prepared = []
        for row, recipient in batch:
            email: OutgoingEmail | None = None
            error: str | None = None
            skip = skips.get(row.id)
            if skip is None:
                try:
                    email = self.build(row, recipient)
                    if sender is not None:
                        email = sender.prepare(email)
                except RenderError as exc:
                    log.error("render failed: %s", exc)
                    error = str(exc)
                except PermanentDeliveryError as exc:
                    email, error = None, f"not sent: {exc.detail}"
                except Exception as exc:  # one bad row must not stop the others
                    log.exception("message %s could not be built", row.uid)
                    email = None
                    error = f"could not build message: {exc.__class__.__name__}: {exc}"
            prepared.append(
                Prepared(row.id, row.uid, row.campaign, row.attempts, email, error, skip)
            )
        return prepared

    def prepare(
        self, engine: Engine, ids: Sequence[int], sender: Sender | None = None
    ) -> list[Prepared]:
        """Load claimed rows and apply the late guards (a short read), then render them."""
        with engine.connect() as connection:
            batch = outbox.load_batch(connection, ids)
            skips = outbox.late_skips(connection, batch, self.consent_topics)
        return self.prepare_rows(batch, skips, sender)

    def prepared(self, engine: Engine, ids: Sequence[int]) -> Iterator[Prepared]:
        """Rows prepared in order, lazily: in worker processes when configured (all chunks
        submitted at once, so rendering runs ahead of sending), else here, chunk by chunk."""
        chunks = [ids[i : i + RENDER_CHUNK] for i in range(0, len(ids), RENDER_CHUNK)]
        pool = self._render_pool()
        if pool is None:
            for chunk in chunks:
                yield from self.prepare(engine, chunk)
            return
        futures = [pool.submit(_prepare_in_worker, list(chunk)) for chunk in chunks]
        try:
            for future in futures:
                yield from future.result()
        except BrokenProcessPool:
            self._discard_pool(pool)  # a worker died: the next batch starts new ones
            raise
        finally:
            for future in futures:
                future.cancel()

    def _render_pool(self) -> ProcessPoolExecutor | None:
        if self.settings.render_processes <= 0 or multiprocessing.current_process().daemon:
            return None  # a daemonic process (a Dask worker) may not start processes
        with self._pool_lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.render_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_render_worker,
                    initargs=(self.settings,),
                )
            return self._pool

    def _discard_pool(self, pool: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the render workers, if any were started."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_WORKER: tuple[MessageBuilder, Engine, Sender] | None = None


def _start_render_worker(settings: Settings) -> None:
    """In a render worker process: its own catalogue, renderer and database engine, and a
    sender of the configured kind that only prepares requests (it never sends from here)."""
    global _WORKER
    from ciclovita.campaigns.catalog import load_catalog
    from ciclovita.delivery.senders.base import create_sender

    _exit_with_parent()
    catalog = load_catalog(settings.campaigns_dir)
    _WORKER = (
        MessageBuilder(catalog, Renderer(settings.templates_dir), settings),
        _reading_engine(settings.database_url),
        create_sender(settings),
    )


def _exit_with_parent() -> None:
    """A render worker ends when the delivering process does, however it ends (a killed
    parent never tells its pool's workers, which would otherwise wait forever)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _reading_engine(url: str) -> Engine:
    """The engine of a render worker, which only reads. ciclovita's SQLite engines open
    every transaction with BEGIN IMMEDIATE (the writers' lock); a worker reading under it
    would hold up the delivering process's commits, so on SQLite it reads in autocommit
    (WAL: readers and the writer never wait for each other)."""
    from ciclovita.db.engine import get_engine

    if make_url(url).get_backend_name() != "sqlite":
        return get_engine(url)
    return create_engine(url, connect_args={"timeout": 60}, isolation_level="AUTOCOMMIT")


def _prepare_in_worker(ids: list[int]) -> list[Prepared]:
    assert _WORKER is not None, "render worker not initialised"
    builder, engine, sender = _WORKER
    return builder.prepare(engine, ids, sender)


# ----------------------------------------------------------------------------------- delivery


def _transient_database_error(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class _Window:
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


_WINDOWS: weakref.WeakKeyDictionary[Sender, _Window] = weakref.WeakKeyDictionary()
_WINDOWS_LOCK = threading.Lock()


def _window_of(sender: Sender) -> _Window:
    with _WINDOWS_LOCK:
        window = _WINDOWS.get(sender)
        if window is None:
            window = _WINDOWS[sender] = _Window(sender.concurrency)
        return window


class _Pipeline:
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
        self.window = _window_of(sender)
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
                outcome = SendOutcome(item.uid, "ambiguous", error=f"sender error: {exc!r}")
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
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    applied = self._record(connection, done)
                    settled, started = self._start(connection, fresh)
                break
            except DBAPIError as exc:
                if not _transient_database_error(exc) or attempt == DB_ATTEMPTS:
                    self._log_unrecorded(done)
                    raise
                log.warning("outbox write failed (%s), trying again", exc.__class__.__name__)
                time.sleep(0.1 * 2**attempt)
        self._account(done, applied, settled)
        self.report.rendered += sum(1 for item in fresh if item.email is not None)
        return started

    def _record(
        self, connection: Connection, done: list[tuple[Prepared, SendOutcome]]
    ) -> dict[str, str]:
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
    ) -> tuple[list[tuple[Prepared, str]], list[Prepared]]:
        """Settle fresh rows that must not be sent; mark the rest ``sending``."""
        worker, now = self.worker, self.clock()
        settled: list[tuple[Prepared, str]] = []
        for item in fresh:
            if item.error is not None and outbox.mark_failed(
                connection, {item.id: item.error}, worker
            ):
                settled.append((item, "failed"))
            elif item.skip is not None and outbox.mark_skipped(
                connection, {item.id: item.skip}, worker
            ):
                settled.append((item, "skipped"))
        sendable = [p for p in fresh if p.email is not None]
        retried = [p.id for p in sendable if p.attempts > 0]
        if retried:
            # an earlier attempt got an error answer, yet the provider reported on it
            known = outbox.provider_events(connection, retried)
            if known:
                outbox.mark_sent_by_events(connection, known, worker, EVENTS_PROVIDER, now)
                settled += [(p, "sent") for p in sendable if p.id in known]
                sendable = [p for p in sendable if p.id not in known]
        marked = set(outbox.start_sending(connection, [p.id for p in sendable], worker, now))
        return settled, [p for p in sendable if p.id in marked]

    def _account(
        self,
        done: list[tuple[Prepared, SendOutcome]],
        applied: dict[str, str],
        settled: list[tuple[Prepared, str]],
    ) -> None:
        """Count what was written to the outbox (so the run summary matches the table)."""
        report = self.report
        for item, outcome in done:
            if outcome.stop_sending and report.stopped is None:
                report.stopped = outcome.error or "the provider refuses to send"
            if outcome.status != "sent" and outcome.error:
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
            yield from builder.prepared(engine, ids)
            if single_batch:
                return

    pipeline = _Pipeline(engine, sender, name, report, lambda: as_of or clock(), clock)
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
) -> tuple[list[tuple[OutboxRow, Recipient]], dict[int, str], int]:
    batch = outbox.load_due(connection, as_of, limit, campaigns)
    skips = outbox.late_skips(connection, batch, builder.consent_topics)
    return batch, skips, outbox.count_due(connection, as_of, campaigns)


def _preview(
    builder: MessageBuilder,
    batch: list[tuple[OutboxRow, Recipient]],
    skips: dict[int, str],
    due_count: int,
) -> DeliveryReport:
    started = time.perf_counter()
    report = DeliveryReport(dry_run=True, started_at=time.time())
    report.claimed = len(batch)
    for item in builder.prepare_rows(batch, skips):
        if item.skip is not None:
            report.count(item.campaign, "skipped")
        elif item.error is not None:
            report.count(item.campaign, "failed")
            report.error(item.error)
        else:
            report.count(item.campaign, "rendered")
    report.cap_reached = due_count > len(batch)
    report.finished_at = time.time()
    report.seconds = time.perf_counter() - started
    return report


def reconcile(engine: Engine, sender: Sender, now: datetime | None = None) -> dict[str, int]:
    """Settle rows whose fate is unknown: stale ``sending`` rows become ambiguous; ambiguous
    rows the provider reported on (stored webhook events), or the sender can confirm, become
    sent. The rest stay held, never re-sent blindly.

    Returns ``newly_ambiguous``, ``resolved``, ``ambiguous`` (held now) and ``sending``
    (rows in flight, or whose worker stopped less than a lease ago). ``now`` is the wall
    clock (default: now).
    """
    now = now or wall_clock()
    with engine.begin() as connection:
        newly = outbox.mark_stale_sending_ambiguous(connection, now)
        resolved = outbox.resolve_from_events(connection, EVENTS_PROVIDER)
        pending = outbox.ambiguous_uids(connection)
    found = sender.reconcile(list(pending)) if pending else {}
    with engine.begin() as connection:
        resolved += outbox.resolve_ambiguous(connection, found, pending, sender.name, now)
        doubt = outbox.count_in_doubt(connection)
    return {
        "newly_ambiguous": newly,
        "resolved": resolved,
        "ambiguous": doubt["ambiguous"],
        "sending": doubt["sending"],
    }
