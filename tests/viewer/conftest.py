"""Browser tests of the viewer: Playwright driving Debian's Chromium against real servers.

One browser per test session; each test gets a fresh context (empty storage, as a new
browser profile would have), and a page that records what a hostile event could make it do:
dialogs, console errors, uncaught exceptions and requests to any other origin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright import sync_api as pw_sync

from tests.live import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
#: As the machine's notes say: without the background-networking flags Chromium keeps
#: trying to reach Google's hosts, which this machine's closed network refuses.
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
ARTIFACTS = Path(os.environ.get("IMMUTABLELOG_ARTIFACTS", Path(__file__).parents[2] / ".artifacts"))


@pytest.fixture(scope="session")
def browser() -> Iterator[pw_sync.Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)")
    with pw_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page and everything it did that a safe viewer never does."""

    page: pw_sync.Page
    origin: str
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.foreign_requests == [], self.foreign_requests


def watch(context: pw_sync.BrowserContext, origin: str) -> Watched:
    page = context.new_page()
    watched = Watched(page, origin)

    def on_dialog(dialog: pw_sync.Dialog) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: pw_sync.ConsoleMessage) -> None:
        # A 401 answered to a refused key is the test's point, not a page error.
        if message.type == "error" and "401" not in message.text:
            watched.errors.append(message.text)

    def on_request(request: pw_sync.Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("blob", "data"):
            return
        if f"{parts.scheme}://{parts.netloc}" != origin:
            watched.foreign_requests.append(request.url)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("request", on_request)
    return watched


@pytest.fixture
def context(browser: pw_sync.Browser) -> Iterator[pw_sync.BrowserContext]:
    opened = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        opened.close()


def sign_in(watched: Watched, server: LiveServer, path: str = "/", *, pin: bool = True) -> None:
    """Open the viewer, sign in with the read key and, on a first visit, pin the log key."""
    page = watched.page
    page.goto(server.url + path)
    page.fill("#read-key", server.read_key)
    page.click("#sign-in-form button[type=submit]")
    if pin:
        page.wait_for_selector("#pin:not([hidden])")
        page.click("#pin-accept")
        page.wait_for_selector("#int-size:not(:empty)")


def open_event(watched: Watched, server: LiveServer, event_id: str) -> str:
    """Open one event's page and return its badge once the browser has checked it."""
    page = watched.page
    page.goto(f"{server.url}/?event={event_id}")
    badge = page.wait_for_selector("#badge.verified, #badge.failed")
    assert badge is not None
    return badge.inner_text()


def screenshot(watched: Watched, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=ARTIFACTS / f"viewer-{name}.png", full_page=True)
