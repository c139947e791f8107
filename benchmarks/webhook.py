"""Benchmark: SendGrid event webhook ingestion, and exactly-once storage across a crash.

Runs ``ciclovita serve-web`` as a real subprocess on a scratch database (a SQLite file and/or
a throw-away PostgreSQL database), then:

1. **Throughput.** Posts signed batches of 100 and of 1,000 events (realistic SendGrid event
   objects carrying our message ids, matched to outbox rows, so statuses are updated too)
   from several concurrent clients on loopback, and reports the sustained events/s.
2. **Crash and retry.** Posts batches of 1,000 and kills the server with SIGKILL while
   requests are in flight, restarts it, and replays what SendGrid would retry — every batch
   not acknowledged with a 2xx — plus every acknowledged batch once more (SendGrid also sends
   duplicates). It then checks that each acknowledged batch was fully stored before the kill,
   that each batch in flight was stored all or nothing, and that every event is stored
   exactly once.

Usage::

    .venv/bin/python benchmarks/webhook.py                 # SQLite, and PostgreSQL if reachable
    .venv/bin/python benchmarks/webhook.py --database sqlite --events 20000 --clients 4

PostgreSQL is reached through ``CICLOVITA_TEST_POSTGRES_URL`` (the tests' admin URL,
default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, create_engine, func, insert, select, text

from ciclovita.db.engine import make_engine
from ciclovita.db.migrate import upgrade
from ciclovita.db.models import Customer, DeliveryEvent, Message, table_of
from ciclovita.delivery.senders.sendgrid import MESSAGE_ID_ARG
from ciclovita.web.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(ROOT / ".venv" / "bin" / "ciclovita")]
POSTGRES_ADMIN_URL = os.environ.get(
    "CICLOVITA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
KINDS = ("processed", "delivered", "open", "click")
MESSAGES = 10_000


# ------------------------------------------------------------------------------ pieces


class Signer:
    """Signs bodies like SendGrid's Signed Event Webhook (ECDSA P-256, SHA-256)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        signature = self.private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        }


@dataclass
class Batch:
    number: int
    body: bytes
    ids: list[str]


def make_batches(uids: Sequence[str], size: int, count: int, tag: str) -> list[Batch]:
    """``count`` batches of ``size`` realistic events, each event unique (``sg_event_id``)."""
    base = int(time.time()) - 3_600
    batches = []
    n = 0
    for number in range(count):
        events = []
        for _ in range(size):
            uid = uids[n % len(uids)]
            kind = KINDS[(n // len(uids)) % len(KINDS)]
            event: dict[str, Any] = {
                "email": f"customer{n % len(uids)}@example.com",
                "timestamp": base + n // len(uids),
                "event": kind,
                "sg_event_id": f"{tag}-{n:08d}-{uuid.uuid4().hex[:12]}",
                "sg_message_id": f"{uid[:22]}.filterdrecv-5645d9c87f-6r5m8-1-{n:x}.0",
                "smtp-id": f"<{uid[:22]}@ismtpd0001p1lon1.sendgrid.net>",
                "category": ["thank_you", "stage:active"],
                MESSAGE_ID_ARG: uid,
                "ciclovita_campaign": "thank_you",
            }
            if kind in ("open", "click"):
                event["useragent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
                event["ip"] = "203.0.113.7"
                event["sg_machine_open"] = False
            if kind == "click":
                event["url"] = "https://shop.example.com/p/42?utm_source=ciclovita"
            if kind == "delivered":
                event["response"] = "250 2.0.0 OK  1700000000 x12si123456"
            events.append(event)
            n += 1
        batches.append(
            Batch(number, json.dumps(events).encode(), [e["sg_event_id"] for e in events])
        )
    return batches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``ciclovita serve-web`` in a subprocess."""

    def __init__(self, database_url: str, public_key: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CICLOVITA_DATABASE_URL": database_url,
            "CICLOVITA_SENDGRID_WEBHOOK_PUBLIC_KEY": public_key,
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*CLI, "serve-web", "--port", str(self.port), "--log-level", "warning"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve-web exited with {self.process.returncode}: {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.1)
        raise RuntimeError("serve-web did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class PostResult:
    batch: int
    status: int | None  # None: no answer
    seconds: float
    error: str | None = None  # "lost" (sent, no answer) or "refused" (server down)


def post_one(client: httpx.Client, signer: Signer, batch: Batch) -> PostResult:
    started = time.perf_counter()
    try:
        response = client.post(
            "/webhooks/sendgrid", content=batch.body, headers=signer.headers(batch.body)
        )
    except httpx.ConnectError:
        return PostResult(batch.number, None, time.perf_counter() - started, "refused")
    except httpx.HTTPError:
        return PostResult(batch.number, None, time.perf_counter() - started, "lost")
    return PostResult(batch.number, response.status_code, time.perf_counter() - started)


def post_all(
    url: str,
    signer: Signer,
    batches: Sequence[Batch],
    clients: int,
    on_result: Any = None,
) -> list[PostResult]:
    """Post every batch from ``clients`` concurrent keep-alive connections."""
    local = threading.local()

    def post(batch: Batch) -> PostResult:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
        result = post_one(local.client, signer, batch)
        if result.status is None:  # a fresh connection for the next request
            local.client = httpx.Client(base_url=url, timeout=120)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(post, batches))


# ------------------------------------------------------------------------------ databases


@contextlib.contextmanager
def scratch_database(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
        return
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"ciclovita_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def postgres_reachable() -> bool:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    return True


def prepare(engine: Engine) -> list[str]:
    """Migrate, and write one customer and ``MESSAGES`` sent outbox rows to match events to."""
    upgrade(engine)
    now = datetime.now(UTC)
    uids = [uuid.uuid4().hex for _ in range(MESSAGES)]
    with engine.begin() as connection:
        customer = connection.execute(
            insert(table_of(Customer))
            .values(external_id="bench", email="bench@example.com")
            .returning(table_of(Customer).c.id)
        ).scalar_one()
        connection.execute(
            insert(table_of(Message)),
            [
                {
                    "uid": uid,
                    "campaign": "thank_you",
                    "customer_id": customer,
                    "occurrence_key": uid,
                    "kind": "marketing",
                    "status": "sent",
                    "due_at": now,
                    "planned_at": now,
                    "sent_at": now,
                    "attempts": 1,
                    "priority": 0,
                    "details": {},
                }
                for uid in uids
            ],
        )
    return uids


def stored_ids(engine: Engine, ids: Sequence[str] | None = None) -> set[str]:
    with engine.connect() as connection:
        if ids is None:
            return set(connection.execute(select(DeliveryEvent.sg_event_id)).scalars())
        found: set[str] = set()
        for start in range(0, len(ids), 5_000):
            part = list(ids[start : start + 5_000])
            found.update(
                connection.execute(
                    select(DeliveryEvent.sg_event_id).where(DeliveryEvent.sg_event_id.in_(part))
                ).scalars()
            )
        return found


def count_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(DeliveryEvent)).scalar_one())


# ------------------------------------------------------------------------------ runs


@dataclass
class Throughput:
    database: str
    batch_size: int
    clients: int
    requests: int
    events: int
    seconds: float
    p50_ms: float
    p95_ms: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class CrashReport:
    database: str
    batches: int
    batch_size: int
    acknowledged_before_kill: int
    lost_in_flight: int
    refused: int
    unanswered_but_committed: int
    restart_seconds: float
    replayed_requests: int
    expected_events: int
    stored_events: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.expected_events == self.stored_events


def throughput(
    database: str,
    server: Server,
    signer: Signer,
    uids: Sequence[str],
    size: int,
    events: int,
    clients: int,
) -> Throughput:
    batches = make_batches(uids, size, max(1, events // size), f"t{size}")
    post_all(server.url, signer, make_batches(uids, size, clients, f"warm{size}"), clients)
    started = time.perf_counter()
    results = post_all(server.url, signer, batches, clients)
    seconds = time.perf_counter() - started
    bad = [r for r in results if r.status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, first: {bad[0]}")
    latencies = sorted(r.seconds * 1000 for r in results)
    return Throughput(
        database,
        size,
        clients,
        len(batches),
        len(batches) * size,
        seconds,
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
    )


def crash_and_replay(
    database: str,
    server: Server,
    signer: Signer,
    engine: Engine,
    uids: Sequence[str],
    batches_count: int,
    clients: int,
    kill_after: int,
) -> CrashReport:
    size = 1_000
    batches = make_batches(uids, size, batches_count, "crash")
    before = count_events(engine)
    acknowledged = 0
    lock = threading.Lock()
    enough = threading.Event()

    def count(result: PostResult) -> None:
        nonlocal acknowledged
        with lock:
            acknowledged += result.status == 200
            if acknowledged >= kill_after:
                enough.set()

    def kill_when_enough() -> None:
        enough.wait()
        server.kill()  # SIGKILL while the other clients' requests are in flight

    killer = threading.Thread(target=kill_when_enough)
    killer.start()
    results = post_all(server.url, signer, batches, clients, count)
    enough.set()
    killer.join()
    acked = [r.batch for r in results if r.status == 200]
    lost = [r.batch for r in results if r.error == "lost"]
    refused = [r.batch for r in results if r.error == "refused"]
    problems = [
        f"batch {r.batch} answered {r.status}" for r in results if r.status not in (200, None)
    ]

    # after the kill, before any replay: acknowledged batches are all there, the others all
    # or nothing (one transaction per request)
    committed_unacked = 0
    for batch in batches:
        present = len(stored_ids(engine, batch.ids))
        if batch.number in acked and present != size:
            problems.append(f"acknowledged batch {batch.number}: only {present} of {size} stored")
        elif batch.number not in acked:
            if present not in (0, size):
                problems.append(f"batch {batch.number} half stored: {present} of {size}")
            committed_unacked += present == size

    restart = server.start()
    # SendGrid's retry: everything not acknowledged, and duplicates of what was
    retry = [b for b in batches if b.number not in acked] + [
        b for b in batches if b.number in acked
    ]
    replayed = post_all(server.url, signer, retry, clients)
    problems += [
        f"replay of batch {r.batch} answered {r.status}" for r in replayed if r.status != 200
    ]
    expected = {i for b in batches for i in b.ids}
    stored = stored_ids(engine, sorted(expected))
    total = count_events(engine) - before
    if stored != expected:
        problems.append(f"{len(expected - stored)} events missing")
    if total != len(expected):
        problems.append(f"{total} rows stored for {len(expected)} distinct events")
    return CrashReport(
        database,
        len(batches),
        size,
        len(acked),
        len(lost),
        len(refused),
        committed_unacked,
        restart,
        len(retry),
        len(expected),
        total,
        problems,
    )


def run(database: str, args: argparse.Namespace) -> tuple[list[Throughput], CrashReport]:
    signer = Signer()
    with (
        tempfile.TemporaryDirectory(prefix="ciclovita-bench-") as scratch,
        scratch_database(database, Path(scratch)) as url,
    ):
        engine = make_engine(url)
        uids = prepare(engine)
        server = Server(url, signer.public_key, Path(scratch) / "serve-web.log")
        try:
            startup = server.start()
            print(f"[{database}] serve-web ready in {startup:.1f} s", flush=True)
            rates = []
            for size in (100, 1_000):
                result = throughput(database, server, signer, uids, size, args.events, args.clients)
                print(
                    f"[{database}] batch {size:>5}: {result.rate:>8,.0f} events/s "
                    f"({result.events:,} events in {result.seconds:.1f} s)",
                    flush=True,
                )
                rates.append(result)
            crash = crash_and_replay(
                database,
                server,
                signer,
                engine,
                uids,
                args.crash_batches,
                args.clients,
                args.kill_after,
            )
        finally:
            server.stop()
            engine.dispose()
    return rates, crash


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--events", type=int, default=30_000, help="events per batch size")
    parser.add_argument("--clients", type=int, default=4, help="concurrent webhook posters")
    parser.add_argument("--crash-batches", type=int, default=40, help="batches of 1,000")
    parser.add_argument("--kill-after", type=int, default=12, help="acks before the SIGKILL")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if "postgresql" in databases and not postgres_reachable():
        if args.database == "postgresql":
            print(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}", file=sys.stderr)
            return 2
        print(f"(PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: SQLite only)")
        databases = ["sqlite"]
    results = [run(database, args) for database in databases]

    print()
    print(f"Sustained ingestion on loopback, {args.clients} concurrent clients, signed requests:")
    print(
        f"{'database':<11}{'batch':>7}{'requests':>10}{'events':>9}{'seconds':>9}"
        f"{'events/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
    )
    for rates, _ in results:
        for r in rates:
            print(
                f"{r.database:<11}{r.batch_size:>7}{r.requests:>10}{r.events:>9,}"
                f"{r.seconds:>9.2f}{r.rate:>10,.0f}{r.p50_ms:>9.0f}{r.p95_ms:>9.0f}"
            )
    print()
    print("Crash (SIGKILL mid-batch) and SendGrid's retry replayed:")
    failed = False
    for _, c in results:
        verdict = (
            "every event stored exactly once" if c.ok else "FAILED: " + "; ".join(c.problems[:5])
        )
        failed |= not c.ok
        print(
            f"{c.database:<11}{c.batches} batches of {c.batch_size:,}: "
            f"{c.acknowledged_before_kill} acknowledged before the kill, "
            f"{c.lost_in_flight} in flight at the kill "
            f"({c.unanswered_but_committed} of them committed, answer lost), {c.refused} "
            f"refused while down; restart "
            f"{c.restart_seconds:.1f} s; {c.replayed_requests} requests replayed; "
            f"{c.stored_events:,} stored for {c.expected_events:,} events: {verdict}"
        )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "throughput": [
                            r.__dict__ | {"events_per_second": round(r.rate)} for r in rates
                        ],
                        "crash": c.__dict__ | {"ok": c.ok},
                    }
                    for rates, c in results
                ],
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
