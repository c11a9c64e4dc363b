"""Ingest throughput of the ledger server, next to the SQLite floor it is built on.

Run from the repository root::

    .venv/bin/python -m benchmarks.ingest            # full run, a few minutes
    .venv/bin/python -m benchmarks.ingest --quick    # smoke run, well under a minute

Everything is measured in one run so that the ratios compare like with like on the same
(noisy) machine, minutes apart rather than days:

1. raw SQLite: ``executemany`` of entry-sized rows, 1000-row transactions, WAL +
   ``synchronous=FULL`` (the durability the ledger promises), into a plain table, and into
   the ledger's own schema (indexes, trigger, tree nodes, a checkpoint row) with no Python
   work: the storage floor;
2. the single writer alone: the in-process ledger fed pre-validated events in the groups the
   server's batch clients make (sequencing + hashing + signing + SQLite; no HTTP, no
   validation; the upkeep thread indexes and copies the WAL beside it, as in the server),
   the ceiling every server scenario sits under; and the
   in-process ledger while pre-filling the big log (validation + the same, no HTTP);
3. ``POST /v1/events/batch`` against a real ``immutablelog serve`` process, several clients
   each keeping one 1000-event batch in flight, for each ``--workers`` count;
4. ``POST /v1/events`` (one event per request, the seed extension's wire format) from 32
   concurrent keep-alive connections;
5. batch ingest again into a log pre-filled to ``--prefill`` entries, to check that the write path
   does not slow down as the log grows (it should not: appends touch O(log n) tree nodes);
6. with ``--postgres URL``, batch ingest on PostgreSQL too, each in a fresh database;
7. sustained batch ingest (``--sustained-events``, a million by default) on SQLite and, with
   ``--postgres``, on PostgreSQL, with the search backlog sampled every second: the index
   keeps up when the backlog stays flat, and the run ends with how long it took to catch up.

Clients run in a separate process with pre-serialized requests (see ``benchmarks.common``).
After every scenario the database is read back: stored entries must equal acknowledged events
(and the latest signed checkpoint must cover them), otherwise the run exits non-zero; then
the server's search backlog is watched until the index covers every acknowledged event.
Targets are printed next to the numbers, never asserted: timings on a shared machine are
evidence, not pass/fail criteria.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from tests.live import LiveServer

import immutablelog
from benchmarks.common import (
    KeyStyle,
    LoadGenerator,
    LoadResult,
    LoadSpec,
    Mode,
    id_maker,
    percentile,
    process_tree_cpu,
    seed_events,
    stored_counts,
)
from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.entry import (
    build_entry,
    encode_entry,
    new_entry_ids,
    timestamp,
    validate_submission,
)
from immutablelog.ledger import DEFAULT_TENANT, Accepted, AppendResult, Ledger, LedgerConfig
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.merkle import CompactRange, leaf_hash
from immutablelog.server.app import tune_gc

BATCH_TARGET = 50_000  # events/s, POST /v1/events/batch
SINGLE_TARGET = 3_000  # events/s, POST /v1/events with 32 clients
QUOTED_RAW = 170_000  # rows/s, the raw SQLite figure quoted for this machine

# Wide enough for the table when the output is a file or a pipe (rich defaults to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 180)


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    unit: str  # "rows" or "events"
    count: int
    rate: float
    workers: int | None = None
    clients: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    server_cpu_us: float | None = None  # server CPU per event, all processes
    client_cpu_pct: float | None = None  # load generator CPU, % of one core
    target: float | None = None
    acked: int | None = None
    stored: int | None = None
    ok: bool = True
    notes: list[str] = field(default_factory=list)
    search_current_s: float | None = None  # after the last answer
    backlog: list[tuple[float, int]] = field(default_factory=list)  # sustained runs


# -- raw SQLite ---------------------------------------------------------------------------------


@dataclass
class _RawRows:
    entries: list[tuple[object, ...]]
    nodes: list[list[tuple[int, int, int, bytes]]]  # per transaction
    checkpoints: list[tuple[int, int, bytes, str, str]]  # one per transaction


def _raw_rows(count: int, batch: int, seed: int) -> _RawRows:
    """Rows exactly like the ledger's: real entry bytes, leaf hashes and tree nodes."""
    signer = Signer.generate("bench")
    rng = CompactRange()
    received = timestamp()
    out = _RawRows([], [], [])
    for index, event in enumerate(seed_events(count, seed)):
        sub = validate_submission(event.payload, event.meta, event.idempotency_key)
        (entry_id,) = new_entry_ids(1)
        data = encode_entry(
            build_entry(
                sub, tenant=DEFAULT_TENANT, index=index, entry_id=entry_id, received_at=received
            )
        )
        leaf = leaf_hash(data)
        if index % batch == 0:
            out.nodes.append([])
        out.nodes[-1].extend((1, lvl, i, h) for (lvl, i), h in rng.append(leaf)[1:])
        meta = sub.meta
        out.entries.append(
            (1, index, entry_id, received, meta["type"], meta["event_name"], meta["service"],
             meta["env"], meta["request_id"], None, sub.idempotency_key, data, leaf)
        )  # fmt: skip
        if index % batch == batch - 1 or index == count - 1:
            root = rng.root()
            note = sign_checkpoint(signer, Checkpoint("bench/default", rng.size, root))
            out.checkpoints.append((1, rng.size, root, note, received))
    return out


def _durable(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


_INSERT_ENTRY = (
    "INSERT INTO {table} (tenant_id, idx, id, received_at, type, event_name, service, env, "
    "request_id, actor, idempotency_key, entry, leaf) VALUES (" + ", ".join("?" * 13) + ")"
)


def bench_raw_sqlite(root: Path, rows: _RawRows, batch: int, *, ledger_schema: bool) -> Row:
    """``executemany`` in ``batch``-row transactions; optionally the ledger's full schema.

    The plain variant is the quoted baseline: a rowid table with the same columns and bytes,
    no index. The ledger-schema variant adds what the ledger's storage must do per commit
    (primary key, the indexes kept on the write path, tree nodes and a checkpoint row whose
    trigger checks contiguity) but none of its Python work: it is the floor for the server's
    write path. (The search file the indexer fills beside it is not part of the floor.)
    """
    path = root / ("raw-ledger-schema.db" if ledger_schema else "raw-plain.db")
    if ledger_schema:
        SQLiteStorage(path).initialize("bench")  # creates the real schema, then we bypass it
        conn = _durable(path)
        conn.execute("INSERT INTO tenants (id, name, created_at) VALUES (1, 'default', '')")
        table = "entries"
    else:
        conn = _durable(path)
        conn.execute(
            "CREATE TABLE plain (tenant_id INTEGER, idx INTEGER, id TEXT, received_at TEXT, "
            "type TEXT, event_name TEXT, service TEXT, env TEXT, request_id TEXT, actor TEXT, "
            "idempotency_key TEXT, entry BLOB, leaf BLOB)"
        )
        table = "plain"
    insert = _INSERT_ENTRY.format(table=table)
    entries = rows.entries
    started = time.perf_counter()
    for number, start in enumerate(range(0, len(entries), batch)):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, entries[start : start + batch])
        if ledger_schema:
            conn.executemany(
                "INSERT INTO nodes (tenant_id, level, idx, hash) VALUES (?, ?, ?, ?)",
                rows.nodes[number],
            )
            conn.execute(
                "INSERT INTO checkpoints (tenant_id, size, root, note, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows.checkpoints[number],
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    (stored,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    conn.close()
    name = "SQLite, ledger schema + nodes + checkpoint" if ledger_schema else "SQLite, plain table"
    return Row(
        scenario=f"{name} (executemany, {batch}-row txns)",
        unit="rows",
        count=len(entries),
        rate=len(entries) / elapsed,
        acked=len(entries),
        stored=int(stored),
        ok=stored == len(entries),
        target=None if ledger_schema else QUOTED_RAW,
    )


# -- pre-filling a big log ----------------------------------------------------------------------


def prefill(data_dir: Path, count: int, seed: int, chunk: int = 10_000) -> Row:
    """Append ``count`` events in-process, keeping one chunk committing while the next is
    validated (the sequencer thread does SQLite work with the GIL released).

    Payloads come from a pool of ``chunk`` pre-built events, each reused with a fresh
    idempotency key, so the measured rate is the ledger's (validate + append), not the
    event generator's. The keys are fresh, so the pre-fill opens the ledger with a zero
    replay window: nothing to deduplicate, and the fill does not depend on how fast the
    replay lookup is on a big log (the server scenarios measure that, with the default).
    """
    pool = list(seed_events(min(count, chunk), seed))
    new_key = id_maker(random.Random(seed), "uuid7")  # a log the SDK filled
    keys = (new_key() for _ in range(count))
    started = time.perf_counter()
    done = 0
    with (
        Ledger.open(LedgerConfig(data_dir=data_dir, idempotency_retention=timedelta(0))) as ledger,
        Progress(
            TextColumn("pre-filling the log"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8,.0f} events/s"),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("prefill", total=count, rate=0.0)
        tenant = ledger.tenant(DEFAULT_TENANT)
        in_flight: list[Future[list[AppendResult]]] = []

        def settle(future: Future[list[AppendResult]]) -> None:
            nonlocal done
            results = future.result(300)
            bad = [r for r in results if not isinstance(r, Accepted) or r.duplicate]
            if bad:
                raise RuntimeError(f"pre-fill: {len(bad)} events not appended: {bad[0]}")
            done += len(results)
            progress.update(task, completed=done, rate=done / (time.perf_counter() - started))

        while subs := [
            validate_submission(e.payload, e.meta, key)
            for e, key in zip(pool, islice(keys, chunk), strict=False)
        ]:
            in_flight.append(ledger.submit(tenant, subs))
            if len(in_flight) > 1:
                settle(in_flight.pop(0))
        for future in in_flight:
            settle(future)
        elapsed = time.perf_counter() - started
        indexing = _catch_up_search_index(ledger)
    # Fold the WAL into the database, as a restarted production server would find it.
    conn = sqlite3.connect(data_dir / "ledger.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    notes = [f"pre-fill 0 → {count:,} entries"]
    if indexing is not None:
        notes.append(f"then {indexing:.0f} s to bring the search index up to date")
    return Row(
        scenario=f"in-process Ledger.submit, {chunk:,}-event chunks (pre-fill, no replay window)",
        unit="events",
        count=done,
        rate=done / elapsed,
        notes=notes,
    )


def bench_writer(root: Path, count: int, batch: int, clients: int, seed: int) -> Row:
    """The sequencer on its own: ``clients`` requests of ``batch`` pre-validated events
    queued at once, as the server's batch clients queue them, round after round.

    No HTTP and no validation: besides the writer only the upkeep thread runs (search
    indexing and WAL copies, started by the first commit as in the server), so this is the
    most the single writer commits. Also reports the writer thread's own CPU per event.
    """
    subs = [
        validate_submission(e.payload, e.meta, e.idempotency_key)
        for e in seed_events(count + batch * clients, seed)
    ]
    round_size = batch * clients
    tune_gc()  # as the server does
    os.sync()  # nothing left to write back from the SQLite scenarios
    with Ledger.open(LedgerConfig(data_dir=root / "writer")) as ledger:
        tenant = ledger.create_tenant(DEFAULT_TENANT)

        def submit_round(start: int) -> list[Future[list[AppendResult]]]:
            return [
                ledger.submit(tenant, subs[start + i * batch : start + (i + 1) * batch])
                for i in range(clients)
            ]

        def settle(futures: list[Future[list[AppendResult]]]) -> int:
            results = [r for f in futures for r in f.result(300)]
            return sum(isinstance(r, Accepted) and not r.duplicate for r in results)

        settle(submit_round(count))  # warm-up: the events after the measured ones
        writer = next(t for t in threading.enumerate() if t.name == "immutablelog-sequencer")
        cpu_before = thread_cpu(writer)
        started = time.perf_counter()
        # The next round is queued before the last one is settled, so the writer always
        # finds work waiting, as it does under the server's clients.
        acked, waiting = 0, None
        for start in range(0, count - round_size + 1, round_size):
            queued = submit_round(start)
            if waiting is not None:
                acked += settle(waiting)
            waiting = queued
        if waiting is not None:
            acked += settle(waiting)
        elapsed = time.perf_counter() - started
        cpu = thread_cpu(writer) - cpu_before
        stored = ledger.checkpoint(tenant).size - round_size - 1  # less warm-up, tenant event
    return Row(
        scenario=f"single writer alone (in-process, {clients} × {batch}-event requests queued, "
        "pre-validated, no HTTP)",
        unit="events",
        count=acked,
        rate=acked / elapsed,
        server_cpu_us=cpu / acked * 1e6 if acked else None,
        acked=acked,
        stored=stored,
        ok=stored == acked,
        target=BATCH_TARGET,
        notes=["CPU is the writer thread's alone"],
    )


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds used so far by one thread of this process (Linux; 0.0 elsewhere)."""
    try:
        stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _catch_up_search_index(ledger: Ledger) -> float | None:
    """Index the pre-filled entries for full-text search before closing the ledger.

    The sequencer indexes behind the writer only when its queue is empty, which a pipelined
    pre-fill never lets happen, so the whole backlog would be indexed by ``Ledger.close()``;
    that runs longer than the sequencer's 30 s stop timeout, after which ``close()`` closes
    the SQLite connection under the still-running thread (a segfault; see BENCHMARKS.md).
    A server started on the data directory should also find the index current, as in
    production, rather than spend the measurement indexing a backlog. Returns the seconds
    spent, or None if this storage has no search index.
    """
    index_search = getattr(ledger.storage, "index_search", None)
    if not callable(index_search):
        return None
    started = time.perf_counter()
    with console.status("bringing the search index up to date…"):
        while index_search(50_000):
            pass
    return time.perf_counter() - started


# -- the server ---------------------------------------------------------------------------------


class PySpy:
    """``py-spy record`` on the server's processes during the timed phase (``--profile``)."""

    def __init__(self, pid: int, out: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out = out
        self.process = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--subprocesses", "--idle", "--threads",
             "--rate", "200", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def bench_server(
    root: Path,
    slug: str,
    label: str,
    *,
    mode: Mode,
    workers: int,
    clients: int,
    events: int,
    batch_size: int,
    prefilled: int,
    seed: int,
    profile_dir: Path | None,
    keys: KeyStyle = "uuid7",
    data_dir: Path | None = None,
    database_url: str | None = None,
    sustained: bool = False,
) -> tuple[Row, Row | None]:
    """One scenario on a fresh data directory and a fresh server process.

    Returns the row and, when ``prefilled`` > 0, the pre-fill row. With ``data_dir``, the
    scenario runs on that existing directory instead, which already holds ``prefilled``
    entries; with ``database_url``, the ledger is in that (empty) PostgreSQL database.
    A ``sustained`` run samples the search backlog every second while it lasts and waits
    up to 30 minutes for the index to catch up afterwards.
    """
    existing = data_dir is not None
    data_dir = data_dir or root / slug
    # Start with nothing left to write back from earlier scenarios (hundreds of MB), so that
    # their writeback does not slow this one's fsyncs.
    os.sync()
    server = LiveServer(data_dir, workers=workers, create=not existing, database_url=database_url)
    database: Path | str = database_url or data_dir / "ledger.db"
    prefill_row = prefill(data_dir, prefilled, seed + 1) if prefilled and not existing else None
    # What is there before the load: the pre-fill, plus the log's own admin events (tenant and
    # key creation are recorded in the log itself).
    before = stored_counts(database).entries
    per_request = batch_size if mode == "batch" else 1
    requests = max(1, events // per_request)
    spec = LoadSpec(
        port=server.port,
        auth={"Authorization": f"Bearer {server.ingest_key}"},
        mode=mode,
        requests=requests,
        batch_size=batch_size,
        concurrency=clients,
        # Enough to open every connection and get past first-request costs (imports, caches).
        warmup_requests=max(clients, requests // 20),
        seed=seed,
        keys=keys,
    )
    server.start()
    assert server.process is not None
    pid = server.process.pid
    generator = LoadGenerator(spec)
    spy: PySpy | None = None
    sampler = BacklogSampler(server.url) if sustained else None
    catch_up_timeout = 1800.0 if sustained else 60.0
    try:
        with console.status(f"[bold]{slug}[/]: building requests, warming up…"):
            generator.start()
            generator.wait_measuring()
        with console.status(f"[bold]{slug}[/]: measuring {requests * per_request:,} events…"):
            cpu_before = process_tree_cpu(pid)
            if profile_dir is not None:
                spy = PySpy(pid, profile_dir / f"{slug}.txt")
            if sampler is not None:
                sampler.start()
            result = generator.result()
            cpu_after = process_tree_cpu(pid)
            if sampler is not None:
                sampler.stop()
        with console.status(f"[bold]{slug}[/]: waiting for the search index…"):
            caught_up = search_catch_up(server.url, catch_up_timeout)
    finally:
        if spy is not None:
            spy.stop()
        generator.kill()
        try:
            code = server.stop()
        except subprocess.TimeoutExpired:
            server.kill()
            code = -signal.SIGKILL
    stored = stored_counts(database)
    row = _server_row(label, mode, workers, clients, result, cpu_after - cpu_before)
    row.acked, row.stored = result.acked, stored.entries - before
    problems = _problems(result, stored.entries, stored.checkpoint_size, before, code)
    row.ok = not problems
    row.notes += problems
    if prefilled:
        row.notes.append(f"log at {prefilled:,} entries before the run")
    if sampler is not None:
        row.notes += backlog_notes(sampler.samples)
        row.backlog = sampler.samples
    row.search_current_s = caught_up
    row.notes.append(
        f"search index current {caught_up:.1f} s after the last answer"
        if caught_up is not None
        else f"search index not current {catch_up_timeout:.0f} s after the last answer"
    )
    if code not in (0, -signal.SIGTERM):
        console.print(server.log()[-3000:])
    return row, prefill_row


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``server_url`` (a URL); dropped on exit."""
    import psycopg

    name = f"immutablelog_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def search_backlog(url: str) -> int | None:
    """The server's search backlog (``immutablelog_search_backlog_entries``), if it answers."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("immutablelog_search_backlog_entries "):
            return int(float(line.split()[1]))
    return None


def search_catch_up(url: str, timeout: float = 60.0) -> float | None:
    """Seconds until the server's search backlog (``/metrics``) is zero, else None.

    Ingest answers before the search index covers an event (the index is filled behind
    the writer): this is how far behind a burst leaves it.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if search_backlog(url) == 0:
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


class BacklogSampler:
    """Reads the server's search backlog every ``interval`` seconds on a thread of its own,
    for a sustained run: whether the index keeps up shows as a backlog that stays flat."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.samples: list[tuple[float, int]] = []  # (seconds since start, backlog)
        self._url = url
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog-sampler", daemon=True)

    def start(self) -> None:
        self._started = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            backlog = search_backlog(self._url)
            if backlog is not None:
                self.samples.append((time.perf_counter() - self._started, backlog))


def backlog_notes(samples: Sequence[tuple[float, int]]) -> list[str]:
    """What a sustained run's backlog samples say: the peak, the end, and how fast it grew
    over the second half of the run (near zero when the index keeps up)."""
    if not samples:
        return ["search backlog: no samples"]
    peak_at, peak = max(samples, key=lambda sample: sample[1])
    end_at, end = samples[-1]
    second_half = [sample for sample in samples if sample[0] >= end_at / 2]
    (t0, b0), (t1, b1) = second_half[0], second_half[-1]
    growth = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    shown = samples[:: max(1, len(samples) // 10)]
    series = ", ".join(f"{b:,} ({t:.0f} s)" for t, b in shown)
    return [
        f"search backlog peak {peak:,} at {peak_at:.0f} s, {end:,} at the last answer "
        f"({end_at:.0f} s), growing {growth:,.0f} entries/s over the second half",
        f"backlog over the run: {series}",
    ]


def _server_row(
    label: str, mode: Mode, workers: int, clients: int, result: LoadResult, server_cpu: float
) -> Row:
    single = mode == "single"
    return Row(
        scenario=label,
        unit="events",
        count=result.measured_events,
        rate=result.rate,
        workers=workers,
        clients=clients,
        p50_ms=percentile(result.latencies, 50) * 1000,
        p99_ms=percentile(result.latencies, 99) * 1000,
        server_cpu_us=server_cpu / result.measured_events * 1e6 if result.measured_events else None,
        client_cpu_pct=100 * result.client_cpu / result.elapsed if result.elapsed else None,
        target=SINGLE_TARGET if single else BATCH_TARGET,
    )


def _problems(
    result: LoadResult, stored: int, checkpoint_size: int, before: int, exit_code: int
) -> list[str]:
    problems = []
    bad_status = Counter({s: n for s, n in result.statuses.items() if s not in (200, 202)})
    if bad_status:
        problems.append(f"HTTP errors {dict(bad_status)}")
    if result.rejected_items:
        problems.append(f"{result.rejected_items} batch items rejected")
    if result.transport_errors:
        problems.append(f"{result.transport_errors} connections dropped")
    if stored != before + result.acked:
        problems.append(f"LOST/EXTRA EVENTS: stored {stored - before:,} ≠ acked {result.acked:,}")
    if checkpoint_size != stored:
        problems.append(f"latest checkpoint covers {checkpoint_size:,} of {stored:,} entries")
    if exit_code not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after shutting down
        problems.append(f"server exited with {exit_code}")
    return problems


# -- reporting ----------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def results_table(rows: Sequence[Row]) -> Table:
    table = Table(title="Ingest throughput", title_justify="left")
    for column in ("scenario", "workers", "clients", "count", "rate/s", "target/s"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for column in ("p50 ms", "p99 ms", "server CPU µs/event", "client CPU %", "stored = acked"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row.scenario,
            _fmt(row.workers, "d"),
            _fmt(row.clients, "d"),
            f"{row.count:,}",
            f"[bold]{row.rate:,.0f}[/]",
            _fmt(row.target),
            _fmt(row.p50_ms, ".1f"),
            _fmt(row.p99_ms, ".1f"),
            _fmt(row.server_cpu_us),
            _fmt(row.client_cpu_pct),
            "—" if row.acked is None else ("[green]yes[/]" if row.ok else "[red]NO[/]"),
        )
    return table


def markdown_table(rows: Sequence[Row]) -> str:
    head = (
        "| scenario | workers | clients | count | rate/s | target/s | p50 ms | p99 ms "
        "| server CPU µs/event | client CPU % | search index current after | stored = acked |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        stored = "—" if r.acked is None else (f"{r.stored:,} = {r.acked:,}" if r.ok else "**NO**")
        current = "—" if r.search_current_s is None else f"{r.search_current_s:.1f} s"
        lines.append(
            f"| {r.scenario} | {_fmt(r.workers, 'd')} | {_fmt(r.clients, 'd')} | {r.count:,} "
            f"| **{r.rate:,.0f}** | {_fmt(r.target)} | {_fmt(r.p50_ms, '.1f')} "
            f"| {_fmt(r.p99_ms, '.1f')} | {_fmt(r.server_cpu_us)} | {_fmt(r.client_cpu_pct)} "
            f"| {current} | {stored} |"
        )
    return "\n".join(lines)


def ratios(rows: dict[str, Row], workers: Sequence[int], prefilled: int) -> list[tuple[str, float]]:
    """The comparisons the benchmark exists for, computed from this run's rows only."""
    out: list[tuple[str, float]] = []
    raw, floor = rows.get("raw-plain"), rows.get("raw-ledger")
    batch = {w: rows[f"batch-w{w}"] for w in workers if f"batch-w{w}" in rows}
    for w, row in batch.items():
        if raw:
            out.append((f"batch (workers={w}) / raw SQLite plain table", row.rate / raw.rate))
        if floor:
            out.append((f"batch (workers={w}) / SQLite ledger-schema floor", row.rate / floor.rate))
        out.append((f"batch (workers={w}) / target {BATCH_TARGET:,}", row.rate / BATCH_TARGET))
    if raw and floor:
        out.append(("SQLite ledger-schema floor / raw plain table", floor.rate / raw.rate))
    writer = rows.get("writer")
    if writer:
        out.append((f"single writer alone / target {BATCH_TARGET:,}", writer.rate / BATCH_TARGET))
        for w, row in batch.items():
            out.append((f"batch (workers={w}) / single writer alone", row.rate / writer.rate))
    if len(batch) > 1:
        first = batch[workers[0]]
        for w in workers[1:]:
            out.append((f"batch workers={w} / workers={workers[0]}", batch[w].rate / first.rate))
    for w in workers:
        postgres = rows.get(f"batch-pg-w{w}")
        if postgres:
            target = postgres.rate / BATCH_TARGET
            out.append((f"batch on PostgreSQL (workers={w}) / target {BATCH_TARGET:,}", target))
            if w in batch:
                ratio = postgres.rate / batch[w].rate
                out.append((f"batch on PostgreSQL / on SQLite (workers={w})", ratio))
    grown = rows.get("batch-big")
    if grown and workers[0] in batch:
        label = f"batch at a {prefilled:,}-entry log / at an empty log (workers={workers[0]})"
        out.append((label, grown.rate / batch[workers[0]].rate))
    random_keys = rows.get("batch-big-random")
    if random_keys and workers[0] in batch:
        label = f"batch at a {prefilled:,}-entry log, random keys / at an empty log"
        out.append((label, random_keys.rate / batch[workers[0]].rate))
    single = rows.get("single")
    if single:
        out.append((f"single-event / target {SINGLE_TARGET:,}", single.rate / SINGLE_TARGET))
    return out


def machine() -> str:
    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        revision = "unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), load average {load}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.release()}, code at {revision}, "
        f"immutablelog from {Path(immutablelog.__file__).parent}"
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--events", type=int, help="events per batch scenario on an empty log (default 50000)"
    )
    parser.add_argument(
        "--growth-events", type=int, help="events for the big-log batch scenario (default 20000)"
    )
    parser.add_argument(
        "--single-events", type=int, help="events for the single-event scenario (default 20000)"
    )
    parser.add_argument(
        "--sustained-events",
        type=int,
        help="events for the sustained batch scenario on each backend, the search backlog "
        "sampled every second (default 1000000; 0: skip it)",
    )
    parser.add_argument("--raw-rows", type=int, help="rows for the SQLite baselines (= --events)")
    parser.add_argument("--prefill", type=int, help="entries in the big log (default 1000000)")
    parser.add_argument("--clients", type=int, default=4, help="batch clients, one batch each")
    parser.add_argument("--single-clients", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated server worker counts for batch ingest (default 1,2); the first "
        "is also used for the single-event and big-log scenarios",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run batch ingest on PostgreSQL (a role that may CREATE DATABASE; each "
        "scenario gets a fresh database, dropped afterwards), e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres",
    )
    parser.add_argument("--seed", type=int, default=20250314)
    parser.add_argument("--tmp-dir", type=Path, help="where data directories go (default $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles of the server, here")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    quick = args.quick
    args.events = args.events or (10_000 if quick else 50_000)
    args.growth_events = args.growth_events or (5_000 if quick else 20_000)
    args.single_events = args.single_events or (3_000 if quick else 20_000)
    if args.sustained_events is None:
        args.sustained_events = 60_000 if quick else 1_000_000
    args.raw_rows = args.raw_rows or args.events
    args.prefill = args.prefill if args.prefill is not None else (50_000 if quick else 1_000_000)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    wall = time.perf_counter()
    console.print(f"[bold]immutablelog ingest benchmark[/] — {started:%Y-%m-%d %H:%M} UTC")
    console.print(machine())
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="immutablelog-bench-", dir=args.tmp_dir))
    rows: dict[str, Row] = {}

    def record(key: str, row: Row | None) -> None:
        if row is not None:
            rows[key] = row
            notes = f"  ({'; '.join(row.notes)})" if row.notes else ""
            style = "" if row.ok else "[red]"
            console.print(f"  {row.scenario}: [bold]{row.rate:,.0f}[/] {row.unit}/s{style}{notes}")

    try:
        with console.status(f"building {args.raw_rows:,} entry rows…"):
            raw_rows = _raw_rows(args.raw_rows, args.batch_size, args.seed)
        record("raw-plain", bench_raw_sqlite(root, raw_rows, args.batch_size, ledger_schema=False))
        record("raw-ledger", bench_raw_sqlite(root, raw_rows, args.batch_size, ledger_schema=True))
        del raw_rows
        record("writer", bench_writer(root, args.events, args.batch_size, args.clients, args.seed))
        common = {
            "batch_size": args.batch_size,
            "seed": args.seed,
            "profile_dir": args.profile,
        }
        for w in args.workers:
            row, _ = bench_server(
                root, f"batch-w{w}", "POST /v1/events/batch, empty log", mode="batch",
                workers=w, clients=args.clients, events=args.events, prefilled=0, **common,
            )  # fmt: skip
            record(f"batch-w{w}", row)
        if args.postgres:
            for w in args.workers:
                with fresh_postgres_database(args.postgres) as url:
                    row, _ = bench_server(
                        root, f"batch-pg-w{w}", "POST /v1/events/batch, empty log, PostgreSQL",
                        mode="batch", workers=w, clients=args.clients, events=args.events,
                        prefilled=0, database_url=url, **common,
                    )  # fmt: skip
                record(f"batch-pg-w{w}", row)
        first = args.workers[0]
        if args.sustained_events:
            # Long enough for a search index slower than ingest to show a growing backlog.
            row, _ = bench_server(
                root, "sustained", "POST /v1/events/batch, sustained, empty log", mode="batch",
                workers=first, clients=args.clients, events=args.sustained_events, prefilled=0,
                sustained=True, **common,
            )  # fmt: skip
            record("sustained", row)
            if args.postgres:
                with fresh_postgres_database(args.postgres) as url:
                    row, _ = bench_server(
                        root, "sustained-pg",
                        "POST /v1/events/batch, sustained, empty log, PostgreSQL", mode="batch",
                        workers=first, clients=args.clients, events=args.sustained_events,
                        prefilled=0, database_url=url, sustained=True, **common,
                    )  # fmt: skip
                record("sustained-pg", row)
        row, _ = bench_server(
            root, "single", "POST /v1/events (1 event/request), empty log", mode="single",
            workers=first, clients=args.single_clients, events=args.single_events,
            prefilled=0, **common,
        )  # fmt: skip
        record("single", row)
        if args.prefill:
            row, fill = bench_server(
                root, "batch-big", f"POST /v1/events/batch, log at {args.prefill:,}",
                mode="batch", workers=first, clients=args.clients, events=args.growth_events,
                prefilled=args.prefill, **common,
            )  # fmt: skip
            record("prefill", fill)
            record("batch-big", row)
            # The same big log, now from clients whose keys are random (the seed's extension,
            # any client not using time-ordered ids): what the idempotency index costs then.
            row, _ = bench_server(
                root, "batch-big-random", f"POST /v1/events/batch, log at {args.prefill:,}, "
                "random keys", mode="batch", workers=first, clients=args.clients,
                events=args.growth_events, prefilled=args.prefill, keys="uuid4",
                data_dir=root / "batch-big", **common,
            )  # fmt: skip
            record("batch-big-random", row)
    finally:
        if args.keep:
            console.print(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    # From the storage floor up to the full HTTP path, then the big log and single events.
    display = [
        "raw-plain",
        "raw-ledger",
        "writer",
        "prefill",
        *(f"batch-w{w}" for w in args.workers),
        *(f"batch-pg-w{w}" for w in args.workers),
    ]
    later = ["sustained", "sustained-pg", "batch-big", "batch-big-random", "single"]
    order = [rows[k] for k in [*display, *later] if k in rows]
    console.print()
    console.print(results_table(order))
    console.print()
    for label, value in ratios(rows, args.workers, args.prefill):
        console.print(f"  {label:<62} [bold]{value:6.2f}×[/]")
    failed = [r for r in order if not r.ok]
    console.print()
    for r in order:
        if r.acked is not None:
            console.print(f"  {r.scenario}: stored {r.stored:,}, acknowledged {r.acked:,}")
    if args.markdown:
        console.print()
        print(markdown_table(order))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "machine": machine(),
                    "argv": sys.argv,
                    "rows": [asdict(r) for r in order],
                    "ratios": dict(ratios(rows, args.workers, args.prefill)),
                },
                indent=2,
            )
        )
    if failed:
        console.print(f"[red bold]FAILED[/]: {len(failed)} scenario(s) lost events or errored")
        for r in failed:
            console.print(f"  {r.scenario}: {'; '.join(r.notes)}")
        return 1
    console.print("[green]every acknowledged event is stored[/]")
    console.print(f"finished in {time.perf_counter() - wall:.0f} s; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
