"""Rendering claimed rows for a delivery: here, or in worker processes.

Rendering is CPU work: with ``CICLOVITA_RENDER_PROCESSES`` > 0 it runs in worker processes
(each reads its rows from the database, applies the late guards and renders them, and has
the sender build each request), so it does not compete with the sending threads for this
interpreter; with 0 it runs in the delivering thread. Rows are prepared ``RENDER_CHUNK`` at
a time, in order, and lazily: the pool gets every chunk at once, so rendering runs ahead of
sending.

One pool serves every delivery of a ``MessageBuilder`` (``pool_of``); ``close_pool`` stops
its workers.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sqlalchemy import Engine, create_engine, make_url

from ciclovita.batching import chunks
from ciclovita.delivery import outbox
from ciclovita.delivery.senders.base import Sender
from ciclovita.delivery.shared import SharedPer
from ciclovita.rendering.builder import MessageBuilder, Prepared
from ciclovita.settings import Settings

RENDER_CHUNK = 64
"""Rows prepared (loaded, checked, rendered) together, in this thread or in one worker."""


def prepare_claimed(
    builder: MessageBuilder, engine: Engine, ids: Sequence[int], sender: Sender | None = None
) -> list[Prepared]:
    """Load claimed rows and apply the late guards (a short read), then render them (and
    have ``sender`` build their requests, when given)."""
    with engine.connect() as connection:
        batch = outbox.load_batch(connection, ids)
        skips = outbox.late_skips(connection, batch, builder.consent_topics)
    return builder.prepare_rows(batch, skips, sender.prepare if sender is not None else None)


class RenderPool:
    """The worker processes that render for one ``MessageBuilder`` (started on first use);
    they build their own from ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def prepared(
        self, builder: MessageBuilder, engine: Engine, ids: Sequence[int]
    ) -> Iterator[Prepared]:
        """Rows prepared in order, lazily: in worker processes when configured (all chunks
        submitted at once, so rendering runs ahead of sending), else here, chunk by chunk."""
        parts = list(chunks(ids, RENDER_CHUNK))
        pool = self._executor()
        if pool is None:
            for part in parts:
                yield from prepare_claimed(builder, engine, part)
            return
        futures = [pool.submit(_prepare_in_worker, list(part)) for part in parts]
        try:
            for future in futures:
                yield from future.result()
        except BrokenProcessPool:
            self._discard(pool)  # a worker died: the next batch starts new ones
            raise
        finally:
            for future in futures:
                future.cancel()

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.settings.render_processes <= 0 or multiprocessing.current_process().daemon:
            return None  # a daemonic process (a Dask worker) may not start processes
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.render_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_render_worker,
                    initargs=(self.settings,),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the render workers, if any were started."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_POOLS: SharedPer[MessageBuilder, RenderPool] = SharedPer(
    lambda builder: RenderPool(builder.settings)
)


def pool_of(builder: MessageBuilder) -> RenderPool:
    """The render pool every delivery with ``builder`` shares."""
    return _POOLS.of(builder)


def close_pool(builder: MessageBuilder) -> None:
    """Stop the render workers of ``builder``'s deliveries, if any were started."""
    pool = _POOLS.pop(builder)
    if pool is not None:
        pool.close()


# ------------------------------------------------------------------- in a render worker

_WORKER: tuple[MessageBuilder, Engine, Sender] | None = None


def _start_render_worker(settings: Settings) -> None:
    """In a render worker process: its own catalogue, renderer and database engine, and a
    sender of the configured kind that only prepares requests (it never sends from here)."""
    global _WORKER
    from ciclovita.campaigns.catalog import load_catalog
    from ciclovita.delivery.senders.base import create_sender
    from ciclovita.rendering.render import Renderer

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
    return prepare_claimed(builder, engine, ids, sender)
