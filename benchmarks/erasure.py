"""Erasure's costs, in one run: ingest with entry format 2 against format 1, and erasing every
event of one actor in a big log, on SQLite and (with ``--postgres``) PostgreSQL.

    .venv/bin/python -m benchmarks.erasure [--events 100000] [--rounds 3]
        [--log-size 1000000] [--actors 1000] [--postgres URL]

- **ingest**: the single writer fed pre-validated events (4 requests of 1000 events queued
  at a time, as the server's batch clients keep it), in a fresh log each round; format 1 is
  written the way earlier releases wrote it (payload and meta in the entry, no erasable row:
  a benchmark-only switch of ``entry.ENTRY_VERSION``). Rounds alternate between the formats
  so that drift on a noisy machine hits both alike; each figure is the best round.
- **erase an actor**: a log of ``--log-size`` events by ``--actors`` actors (so one actor has
  log-size / actors events), the search index caught up; then ``erase_actor`` timed from
  the call to its return: the erasure record committed, values and salts deleted, the
  derived actor column nulled, the search index purged (SQLite: FTS5 'delete' + optimize,
  WAL checkpoints TRUNCATE; PostgreSQL: rows deleted, then VACUUM of the tables touched).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.common import seed_events
from immutablelog import entry
from immutablelog.entry import Submission, validate_submission
from immutablelog.ledger import Ledger, LedgerConfig

BATCH = 1000
IN_FLIGHT = 4


def submissions(count: int, actors: int, *, format_1: bool = False) -> list[Submission]:
    out = []
    for number, event in enumerate(seed_events(count, seed=11)):
        event.meta["actor"] = f"user-{number % actors}"
        sub = validate_submission(event.payload, event.meta, event.idempotency_key)
        out.append(dataclasses.replace(sub, erasable=None) if format_1 else sub)
    return out


@contextmanager
def fresh_ledger(tmp: Path, postgres: str | None, name: str) -> Iterator[Ledger]:
    data_dir = tmp / name
    url = None
    if postgres:
        db = f"bench_{name.replace('-', '_')}_{int(time.time() * 1000) % 10**9}"
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        url = postgres.rsplit("/", 1)[0] + "/" + db
    try:
        with Ledger.open(LedgerConfig(data_dir=data_dir, database_url=url)) as ledger:
            ledger.create_tenant("default")
            ledger.start()
            yield ledger
    finally:
        if url is not None:
            with psycopg.connect(postgres or "", autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )


def ingest(ledger: Ledger, subs: Sequence[Submission]) -> float:
    """Seconds to commit ``subs`` through the single writer, IN_FLIGHT requests queued."""
    tenant = ledger.tenant("default")
    started = time.perf_counter()
    pending = []
    for start in range(0, len(subs), BATCH):
        pending.append(ledger.submit(tenant, subs[start : start + BATCH]))
        if len(pending) >= IN_FLIGHT:
            pending.pop(0).result()
    for future in pending:
        future.result()
    return time.perf_counter() - started


@contextmanager
def writing_format(version: int) -> Iterator[None]:
    saved = entry.ENTRY_VERSION
    entry.ENTRY_VERSION = version  # type: ignore[misc]
    try:
        yield
    finally:
        entry.ENTRY_VERSION = saved  # type: ignore[misc]


def bench_ingest(tmp: Path, postgres: str | None, events: int, rounds: int) -> dict[int, float]:
    inputs = {1: submissions(events, 1000, format_1=True), 2: submissions(events, 1000)}
    best = {1: float("inf"), 2: float("inf")}
    for number in range(rounds):
        for version in (1, 2):
            with (
                fresh_ledger(tmp, postgres, f"ingest-v{version}-{number}") as ledger,
                writing_format(version),
            ):
                best[version] = min(best[version], ingest(ledger, inputs[version]))
    return {version: events / seconds for version, seconds in best.items()}


def bench_erase(tmp: Path, postgres: str | None, log_size: int, actors: int) -> dict[str, float]:
    with fresh_ledger(tmp, postgres, "erase") as ledger:
        tenant = ledger.tenant("default")
        started = time.perf_counter()
        for start in range(0, log_size, 100_000):
            ingest(ledger, submissions(min(100_000, log_size - start), actors))
        filled = time.perf_counter() - started
        while ledger.storage.search_backlog():
            time.sleep(0.5)
        started = time.perf_counter()
        outcome = ledger.erasures.erase_actor(tenant, "user-7", "benchmark", "bench")
        took = time.perf_counter() - started
        assert outcome.erased == log_size // actors, outcome
        return {"fill_s": filled, "erase_s": took, "erased": outcome.erased}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-size", type=int, default=1_000_000)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-erase", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args(argv)
    backends: list[tuple[str, str | None]] = [] if args.skip_sqlite else [("SQLite", None)]
    backends += [("PostgreSQL", args.postgres)] if args.postgres else []
    with tempfile.TemporaryDirectory(prefix="erasure-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name, url in backends:
            if not args.skip_ingest:
                rates = bench_ingest(tmp, url, args.events, args.rounds)
                print(
                    f"{name:10} ingest ({args.events:,} events, best of {args.rounds}): "
                    f"format 1 {rates[1]:,.0f}/s  format 2 {rates[2]:,.0f}/s  "
                    f"ratio {rates[2] / rates[1]:.3f}"
                )
            if not args.skip_erase:
                erased = bench_erase(tmp, url, args.log_size, args.actors)
                print(
                    f"{name:10} erase one actor ({erased['erased']:,.0f} of {args.log_size:,} "
                    f"events): {erased['erase_s']:.2f} s  (log filled in "
                    f"{erased['fill_s']:.0f} s; target 5 s)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
