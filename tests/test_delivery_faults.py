"""Fault injection: real delivery processes killed with SIGKILL mid-send, then run again.

A few thousand messages are planned; a delivery process (``python -m
tests.test_delivery_faults``: settings from the environment, the SendGrid sender, the real
dispatcher) sends them to the fake SendGrid, itself a separate process that records every
request and answers some with lost answers, dropped connections, 5xx, 429 and 400. The
process is killed at a random moment, again and again, and finally allowed to finish. Then,
as SendGrid's webhook would, the fake's accepted messages are posted back as ``processed``
events. On SQLite and PostgreSQL:

* every recipient got at most one message, and the outbox says ``sent`` exactly for the
  messages SendGrid accepted;
* nothing is lost: every other message is ``failed`` with SendGrid's reason or held as
  ``ambiguous`` — never accepted, never re-sent, and reported by reconciliation;
* once an operator releases the held ones (``release_ambiguous``, after checking SendGrid),
  every recipient SendGrid did not refuse has exactly one message;
* several delivery processes at once (one of them killed) never send a message twice.

``DELIVERY_FAULT_KILLS`` sets how many kills (default 8); raise it for a stress run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from ciclovita.delivery.event_effects import ingest_events
from ciclovita.delivery.outbox import CLAIM_LEASE, SENDING_LEASE
from ciclovita.settings import REPOSITORY_ROOT
from ciclovita_testing.fake_sendgrid import (
    FakeSendGridProcess,
    bad_request,
    drop_connection,
    rate_limit,
    server_error,
)
from tests.test_delivery_support import (
    API_KEY,
    AS_OF,
    DeliveryWorld,
    add_customers,
    processed_events,
)

MESSAGES = 3000
KILLS = int(os.environ.get("DELIVERY_FAULT_KILLS", "8"))
LEASES = CLAIM_LEASE + SENDING_LEASE + timedelta(minutes=1)
"""How far each new run's clock is ahead of the previous one (as if it ran that much later)."""

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------- the child process


def _child(run: int) -> None:
    """One delivery run, as a cycle does it: reconcile, then deliver everything due.

    Run ``n`` sees the clock ``n`` lease-lengths ahead, so the claims and sends of killed
    runs have expired, as they would have by the next scheduled cycle."""
    from ciclovita.delivery.dispatch import deliver, reconcile
    from ciclovita.delivery.render_pool import close_pool
    from ciclovita.runtime import Runtime
    from ciclovita.settings import load_settings

    logging.basicConfig(level=logging.ERROR)
    offset = LEASES * run

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    runtime = Runtime(load_settings())
    sender = runtime.sender()
    reconciled = reconcile(runtime.engine, sender, clock())
    print(json.dumps({"reconciled": reconciled.model_dump()}), flush=True)
    report = deliver(
        runtime.engine,
        runtime.builder,
        sender,
        as_of=AS_OF + timedelta(hours=run),
        batch_size=250,
        clock=clock,
    )
    print(json.dumps({"report": report.model_dump(mode="json")}), flush=True)
    sender.close()
    close_pool(runtime.builder)


def start_child(env: dict[str, str], run: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.test_delivery_faults", str(run)],
        cwd=REPOSITORY_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(child: subprocess.Popen[str], timeout: float = 120.0) -> dict[str, Any]:
    """Block until the child has reconciled (it is about to deliver)."""
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    line = child.stdout.readline()
    if not line:
        _, err = child.communicate(timeout=10)
        raise AssertionError(f"delivery process died before delivering:\n{err}")
    assert time.monotonic() < deadline
    return dict(json.loads(line))


def finish(child: subprocess.Popen[str], timeout: float = 300.0) -> dict[str, Any]:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1])["report"])


# ------------------------------------------------------------------------------- the checks


@pytest.fixture
def fake() -> Iterator[FakeSendGridProcess]:
    with FakeSendGridProcess(api_key=API_KEY, latency=0.002) as server:
        yield server


def child_environment(world: DeliveryWorld, fake: FakeSendGridProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(world.environment(fake.url, sendgrid_concurrency=16))
    env["PYTHONPATH"] = str(REPOSITORY_ROOT)
    return env


def inject_faults(
    fake: FakeSendGridProcess, uids: list[str], rng: random.Random
) -> dict[str, set[str]]:
    chosen = rng.sample(uids, 25)
    faults = {
        "lost_answer": set(chosen[:5]),
        "dropped": set(chosen[5:10]),
        "refused": set(chosen[10:15]),
        "server_error": set(chosen[15:25]),
    }
    for uid in faults["lost_answer"]:
        fake.script(drop_connection(after_accept=True), message_id=uid)
    for uid in faults["dropped"]:
        fake.script(drop_connection(), message_id=uid)
    for uid in faults["refused"]:
        fake.script(
            bad_request("Does not contain a valid address.", "personalizations.0.to.0.email"),
            message_id=uid,
        )
    for uid in faults["server_error"]:
        fake.script(server_error(), message_id=uid)
    fake.script(rate_limit(0.5), times=3)
    return faults


def settle_and_check(
    world: DeliveryWorld,
    engine: Engine,
    fake: FakeSendGridProcess,
    uids: list[str],
    faults: dict[str, set[str]],
    runs: int,
) -> dict[str, int]:
    """What SendGrid's webhook would report, then the exactly-once checks."""
    from ciclovita.delivery.dispatch import deliver, reconcile
    from ciclovita.delivery.outbox import release_ambiguous
    from ciclovita.delivery.senders.sendgrid import SendGridSender
    from ciclovita.runtime import Runtime

    fake.wait_idle()
    accepted = fake.accepted_messages()
    counts = fake.accepted_id_counts()
    assert fake.duplicate_ids() == {}, "a recipient got the same message twice"
    assert set(counts) <= set(uids)

    with engine.begin() as connection:
        ingest_events(connection, processed_events(accepted, time.time()), datetime.now(UTC))
    sender = SendGridSender(API_KEY, host=fake.url)
    later = datetime.now(UTC) + LEASES * (runs + 1)
    result = reconcile(engine, sender, later)
    sender.close()

    by_status: dict[str, set[str]] = {}
    for status in ("sent", "failed", "ambiguous", "planned", "claimed", "sending", "skipped"):
        by_status[status] = set(world.uids(status))
    assert by_status["planned"] == by_status["claimed"] == by_status["sending"] == set()
    assert by_status["sent"] == set(counts), "sent in the outbox = accepted by SendGrid"
    held = by_status["ambiguous"]
    assert held.isdisjoint(counts), "a held message was accepted: events should settle it"
    # refused by SendGrid: failed with its reason, or held if a kill came before the record
    assert by_status["failed"] <= faults["refused"] <= by_status["failed"] | held
    assert by_status["sent"] | by_status["failed"] | held == set(uids), "no message is lost"
    assert faults["dropped"] <= held
    assert result.ambiguous == len(held) and result.sending == 0

    # the operator's step: SendGrid's Email Activity shows the held messages never arrived
    # (none of them is among those the fake accepted); released, they go out exactly once.
    # A released message can meet its injected fault again (a kill had held it before its
    # request left), so the operator repeats the check for what is held after that run.
    runtime = Runtime(world.settings(fake.url))
    sender = SendGridSender(API_KEY, host=fake.url)
    released: list[str] = []
    try:
        for _ in range(3):
            fake.wait_idle()
            now_held = world.uids("ambiguous")
            if not now_held:
                break
            assert set(now_held).isdisjoint(fake.accepted_id_counts())
            with engine.begin() as connection:
                freed = release_ambiguous(connection, now_held, later)
            assert sorted(freed) == sorted(now_held)
            released += freed
            deliver(engine, runtime.builder, sender, as_of=later)
    finally:
        sender.close()
        runtime.close()
    assert held <= set(released)
    fake.wait_idle()
    failed = set(world.uids("failed"))
    assert failed <= faults["refused"], "only SendGrid's refusals are failures"
    counts = fake.accepted_id_counts()
    wrong = {uid: counts[uid] for uid in set(uids) - failed if counts[uid] != 1}
    kinds = {uid: [k for k, chosen in faults.items() if uid in chosen] for uid in wrong}
    states = {uid: s for s in ("planned", "ambiguous", "sending") for uid in world.uids(s)}
    assert not wrong, f"not exactly one message: {wrong}, faults {kinds}, states {states}"
    assert world.uids("ambiguous") == []
    return {
        "sent": len(by_status["sent"]),
        "held": len(held),
        "released": len(released),
        "requests": len(fake.requests()),
    }


def test_killed_deliveries_never_send_twice_and_lose_nothing(
    engine: Engine, database_url: str, tmp_path: Path, fake: FakeSendGridProcess
) -> None:
    rng = random.Random(os.environ.get("DELIVERY_FAULT_SEED", "ciclovita"))
    world = DeliveryWorld.create(engine, database_url, tmp_path)
    add_customers(engine, MESSAGES)
    uids = world.plan()
    assert len(uids) == MESSAGES
    faults = inject_faults(fake, uids, rng)
    env = child_environment(world, fake)

    kills = 0
    for run in range(KILLS):
        child = start_child(env, run)
        wait_ready(child)
        time.sleep(rng.uniform(0.0, 1.2))
        if child.poll() is not None:
            break  # it finished everything before the kill
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        kills += 1
    final = finish(start_child(env, KILLS))
    assert final["stopped"] is None

    totals = settle_and_check(world, engine, fake, uids, faults, KILLS)
    print(f"\n{kills} kills: {totals}, final run {final['sent']} sent")
    assert kills >= min(KILLS, 3)
    # each kill leaves at most one window of rows in doubt (plus the injected drops)
    assert totals["held"] <= kills * 48 + len(faults["dropped"]) + len(faults["lost_answer"])


def test_concurrent_deliveries_one_killed_never_send_twice(
    engine: Engine, database_url: str, tmp_path: Path, fake: FakeSendGridProcess
) -> None:
    rng = random.Random(7)
    world = DeliveryWorld.create(engine, database_url, tmp_path)
    add_customers(engine, 2000)
    uids = world.plan()
    faults = inject_faults(fake, uids, rng)
    env = child_environment(world, fake)

    children = [start_child(env, 1) for _ in range(3)]
    for child in children:
        wait_ready(child)
    time.sleep(rng.uniform(0.3, 1.0))
    children[0].send_signal(signal.SIGKILL)
    children[0].wait(timeout=30)
    reports = [finish(child) for child in children[1:]]
    assert all(r["sent"] > 0 for r in reports), "both survivors took a share"
    finish(start_child(env, 2))

    settle_and_check(world, engine, fake, uids, faults, 2)


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_render_workers_end_with_a_killed_delivery(
    engine: Engine, database_url: str, tmp_path: Path, fake: FakeSendGridProcess
) -> None:
    world = DeliveryWorld.create(engine, database_url, tmp_path)
    add_customers(engine, 1500)
    world.plan()
    fake.set_latency(0.02)
    env = child_environment(world, fake)
    env["CICLOVITA_RENDER_PROCESSES"] = "2"
    child = start_child(env, 0)
    wait_ready(child)
    deadline = time.monotonic() + 60
    while not (workers := _children_of(child.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers, "the delivery started no render worker"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a render worker outlived its delivery"
    assert fake.duplicate_ids() == {}


if __name__ == "__main__":
    _child(int(sys.argv[1]))
