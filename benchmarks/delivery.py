"""Benchmark: plan, render and send 100,000 personalised messages into the local fake SendGrid.

    .venv/bin/python -m benchmarks.delivery [--messages 100000] [--backend sqlite|postgresql]
        [--concurrency 128] [--latencies 0,0.1] [--render-processes 1] [--batch-size 2000]
        [--bare-messages 30000] [--no-direct]

The fake SendGrid (``ciclovita_testing.fake_sendgrid``) runs as its own process; each measured
run is a fresh child process (its peak memory is its own) on a fresh copy of a database
holding N customers with marketing consent, and one letter campaign (the ``nurture``
templates, it/en, per-customer subject and links). For each added latency (default 0 and
100 ms per request) it prints, from the same run:

* **end to end**: a Prefect flow (real ``plan-campaign`` and ``deliver-batch`` tasks on a
  thread pool, against a Prefect server) plans N messages into the outbox, renders and sends
  them; messages per second over the whole flow run, exactly-once checked at the fake;
* **bare client ceiling**: the official client, configured as the sender configures it
  (``make_client``: same host, key, timeout) on a pool of the same size, posting pre-built
  requests (the sender's own request bodies for these messages) to the same fake;
* the **ratio** of the two;
* the **bare render rate** of the same template (one thread, ``MessageBuilder.build``);
* **peak memory** (RSS) of the end-to-end process and of its render workers;
* **Prefect's overhead**: the same plan and delivery run without Prefect (the same core
  functions, batches and threads), compared with the flow run (skip with ``--no-direct``).

Targets (issue 5): end to end ≥ 70% of the bare ceiling; ≥ 500 messages/s at 100 ms;
Prefect's overhead under 10% of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / ".data"
PG_ADMIN = os.environ.get(
    "CICLOVITA_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
WORKERS = 4
"""Delivery batches at once (the flows' thread-pool task runner)."""


# ---------------------------------------------------------------------------------- databases


def _template(backend: str, customers: int) -> str:
    """A migrated database with ``customers`` consenting customers, built once and reused."""
    from ciclovita.db.engine import make_engine
    from ciclovita.db.migrate import upgrade
    from tests.test_delivery_support import add_customers

    name = f"ciclovita_delivery_{customers}"
    if backend == "sqlite":
        DATA_DIR.mkdir(exist_ok=True)
        path = DATA_DIR / f"{name}.db"
        if path.exists():
            return str(path)
        building = path.with_suffix(".partial")
        building.unlink(missing_ok=True)
        engine = make_engine(f"sqlite:///{building}")
        upgrade(engine)
        add_customers(engine, customers)
        engine.dispose()
        building.rename(path)
        return str(path)
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    if not exists:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}_partial"'))
        partial = admin.url.set(database=f"{name}_partial").render_as_string(hide_password=False)
        engine = make_engine(partial)
        upgrade(engine)
        add_customers(engine, customers)
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}_partial" RENAME TO "{name}"'))
    admin.dispose()
    return url


def _fresh_copy(backend: str, template: str, label: str) -> str:
    """A new database made from the template; returns its URL."""
    if backend == "sqlite":
        target = DATA_DIR / f"run-{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copy(template, target)
        return f"sqlite:///{target}"
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"ciclovita_delivery_run_{label}"
    source = template.rsplit("/", 1)[-1]
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    admin.dispose()
    return url


# ------------------------------------------------------------------------- child processes


def _environment(options: dict[str, Any]) -> dict[str, str]:
    from tests.test_delivery_support import API_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        {
            "PYTHONPATH": str(REPOSITORY),
            "CICLOVITA_DATABASE_URL": options["url"],
            "CICLOVITA_CAMPAIGNS_DIR": options["campaigns"],
            "CICLOVITA_TEMPLATES_DIR": str(REPOSITORY / "templates"),
            "CICLOVITA_SENDER": "sendgrid",
            "CICLOVITA_SENDGRID_API_KEY": API_KEY,
            "CICLOVITA_SENDGRID_HOST": options["host"],
            "CICLOVITA_SENDGRID_CONCURRENCY": str(options["concurrency"]),
            "CICLOVITA_RENDER_PROCESSES": str(options["render_processes"]),
            "CICLOVITA_SEND_CAP_PER_RUN": "0",
            "CICLOVITA_PUBLIC_BASE_URL": "https://ciclovita.example",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def _run_child(mode: str, options: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.delivery", "--child", mode, json.dumps(options)]
    done = subprocess.run(
        command,
        cwd=REPOSITORY,
        env=_environment(options),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-6000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _usage() -> dict[str, float]:
    """Peak memory, and CPU seconds used, of this process and of its ended children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss_mb": round(own.ru_maxrss / 1024, 1),
        "children_peak_rss_mb": round(children.ru_maxrss / 1024, 1),
        "cpu_seconds": own.ru_utime + own.ru_stime,
        "children_cpu_seconds": children.ru_utime + children.ru_stime,
    }


def _child_end_to_end(options: dict[str, Any], *, with_prefect: bool) -> dict[str, Any]:
    """Plan, render and send every message, through a Prefect flow or the core alone."""
    from ciclovita import cycle
    from ciclovita.delivery.dispatch import deliver, reconcile
    from ciclovita.delivery.render_pool import close_pool
    from ciclovita.delivery.reports import DeliveryReport
    from ciclovita.runtime import get_runtime
    from tests.test_delivery_support import AS_OF, CAMPAIGN

    runtime = get_runtime()
    runtime.catalog  # noqa: B018 - loaded before the clock starts, as a worker has it
    runtime.shared_sender()
    batch_size = int(options["batch_size"])
    cpu_before = _usage()["cpu_seconds"]

    def sizes(due: int) -> list[int]:
        return [min(batch_size, due - start) for start in range(0, due, batch_size)]

    def due_now() -> int:
        from ciclovita.delivery.outbox import count_due

        with runtime.engine.connect() as connection:
            return count_due(connection, AS_OF)

    if with_prefect:
        from prefect import flow
        from prefect.task_runners import ThreadPoolTaskRunner

        from tasks.campaigns import plan_campaign
        from tasks.delivery import deliver_batch, reconcile_sends

        @flow(name="benchmark-delivery", task_runner=ThreadPoolTaskRunner(max_workers=WORKERS))  # type: ignore[arg-type]
        def plan_and_deliver() -> dict[str, Any]:
            cycle_id = cycle.start_cycle(runtime.engine, AS_OF)
            reconcile_sends(AS_OF)
            planned_at = time.perf_counter()
            plan = plan_campaign(CAMPAIGN, AS_OF, cycle_id)
            plan_seconds = time.perf_counter() - planned_at
            delivering_from = time.time()
            futures = [
                deliver_batch.submit(i, size, as_of=AS_OF)
                for i, size in enumerate(sizes(due_now()))
            ]
            reports = [f.result() for f in futures]
            delivering = time.time() - delivering_from
            working = _covered([(r["started_at"], r["finished_at"]) for r in reports])
            return {
                "planned": plan["planned"],
                "plan_seconds": plan_seconds,
                "sent": sum(r["sent"] for r in reports),
                "ambiguous": sum(r["ambiguous"] for r in reports),
                "batches": len(reports),
                "orchestration_seconds": delivering - working,
            }

        @flow(name="benchmark-warm-up")
        def warm_up() -> None:
            return None

        warm_up()
        started = time.perf_counter()
        result = plan_and_deliver()
    else:
        started = time.perf_counter()
        cycle_id = cycle.start_cycle(runtime.engine, AS_OF)
        reconcile(runtime.engine, runtime.shared_sender())
        planned_at = time.perf_counter()
        plan = cycle.plan(
            runtime.engine,
            runtime.catalog,
            CAMPAIGN,
            AS_OF,
            timezone=runtime.settings.timezone,
            cycle_id=cycle_id,
        )
        plan_seconds = time.perf_counter() - planned_at

        def one_batch(size: int) -> DeliveryReport:
            return deliver(
                runtime.engine,
                runtime.builder,
                runtime.shared_sender(),
                as_of=AS_OF,
                batch_size=size,
                max_messages=size,
                single_batch=True,
            )

        with ThreadPoolExecutor(WORKERS) as pool:
            reports = list(pool.map(one_batch, sizes(due_now())))
        result = {
            "planned": plan.planned,
            "plan_seconds": plan_seconds,
            "sent": sum(r.sent for r in reports),
            "ambiguous": sum(r.ambiguous for r in reports),
            "batches": len(reports),
        }
    result["seconds"] = time.perf_counter() - started
    workers_peak = _render_workers_peak_mb(runtime.builder)
    close_pool(runtime.builder)  # the render workers' CPU joins RUSAGE_CHILDREN
    runtime.close()
    usage = _usage()
    result["cpu_seconds"] = usage["cpu_seconds"] - cpu_before
    return {**usage, **result, "children_peak_rss_mb": workers_peak}


def _render_workers_peak_mb(builder: Any) -> float:
    """The largest peak RSS (VmHWM) of the render worker processes (Linux ``/proc``; the
    children's ``ru_maxrss`` would also count the parent's memory at the time of spawn)."""
    from ciclovita.delivery.render_pool import pool_of

    pool = getattr(pool_of(builder), "_pool", None)
    peak = 0.0
    for pid in getattr(pool, "_processes", None) or {}:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return round(peak, 1)


def _covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the intervals."""
    covered, end = 0.0, float("-inf")
    for start, finish in sorted(intervals):
        if finish > end:
            covered += finish - max(start, end)
            end = finish
    return covered


def _loaded_messages(limit: int) -> tuple[Any, list[Any]]:
    from sqlalchemy import select

    from ciclovita.db.models import Message
    from ciclovita.delivery import outbox
    from ciclovita.runtime import get_runtime

    runtime = get_runtime()
    with runtime.engine.connect() as connection:
        ids = list(
            connection.execute(select(Message.id).order_by(Message.id).limit(limit)).scalars()
        )
        return runtime, outbox.load_batch(connection, ids)


def _child_render(options: dict[str, Any]) -> dict[str, Any]:
    """The bare render rate: ``MessageBuilder.build`` in one thread, nothing else."""
    runtime, batch = _loaded_messages(int(options["render_messages"]))
    builder = runtime.builder
    for row, recipient in batch[:50]:  # compile the templates first
        builder.build(row, recipient)
    started = time.perf_counter()
    for row, recipient in batch:
        builder.build(row, recipient)
    seconds = time.perf_counter() - started
    return {"rendered": len(batch), "seconds": seconds, "per_second": len(batch) / seconds}


def _child_bare(options: dict[str, Any]) -> dict[str, Any]:
    """The official client, configured as the sender does, posting pre-built requests."""
    from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG, SendGridSender, request_body

    runtime, batch = _loaded_messages(1000)
    sender = runtime.shared_sender()
    assert isinstance(sender, SendGridSender)
    templates = [request_body(runtime.builder.build(row, rcp), sandbox=False) for row, rcp in batch]
    total = int(options["bare_messages"])
    bodies = []
    for i in range(total):  # distinct ids, shared content: built before the clock starts
        body = dict(templates[i % len(templates)])
        personalization = dict(body["personalizations"][0])
        personalization["custom_args"] = {MESSAGE_ID_ARG: f"bare-{i}"}
        body["personalizations"] = [personalization]
        bodies.append(body)
    client, pool = sender.client, sender.pool
    cpu_before = time.process_time()
    started = time.perf_counter()
    futures = [pool.submit(client.send, body) for body in bodies]
    statuses = [f.result().status_code for f in futures]
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    runtime.close()
    return {
        "posted": total,
        "accepted": statuses.count(202),
        "seconds": seconds,
        "per_second": total / seconds,
        "cpu_ms_per_request": cpu / total * 1000,
    }


def _child(mode: str, raw: str) -> None:
    options = json.loads(raw)
    if mode == "e2e":
        result = _child_end_to_end(options, with_prefect=True)
    elif mode == "direct":
        result = _child_end_to_end(options, with_prefect=False)
    elif mode == "render":
        result = _child_render(options)
    else:
        result = _child_bare(options)
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------------ the parent


def _check_exactly_once(fake: Any, expected: int, label: str) -> None:
    stats = fake.stats()
    duplicates = fake.duplicate_ids()
    if duplicates or stats.accepted != expected:
        raise SystemExit(
            f"{label}: {stats.accepted} accepted of {expected}, {len(duplicates)} duplicated"
        )


def _campaigns_dir() -> str:
    from tests.test_delivery_support import write_catalog

    return str(write_catalog(DATA_DIR / "campaigns"))


def _prefect_server() -> Any:
    from prefect.testing.utilities import prefect_test_harness

    return prefect_test_harness(server_startup_timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latencies", default="0,0.1", help="seconds added per request")
    parser.add_argument("--render-processes", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--bare-messages", type=int, default=30_000)
    parser.add_argument("--render-messages", type=int, default=5_000)
    parser.add_argument("--no-direct", action="store_true", help="skip the run without Prefect")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    from prefect.settings import PREFECT_API_URL

    from ciclovita_testing.fake_sendgrid import FakeSendGridProcess

    # stopped with SIGTERM: unwind, so the fake, the Prefect server and the run stop too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    print(
        f"delivery benchmark: {args.messages:,} messages, {args.backend}, concurrency "
        f"{args.concurrency}, {args.render_processes} render process(es), batches of "
        f"{args.batch_size} ({WORKERS} at once), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    started = time.perf_counter()
    template = _template(args.backend, args.messages)
    print(f"  customers ready ({time.perf_counter() - started:.0f}s)", flush=True)
    campaigns = _campaigns_dir()
    figures: dict[str, Any] = {}
    with _prefect_server():
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        for latency in [float(x) for x in args.latencies.split(",")]:
            label = f"{int(latency * 1000)}ms"
            with FakeSendGridProcess(keep_bodies=False, latency=latency) as fake:
                options = {
                    "campaigns": campaigns,
                    "host": fake.url,
                    "concurrency": args.concurrency,
                    "render_processes": args.render_processes,
                    "batch_size": args.batch_size,
                    "bare_messages": args.bare_messages,
                    "render_messages": args.render_messages,
                }
                url = _fresh_copy(args.backend, template, f"e2e-{label}")
                e2e = _run_child("e2e", {**options, "url": url})
                _check_exactly_once(fake, args.messages, f"end to end, {label}")
                print(f"  {label}: end to end {args.messages / e2e['seconds']:.0f}/s", flush=True)
                fake.reset()
                direct = None
                if not args.no_direct:
                    direct_url = _fresh_copy(args.backend, template, f"direct-{label}")
                    direct = _run_child("direct", {**options, "url": direct_url})
                    _check_exactly_once(fake, args.messages, f"without Prefect, {label}")
                    fake.reset()
                bare = _run_child("bare", {**options, "url": url})
                _check_exactly_once(fake, args.bare_messages, f"bare client, {label}")
                render = _run_child("render", {**options, "url": url})
            figures[label] = _summary(args.messages, e2e, direct, bare, render)
            figures[label]["load_average"] = round(os.getloadavg()[0], 1)
            _print(label, figures[label])
    print(json.dumps(figures, indent=2), flush=True)


def _summary(
    messages: int,
    e2e: dict[str, Any],
    direct: dict[str, Any] | None,
    bare: dict[str, Any],
    render: dict[str, Any],
) -> dict[str, Any]:
    rate = messages / e2e["seconds"]
    summary = {
        "end_to_end_per_second": round(rate),
        "end_to_end_seconds": round(e2e["seconds"], 1),
        "plan_seconds": round(e2e["plan_seconds"], 1),
        "bare_client_per_second": round(bare["per_second"]),
        "ratio": round(rate / bare["per_second"], 3),
        "render_per_second": round(render["per_second"]),
        "peak_rss_mb": e2e["peak_rss_mb"],
        "render_workers_peak_rss_mb": e2e["children_peak_rss_mb"],
        "cpu_ms_per_message": round(e2e["cpu_seconds"] / messages * 1000, 3),
        "render_workers_cpu_ms_per_message": round(
            e2e["children_cpu_seconds"] / messages * 1000, 3
        ),
        "bare_cpu_ms_per_request": round(bare["cpu_ms_per_request"], 3),
        "ambiguous": e2e["ambiguous"],
        "prefect_orchestration_seconds": round(e2e["orchestration_seconds"], 2),
    }
    if direct is not None:
        summary["without_prefect_seconds"] = round(direct["seconds"], 1)
        summary["prefect_overhead"] = round(1 - direct["seconds"] / e2e["seconds"], 3)
        summary["prefect_cpu_overhead"] = round(1 - direct["cpu_seconds"] / e2e["cpu_seconds"], 3)
    return summary


def _print(label: str, s: dict[str, Any]) -> None:
    lines = [
        f"added latency {label}:",
        f"  end to end (plan + render + send, Prefect flow): {s['end_to_end_per_second']:,} "
        f"messages/s ({s['end_to_end_seconds']}s, of which planning {s['plan_seconds']}s)",
        f"  bare client ceiling (same client, same concurrency): "
        f"{s['bare_client_per_second']:,} requests/s",
        f"  ratio end to end / bare: {s['ratio']:.0%}",
        f"  bare render rate (one thread): {s['render_per_second']:,} messages/s",
        f"  peak memory: {s['peak_rss_mb']} MB "
        f"(render workers {s['render_workers_peak_rss_mb']} MB)",
        f"  CPU per message: {s['cpu_ms_per_message']} ms in the delivering process, "
        f"{s['render_workers_cpu_ms_per_message']} ms in render workers; bare client "
        f"{s['bare_cpu_ms_per_request']} ms per request",
    ]
    lines.append(
        f"  Prefect's orchestration in the delivery phase (no batch task working): "
        f"{s['prefect_orchestration_seconds']}s of {s['end_to_end_seconds']}s "
        f"({s['prefect_orchestration_seconds'] / s['end_to_end_seconds']:.1%})"
    )
    if "load_average" in s:
        lines.append(f"  load average of the machine at the end: {s['load_average']}")
    if "prefect_overhead" in s:
        lines.append(
            f"  Prefect's overhead: {s['prefect_overhead']:.1%} of the run's time (same work "
            f"without Prefect: {s['without_prefect_seconds']}s), "
            f"{s['prefect_cpu_overhead']:.1%} of its CPU"
        )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
