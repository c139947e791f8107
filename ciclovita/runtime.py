"""The pieces one process needs, built once from the settings: engine, catalogue, renderer.

Prefect tasks may run in other processes (a Dask cluster, a worker); each builds its own
runtime from the environment with ``get_runtime`` rather than receiving live objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine

from ciclovita.campaigns.catalog import Catalog, load_catalog
from ciclovita.db.engine import get_engine
from ciclovita.delivery.render_pool import close_pool
from ciclovita.delivery.senders.base import Sender, create_sender
from ciclovita.rendering.builder import MessageBuilder
from ciclovita.rendering.render import Renderer
from ciclovita.settings import Settings, get_settings


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return get_engine(self.settings.database_url)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.campaigns_dir)

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.settings.templates_dir)

    @cached_property
    def builder(self) -> MessageBuilder:
        return MessageBuilder(self.catalog, self.renderer, self.settings)

    def sender(self) -> Sender:
        """A new sender (the caller closes it)."""
        return create_sender(self.settings)

    @cached_property
    def _shared_sender(self) -> Sender:
        return create_sender(self.settings)

    def shared_sender(self) -> Sender:
        """One sender for all tasks of this process (senders are thread safe)."""
        return self._shared_sender

    def close(self) -> None:
        """Close the shared sender and stop the render workers, if they were started."""
        if "builder" in self.__dict__:
            close_pool(self.__dict__["builder"])
        if "_shared_sender" in self.__dict__:
            self.__dict__.pop("_shared_sender").close()


_RUNTIMES: dict[int, Runtime] = {}


def get_runtime(settings: Settings | None = None) -> Runtime:
    """This process's runtime for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    key = hash(settings.model_dump_json())
    runtime = _RUNTIMES.get(key)
    if runtime is None:
        runtime = _RUNTIMES[key] = Runtime(settings)
    return runtime


def reset_runtimes() -> None:
    for runtime in _RUNTIMES.values():
        runtime.close()
    _RUNTIMES.clear()
    get_settings.cache_clear()
