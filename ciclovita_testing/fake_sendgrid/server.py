"""Running the fake: in a thread of this process, or as a process of its own.

* :class:`FakeSendGrid` serves the app from a daemon thread (uvicorn on its own loop) and
  reads the :class:`~ciclovita_testing.fake_sendgrid.app.Recorder` directly.
* :class:`FakeSendGridProcess` starts ``python -m ciclovita_testing.fake_sendgrid --port 0
  --port-file F ...`` and drives it through the control API. It outlives the processes
  under test (fault-injection tests SIGKILL delivery processes mid-send), and a benchmark's
  fake does not share the GIL with the code it measures.

Both offer the same methods (:class:`SendGridDouble`): script faults, set latency or a rate
limit, read what was recorded, and the exactly-once checks.
"""

from __future__ import annotations

import abc
import argparse
import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import httpx
import uvicorn
from pydantic import TypeAdapter

from ciclovita_testing.exactly_once import ExactlyOnceChecks
from ciclovita_testing.fake_sendgrid.app import (
    DEFAULT_ID_KEY,
    FakeStats,
    RecordedRequest,
    Recorder,
    Which,
    create_app,
)
from ciclovita_testing.fake_sendgrid.faults import Fault, Rule

T = TypeVar("T")
_NOTHING: TypeAdapter[None] = TypeAdapter(type(None))
_STATS = TypeAdapter(FakeStats)
_RECORDS = TypeAdapter(list[RecordedRequest])
_REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "ciclovita_testing.fake_sendgrid"


class SendGridDouble(ExactlyOnceChecks, abc.ABC):
    """What both ways of running the fake offer; ``with`` starts and stops it.

    ``port=0`` picks a free port; ``api_key``, when given, is the only bearer token accepted
    (401 otherwise); ``latency`` is added to every answer; ``keep_bodies=False`` keeps only
    our ids (``custom_args[id_key]``) of each request.
    """

    _port: int | None = None

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keep_bodies: bool = True,
        id_key: str = DEFAULT_ID_KEY,
        latency: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.host, self.requested_port = host, port
        self.keep_bodies, self.id_key, self.api_key = keep_bodies, id_key, api_key
        self.initial_latency = latency

    @property
    def url(self) -> str:
        """The base URL to give the official client as ``host``."""
        return f"http://{self.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @abc.abstractmethod
    def start(self) -> Self:
        """Start serving; returns self."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop serving (idempotent)."""

    @abc.abstractmethod
    def _call(self, op: str, result: TypeAdapter[T], /, **payload: Any) -> T:
        """Run one control operation of the recorder (see ``Recorder.control``)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- script and settings ------------------------------------------------------------------

    def script(self, fault: Fault, times: int | None = 1, *, message_id: str | None = None) -> None:
        """Apply ``fault`` to the next ``times`` requests (``None``: all, until :meth:`reset`)
        that carry ``message_id`` in a personalization's custom_args (any request if None)."""
        rule = Rule(fault=fault, times=times, message_id=message_id)
        self._call("script", _NOTHING, **rule.model_dump())

    def enqueue(self, *faults: Fault) -> None:
        """Apply each fault once, in order, to the next requests."""
        for fault in faults:
            self.script(fault)

    def set_latency(self, seconds: float) -> None:
        """Add ``seconds`` to every mail/send answer (0 turns it off)."""
        self._call("latency", _NOTHING, seconds=seconds)

    def set_rate_limit(self, limit: int | None, window_seconds: float = 1.0) -> None:
        """Accept at most ``limit`` mails per fixed window, 429 beyond (None: no limit)."""
        self._call("rate_limit", _NOTHING, limit=limit, window_seconds=window_seconds)

    def reset(self) -> None:
        """Forget what was recorded and the pending rules (latency and rate limit stay)."""
        self._call("reset", _NOTHING)

    # -- what was recorded --------------------------------------------------------------------

    def stats(self) -> FakeStats:
        return self._call("stats", _STATS)

    def requests(self, which: Which = "all", *, bodies: bool = True) -> list[RecordedRequest]:
        """Recorded mail/send requests (all, accepted or rejected), in the order answered."""
        return self._call("requests", _RECORDS, which=which, bodies=bodies)

    def accepted(self) -> list[RecordedRequest]:
        return self.requests("accepted")

    def rejected(self) -> list[RecordedRequest]:
        """Requests answered 4xx/5xx, or dropped before being accepted."""
        return self.requests("rejected")

    def accepted_ids(self) -> list[str]:
        return [uid for r in self.requests("accepted", bodies=False) for uid in r.ids]

    def accepted_messages(self) -> list[tuple[str, str | None]]:
        """(our message id, SendGrid's ``X-Message-Id``) of every accepted personalization."""
        return [
            (uid, r.message_id) for r in self.requests("accepted", bodies=False) for uid in r.ids
        ]

    def wait_for_accepted(self, count: int, timeout: float = 10.0) -> FakeStats:
        """Wait until ``count`` requests were accepted (``TimeoutError`` otherwise)."""
        return self.wait_for(lambda stats: stats.accepted >= count, timeout)

    def wait_idle(self, timeout: float = 10.0) -> FakeStats:
        """Wait until no mail/send request is in flight."""
        return self.wait_for(lambda stats: stats.in_flight == 0, timeout)

    def wait_for(self, condition: Callable[[FakeStats], bool], timeout: float) -> FakeStats:
        """Poll :meth:`stats` until ``condition`` holds (``TimeoutError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not condition(stats := self.stats()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still {stats} after {timeout} s")
            time.sleep(0.01)
        return stats


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


def _server(recorder: Recorder, *, own_logging: bool) -> uvicorn.Server:
    """uvicorn serving the fake; in a test's process it leaves logging alone."""
    config = uvicorn.Config(
        create_app(recorder),
        lifespan="off",
        ws="none",
        proxy_headers=False,
        access_log=False,
        log_level="warning",
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        timeout_graceful_shutdown=1,
        backlog=4096,
    )
    return uvicorn.Server(config)


class FakeSendGrid(SendGridDouble):
    """The fake served from a daemon thread of this process.

    ``with FakeSendGrid(api_key="SG.test") as fake: SendGridSender("SG.test", host=fake.url)``
    """

    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @functools.cached_property
    def recorder(self) -> Recorder:
        """What the fake records; read directly, in this process."""
        return Recorder(
            id_key=self.id_key,
            keep_bodies=self.keep_bodies,
            api_key=self.api_key,
            latency=self.initial_latency,
        )

    def start(self) -> Self:
        if self._thread is not None:
            return self
        sock = _listening_socket(self.host, self.requested_port)
        server = self._server = _server(self.recorder, own_logging=False)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-sendgrid", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake SendGrid did not start (see the log)")
            time.sleep(0.005)
        self._port = int(sock.getsockname()[1])
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = self._port = None

    def _call(self, op: str, result: TypeAdapter[T], /, **payload: Any) -> T:
        return cast(T, self.recorder.control(op, payload))


class FakeSendGridProcess(SendGridDouble):
    """The fake in a child Python process, driven over its control API."""

    startup_timeout = 20.0
    _proc: subprocess.Popen[bytes] | None = None
    _tmpdir: tempfile.TemporaryDirectory[str] | None = None
    _control: httpx.Client | None = None

    def _command(self, port_file: Path) -> list[str]:
        command = [sys.executable, "-m", MODULE, "--host", self.host, "--port-file", str(port_file)]
        command += ["--port", str(self.requested_port), "--id-key", self.id_key]
        command += ["--latency", str(self.initial_latency)]
        command += [] if self.keep_bodies else ["--no-bodies"]
        return command + ([] if self.api_key is None else ["--api-key", self.api_key])

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log(self) -> str:
        """What the child wrote to stdout and stderr so far."""
        if self._tmpdir is None:
            return ""
        path = Path(self._tmpdir.name) / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-sendgrid-")
        port_file = Path(self._tmpdir.name) / "port"
        command = self._command(port_file)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        with (Path(self._tmpdir.name) / "server.log").open("wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command, cwd=_REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + self.startup_timeout
        while not (port_file.exists() and port_file.read_text()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self.log()
                self.stop()
                raise RuntimeError(f"the fake SendGrid process did not start:\n{log_text}")
            time.sleep(0.02)
        self._port = int(port_file.read_text())
        self._control = httpx.Client(base_url=self.url, timeout=60, trust_env=False)
        self._call("health", TypeAdapter(dict[str, bool]))
        return self

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
        self._proc = self._tmpdir = self._control = self._port = None

    def _call(self, op: str, result: TypeAdapter[T], /, **payload: Any) -> T:
        if self._control is None:
            raise RuntimeError("FakeSendGridProcess is not started")
        response = self._control.post(f"/__fake/{op}", json=payload)
        if response.is_error:
            raise ValueError(f"control {op} failed: {response.status_code} {response.text}")
        return result.validate_json(response.content)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m ciclovita_testing.fake_sendgrid``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the port, once bound")
    parser.add_argument("--id-key", default=DEFAULT_ID_KEY, help="custom_args key of our ids")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--api-key", help="the only bearer token accepted (any, if not given)")
    parser.add_argument("--no-bodies", action="store_true", help="keep only ids per request")
    args = parser.parse_args(argv)
    recorder = Recorder(
        id_key=args.id_key,
        keep_bodies=not args.no_bodies,
        api_key=args.api_key,
        latency=args.latency,
    )
    sock = _listening_socket(args.host, args.port)
    port = sock.getsockname()[1]
    if args.port_file is not None:  # the socket listens already: early clients wait in line
        partial = args.port_file.with_name(args.port_file.name + ".partial")
        partial.write_text(str(port))
        partial.replace(args.port_file)
    print(f"fake SendGrid on http://{args.host}:{port}", file=sys.stderr, flush=True)
    _server(recorder, own_logging=True).run(sockets=[sock])
