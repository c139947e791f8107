"""Operations in Prefect, for real: deployments, workers, serve, artifacts, the UI, alerts, Dask.

Everything runs against the session's real Prefect server (``prefect_server``):

* ``prefect.yaml`` and ``flows/deployments.py`` describe the same schedules — checked on the
  file, then by registering both (``prefect deploy --all`` and ``ciclovita deploy``) and reading
  the deployments back;
* a deployment run by a ``process`` worker (``prefect worker start --run-once``), its run and
  task names and its artifacts read back through the Prefect client, then the UI's flow-run and
  artifact pages opened in headless Chromium (screenshots in ``test-artifacts/prefect-ui/``);
* ``ciclovita serve`` picking up runs, and the stage table comparing with the previous run;
* an automation notifying a webhook when a run fails or is late;
* a ``ciclovita run`` killed mid-send, run again: nothing sent twice (the SendGrid key comes
  from a Prefect Secret block and appears in no log);
* the delivery batches on a Dask ``LocalCluster`` (two worker processes) against PostgreSQL.
"""

from __future__ import annotations

import contextlib
import email
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from uuid import UUID

import pytest
import yaml
from sqlalchemy import Engine, func, select, update

from ciclovita.db.engine import make_engine
from ciclovita.db.models import Message
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.settings import REPOSITORY_ROOT, Settings
from ciclovita_testing.fake_sendgrid import FakeSendGridProcess
from tests.support.chromium import headless_chromium

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

AS_OF = datetime(2026, 6, 16, 9, 0, tzinfo=UTC)  # 11:00 in Rome: inside every send window
SCREENSHOTS = REPOSITORY_ROOT / "test-artifacts" / "prefect-ui"
IN_CI = os.environ.get("CI", "").lower() == "true"
CYCLE_KEYS = {
    "cycle-summary",
    "lifecycle-stages",
    "segments",
    "campaigns",
    "clv-model",
    "stage-funnel",
    "campaign-versions",
}

pytestmark = [pytest.mark.prefect]


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _env(database_url: str, outbox: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment: this one's (PREFECT_API_URL included) and our settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_DATABASE_URL=database_url,
        CICLOVITA_OUTBOX_DIR=str(outbox),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(REPOSITORY_ROOT),
        COLUMNS="200",
    )
    env.update(extra)
    return env


def _ciclovita(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"ciclovita {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "ciclovita.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def use_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Point this process's settings at a database (as ``app_settings`` does); the outbox."""
    from ciclovita.runtime import reset_runtimes

    def use(url: str, **extra: str) -> Path:
        for name in list(os.environ):
            if name.startswith("CICLOVITA_") and name != "CICLOVITA_TEST_POSTGRES_URL":
                monkeypatch.delenv(name)
        outbox = tmp_path / "outbox"
        monkeypatch.setenv("CICLOVITA_DATABASE_URL", url)
        monkeypatch.setenv("CICLOVITA_OUTBOX_DIR", str(outbox))
        monkeypatch.setenv("CICLOVITA_SENDER", "file")
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        reset_runtimes()
        return outbox

    yield use
    reset_runtimes()


def _client() -> Any:
    from prefect import get_client

    return get_client(sync_client=True)


def _flow_run_filter(run_id: UUID) -> Any:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))


def _artifacts(run_id: UUID) -> dict[str, Any]:
    with _client() as client:
        return {a.key: a for a in client.read_artifacts(flow_run_filter=_flow_run_filter(run_id))}


def _task_run_names(run_id: UUID) -> list[str]:
    with _client() as client:
        return sorted(
            t.name for t in client.read_task_runs(flow_run_filter=_flow_run_filter(run_id))
        )


def _log_text(run_id: UUID) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with _client() as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def _wait_for_final_state(run_id: UUID, timeout: float = 240) -> Any:
    def final() -> Any:
        with _client() as client:
            run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return _wait(final, timeout, f"flow run {run_id} to finish", every=1.0)


def _start_run(deployment: str, parameters: dict[str, Any]) -> UUID:
    from prefect.deployments import run_deployment

    run = cast(
        "FlowRun", run_deployment(deployment, parameters=parameters, timeout=0, as_subflow=False)
    )
    return UUID(str(run.id))


# ------------------------------------------------------------------------- schedules


def _yaml_deployments() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((REPOSITORY_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {f"{d['flow_name']}/{d['name']}": d for d in document["deployments"]}


def test_prefect_yaml_states_the_deployments_of_flows_deployments() -> None:
    from flows.deployments import DEPLOYMENTS, WORK_POOL

    in_yaml = _yaml_deployments()
    assert set(in_yaml) == {spec.full_name for spec in DEPLOYMENTS}
    timezone = Settings.model_fields["timezone"].default
    for spec in DEPLOYMENTS:
        entry = in_yaml[spec.full_name]
        assert entry["entrypoint"] == spec.entrypoint
        assert entry["description"] == spec.description
        assert entry["concurrency_limit"] == spec.concurrency_limit
        assert entry["work_pool"]["name"] == WORK_POOL
        assert entry["tags"] == ["ciclovita"]
        if spec.cron is None:
            assert entry["schedules"] == []
            assert entry["parameters"] == spec.parameters
        else:
            (schedule,) = entry["schedules"]
            assert schedule == {
                "cron": spec.cron,
                "timezone": timezone,
                "slug": spec.slug,
                "parameters": spec.parameters,
            }
        assert callable(spec.load_flow())
        assert spec.load_flow().name == spec.flow_name
    crons = {spec.flow_name: spec.cron for spec in DEPLOYMENTS}
    assert crons == {
        "recompute-segments": "0 2 * * *",
        "run-campaigns": "30 * * * *",
        "reconcile-events": "*/5 * * * *",
        "lifecycle-cycle": None,
    }


def _registered_schedules() -> dict[str, Any]:
    from flows.deployments import DEPLOYMENTS

    out = {}
    with _client() as client:
        for spec in DEPLOYMENTS:
            deployment = client.read_deployment_by_name(spec.full_name)
            out[spec.full_name] = (
                sorted(
                    (s.schedule.cron, s.schedule.timezone, json.dumps(s.parameters, sort_keys=True))
                    for s in deployment.schedules
                ),
                deployment.work_pool_name,
                deployment.global_concurrency_limit.limit
                if deployment.global_concurrency_limit
                else None,
                deployment.tags,
            )
    return out


# -------------------------------------------------------- deploy, worker, artifacts, UI


@pytest.fixture(scope="module")
def prefect_ui(prefect_server: str) -> Iterator[str]:
    """Prefect's own UI app (the server's ``create_ui_app``) for the session's API; its URL."""
    port = _free_port()
    code = (
        "import sys, uvicorn\n"
        "from prefect.server.api.server import create_ui_app\n"
        "uvicorn.run(create_ui_app(ephemeral=False), host='127.0.0.1', port=int(sys.argv[1]),"
        " log_level='warning')\n"
    )
    env = dict(os.environ, PREFECT_UI_API_URL=prefect_server, PREFECT_UI_ENABLED="true")
    process = subprocess.Popen([sys.executable, "-c", code, str(port)], env=env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            import httpx

            return httpx.get(f"{url}/ui-settings", timeout=2).status_code == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    try:
        _wait(answers, 120, "the Prefect UI to start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium (function scope: Playwright's event loop must not outlive the test,
    or Prefect's sync/async dispatch would see it)."""
    with headless_chromium() as browser:
        yield browser


def _git_head() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    result = subprocess.run(
        [git, "-C", str(REPOSITORY_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def worker_run(
    prefect_server: str, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Both registrations (``prefect deploy --all``, then ``ciclovita deploy``), then a run of
    ``lifecycle-cycle/on-demand`` executed by a process worker, on a SQLite database."""
    directory = tmp_path_factory.mktemp("worker")
    path = directory / "ciclovita.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    generate_demo_data(engine, customers=300, seed=11, as_of=AS_OF)
    env = _env(url, directory / "outbox", PREFECT_LOGGING_LEVEL="INFO")

    # prefect.yaml, registered by Prefect's own CLI ...
    subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", "ciclovita", "--type", "process"],
        env=env,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    from_yaml = _registered_schedules()
    # ... and flows/deployments.py, by `ciclovita deploy`
    deploy_output = _ciclovita("deploy", env=env, cwd=directory)
    from_python = _registered_schedules()

    run_id = _start_run("lifecycle-cycle/on-demand", {"as_of": AS_OF.isoformat(), "batch_size": 25})
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "ciclovita", "--run-once"],
        env=env,
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run = _wait_for_final_state(run_id)
        # the flow run's process sends its last logs after its final state: a --run-once
        # worker ends once that process has, and stopping it sooner loses those logs
        worker_log = worker.communicate(timeout=120)[0]
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker_log = worker.communicate(timeout=60)[0]
    assert run.state.is_completed(), f"{run.state}\n{worker_log}\n{_log_text(run_id)}"
    yield {
        "engine": engine,
        "from_yaml": from_yaml,
        "from_python": from_python,
        "deploy_output": deploy_output,
        "run_id": run_id,
        "run": run,
        "artifacts": _artifacts(run_id),
    }
    engine.dispose()


def test_prefect_deploy_and_ciclovita_deploy_register_the_same_schedules(
    worker_run: dict[str, Any],
) -> None:
    out = worker_run["deploy_output"]
    assert "recompute-segments/nightly" in out and "0 2 * * * (Europe/Rome)" in out
    assert "prefect worker start --pool ciclovita" in out
    assert worker_run["from_python"] == worker_run["from_yaml"]
    assert worker_run["from_python"]["run-campaigns/hourly"] == (
        [("30 * * * *", "Europe/Rome", '{"batch_size": 500, "send": true}')],
        "ciclovita",
        1,
        ["ciclovita"],
    )
    assert worker_run["from_python"]["recompute-segments/nightly"][0] == [
        ("0 2 * * *", "Europe/Rome", "{}")
    ]
    assert worker_run["from_python"]["lifecycle-cycle/on-demand"][0] == []
    with _client() as client:
        assert client.read_work_pool("ciclovita").type == "process"


def test_a_worker_run_is_named_for_what_it_did_and_publishes_its_artifacts(
    worker_run: dict[str, Any],
) -> None:
    run, run_id, engine = worker_run["run"], worker_run["run_id"], worker_run["engine"]
    assert run.name == "cycle as of 2026-06-16 09:00 UTC"
    tasks = _task_run_names(run_id)
    assert "recompute scores and stages as of 2026-06-16 09:00" in tasks
    assert {"plan thank_you", "plan win_back", "segment promoters"} <= set(tasks)
    batches = [t for t in tasks if t.startswith("deliver batch")]
    assert "deliver batch 1 (messages 1–25)" in batches, tasks
    assert all(re.fullmatch(r"deliver batch \d+ \(messages \d+–\d+\)", name) for name in batches)

    artifacts = worker_run["artifacts"]
    assert set(artifacts) >= CYCLE_KEYS, sorted(artifacts)
    rows = _table(artifacts["lifecycle-stages"])
    assert [row["stage"] for row in rows] == [
        "prospect",
        "engaged",
        "new_customer",
        "active",
        "loyal",
        "advocate",
        "at_risk",
        "lapsed",
    ]
    assert sum(row["customers"] for row in rows) == 300
    assert {row["change"] for row in rows} == {"first run"}
    by_name = {row["campaign"]: row for row in _table(artifacts["campaigns"])}
    with engine.connect() as connection:
        sent = dict(
            connection.execute(
                select(Message.campaign, func.count())
                .where(Message.status == "sent")
                .group_by(Message.campaign)
            ).all()
        )
    assert sent and all(by_name[name]["sent"] == n for name, n in sent.items())
    for guard in ("held: send window", "skipped: no_consent", "skipped: holdout"):
        assert guard in by_name["win_back"]
    assert {"planned", "failed", "ambiguous", "candidates", "skipped: frequency_cap"} <= set(
        by_name["thank_you"]
    )
    clv = artifacts["clv-model"].data
    assert "BG/NBD" in clv and "Gamma-Gamma" in clv and "| r | α | a | b |" in clv
    assert "data:image/png;base64," in artifacts["stage-funnel"].data
    versions = artifacts["campaign-versions"].data
    assert "thank_you.yaml" in versions and "thank_you/" in versions
    head = _git_head()
    if head:
        assert head in versions
    assert "## Campaigns" in artifacts["cycle-summary"].data


def _table(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return rows


def test_the_ui_shows_the_run_and_its_artifacts(
    worker_run: dict[str, Any], prefect_ui: str, chromium: Any
) -> None:
    run, run_id, artifacts = worker_run["run"], worker_run["run_id"], worker_run["artifacts"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})

    def shot(name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    try:
        page.goto(f"{prefect_ui}/v2/runs")
        page.wait_for_selector(f"text={run.name}", timeout=60_000)
        shot("1-flow-runs")

        # the log list only renders the rows in view: a tall page shows the whole run's log
        page.set_viewport_size({"width": 1400, "height": 8000})
        page.goto(f"{prefect_ui}/v2/runs/flow-run/{run_id}?tab=Logs")
        page.wait_for_selector(f"text={run.name}", timeout=60_000)
        page.wait_for_selector("text=300 customers scored", timeout=60_000)
        shot("2-flow-run-logs")
        page.set_viewport_size({"width": 1400, "height": 1000})

        page.goto(f"{prefect_ui}/v2/runs/flow-run/{run_id}?tab=TaskRuns")
        page.wait_for_selector("text=deliver batch 1 (messages 1–25)", timeout=60_000)
        page.wait_for_selector("text=plan thank_you", timeout=30_000)
        shot("3-flow-run-task-runs")

        page.goto(f"{prefect_ui}/v2/runs/flow-run/{run_id}?tab=Artifacts")
        for key in ("lifecycle-stages", "campaigns", "stage-funnel", "clv-model"):
            page.wait_for_selector(f"text={key}", timeout=60_000)
        shot("4-flow-run-artifacts")

        page.goto(f"{prefect_ui}/v2/artifacts/artifact/{artifacts['lifecycle-stages'].id}")
        page.wait_for_selector("text=new_customer", timeout=60_000)
        page.wait_for_selector("text=first run", timeout=30_000)
        shot("5-lifecycle-stages")

        page.goto(f"{prefect_ui}/v2/artifacts/artifact/{artifacts['campaigns'].id}")
        page.wait_for_selector("text=skipped: no_consent", timeout=60_000)
        page.wait_for_selector("text=win_back", timeout=30_000)
        shot("6-campaigns")

        page.goto(f"{prefect_ui}/v2/artifacts/artifact/{artifacts['stage-funnel'].id}")
        page.wait_for_selector("text=Stage funnel over time", timeout=60_000)
        image = page.wait_for_selector("img[src^='data:image/png']", timeout=30_000)
        assert image is not None
        _wait(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), 30, "the chart")
        assert image.evaluate("i => i.naturalWidth") == 900  # the data-URI PNG is displayed
        shot("7-stage-funnel")

        page.goto(f"{prefect_ui}/v2/artifacts/artifact/{artifacts['clv-model'].id}")
        page.wait_for_selector("text=Gamma-Gamma", timeout=60_000)
        shot("8-clv-model")

        page.goto(f"{prefect_ui}/v2/artifacts/artifact/{artifacts['campaign-versions'].id}")
        page.wait_for_selector("text=Campaign files and templates used", timeout=60_000)
        shot("9-campaign-versions")

        page.goto(f"{prefect_ui}/v2/artifacts")
        page.wait_for_selector("text=campaign-versions", timeout=60_000)
        shot("10-artifacts")
    finally:
        page.close()


# ----------------------------------------------------------------------------- serve


def test_serve_runs_deployments_and_stages_compare_with_the_previous_run(
    sqlite_url: str, tmp_path: Path, prefect_server: str, use_database: Callable[..., Path]
) -> None:
    from flows.recompute_segments import recompute_segments

    engine = make_engine(sqlite_url)
    generate_demo_data(engine, customers=200, seed=5, as_of=AS_OF)
    use_database(sqlite_url)
    first = recompute_segments(as_of=AS_OF - timedelta(days=45))  # in-process: the earlier run

    env = _env(sqlite_url, tmp_path / "outbox", PREFECT_RUNNER_POLL_FREQUENCY="2")
    started = datetime.now(UTC)
    server = subprocess.Popen(
        [sys.executable, "-m", "ciclovita", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def served() -> bool:
            from prefect.exceptions import ObjectNotFound

            try:
                with _client() as client:
                    deployment = client.read_deployment_by_name("reconcile-events/every-5-minutes")
            except ObjectNotFound:
                return False
            return deployment.updated is not None and deployment.updated >= started

        _wait(served, 120, "ciclovita serve to register its deployments", every=1.0)
        reconcile = _start_run("reconcile-events/every-5-minutes", {"as_of": AS_OF.isoformat()})
        recompute = _start_run("recompute-segments/nightly", {"as_of": AS_OF.isoformat()})
        runs = {
            name: _wait_for_final_state(rid)
            for name, rid in (("reconcile", reconcile), ("recompute", recompute))
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output = server.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    for name, run in runs.items():
        assert run.state.is_completed(), f"{name}: {run.state}\n{output}"
    assert runs["reconcile"].name == "reconcile as of 2026-06-16 09:00 UTC"
    assert runs["recompute"].name == "recompute stages and segments as of 2026-06-16 09:00 UTC"
    assert "reconciliation" in _artifacts(reconcile)

    artifacts = _artifacts(recompute)
    assert {"lifecycle-stages", "segments", "clv-model", "stage-funnel"} <= set(artifacts)
    rows = artifacts["lifecycle-stages"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    before = first["stages"]
    for row in rows:
        previous = before.get(row["stage"], 0)
        assert row["previous run"] == previous
        change = row["customers"] - previous
        assert row["change"] == (
            f"+{change}" if change > 0 else "±0" if change == 0 else f"−{-change}"
        )
    assert any(row["change"] != "±0" for row in rows)  # 45 days later, customers moved
    assert f"run #{first['cycle_id']}" in artifacts["lifecycle-stages"].description
    segments = artifacts["segments"].data
    segments = json.loads(segments) if isinstance(segments, str) else segments
    assert {"segment", "size", "previous size", "entered", "exited"} <= set(segments[0])
    engine.dispose()


# ----------------------------------------------------------------------------- alerts


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_failed_and_late_runs_notify_through_the_automation(
    sqlite_url: str, tmp_path: Path, prefect_server: str, use_database: Callable[..., Path]
) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.states import Late

    from flows.alerts import AUTOMATION_NAME, ensure_alert_automation
    from flows.lifecycle_cycle import lifecycle_cycle

    _Hook.received = []
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        CustomWebhookNotificationBlock(
            name="ops",
            url=f"http://127.0.0.1:{hook.server_address[1]}/alert",
            json_data={"subject": "{{subject}}", "text": "{{body}}"},
        ).save("ciclovita-test-ops", overwrite=True)
        automation_id = ensure_alert_automation("custom-webhook/ciclovita-test-ops")
        assert (
            ensure_alert_automation("custom-webhook/ciclovita-test-ops") == automation_id
        )  # updated
        from prefect.automations import Automation, EventTrigger

        automation = cast(Automation, Automation.read(id=automation_id))
        assert automation.name == AUTOMATION_NAME
        assert isinstance(automation.trigger, EventTrigger)
        assert automation.trigger.expect == {
            "prefect.flow-run.Failed",
            "prefect.flow-run.Crashed",
            "prefect.flow-run.TimedOut",
            "prefect.flow-run.Late",
        }

        # a marketer merged a broken campaign file: the scheduled cycle fails, ops hear of it
        campaigns = tmp_path / "campaigns"
        shutil.copytree(REPOSITORY_ROOT / "campaigns", campaigns)
        (campaigns / "thank_you.yaml").write_text("trigger: [unclosed\n", encoding="utf-8")
        use_database(sqlite_url, CICLOVITA_CAMPAIGNS_DIR=str(campaigns))
        state = lifecycle_cycle(as_of=AS_OF, return_state=True)
        assert state.is_failed()
        failed = _wait(
            lambda: [m for m in _Hook.received if "Failed" in m["subject"]], 90, "the failure alert"
        )
        assert (
            "lifecycle-cycle run 'cycle as of 2026-06-16 09:00 UTC' is Failed"
            in failed[0]["subject"]
        )
        assert "thank_you.yaml" in failed[0]["text"]  # the state message names the bad file
        assert f"Flow run id: {state.state_details.flow_run_id}" in failed[0]["text"]
        assert "Open the run (logs, artifacts, failed tasks):" in failed[0]["text"]

        # a scheduled run nobody picked up becomes Late (the server's late-runs service)
        from flows.reconcile_events import reconcile_events

        with _client() as client:
            flow_run = client.create_flow_run(reconcile_events, parameters={})
            client.set_flow_run_state(flow_run.id, Late(), force=True)
        late = _wait(
            lambda: [m for m in _Hook.received if "Late" in m["subject"]], 90, "the late alert"
        )
        assert "reconcile-events run" in late[0]["subject"]
    finally:
        hook.shutdown()
        from prefect.automations import Automation

        with contextlib.suppress(ValueError):  # later failures in the session notify nobody
            cast(Automation, Automation.read(name=AUTOMATION_NAME)).delete()


# --------------------------------------------------------------- retries, crash, resume


def test_only_transient_errors_are_retried(
    sqlite_engine: Engine, tmp_path: Path, prefect_server: str
) -> None:
    import sqlite3

    from prefect import flow, task
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from ciclovita.errors import (
        InputError,
        PermanentDeliveryError,
        Problem,
        RateLimitedError,
        is_transient,
    )
    from tasks.retry import retry_transient_only

    # real database errors: a missing table is permanent, a locked database is transient
    with pytest.raises(OperationalError) as missing, sqlite_engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    assert not is_transient(missing.value)
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    locked_engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with pytest.raises(OperationalError) as locked, locked_engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (1)"))
    holder.rollback()
    holder.close()
    locked_engine.dispose()
    assert "locked" in str(locked.value) and is_transient(locked.value)
    assert is_transient(RateLimitedError("slow down", 429, retry_after=1.0))
    assert not is_transient(PermanentDeliveryError("bad address", 400))
    assert not is_transient(InputError([Problem("campaigns/x.yaml", "bad")]))

    attempts: Counter[str] = Counter()

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_transient_only)
    def flaky(kind: str) -> str:
        attempts[kind] += 1
        if kind == "transient" and attempts[kind] < 3:
            raise RateLimitedError("429", 429, retry_after=0)
        if kind == "permanent":
            raise PermanentDeliveryError("invalid recipient", 400)
        return "done"

    @flow
    def exercise() -> tuple[str, bool]:
        ok = flaky("transient")
        permanent = flaky("permanent", return_state=True)
        return ok, permanent.is_failed()

    assert exercise() == ("done", True)
    assert attempts == Counter({"transient": 3, "permanent": 1})


def test_a_run_killed_mid_send_resumes_without_duplicates(
    sqlite_url: str, tmp_path: Path, prefect_server: str
) -> None:
    from prefect.blocks.system import Secret

    key = "SG.ciclovita-test-secret-key-0123456789"
    Secret(value=key).save("ciclovita-sendgrid-api-key", overwrite=True)
    try:
        _kill_and_resume(sqlite_url, tmp_path, key)
    finally:  # other tests of the session must not find a key in Prefect
        with _client() as client:
            block = client.read_block_document_by_name("ciclovita-sendgrid-api-key", "secret")
            client.delete_block_document(block.id)


def _statuses(engine: Engine, as_of: datetime) -> dict[str, str]:
    """Every message's status; none may still be planned and due at ``as_of``."""
    with engine.connect() as connection:
        rows = connection.execute(select(Message.uid, Message.status, Message.due_at)).all()
    assert not [uid for uid, state, due in rows if state == "planned" and due <= as_of]
    return {uid: state for uid, state, _ in rows}


def _kill_and_resume(sqlite_url: str, tmp_path: Path, key: str) -> None:
    engine = make_engine(sqlite_url)
    generate_demo_data(engine, customers=300, seed=11, as_of=AS_OF)
    with FakeSendGridProcess(api_key=key, latency=0.25) as fake:
        env = _env(
            sqlite_url,
            tmp_path / "outbox",
            CICLOVITA_SENDER="sendgrid",  # no CICLOVITA_SENDGRID_API_KEY: the Secret block
            CICLOVITA_SENDGRID_HOST=fake.url,
            CICLOVITA_SENDGRID_CONCURRENCY="1",
            PREFECT_LOGGING_LEVEL="INFO",
        )
        first = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ciclovita",
                "run",
                "--as-of",
                AS_OF.isoformat(),
                "--batch-size",
                "10",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait(
                lambda: len(fake.accepted_ids()) >= 12 or first.poll() is not None, 240, "sending"
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first_output = first.communicate(timeout=60)[0]
        assert first.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        with engine.connect() as connection:
            states = Counter(connection.execute(select(Message.status)).scalars())
        assert states["sent"] >= 1 and states["planned"] + states["claimed"] >= 1, states

        # run again at once: what was due and untouched goes out; what the killed run had
        # claimed or was sending stays with it until its leases expire (wall clock)
        second = _ciclovita(
            "run", "--as-of", (AS_OF + timedelta(minutes=30)).isoformat(), env=env, cwd=tmp_path
        )
        assert fake.duplicate_ids() == {}
        status = _statuses(engine, AS_OF + timedelta(minutes=30))
        assert {status[uid] for uid in fake.accepted_ids()} <= {"sent", "sending", "ambiguous"}

        # 20 minutes later (the leases expire): the next run takes over the killed run's rows
        with engine.begin() as connection:
            held = connection.execute(
                select(Message.id, Message.claimed_at, Message.sending_at).where(
                    Message.status.in_(("claimed", "sending"))
                )
            ).all()
            for message_id, claimed_at, sending_at in held:
                connection.execute(
                    update(Message)
                    .where(Message.id == message_id)
                    .values(
                        claimed_at=claimed_at and claimed_at - timedelta(minutes=20),
                        sending_at=sending_at and sending_at - timedelta(minutes=20),
                    )
                )
        third = _ciclovita(
            "run", "--as-of", (AS_OF + timedelta(minutes=60)).isoformat(), env=env, cwd=tmp_path
        )
        accepted = fake.accepted_ids()
        assert fake.duplicate_ids() == {}  # nothing was ever accepted twice
    status = _statuses(engine, AS_OF + timedelta(minutes=60))
    assert accepted and {status[uid] for uid in accepted} <= {"sent", "ambiguous"}
    assert {uid for uid, state in status.items() if state == "sent"} <= set(accepted)
    assert "claimed" not in status.values() and "sending" not in status.values()
    # the key came from the Secret block and is nowhere in the output or the run logs
    for text_ in (first_output, second, third):
        assert key not in text_
    from prefect.client.schemas.filters import LogFilter

    messages: list[str] = []
    with _client() as client:
        while page := client.read_logs(log_filter=LogFilter(), limit=200, offset=len(messages)):
            messages += [log.message for log in page]
    assert messages and not any(key in message for message in messages)
    engine.dispose()


# -------------------------------------------------------------------------------- Dask


def test_the_task_runner_follows_the_dask_setting(use_database: Callable[..., Path]) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.runners import ConfiguredTaskRunner

    use_database("sqlite:///unused.db")
    assert type(ConfiguredTaskRunner(max_workers=3).duplicate()) is ThreadPoolTaskRunner
    if "dask_address" not in Settings.model_fields:
        return  # checked by the next test, which fails in CI without the setting
    from prefect_dask.task_runners import DaskTaskRunner

    from ciclovita.errors import ConfigurationError

    use_database("sqlite:///unused.db", CICLOVITA_DASK_ADDRESS="local:2")
    local = ConfiguredTaskRunner().duplicate()
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["processes"] is True
    use_database("sqlite:///unused.db", CICLOVITA_DASK_ADDRESS="tcp://10.0.0.5:8786")
    remote = ConfiguredTaskRunner().duplicate()
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    use_database("sqlite:///unused.db", CICLOVITA_DASK_ADDRESS="local:many")
    with pytest.raises(ConfigurationError, match="CICLOVITA_DASK_ADDRESS"):
        ConfiguredTaskRunner().duplicate()


@pytest.mark.postgres
@pytest.mark.slow
def test_delivery_batches_on_a_dask_local_cluster_against_postgresql(
    postgres_databases: Any, use_database: Callable[..., Path], prefect_server: str
) -> None:
    """Two Dask worker processes take the batches of one cycle; nothing is sent twice."""
    if "dask_address" not in Settings.model_fields:
        reason = "Settings has no dask_address field (CICLOVITA_DASK_ADDRESS) yet"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    from distributed import Client, LocalCluster, get_task_stream

    from flows.lifecycle_cycle import lifecycle_cycle

    url = postgres_databases.new()
    engine = make_engine(url)
    try:
        generate_demo_data(engine, customers=400, seed=21, as_of=AS_OF)
        outbox = use_database(url)  # before the cluster: its worker processes inherit it
        with (
            LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            use_database(url, CICLOVITA_DASK_ADDRESS=cluster.scheduler_address)
            with get_task_stream(client) as stream:
                summary = lifecycle_cycle(as_of=AS_OF, batch_size=8)
            again = lifecycle_cycle(as_of=AS_OF + timedelta(minutes=20), batch_size=8)
            batches_by_worker = Counter(record["worker"] for record in stream.data)
        assert summary["delivery"]["batches"] >= 4
        assert sum(batches_by_worker.values()) == summary["delivery"]["batches"]
        assert len(batches_by_worker) == 2, batches_by_worker  # both processes took batches

        with engine.connect() as connection:
            sent = set(
                connection.execute(select(Message.uid).where(Message.status == "sent")).scalars()
            )
        assert len(sent) == summary["delivery"]["sent"] > 0
        files = sorted(outbox.glob("*/*.eml"))
        uids = [
            email.message_from_bytes(path.read_bytes(), policy=policy.default)[
                "X-Ciclovita-Message-Id"
            ]
            for path in files
        ]
        assert len(uids) == len(set(uids)) == len(sent)  # one file per message, none twice
        assert set(uids) == sent
        assert again["delivery"]["sent"] == 0
        assert len(list(outbox.glob("*/*.eml"))) == len(files)
    finally:
        engine.dispose()
        from ciclovita.db.engine import dispose_engines

        dispose_engines()
        postgres_databases.drop(url)
