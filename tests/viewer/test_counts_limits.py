"""Where ``GET /v1/event-counts`` stops: a full-text count adds up the newest matches only
(``serve --count-matches``) and says so, as the chart does; a count past its cut-off
(``serve --count-timeout``) is ``422 count_too_broad`` and the chart says so; a count whose
client went away is stopped on the database server, not left to run for nobody."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from playwright import sync_api as pw_sync
from playwright.sync_api import expect

from immutablelog.entry import validate_submission
from immutablelog.ledger import (
    COUNT_MATCHES_ENV,
    COUNT_TIMEOUT_ENV,
    DEFAULT_TENANT,
    Ledger,
    LedgerConfig,
)
from immutablelog.ledger.rollup import Cancel, CountCancelled
from immutablelog.ledger.storage import EventQuery
from tests.live import LiveServer
from tests.viewer.conftest import screenshot, sign_in, watch
from tests.viewer.test_viewer import post, seeded_event

#: Every seeded event's payload but one in 40 holds this word.
COMMON = "event"
EVENTS = 6000
META = {"type": "info", "event_name": "note.made", "service": "notes"}


def _seeded(server: LiveServer) -> None:
    for start in range(0, EVENTS, 1000):
        post(server, [seeded_event(n) for n in range(start, start + 1000)])
    deadline = time.monotonic() + 60
    while server.get("/v1/events", q="needle", limit=1).json()["events"] == []:
        assert time.monotonic() < deadline, "the search index never caught up"
        time.sleep(0.2)


@pytest.fixture
def postgres_server(tmp_path: Path, postgres_url: str) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "data", database_url=postgres_url)
    # Far below what counting thousands of full-text matches takes.
    server.extra_env = {COUNT_TIMEOUT_ENV: "0.001"}
    server.start()
    try:
        _seeded(server)
        yield server
    finally:
        server.kill()


def test_a_postgres_count_past_its_cut_off_is_count_too_broad_and_the_chart_says_so(
    postgres_server: LiveServer, context: pw_sync.BrowserContext
) -> None:
    answer = postgres_server.get("/v1/event-counts", q=COMMON, interval="minute")
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["ok"] is False and body["reason"] == "count_too_broad"
    assert "0.001 s" in body["message"] and "narrow the filters" in body["message"]
    # The events themselves are not bounded by it.
    assert postgres_server.get("/v1/events", q=COMMON, limit=5).status_code == 200

    viewer = watch(context, postgres_server.url)
    sign_in(viewer, postgres_server, f"/?q={COMMON}")
    page = viewer.page
    page.wait_for_selector("#events tbody tr")
    caption = page.locator("#chart-caption")
    expect(caption).to_have_text(
        "Not charted: counting these events took more than 0.001 s: "
        "narrow the filters or the time range."
    )
    expect(caption).to_have_class(re.compile(r"\btoo-broad\b"))
    expect(page.locator("#chart .bar")).to_have_count(0)
    expect(page.locator("#alarm")).to_be_hidden()
    screenshot(viewer, "count-too-broad")


def _counting(watcher: psycopg.Connection[tuple[int]]) -> int:
    """Count statements running (or waiting) on the database now."""
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%%left(received_at%%'"
    ).fetchone()
    return int(row[0]) if row else 0


def _until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_count_whose_client_went_away_is_stopped_on_the_database(
    tmp_path: Path, postgres_url: str
) -> None:
    server = LiveServer(tmp_path / "data", database_url=postgres_url)
    server.extra_env = {COUNT_TIMEOUT_ENV: "600"}  # the cut-off plays no part here
    server.start()
    try:
        post(server, [seeded_event(n) for n in range(50)])
        with (
            psycopg.connect(postgres_url) as locker,
            psycopg.connect(postgres_url, autocommit=True) as watcher,
        ):
            # The count waits behind this lock for as long as it is held: a count that
            # runs until someone stops it.
            locker.execute("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE")
            parts = urlsplit(server.url)
            client = socket.create_connection((parts.hostname, parts.port))
            client.sendall(
                f"GET /v1/event-counts?q={COMMON}&interval=minute HTTP/1.1\r\n"
                f"Host: {parts.netloc}\r\nAuthorization: Bearer {server.read_key}\r\n\r\n".encode()
            )
            _until(lambda: _counting(watcher) == 1, "the count never started")
            client.close()  # as a browser does for an aborted fetch
            _until(lambda: _counting(watcher) == 0, "the count went on for nobody")
            locker.rollback()
        # The server goes on answering counts.
        answer = server.get("/v1/event-counts", q=COMMON, interval="minute")
        assert answer.status_code == 200, answer.text
    finally:
        server.kill()


def test_a_cancelled_count_stops_on_sqlite(tmp_path: Path) -> None:
    """SQLite has no server to cancel: its count looks at the cancel between steps."""
    config = LedgerConfig(data_dir=tmp_path / "data", count_matches=5000)
    with Ledger.open(config) as ledger:
        tenant = ledger.create_tenant(DEFAULT_TENANT)
        subs = [validate_submission(f'"{COMMON} {n}"', META, f"k{n}") for n in range(3000)]
        ledger.submit(tenant, subs).result(60)
        while ledger.search_backlog():
            ledger.storage.index_search(10_000)
        query = EventQuery(text=COMMON)
        counted = ledger.count_events(tenant, query, 16)
        assert sum(n for _, _, n in counted.rows) == 3000
        cancel = Cancel()
        cancel.set()
        with pytest.raises(CountCancelled):
            ledger.count_events(tenant, query, 16, cancel)
        # Its connection is usable again afterwards.
        assert ledger.count_events(tenant, query, 16) == counted


def test_a_new_search_cancels_the_chart_of_the_one_it_replaces(
    live_server: LiveServer, context: pw_sync.BrowserContext
) -> None:
    post(live_server, [seeded_event(n) for n in range(40)])
    viewer = watch(context, live_server.url)
    page = viewer.page
    held: list[pw_sync.Route] = []
    page.route(
        re.compile(r".*/v1/event-counts\?.*service=shop.*"), lambda route: held.append(route)
    )
    aborted: list[str] = []
    page.on(
        "requestfailed",
        lambda request: aborted.append(request.url) if "event-counts" in request.url else None,
    )
    sign_in(viewer, live_server, "/?service=shop")
    _until(lambda: len(held) == 1, "the first chart was never asked for", 30)
    expect(page.locator("#chart-caption")).to_have_text("Counting…")

    form = page.locator("#filters")
    form.locator("[name=service]").fill("billing")
    form.locator("button[type=submit]").click()
    expect(page.locator("#chart-caption")).to_contain_text("20 events, per")
    _until(lambda: len(aborted) == 1, "the superseded chart's request was not cancelled", 30)
    assert "service=shop" in aborted[0]
    assert "service=billing" in page.url
    viewer.assert_quiet()


def test_a_common_word_is_counted_in_its_newest_matches_and_the_chart_says_so(
    tmp_path: Path, context: pw_sync.BrowserContext
) -> None:
    server = LiveServer(tmp_path / "data")
    server.extra_env = {COUNT_MATCHES_ENV: "25"}
    server.start()
    try:
        post(server, [seeded_event(n) for n in range(60)])
        _until(lambda: server.get("/v1/events", q="needle", limit=1).json()["events"] != [],
               "the search index never caught up")  # fmt: skip
        common = server.get("/v1/event-counts", q=COMMON, interval="minute").json()
        assert common["complete"] is False
        assert sum(b["total"] for b in common["buckets"]) == 25
        matches = server.get("/v1/events", q=COMMON, limit=26).json()["events"]
        assert common["from_index"] == matches[25]["index"] + 1
        rare = server.get("/v1/event-counts", q="needle", interval="minute").json()
        assert rare["complete"] is True and "from_index" not in rare
        assert sum(b["total"] for b in rare["buckets"]) == 2

        viewer = watch(context, server.url)
        sign_in(viewer, server, f"/?q={COMMON}")
        caption = viewer.page.locator("#chart-caption")
        expect(caption).to_contain_text(
            f"Counted from index {common['from_index']} on only: 25 events (older events"
        )
        expect(caption).to_have_class(re.compile(r"\bpartial\b"))
        expect(viewer.page.locator("#chart .bar")).not_to_have_count(0)
        screenshot(viewer, "count-partial")
        viewer.assert_quiet()
    finally:
        server.kill()
