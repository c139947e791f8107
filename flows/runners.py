"""Which task runner carries the delivery batches: a thread pool, or Dask when configured.

``CICLOVITA_DASK_ADDRESS`` decides, at the start of every flow run (not at import):

* unset: a thread pool in the flow's own process (one machine);
* ``local`` or ``local:N``: a temporary Dask ``LocalCluster`` of N worker processes (default:
  Dask's choice for this machine), started for the run and stopped after it;
* ``tcp://host:8786`` (any Dask scheduler address): the batches run on that cluster's workers.

Tasks sent to Dask are pickled by reference and rebuild their runtime (engine, catalogue,
sender) from the environment of the worker process (``ciclovita.runtime.get_runtime``), so
every Dask worker needs ciclovita installed and the same ``CICLOVITA_*`` settings. Workers
claim outbox rows with ``FOR UPDATE SKIP LOCKED``, so any number of them can share one
PostgreSQL database without sending a message twice.
"""

from __future__ import annotations

from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ciclovita.errors import ConfigurationError

DASK_SETTING = "CICLOVITA_DASK_ADDRESS"
LOCAL = "local"


def dask_address() -> str | None:
    """The configured Dask address (``local``, ``local:N`` or a scheduler), or None.

    Read from ``Settings.dask_address``; while ``Settings`` has no such field, Dask is off.
    """
    from ciclovita.settings import get_settings

    value = getattr(get_settings(), "dask_address", None)
    return (str(value).strip() or None) if value else None


def dask_runner(address: str) -> TaskRunner[Any]:
    """A ``DaskTaskRunner`` for ``address`` (``local``, ``local:N`` or a scheduler)."""
    from prefect_dask.task_runners import DaskTaskRunner

    if address == LOCAL or address.startswith(LOCAL + ":"):
        workers = address.partition(":")[2]
        if workers and not (workers.isdigit() and int(workers) > 0):
            raise ConfigurationError(
                DASK_SETTING, f"{address!r} is not local:N", "local, local:N or tcp://host:port"
            )
        cluster: dict[str, Any] = {
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
        if workers:
            cluster["n_workers"] = int(workers)
        runner: TaskRunner[Any] = DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=cluster
        )
        return runner
    if "://" not in address and ":" not in address:
        raise ConfigurationError(
            DASK_SETTING, f"{address!r} is not a Dask address", "local, local:N or tcp://host:port"
        )
    remote: TaskRunner[Any] = DaskTaskRunner(address=address)
    return remote


class ConfiguredTaskRunner(ThreadPoolTaskRunner):  # type: ignore[type-arg]
    """A thread pool, unless ``CICLOVITA_DASK_ADDRESS`` names a Dask cluster.

    Prefect calls ``duplicate()`` on a flow's task runner when each run starts; this is where
    the setting is read, so the choice follows the environment of the process running the
    flow (a worker, ``serve``, ``ciclovita run``), not the one that imported it.
    """

    def duplicate(self) -> Any:
        address = dask_address()
        if address:
            return dask_runner(address)
        return ThreadPoolTaskRunner(max_workers=self._max_workers)


def configured_task_runner(max_workers: int = 4) -> TaskRunner[PrefectFuture[Any]]:
    """The task runner for a flow decorator: threads, or Dask when configured."""
    return cast(TaskRunner[PrefectFuture[Any]], ConfiguredTaskRunner(max_workers=max_workers))
