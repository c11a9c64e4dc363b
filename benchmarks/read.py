"""Read-side performance on a big log: proofs, filtered queries, and the verifier.

Run from the repository root::

    .venv/bin/python -m benchmarks.read                 # 1,000,000 entries, ~10 minutes
    .venv/bin/python -m benchmarks.read --quick         # 20,000 entries, well under a minute
    .venv/bin/python -m benchmarks.read --keep /tmp/rb  # keep (and later reuse) the data dir

Writes are cheap to benchmark on an empty log; reads are not: proofs, searches and
verification only show their cost at the size people actually run. So the log is first
pre-filled in-process (the fast path, no HTTP) with varied metadata (services, dotted event
names, actors, request ids, types, payload words drawn from a skewed vocabulary) so that every
filter and the full-text search select realistic fractions of it. Then, in one run on the same
machine, minutes apart:

1. proofs in-process (``Ledger.inclusion_proof`` / ``consistency_proof``: storage + hashing
   only), then the same through a real ``immutablelog serve`` process: the first requests
   after the server starts (cold caches, lazy imports) separately from warm ones;
2. ``GET /v1/events`` with each filter, limit 100, values drawn at random from what was
   written (so both common and rare values occur);
3. ``immutablelog verify`` (the CLI, as an auditor runs it) over the whole log with a fresh
   state file, next to a pure-Python ``sha256(0x00 || entry)`` loop over the same bytes (the
   floor any Python verifier has to pay), then again after 1,000 new entries (incremental).

The HTTP client is deliberately cheap (``http.client``, one keep-alive connection, sequential
requests) so that on this 2-core machine the numbers are the server's, not the client's.
Targets are printed next to the numbers, never asserted: timings on a shared machine are
evidence, not pass/fail criteria.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
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
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from tests.live import LiveServer

from benchmarks.common import percentile
from immutablelog.entry import validate_submission
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig

#: Wide enough for the table when piped to a file.
console = Console(width=None if sys.stdout.isatty() else 150)
BUDGET = 25.0  # seconds per timed scenario at most
RESULTS = Path(__file__).with_name("read-results.md")

# -- a varied event stream ----------------------------------------------------------------------

SERVICES = ("billing", "orders", "accounts", "auth", "search", "inventory", "shipping", "notify")
SERVICE_WEIGHTS = (20, 25, 10, 20, 10, 6, 6, 3)
#: ``domain.entity.action`` names, so ``event_name=auth.*`` and ``billing.invoice.*`` select
#: a large and a small slice.
EVENT_NAMES = tuple(
    f"{domain}.{entity}.{action}"
    for domain, entities in {
        "auth": ("login", "session", "mfa", "password"),
        "billing": ("invoice", "refund", "card"),
        "orders": ("order", "cart", "return"),
        "accounts": ("user", "role", "apikey"),
        "inventory": ("item", "stock"),
    }.items()
    for entity in entities
    for action in ("created", "updated", "deleted", "failed")
)
EVENT_PREFIXES = ("auth.*", "billing.*", "billing.invoice.*", "accounts.role.*", "orders.cart.*")
TYPES = ("success", "info", "warning", "error")
TYPE_WEIGHTS = (80, 12, 2, 6)
ACTORS = 50_000  # ~20 events per actor at 1M: a selective filter
#: Payload words: a few very common (in most payloads), a long tail of rare ones.
COMMON_WORDS = ("request", "completed", "user", "account", "session", "payment", "order")
RARE_WORDS = tuple(f"{a}{b}" for a in ("zeta", "kilo", "omni", "vexa") for b in range(250))
VOCAB_WEIGHTS = tuple([400] * len(COMMON_WORDS) + [1] * len(RARE_WORDS))
VOCAB = COMMON_WORDS + RARE_WORDS


@dataclass(frozen=True, slots=True)
class Generated:
    payload: str
    meta: dict[str, str]
    key: str


def generate(count: int, seed: int, start: int = 0) -> Iterator[Generated]:
    """``count`` reproducible events with unique idempotency keys and request ids."""
    rng = random.Random(seed)
    services = rng.choices(SERVICES, SERVICE_WEIGHTS, k=count)
    types = rng.choices(TYPES, TYPE_WEIGHTS, k=count)
    for n in range(count):
        words = " ".join(rng.choices(VOCAB, VOCAB_WEIGHTS, k=6))
        kind = types[n]
        meta = {
            "type": kind,
            "event_name": EVENT_NAMES[int(rng.random() * len(EVENT_NAMES))],
            "service": services[n],
            "request_id": f"req-{rng.getrandbits(64):016x}",
            "env": "production",
        }
        if rng.random() < 0.9:  # system events have no actor
            meta["actor"] = f"user-{int(rng.random() * ACTORS)}"
        payload = orjson.dumps(
            {
                "message": f"{meta['event_name']} {kind}: {words}",
                "seq": start + n,
                "latency_ms": int(rng.random() * 400),
                "ip": f"10.0.{int(rng.random() * 256)}.{int(rng.random() * 256)}",
            }
        ).decode()
        yield Generated(payload, meta, f"bench-{seed}-{start + n}")


def entry_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    finally:
        conn.close()


def bench_log(keep: Path | None, prefix: str) -> tuple[Path, Path, Path, LiveServer]:
    """The benchmark's directory (``keep``, else a new temporary one), its data directory,
    ledger file, and a server for it (not started), reusing a log an earlier run filled."""
    root = keep or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    db = data_dir / "ledger.db"
    return root, data_dir, db, LiveServer(data_dir, create=not db.exists())


def prefill(ledger: Ledger, have: int, want: int, seed: int, chunk: int = 10_000) -> float:
    """Append events ``have..want`` in-process, one chunk committing while the next is
    validated; returns events/s."""
    tenant = ledger.tenant(DEFAULT_TENANT)
    events = generate(want - have, seed + have, start=have)
    started, done = time.perf_counter(), 0
    in_flight: list[Future[Any]] = []
    with Progress(
        TextColumn("pre-filling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7,.0f} events/s"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("fill", total=want, completed=have, rate=0.0)

        def settle(future: Future[Any]) -> None:
            nonlocal done
            done += len(future.result(300))
            rate = done / (time.perf_counter() - started)
            progress.update(task, completed=have + done, rate=rate)

        while subs := [
            validate_submission(e.payload, e.meta, e.key)
            for _, e in zip(range(chunk), events, strict=False)
        ]:
            in_flight.append(ledger.submit(tenant, subs))
            if len(in_flight) > 1:
                settle(in_flight.pop(0))
        for future in in_flight:
            settle(future)
    return done / max(time.perf_counter() - started, 1e-9)


def wait_for_search_index(db: Path, timeout: float = 900.0) -> float:
    """Block until the background indexer has covered every entry; returns seconds waited.

    Searches over an index that lags would look fast because they miss rows.
    """
    started = time.perf_counter()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (top,) = conn.execute("SELECT MAX(rowid) FROM entries").fetchone()
        with Progress(
            TextColumn("search index catching up"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("fts", total=top)
            while time.perf_counter() - started < timeout:
                done = _search_progress(db)
                progress.update(task, completed=done)
                if done >= top:
                    break
                time.sleep(0.5)
    finally:
        conn.close()
    return time.perf_counter() - started


def _search_progress(db: Path) -> int:
    """The last rowid the full-text index covers (it lives in a file beside the ledger)."""
    search = db.with_name(db.stem + "-search.db")
    if not search.exists():
        return 0
    conn = sqlite3.connect(f"file:{search}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'indexed_rowid'").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()
    return int(row[0]) if row else 0


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Stat:
    """One table row: what was timed, over how many samples, against which target."""

    section: str
    what: str
    samples: list[float]
    target: str = ""
    note: str = ""

    def ms(self, q: float) -> float:
        return percentile(self.samples, q) * 1000


def time_calls(calls: list[Callable[[], object]], budget: float = BUDGET) -> list[float]:
    """Seconds per call, stopping early once ``budget`` seconds are spent, so one slow
    scenario cannot eat the whole run (the row's ``n`` says how many were taken)."""
    out: list[float] = []
    deadline = time.perf_counter() + budget
    for call in calls:
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
        if started > deadline:
            break
    return out


class Http:
    """One keep-alive connection, sequential GETs; ~50 us of client Python per request."""

    def __init__(self, url: str, key: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, params: dict[str, Any]) -> tuple[float, bytes]:
        target = f"{path}?{urlencode(params)}"
        started = time.perf_counter()
        self.conn.request("GET", target, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {target}: {response.status} {body[:300]!r}")
        return elapsed, body

    def close(self) -> None:
        self.conn.close()


def proof_params(rng: random.Random, size: int, count: int) -> tuple[list[Any], list[Any]]:
    """Random (index, size) and (first, second) pairs inside a log of ``size`` entries."""
    inclusion, consistency = [], []
    for _ in range(count):
        tree = rng.randint(1, size)
        inclusion.append((rng.randrange(tree), tree))
        second = rng.randint(1, size)
        consistency.append((rng.randint(1, second), second))
    return inclusion, consistency


# -- scenarios ----------------------------------------------------------------------------------


def in_process_proofs(ledger: Ledger, size: int, count: int, seed: int) -> list[Stat]:
    tenant = ledger.tenant(DEFAULT_TENANT)
    inclusion, consistency = proof_params(random.Random(seed), size, count)
    inc = time_calls([lambda a=a: ledger.inclusion_proof(tenant, *a) for a in inclusion])
    con = time_calls([lambda a=a: ledger.consistency_proof(tenant, *a) for a in consistency])
    return [
        Stat("proofs", "inclusion, in-process (Ledger)", inc),
        Stat("proofs", "consistency, in-process (Ledger)", con),
    ]


def server_proofs(server: LiveServer, size: int, cold: int, warm: int, seed: int) -> list[Stat]:
    """Right after start: ``cold`` inclusion then ``cold`` consistency requests; then warm."""
    rng = random.Random(seed)
    client = Http(server.url, server.read_key)
    stats = []
    try:
        for label, n in (("cold: first requests after start", cold), ("warm", warm)):
            inclusion, consistency = proof_params(rng, size, n)
            inc = time_calls(
                [
                    lambda i=i, s=s: client.get("/v1/proofs/inclusion", {"index": i, "size": s})
                    for i, s in inclusion
                ]
            )
            con = time_calls(
                [
                    lambda f=f, s=s: client.get("/v1/proofs/consistency", {"first": f, "second": s})
                    for f, s in consistency
                ]
            )
            target = "p99 <= 2 ms" if label == "warm" else ""
            stats.append(Stat("proofs", f"inclusion, HTTP, {label}", inc, target))
            stats.append(Stat("proofs", f"consistency, HTTP, {label}", con, target))
    finally:
        client.close()
    return stats


def sample_values(db: Path, seed: int) -> dict[str, list[str]]:
    """Request ids and actors that really occur, picked uniformly over the log."""
    rng = random.Random(seed)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (top,) = conn.execute("SELECT MAX(rowid) FROM entries").fetchone()
        rows = [
            conn.execute(
                "SELECT request_id, actor FROM entries WHERE rowid >= ? "
                "AND request_id LIKE 'req-%' AND actor IS NOT NULL LIMIT 1",
                (rng.randint(1, top),),
            ).fetchone()
            for _ in range(200)
        ]
    finally:
        conn.close()
    rows = [r for r in rows if r]
    return {"request_id": [r[0] for r in rows], "actor": [r[1] for r in rows]}


def query_cases(db: Path, seed: int) -> dict[str, Callable[[random.Random], dict[str, str]]]:
    found = sample_values(db, seed)

    return {
        "service=": (lambda r: {"service": r.choice(SERVICES)}),
        "event_name=": (lambda r: {"event_name": r.choice(EVENT_NAMES)}),
        "event_name=prefix.*": (lambda r: {"event_name": r.choice(EVENT_PREFIXES)}),
        "actor=": (lambda r: {"actor": r.choice(found["actor"])}),
        "request_id=": (lambda r: {"request_id": r.choice(found["request_id"])}),
        "type=": (lambda r: {"type": r.choice(TYPES)}),
        "q= common word": (lambda r: {"q": r.choice(COMMON_WORDS)}),
        "q= rare word": (lambda r: {"q": r.choice(RARE_WORDS)}),
        "q= two words": (lambda r: {"q": f"{r.choice(COMMON_WORDS)} {r.choice(RARE_WORDS)}"}),
        "service+type=error+q=": (
            lambda r: {"service": r.choice(SERVICES), "type": "error", "q": r.choice(COMMON_WORDS)}
        ),
        "service+event_name=prefix.*+actor": (
            lambda r: {
                "service": r.choice(SERVICES),
                "event_name": r.choice(EVENT_PREFIXES),
                "actor": r.choice(found["actor"]),
            }
        ),
    }


def queries(server: LiveServer, db: Path, per_case: int, seed: int) -> list[Stat]:
    rng = random.Random(seed)
    client = Http(server.url, server.read_key)
    stats = []
    try:
        for name, make in query_cases(db, seed).items():
            samples, returned = [], []
            client.get("/v1/events", {**make(rng), "limit": 100})  # one warm-up per case
            deadline = time.perf_counter() + BUDGET
            while len(samples) < per_case and time.perf_counter() < deadline:
                elapsed, body = client.get("/v1/events", {**make(rng), "limit": 100})
                samples.append(elapsed)
                returned.append(len(orjson.loads(body)["events"]))
            note = f"{sum(returned) / len(returned):.0f} rows/page avg"
            stats.append(Stat("query", f"GET /v1/events {name}", samples, "p95 <= 50 ms", note))
    finally:
        client.close()
    return stats


def run_verify(server: LiveServer, state: Path) -> tuple[float, dict[str, Any]]:
    """The CLI as an auditor runs it; wall time includes interpreter start-up."""
    command = [
        sys.executable,
        "-m",
        "immutablelog",
        "verify",
        "--url",
        server.url,
        "--key",
        server.read_key,
        "--log-key",
        server.verifier_key,
        "--state",
        str(state),
        "--json",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"verify exited {done.returncode}: {done.stdout} {done.stderr}")
    return elapsed, json.loads(done.stdout)


def sha256_floor(db: Path) -> tuple[int, float]:
    """Pure-Python leaf hashing over the stored entry bytes; only the loop is timed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sha256 = hashlib.sha256
    count, spent = 0, 0.0
    try:
        cursor = conn.execute("SELECT entry FROM entries ORDER BY tenant_id, idx")
        while rows := cursor.fetchmany(50_000):
            chunk = [bytes(r[0]) for r in rows]
            started = time.perf_counter()
            for entry in chunk:
                sha256(b"\x00" + entry).digest()
            spent += time.perf_counter() - started
            count += len(chunk)
    finally:
        conn.close()
    return count, spent


def append_over_http(server: LiveServer, count: int, seed: int) -> None:
    items = [
        {"payload": e.payload, "meta": e.meta, "idempotency_key": e.key}
        for e in generate(count, seed, start=10**9)
    ]
    for first in range(0, count, 1000):
        response = server_post(server, {"events": items[first : first + 1000]})
        if response.get("accepted") != len(items[first : first + 1000]):
            raise RuntimeError(f"append: {response}")


def server_post(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        headers = {**server.headers(), "Content-Type": "application/json"}
        conn.request("POST", "/v1/events/batch", orjson.dumps(body), headers)
        response = conn.getresponse()
        return dict(orjson.loads(response.read()))
    finally:
        conn.close()


# -- report -------------------------------------------------------------------------------------


def render(stats: list[Stat], verify_rows: list[tuple[str, str, str, str]]) -> tuple[Table, str]:
    table = Table(title="read, prove, verify")
    for column in ("scenario", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "target", "note"):
        table.add_column(column, justify="left" if column in ("scenario", "note") else "right")
    lines = [
        "| scenario | n | p50 ms | p95 ms | p99 ms | max ms | target | note |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for s in stats:
        cells = [
            s.what,
            str(len(s.samples)),
            f"{s.ms(50):.2f}",
            f"{s.ms(95):.2f}",
            f"{s.ms(99):.2f}",
            f"{max(s.samples) * 1000:.2f}",
            s.target,
            s.note,
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    vtable = Table(title="verifier")
    for column in ("what", "value", "target", "note"):
        vtable.add_column(column)
    vlines = ["| verifier | value | target | note |", "|---|--:|---|---|"]
    for row in verify_rows:
        vtable.add_row(*row)
        vlines.append("| " + " | ".join(row) + " |")
    console.print(table)
    console.print(vtable)
    return table, "\n".join(lines) + "\n\n" + "\n".join(vlines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=None, help="log size (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 entries")
    parser.add_argument("--keep", type=Path, help="data directory to keep (reused if filled)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    entries = args.entries or (20_000 if args.quick else 1_000_000)
    proof_samples = 300 if args.quick else 2000
    cold_samples = 20
    query_samples = 15 if args.quick else 40

    root, data_dir, db, server = bench_log(args.keep, "immutablelog-read-")
    stats: list[Stat] = []
    verify_rows: list[tuple[str, str, str, str]] = []
    try:
        config = LedgerConfig(data_dir=data_dir, idempotency_retention=timedelta(0))
        with Ledger.open(config) as ledger:
            ledger.start()  # the writer thread also runs the search indexer
            have = entry_count(db)
            if have < entries:
                rate = prefill(ledger, have, entries, args.seed)
                console.print(f"pre-filled {entries - have:,} entries at {rate:,.0f} events/s")
            waited = wait_for_search_index(db)
            console.print(f"search index caught up after {waited:.1f} s more")
            size = ledger.checkpoint(ledger.tenant(DEFAULT_TENANT)).size
            console.print(f"log size {size:,} entries; in-process proofs…")
            stats += in_process_proofs(ledger, size, proof_samples * 2, args.seed)

        console.print("starting the server; proofs over HTTP…")
        server.start()
        stats += server_proofs(server, size, cold_samples, proof_samples, args.seed + 1)
        console.print("filtered queries…")
        stats += queries(server, db, query_samples, args.seed + 2)

        console.print("verify: pure-Python sha256 floor, then full and incremental CLI runs…")
        hashed, spent = sha256_floor(db)
        floor_rate = hashed / spent
        state = root / f"verify-state-{time.time_ns()}.json"
        wall, report = run_verify(server, state)
        checked = int(report.get("entries_checked", 0))
        inner = float(report.get("elapsed_seconds", wall))
        full_rate = checked / wall
        # A seed of this run's own: a kept log already holds the idempotency keys of earlier
        # runs, and replays of them would add nothing to verify.
        append_over_http(server, 1000, args.seed + 3 + time.time_ns() % 10**9)
        inc_wall, inc_report = run_verify(server, state)
        inc_inner = float(inc_report.get("elapsed_seconds", inc_wall))
        verify_rows = [
            ("sha256(0x00 + entry) pure-Python loop", f"{floor_rate:,.0f} entries/s", "", ""),
            (
                f"verify CLI, full ({checked:,} entries, fresh state)",
                f"{full_rate:,.0f} entries/s",
                ">= 500,000 entries/s",
                f"{wall:.1f} s wall, {inner:.1f} s in-run ({checked / inner:,.0f} entries/s); "
                f"{full_rate / floor_rate:.2f}x the sha256 loop; "
                f"status {report.get('status')}",
            ),
            (
                f"verify CLI, incremental (+{int(inc_report.get('entries_checked', 0)):,} entries)",
                f"{inc_wall:.2f} s wall",
                "<= 1 s",
                f"{inc_inner:.2f} s in-run (without interpreter start-up); "
                f"status {inc_report.get('status')}",
            ),
        ]
    finally:
        server.kill()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    _, markdown = render(stats, verify_rows)
    command = "  .venv/bin/python -m benchmarks.read" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else ""
    )
    header = (
        "## Read, prove, verify (benchmarks/read.py)\n\n"
        f"Command:\n\n{command}\n\n"
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores "
        f"(nproc), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.release()}. Log size: {size:,} entries.\n\n"
    )
    RESULTS.write_text(header + markdown + "\n\n### Reading\n\n_(to be written)_\n")
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
