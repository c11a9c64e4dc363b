"""The web viewer on a big log, in Debian's Chromium: what a person waits for.

Run from the repository root::

    .venv/bin/python -m benchmarks.viewer                       # 1,000,000 entries
    .venv/bin/python -m benchmarks.viewer --quick               # 20,000 entries
    .venv/bin/python -m benchmarks.viewer --keep /tmp/vb        # keep (and reuse) the log
    .venv/bin/python -m benchmarks.viewer --postgres postgresql://postgres@127.0.0.1/bench
    .venv/bin/python -m benchmarks.viewer --before main         # and main's code, in turns

The log is pre-filled in-process with the read benchmark's varied events (benchmarks/read.py),
then a real ``immutablelog serve`` and one headless Chromium (Playwright) measure, from the
page's own User Timing marks (so Playwright's round trips are not counted):

1. sign-in to the first page of events rendered (the sign-in is recorded in the log first);
2. a filtered search, form submit to rows rendered, over the read benchmark's filter mix;
3. the in-browser check of one event (signature, leaf and path hashing, root comparison);
4. ``GET /v1/event-counts`` (the chart's aggregate) over the same filters, on SQLite and,
   with ``--postgres``, on PostgreSQL (a fresh database there, dropped afterwards).

With ``--before REV`` a second server runs the code of that git revision on the same log
(its source unpacked ahead of this checkout on the import path), and each measure takes
turns between the two, on the same filters, so before and after come from one run.

Targets are printed next to the numbers, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from playwright.sync_api import Page, sync_playwright
from rich.table import Table
from tests.live import LiveServer
from tests.viewer.conftest import CHROMIUM, CHROMIUM_ARGS

from benchmarks.ingest import fresh_postgres_database
from benchmarks.read import (
    SERVICES,
    Http,
    Stat,
    console,
    entry_count,
    prefill,
    query_cases,
    time_calls,
    wait_for_search_index,
)
from immutablelog.entry import timestamp
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.ledger.ledger import open_storage
from immutablelog.ledger.postgres.storage import PostgresStorage, _event_where
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.sqlite.search import _fts_match
from immutablelog.ledger.storage import EventQuery, Storage, event_filters
from immutablelog.server.stats import INTERVALS

Case = Callable[[random.Random], dict[str, Any]]
INTERVAL_WIDTHS = {name: width for name, (width, _) in INTERVALS.items()}
#: Samples of the scan that answered counts before they were kept (seconds each at 1M).
BEFORE_SAMPLES = 5

RESULTS = Path(__file__).with_name("viewer-results.md")


def _measure(page: Page, start: str, end: str) -> float:
    """Seconds between the latest marks ``start`` and ``end`` in the page."""
    return float(
        page.evaluate(
            """([start, end]) => {
              const last = (name) => performance.getEntriesByName(name).at(-1).startTime;
              return (last(end) - last(start)) / 1000;
            }""",
            [start, end],
        )
    )


def _rows_after(page: Page, mark: str, action: Callable[[], None]) -> float:
    """Run ``action`` (which sets ``mark``) and wait for the rows it renders."""
    page.evaluate("performance.clearMarks('immutablelog:rows')")
    action()
    # Polled from here: the page's CSP forbids the eval that wait_for_function would need.
    deadline = time.monotonic() + 120
    while not page.evaluate("performance.getEntriesByName('immutablelog:rows').length"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no rows rendered 120 s after {mark}: {page.url}")
        page.wait_for_timeout(5)
    return _measure(page, mark, "immutablelog:rows")


def _signed_in(browser: Any, server: LiveServer) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(server.url + "/")
    page.fill("#read-key", server.read_key)
    page.click("#sign-in-form button[type=submit]")
    page.click("#pin-accept")
    page.wait_for_selector("#events tbody tr")
    return page


def _search(page: Page, filters: dict[str, str]) -> float:
    page.click("#clear-filters")
    page.wait_for_selector("#events tbody tr")
    form = page.locator("#filters")
    for field, value in filters.items():
        if field == "type":
            form.locator("[name=type]").select_option(value)
        else:
            form.locator(f"[name={field}]").fill(value)
    return _rows_after(
        page, "immutablelog:search", lambda: form.locator("button[type=submit]").click()
    )


def browser_stats(
    servers: list[tuple[str, LiveServer]], db: Path, samples: int, seed: int
) -> list[Stat]:
    """Each measure on each server (the code of an earlier commit and this one, say), one
    page per server, the servers taking turns sample by sample so that both see the same
    filters under the same load."""
    rng = random.Random(seed)
    cases = query_cases(db, seed)
    found: dict[str, dict[str, list[float]]] = {label: {} for label, _ in servers}

    def record(label: str, what: str, seconds: float) -> None:
        found[label].setdefault(what, []).append(seconds)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pages = {label: _signed_in(browser, server) for label, server in servers}
        for _ in range(samples):
            for label, server in servers:
                page = pages[label]
                page.click("#sign-out")
                page.fill("#read-key", server.read_key)
                record(label, "sign-in", _rows_after(
                    page,
                    "immutablelog:sign-in",
                    lambda p=page: p.click("#sign-in-form button[type=submit]"),
                ))  # fmt: skip
        for make in cases.values():
            for _ in range(max(samples // 4, 2)):
                filters = make(rng)
                for label, _server in servers:
                    record(label, "search", _search(pages[label], filters))

        script = (
            "fetch('v1/events?limit=1000', {headers: {Authorization: "
            "`Bearer ${sessionStorage.getItem(Object.keys(sessionStorage)[0])}`}})"
            ".then(r => r.json()).then(b => b.events.map(e => e.id))"
        )
        ids = pages[servers[0][0]].evaluate(script)
        for event_id in rng.sample(ids, min(samples, len(ids))):
            for label, server in servers:
                page = pages[label]
                page.goto(f"{server.url}/?event={event_id}")
                page.wait_for_selector("#badge.verified")
                took = page.evaluate(
                    "performance.getEntriesByName('immutablelog:verified').at(-1).duration"
                )
                record(label, "check", took / 1000)
        browser.close()
    stats: list[Stat] = []
    rows = [
        ("sign-in", "sign-in to first page rendered", "<= 300 ms"),
        ("search", f"filtered search ({len(cases)} filter kinds)", "p95 <= 100 ms"),
        ("check", "in-browser check of one event", "<= 50 ms"),
    ]
    for key, what, target in rows:
        for label, _ in servers:
            section = f"viewer, {label}" if label else "viewer"
            stats.append(Stat(section, what, found[label][key], target))
    return stats


def _event_query(params: dict[str, Any]) -> EventQuery:
    """The server's reading of a case's filters (benchmarks pass well-formed ones)."""
    fields = {k: v for k, v in params.items() if k not in ("q", "event_name", "interval")}
    name = params.get("event_name")
    if name is not None and name.endswith("*"):
        fields["event_name_prefix"] = name[:-1]
    elif name is not None:
        fields["event_name"] = name
    return EventQuery(text=params.get("q"), **fields)


def scan_counts(storage: Storage, params: dict[str, Any], width: int) -> int:
    """What ``GET /v1/event-counts`` ran before the counts were kept ahead of time (at
    a0c6f0b): one grouped scan of the matching entries. Returns the events counted."""
    query = _event_query(params)
    if isinstance(storage, SQLiteStorage):
        where, values = event_filters(1, query, "?", "e.")
        source = "main.entries AS e"
        if query.text:
            source = "search.entries_search AS s JOIN main.entries AS e ON e.rowid = s.rowid"
            where.insert(0, "entries_search MATCH ?")
            values.insert(0, _fts_match(query))
        conn = storage._search_conn
        rows = conn.execute(
            f"SELECT substr(e.received_at, 1, ?) AS bucket, e.type, COUNT(*) FROM {source} "
            f"WHERE {' AND '.join(where)} GROUP BY bucket, e.type ORDER BY bucket",
            [width, *values],
        ).fetchall()
    else:
        assert isinstance(storage, PostgresStorage)
        pg_where, values = _event_where(1, query)
        rows = storage._query(
            f"SELECT left(received_at, %s) AS bucket, type, COUNT(*) FROM entries "
            f"WHERE {pg_where} GROUP BY bucket, type ORDER BY bucket",
            [width, *values],
        )
    return sum(int(row[2]) for row in rows)


def _count_cases(db: Path, seed: int, bounds: tuple[str, str]) -> dict[str, Case]:
    """The read benchmark's filters, plus the time ranges a chart asks for (a bar clicked:
    ragged ends, so the counts of the minutes at both ends are read from the entries)."""
    first, last = (dt.datetime.fromisoformat(b.replace("Z", "+00:00")) for b in bounds)
    span = last - first

    def ragged(r: random.Random) -> dict[str, str]:
        since = first + span * r.uniform(0, 0.5)
        until = since + span * r.uniform(0.1, 0.5)
        return {"since": timestamp(since), "until": timestamp(until)}

    def minutes(r: random.Random) -> dict[str, str]:
        ends = ragged(r)
        return {k: v[:16] + ":00Z" for k, v in ends.items()}

    return {
        "no filter": lambda r: {},
        **query_cases(db, seed),
        "since+until, whole minutes (a range typed in the viewer)": minutes,
        "service+since+until, whole minutes": lambda r: {
            **minutes(r),
            "service": r.choice(SERVICES),
        },
        "since+until to the microsecond": ragged,
    }


def _endpoint_times(
    server: LiveServer, cases: list[dict[str, Any]]
) -> tuple[list[float], str, int | None]:
    """``GET /v1/event-counts`` for each of ``cases`` (after a warm-up with the first): the
    seconds each took, a note if it failed (an error answer, a lost connection), and the
    width of the buckets it answered with."""
    # A fresh connection per case: the server closes one left idle for 5 s.
    client = Http(server.url, server.read_key)
    try:
        _, body = client.get("/v1/event-counts", cases[0])  # warm-up
        calls = [lambda c=case: client.get("/v1/event-counts", c) for case in cases]
        return time_calls(calls), "", INTERVAL_WIDTHS[orjson.loads(body)["interval"]]
    except RuntimeError as exc:  # an error answer, e.g. 422 count_too_broad
        return [0.0], str(exc).rpartition(": ")[2][:60], None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        # Past the client's 60 s, or a lost connection: say so, and go on.
        alive = server.process is not None and server.process.poll() is None
        if not alive:
            console.print(server.log()[-3000:])
        return [60.0], f"failed: {type(exc).__name__}, alive: {alive}", None
    finally:
        client.close()


def count_stats(
    servers: list[tuple[str, LiveServer]],
    db: Path,
    storage: Storage,
    samples: int,
    seed: int,
    label: str,
    scan: bool = True,
) -> list[Stat]:
    """Each case's counts through the API of each server (the code of an earlier commit and
    this one, say) on the same filters, and the scan that answered before the counts were
    kept (in-process, fewer samples: it takes seconds), side by side."""
    rng = random.Random(seed)
    stats = []
    tenant = 1
    # The bulk of the log (its first and last few entries may be far apart in time).
    size = storage.count_entries(tenant, 0)
    first = next(storage.entries(tenant, size // 100, size // 100 + 1)).received_at
    last = next(storage.entries(tenant, size * 99 // 100, size * 99 // 100 + 1)).received_at
    for name, make in _count_cases(db, seed, (first, last)).items():
        what = f"GET /v1/event-counts {name}"
        cases = [make(rng) for _ in range(samples + 1)]
        width = None
        for server_label, server in servers:
            times, failed, answered = _endpoint_times(server, cases)
            width = answered or width
            section = f"counts, {label}" + (f", {server_label}" if server_label else "")
            stats.append(Stat(section, what, times, "p95 <= 200 ms", failed))
        if scan and width is not None:
            before = time_calls(
                [
                    lambda c=case, w=width: scan_counts(storage, c, w)
                    for case in cases[:BEFORE_SAMPLES]
                ]
            )
            taken = Stat("", "", before)
            note = f"before (scan): p50 {taken.ms(50):.0f} ms, p95 {taken.ms(95):.0f} ms"
            stats[-1].note = stats[-1].note or note
    return stats


def roll_up_all(storage: Storage) -> tuple[int, float]:
    """Bring the kept counts up to date in-process, as the upkeep thread does; returns the
    entries counted and the seconds it took (the cost of keeping them, per entry)."""
    if isinstance(storage, SQLiteStorage):
        conn = storage._search_conn
        conn.execute("DELETE FROM search.event_counts")
        conn.execute("DELETE FROM search.meta WHERE key IN ('counted_rowid', 'counted_id')")
    else:
        assert isinstance(storage, PostgresStorage)
        storage._query("TRUNCATE event_counts, count_progress")
    started, done = time.perf_counter(), 0
    while counted := storage.roll_up(50_000):
        done += counted
    return done, time.perf_counter() - started


def rollup_stat(storage: Storage, label: str) -> Stat:
    counted, seconds = roll_up_all(storage)
    return Stat(
        f"rollup, {label}",
        f"count {counted:,} entries into the kept counts (upkeep's job, from empty)",
        [seconds],
        "",
        f"{seconds / max(counted, 1) * 1e6:.1f} us per entry",
    )


def render(stats: list[Stat]) -> tuple[Table, str]:
    table = Table("section", "what", "n", "p50 ms", "p95 ms", "max ms", "target", "note")
    lines = [
        "| section | what | n | p50 ms | p95 ms | max ms | target | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        row = (
            s.section,
            s.what,
            str(len(s.samples)),
            f"{s.ms(50):.1f}",
            f"{s.ms(95):.1f}",
            f"{max(s.samples) * 1000:.1f}",
            s.target,
            s.note,
        )
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    return table, "\n".join(lines)


def _fill(config: LedgerConfig, db: Path | None, entries: int, seed: int) -> None:
    with Ledger.open(config) as ledger:
        ledger.start()
        tenant = ledger.tenant(DEFAULT_TENANT)
        have = ledger.checkpoint(tenant).size
        if have < entries:
            rate = prefill(ledger, have, entries, seed)
            console.print(f"pre-filled {entries - have:,} entries at {rate:,.0f} events/s")
        if db is not None:
            console.print(f"search index caught up after {wait_for_search_index(db):.1f} s")
        else:
            while ledger.search_backlog():
                ledger.storage.index_search(10_000)


def write_results(stats: list[Stat], size: int, argv: list[str] | None) -> None:
    table, markdown = render(stats)
    console.print(table)
    arguments = " ".join(argv if argv is not None else sys.argv[1:])
    RESULTS.write_text(
        "## The viewer in a browser (benchmarks/viewer.py)\n\n"
        f"Command:\n\n    .venv/bin/python -m benchmarks.viewer {arguments}\n\n"
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
        f"Log size: {size:,} entries.\n\n{markdown}\n"
    )
    console.print(f"wrote {RESULTS}")


def _code_at(rev: str, root: Path) -> dict[str, str]:
    """The environment for a server that runs the package as it was at ``rev`` (its source
    unpacked under ``root``, ahead of this checkout on the import path)."""
    into = root / f"code-{rev}"
    if not into.exists():
        into.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return {"PYTHONPATH": str(into / "src")}


@contextmanager
def _postgres_database(url: str, reuse: bool) -> Iterator[str]:
    if reuse:
        yield url
    else:
        with fresh_postgres_database(url) as fresh:
            yield fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=None, help="log size (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 entries")
    parser.add_argument("--keep", type=Path, help="data directory to keep (reused if filled)")
    parser.add_argument("--postgres", help="also measure the counts on this PostgreSQL server")
    parser.add_argument(
        "--reuse-postgres",
        action="store_true",
        help="--postgres names a database to use (and keep, filled), not a server",
    )
    parser.add_argument("--no-browser", action="store_true", help="only the counts")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also serve the code of this git revision on the same log, taking turns",
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the grouped scans")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    samples = 10 if args.quick else 30

    root = args.keep or Path(tempfile.mkdtemp(prefix="immutablelog-viewer-"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    db = data_dir / "ledger.db"
    stats: list[Stat] = []
    server = LiveServer(data_dir, create=not db.exists())
    servers = [("", server)]
    if args.before:
        before = LiveServer(data_dir, create=False, extra_env=_code_at(args.before, root))
        servers = [(f"before ({args.before})", before), ("now", server)]
    try:
        config = LedgerConfig(data_dir=data_dir, idempotency_retention=timedelta(0))
        _fill(config, db, entries, args.seed)
        size = entry_count(db)
        storage = open_storage(config)
        storage.initialize(config.log_name)
        stats.append(rollup_stat(storage, "SQLite"))
        for _, each in servers:
            each.start()
        if not args.no_browser:
            console.print(f"SQLite log of {size:,} entries; the browser…")
            stats += browser_stats(servers, db, samples, args.seed + 1)
            write_results(stats, size, argv)
        console.print("event counts, SQLite…")
        stats += count_stats(
            servers, db, storage, samples, args.seed + 2, "SQLite", not args.no_scan
        )
        storage.close()
    finally:
        for _, each in servers:
            each.kill()
    write_results(stats, size, argv)
    if args.postgres:
        with _postgres_database(args.postgres, args.reuse_postgres) as url:
            pg = LiveServer(root / "pg", database_url=url, create=not args.reuse_postgres)
            pg_servers = [("", pg)]
            if args.before:
                pg_before = LiveServer(
                    root / "pg", database_url=url, create=False,
                    extra_env=_code_at(args.before, root),
                )  # fmt: skip
                pg_servers = [(f"before ({args.before})", pg_before), ("now", pg)]
            try:
                pg_config = LedgerConfig(data_dir=root / "pg", database_url=url)
                _fill(pg_config, None, entries, args.seed)
                pg_storage = open_storage(pg_config)
                pg_storage.initialize(pg_config.log_name)
                stats.append(rollup_stat(pg_storage, "PostgreSQL"))
                for _, each in pg_servers:
                    each.start()
                console.print("event counts, PostgreSQL…")
                stats += count_stats(
                    pg_servers, db, pg_storage, samples, args.seed + 2, "PostgreSQL",
                    not args.no_scan,
                )  # fmt: skip
                pg_storage.close()
            finally:
                for _, each in pg_servers:
                    each.kill()
        write_results(stats, size, argv)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
