"""PostgreSQL's search index: what indexing an entry costs, words split in SQL (before) next
to words split by the indexing process (now), and what a few queries take on each.

Run from the repository root, with the PostgreSQL server on this machine (its backends' CPU
is read from ``/proc``)::

    .venv/bin/python -m benchmarks.search_index --postgres postgresql://postgres@127.0.0.1:5432/postgres
    # --entries N (100000)  --rounds N (2)  --queries N (20 calls per query)

A fresh database is filled with ``--entries`` of the ingest benchmark's events through the
ledger. Each round then indexes all of them twice, in alternation, so that machine noise
hits both alike: *before*, the statement the backend used until its schema version 8 (in SQL:
``regexp_replace`` for punctuation, ``to_tsvector('simple', …)``, a ``tsvector`` column with
positions under GIN) on a table of that layout, in the same 10,000-entry slices cut into
four runs on four connections; *now*, ``PostgresStorage.index_search`` itself (the payloads
read, split by ``ledger/words.py``, copied back as text under a GIN of its words). Reported
per entry: wall time, the CPU of the database backends, the CPU of this Python process, and
their sum. Last, each layout answers the same full-text queries (newest 100 matches).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg

from benchmarks.common import id_maker, seed_events
from benchmarks.ingest import console, fresh_postgres_database
from immutablelog.entry import validate_submission
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.ledger.postgres import PostgresStorage
from immutablelog.ledger.postgres.storage import split_ranges
from immutablelog.ledger.storage import EventQuery

SLICE = 10_000
RUNS = 4
#: Before schema version 8: the table, and the statement that filled it.
BEFORE_TABLE = """
CREATE TABLE search_before (tenant_id bigint, idx bigint, document tsvector NOT NULL,
                            PRIMARY KEY (tenant_id, idx));
CREATE INDEX search_before_document ON search_before USING gin (document);
"""
BEFORE_WORDS = r"regexp_replace(%s, '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' ', 'g')"
BEFORE_INSERT = (
    "INSERT INTO search_before (tenant_id, idx, document) "
    "SELECT tenant_id, idx, to_tsvector('simple', coalesce("
    + BEFORE_WORDS
    % "convert_from(entry, 'UTF8')::json ->> 'payload'"
    + ", '')) FROM entries WHERE tenant_id = %s AND idx >= %s AND idx < %s "
    "ON CONFLICT (tenant_id, idx) DO NOTHING"
)
#: Full-text queries on the generated events: common words, a rare one, split words.
QUERIES = ("get", "completed successfully", "returned error 500", "/api/v1/invoices", "203.0.7.9")


def fill(url: str, count: int, seed: int, chunk: int = 10_000) -> int:
    """``count`` generated events appended through the ledger; the tenant's id."""
    pool = list(seed_events(min(count, chunk), seed))
    new_key = id_maker(random.Random(seed), "uuid7")
    keys = (new_key() for _ in range(count))
    with (
        TemporaryDirectory() as keys_dir,
        Ledger.open(
            LedgerConfig(
                data_dir=Path(keys_dir), database_url=url, idempotency_retention=timedelta(0)
            )
        ) as ledger,
    ):
        tenant = ledger.create_tenant(DEFAULT_TENANT)
        while subs := [
            validate_submission(e.payload, e.meta, key)
            for e, key in zip(pool, islice(keys, chunk), strict=False)
        ]:
            ledger.submit(tenant, subs).result(600)
        return tenant.id


def backends_cpu(conn: psycopg.Connection[Any], database: str) -> float:
    """CPU seconds of every backend of ``database`` so far (from /proc: a local server)."""
    pids = [
        int(pid)
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    ]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in ticks
    return total


class Before:
    """The SQL indexing of before, on its own connections (kept open, as a pool keeps them)."""

    def __init__(self, url: str) -> None:
        self._conns = [psycopg.connect(url, autocommit=True) for _ in range(RUNS)]

    def index(self, tenant_id: int, count: int) -> None:
        def run(conn: psycopg.Connection[Any], ranges: Sequence[tuple[int, int, int]]) -> None:
            with conn.transaction():
                for tenant, start, end in ranges:
                    conn.execute(BEFORE_INSERT, (tenant, start, end))

        with ThreadPoolExecutor(RUNS) as pool:
            for start in range(0, count, SLICE):
                runs = split_ranges([(tenant_id, start, min(count, start + SLICE))], RUNS)
                list(pool.map(run, self._conns, runs))

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


def measure(
    admin: psycopg.Connection[Any], database: str, count: int, work: Callable[[], None]
) -> tuple[float, float, float]:
    """µs per entry of ``work``: wall time, database backends' CPU, this process's CPU."""
    admin.execute("CHECKPOINT")  # no writeback of an earlier round during this one
    cpu, py, wall = backends_cpu(admin, database), time.process_time(), time.perf_counter()
    work()
    wall = time.perf_counter() - wall
    py = time.process_time() - py
    cpu = backends_cpu(admin, database) - cpu
    return wall / count * 1e6, cpu / count * 1e6, py / count * 1e6


def before_query(tenant_id: int, text: str) -> tuple[str, tuple[object, ...]]:
    """A full-text query as the backend made it before schema version 8."""
    words = text.split()
    match = " && ".join(f"phraseto_tsquery('simple', {BEFORE_WORDS % '%s'})" for _ in words)
    return (
        "SELECT idx, id, received_at, entry FROM entries WHERE tenant_id = %s AND idx IN "
        f"(SELECT idx FROM search_before WHERE tenant_id = %s AND document @@ ({match})) "
        "ORDER BY idx DESC LIMIT 100",
        (tenant_id, tenant_id, *words),
    )


def timed_pair(
    first: Callable[[], object], second: Callable[[], object], times: int
) -> tuple[float, float]:
    """Median milliseconds of ``times`` calls of each, in alternation (noise hits both)."""
    took: tuple[list[float], list[float]] = ([], [])
    for _ in range(times):
        for call, into in ((first, took[0]), (second, took[1])):
            started = time.perf_counter()
            call()
            into.append((time.perf_counter() - started) * 1000)
    return statistics.median(took[0]), statistics.median(took[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", required=True)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=20, help="calls per query")
    parser.add_argument("--seed", type=int, default=20250314)
    args = parser.parse_args(argv)
    console.print(f"[bold]search index benchmark[/] — {time.strftime('%Y-%m-%d %H:%M')} UTC")
    with fresh_postgres_database(args.postgres) as url:
        database = url.rsplit("/", 1)[1]
        with console.status(f"filling {args.entries:,} entries…"):
            tenant_id = fill(url, args.entries, args.seed)
        admin = psycopg.connect(url, autocommit=True)
        admin.execute(BEFORE_TABLE)
        (count,) = admin.execute("SELECT count(*) FROM entries").fetchone() or (0,)
        storage = PostgresStorage(url, max_size=RUNS + 2)
        storage.index_search(1)  # the pool's connections, opened outside the measurement
        before = Before(url)
        results: dict[str, list[tuple[float, float, float]]] = {"before": [], "now": []}
        for round_no in range(1, args.rounds + 1):
            admin.execute("TRUNCATE search_before")
            results["before"].append(
                measure(admin, database, count, lambda: before.index(tenant_id, count))
            )
            admin.execute("TRUNCATE entries_search; DELETE FROM search_progress")
            results["now"].append(
                measure(admin, database, count, lambda: storage.index_search(count))
            )
            for name, rows in results.items():
                wall, cpu, py = rows[-1]
                console.print(
                    f"  round {round_no} {name:6}: {wall:6.1f} µs wall, {cpu:6.1f} µs database "
                    f"CPU, {py:5.1f} µs Python CPU per entry"
                )
        assert storage.search_backlog() == 0
        admin.execute("VACUUM ANALYZE search_before, entries_search")
        console.print(f"\n{count:,} entries, {args.rounds} rounds (medians), µs per entry:\n")
        print("| indexing | wall | database CPU | Python CPU | CPU in all |")
        print("|---|---:|---:|---:|---:|")
        medians = {}
        for name, rows in results.items():
            wall, cpu, py = (statistics.median(column) for column in zip(*rows, strict=True))
            medians[name] = (wall, cpu, py)
            print(f"| {name} | {wall:.1f} | {cpu:.1f} | {py:.1f} | {cpu + py:.1f} |")
        (bw, bc, bp), (nw, nc, np_) = medians["before"], medians["now"]
        print(
            f"| now / before | {nw / bw:.2f}× | {nc / bc:.2f}× | | {(nc + np_) / (bc + bp):.2f}× |"
        )

        print("\n| query (newest 100) | before, ms | now, ms | matches |")
        print("|---|---:|---:|---:|")
        for text in QUERIES:
            old_sql, old_params = before_query(tenant_id, text)
            query = EventQuery(text=text)
            old_ms, new_ms = timed_pair(
                partial(storage._query, old_sql, old_params),
                partial(storage.query, tenant_id, query),
                args.queries,
            )
            found = [e.index for e in storage.query(tenant_id, query)]
            assert found == [int(r[0]) for r in storage._query(old_sql, old_params)], text
            print(f"| `{text}` | {old_ms:.1f} | {new_ms:.1f} | {len(found)} |")
        before.close()
        storage.close()
        admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
