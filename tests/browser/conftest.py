"""The status page in a real browser: Playwright driving Debian's Chromium (headless) against the
sandbox's local Functions runner. Playwright's own browser download cannot run here, so the test
launches ``/usr/bin/chromium`` (``make setup`` installs it with apt-get), or the build
``CRMSYNC_CHROMIUM`` names (``make test CHROMIUM=<path>`` sets it, as the GitHub workflow does)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.conftest import e2e  # noqa: F401 - the session's sandbox, shared with tests/e2e

CHROMIUM = os.environ.get("CRMSYNC_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API runs an event loop in this thread while it is open, and
    every async test after it (pytest-asyncio) needs the thread free, so it closes with the module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
