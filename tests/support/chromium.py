"""Headless Chromium (Debian's ``chromium`` package, installed by ``.ci/run``) for the
browser tests, through Playwright. Without the browser the tests skip with the reason,
except under ``CI=true``, where they must run and fail instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on the system Chromium, closed at the end."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is absent (Debian's chromium package; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} — CI=true requires the browser tests to run")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
