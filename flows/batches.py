"""Delivery batches as Prefect tasks: how many, how big, and named for what they take.

Batches are submitted to the flow's task runner (threads, or Dask when configured, see
``flows.runners``); each claims its own outbox rows, so batches — and several flows or
workers at once — never take the same message.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from ciclovita.delivery.outbox import count_due
from ciclovita.runtime import get_runtime
from flows.naming import batch_name
from tasks.delivery import deliver_batch


def batch_sizes(to_send: int, batch_size: int) -> list[int]:
    """Sizes of the batches that take ``to_send`` messages, ``batch_size`` at most each."""
    batches = math.ceil(to_send / batch_size) if to_send > 0 else 0
    return [min(batch_size, to_send - i * batch_size) for i in range(batches)]


def submit_batches(sizes: list[int], as_of: datetime) -> list[PrefectFuture[dict[str, Any]]]:
    """Submit one ``deliver-batch`` task per size, named ``deliver batch N (messages a–b)``."""
    futures: list[PrefectFuture[dict[str, Any]]] = []
    first = 1
    for index, size in enumerate(sizes):
        named = deliver_batch.with_options(
            task_run_name=batch_name(index + 1, first, first + size - 1)
        )
        futures.append(named.submit(index + 1, size, as_of=as_of))
        first += size
    return futures


def deliver_due(as_of: datetime, batch_size: int) -> tuple[list[dict[str, Any]], bool]:
    """Deliver the messages due at ``as_of`` in parallel batches, within the send cap.

    Returns each batch's report and whether the cap left messages for the next run.
    """
    runtime = get_runtime()
    with runtime.engine.connect() as connection:
        due = count_due(connection, as_of)
    cap = runtime.settings.send_cap_per_run or due
    to_send = min(due, cap)
    if due > cap:
        get_run_logger().warning(
            "send cap: %d messages are due but CICLOVITA_SEND_CAP_PER_RUN=%d; "
            "the rest wait for the next run",
            due,
            cap,
        )
    futures = submit_batches(batch_sizes(to_send, batch_size), as_of)
    return [f.result() for f in futures], due > cap


def merge_deliveries(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over batch reports."""
    total: dict[str, Any] = {"sent": 0, "failed": 0, "retried": 0, "ambiguous": 0, "claimed": 0}
    for part in deliveries:
        for key in total:
            total[key] += part.get(key, 0)
    total["batches"] = len(deliveries)
    return total


def delivered_by_campaign(deliveries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per campaign: sent, failed, retried, ambiguous over batch reports."""
    out: dict[str, Counter[str]] = {}
    for part in deliveries:
        for campaign, counts in part.get("by_campaign", {}).items():
            out.setdefault(campaign, Counter()).update(counts)
    return {k: dict(v) for k, v in sorted(out.items())}
