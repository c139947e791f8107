"""Stoplight Prism serving SendGrid's official OpenAPI spec, for contract tests.

Prism (``@stoplight/prism-cli@5``, a Node program) mocks ``/v3/mail/send`` from
``<repo>/../shared/sendgrid/tsg_mail_v3.json`` and validates every request against the
spec: a valid send answers 202, an invalid one answers 400 (401 without a bearer token)
and names each violation in the ``sl-violations`` response header, a JSON array such as
``[{"location": ["request", "body", "personalizations"], "severity": "Error",
"code": "maxItems", "message": "Request body property personalizations must NOT have more
than 1000 items"}]``.

Usage in a test module::

    @pytest.fixture(scope="module")
    def prism():
        with prism_or_skip() as server:
            yield server

    def test_contract(prism):
        client = SendGridAPIClient(api_key="SG.test", host=prism.url)
        response = client.send(mail)
        assert response.status_code == 202 and sl_violations(response) is None

Prism is installed on first use with ``npm install --prefix .prism @stoplight/prism-cli@5``
in the repository root (``.prism/`` is git-ignored; an inter-process file lock keeps
parallel test runs from installing twice). :func:`prism_or_skip` skips when the shared
spec is missing, and when Node/npm are missing or the install fails, except under
``CI=true`` where a missing toolchain fails the test loudly instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pytest

__all__ = [
    "PRISM_BIN",
    "PRISM_PACKAGE",
    "REPO_ROOT",
    "SHARED_SENDGRID_DIR",
    "SPEC_PATH",
    "PrismServer",
    "PrismUnavailableError",
    "ensure_prism_installed",
    "prism_or_skip",
    "sl_violation_messages",
    "sl_violations",
    "toolchain_problem",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SENDGRID_DIR = REPO_ROOT.parent / "shared" / "sendgrid"
SPEC_PATH = SHARED_SENDGRID_DIR / "tsg_mail_v3.json"
PRISM_PREFIX = REPO_ROOT / ".prism"
PRISM_BIN = PRISM_PREFIX / "node_modules" / ".bin" / "prism"
PRISM_PACKAGE = "@stoplight/prism-cli@5"
MIN_NODE_MAJOR = 18


class PrismUnavailableError(RuntimeError):
    """Prism cannot be installed or started here; the message says why."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def toolchain_problem() -> str | None:
    """Why Node/npm cannot run Prism here, or None when they can."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        return f"{missing} not found on PATH: Prism ({PRISM_PACKAGE}) needs Node.js >= 18"
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        major = int(version.lstrip("v").split(".", 1)[0])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"could not run `node --version`: {exc}"
    if major < MIN_NODE_MAJOR:
        return f"Node.js {version} is too old for Prism 5 (needs >= {MIN_NODE_MAJOR})"
    return None


def ensure_prism_installed(*, timeout: float = 900.0) -> Path:
    """Return the ``prism`` executable, running ``npm install`` first if it is missing.

    Raises :class:`PrismUnavailableError` when Node/npm are missing or the install fails.
    """
    if PRISM_BIN.exists():
        return PRISM_BIN
    problem = toolchain_problem()
    if problem is not None:
        raise PrismUnavailableError(problem)
    PRISM_PREFIX.mkdir(exist_ok=True)
    with (PRISM_PREFIX / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if PRISM_BIN.exists():
            return PRISM_BIN
        npm = shutil.which("npm") or "npm"
        cmd = [
            npm,
            "install",
            "--prefix",
            str(PRISM_PREFIX),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            PRISM_PACKAGE,
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PrismUnavailableError(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if done.returncode != 0 or not PRISM_BIN.exists():
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise PrismUnavailableError(
                f"`{' '.join(cmd)}` exited {done.returncode} without installing "
                f"{PRISM_BIN}:\n{output}"
            )
    return PRISM_BIN


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PrismServer:
    """``prism mock`` of an OpenAPI spec on ``host``, on a free port unless one is given.

    ``start_seconds`` tells how long the last start took (until Prism answered HTTP).
    """

    def __init__(
        self,
        spec: Path = SPEC_PATH,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 120.0,
        prism_bin: Path | None = None,
    ) -> None:
        self.spec = spec
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._prism_bin = prism_bin
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.start_seconds: float | None = None

    @property
    def port(self) -> int:
        """The port Prism listens on."""
        if self._port is None:
            raise RuntimeError("Prism is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL for ``SendGridAPIClient(host=...)``."""
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """Prism's output so far."""
        if self._log_file is None:
            return ""
        self._log_file.flush()
        self._log_file.seek(0)
        return self._log_file.read().decode("utf-8", errors="replace")

    def start(self) -> Self:
        """Install Prism if needed, start it and wait until it answers HTTP."""
        if self._proc is not None:
            return self
        if not self.spec.exists():
            raise PrismUnavailableError(f"OpenAPI spec not found: {self.spec}")
        prism = self._prism_bin or ensure_prism_installed()
        attempts = 1 if self._requested_port is not None else 3
        last_error = ""
        for _ in range(attempts):
            started = time.monotonic()
            if self._try_start(prism):
                self.start_seconds = time.monotonic() - started
                return self
            last_error = self.log()
            self.stop()
            if "EADDRINUSE" not in last_error:
                break
        raise RuntimeError(f"Prism did not start serving {self.spec}:\n{last_error[-4000:]}")

    def _try_start(self, prism: Path) -> bool:
        self._port = self._requested_port or _free_port(self.host)
        self._log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        cmd = [str(prism), "mock", "-h", self.host, "-p", str(self._port), str(self.spec)]
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/__prism_ready", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # any HTTP answer (Prism says 404 here) means it is serving
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop Prism (its whole process group) and free the log (idempotent)."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def prism_or_skip(
    spec: Path = SPEC_PATH, *, startup_timeout: float = 120.0
) -> Iterator[PrismServer]:
    """A started :class:`PrismServer` for a test or fixture; skips (or fails) when it can't be.

    * spec directory or file missing: ``pytest.skip``.
    * Node/npm missing, too old, or the npm install failing: ``pytest.skip``, but
      ``pytest.fail`` when the environment variable ``CI`` is ``true``.
    * Prism installed but not starting: an error, always.
    """
    if not spec.parent.is_dir():
        pytest.skip(f"SendGrid contract files not found: {spec.parent} is absent")
    if not spec.is_file():
        pytest.skip(f"SendGrid OpenAPI spec not found: {spec}")
    try:
        prism = ensure_prism_installed()
    except PrismUnavailableError as exc:
        reason = f"Stoplight Prism unavailable: {exc}"
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: the contract tests must run in CI)")
        pytest.skip(reason)
    with PrismServer(spec, startup_timeout=startup_timeout, prism_bin=prism) as server:
        yield server


def _headers_of(source: Any) -> Any:
    return getattr(source, "headers", source)


def sl_violations(source: Any) -> str | None:
    """The raw ``sl-violations`` header of a response, or None when there is none.

    ``source`` is anything with ``.headers`` (the sendgrid client's response, a
    ``python_http_client`` HTTPError, a urllib or httpx response) or a header mapping.
    """
    headers = _headers_of(source)
    if headers is None:
        return None
    if hasattr(headers, "get_all") or not isinstance(headers, Mapping):
        value = headers.get("sl-violations")  # email.message.Message: case-insensitive
        return None if value is None else str(value)
    for name, value in headers.items():
        if str(name).lower() == "sl-violations":
            return str(value)
    return None


def sl_violation_messages(source: Any) -> list[str]:
    """The ``message`` of each violation in the ``sl-violations`` header (empty if none)."""
    raw = sl_violations(source)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return [raw]
    if not isinstance(items, list):
        return [raw]
    return [
        str(item.get("message", item)) if isinstance(item, dict) else str(item) for item in items
    ]
