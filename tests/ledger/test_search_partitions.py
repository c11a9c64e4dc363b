"""SQLite's lookups by event name, request id and actor live in partitions of the entries'
range (``ledger/sqlite/search.py``): whatever the partitions, the cursor, the direction and
how far the indexer has come, a query, a count and an erasure's selection answer what the
entries themselves say."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from immutablelog.ledger.sqlite import SQLiteStorage, lookup, search
from immutablelog.ledger.storage import EventQuery, NewEntry
from tests.ledger.test_storage_contract import LOG_NAME, append_events, new_tenant

NAMES = ("user.login", "user.logout", "job.run", "user", "userz")
PREFIXES = ("user.", "user", "job.", "nothing.")
ACTORS = ("alice", "bob", "carol")
STAMPS = [f"2024-05-0{day}T00:00:00.000000Z" for day in range(1, 8)]


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteStorage]:
    """A store whose search file puts 4 entries in a partition, so that a few hundred
    entries span many partitions."""
    monkeypatch.setattr(lookup, "PARTITION_BITS", 2)
    opened = SQLiteStorage(tmp_path / "ledger.db")
    opened.initialize(LOG_NAME)
    yield opened
    opened.close()


def _events(rng: random.Random, count: int) -> list[tuple[dict[str, Any], str, str]]:
    events = []
    for n in range(count):
        meta: dict[str, Any] = {
            "event_name": rng.choice(NAMES),
            "service": rng.choice(("api", "worker")),
        }
        if rng.random() < 0.7:
            meta["actor"] = rng.choice(ACTORS)
        if rng.random() < 0.3:  # rare request ids: a few entries each, far apart
            meta["request_id"] = f"r{rng.randrange(15)}"
        events.append((meta, f'{{"n": {n}}}', rng.choice(STAMPS)))
    return events


def _query(rng: random.Random, size: int) -> EventQuery:
    driver = rng.choice(("event_name", "event_name_prefix", "request_id", "actor"))
    value = {
        "event_name": lambda: rng.choice(NAMES),
        "event_name_prefix": lambda: rng.choice(PREFIXES),
        "request_id": lambda: f"r{rng.randrange(16)}",
        "actor": lambda: rng.choice(ACTORS),
    }[driver]()
    return EventQuery(
        **{driver: value},
        service=rng.choice((None, None, "api")),
        after_index=rng.choice((None, rng.randrange(-1, size + 2))),
        descending=rng.random() < 0.6,
        limit=rng.choice((1, 3, 7, 100)),
    )


def _matches(row: NewEntry, query: EventQuery) -> bool:
    return all(
        getattr(query, f) is None or getattr(row, f) == getattr(query, f)
        for f in ("service", "event_name", "request_id", "actor")
    ) and (not query.event_name_prefix or row.event_name.startswith(query.event_name_prefix))


def _expected(rows: list[NewEntry], query: EventQuery) -> list[int]:
    found = [r.index for r in rows if _matches(r, query)]
    if query.after_index is not None:
        after = query.after_index
        found = [i for i in found if (i < after if query.descending else i > after)]
    found.sort(reverse=query.descending)
    return found[: query.limit]


def _check(storage: SQLiteStorage, tenant: int, rows: list[NewEntry], seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        query = _query(rng, len(rows))
        assert [e.index for e in storage.query(tenant, query)] == _expected(rows, query), query
    for actor in ACTORS:
        for width in (10, 13):
            query = EventQuery(actor=actor, request_id=rng.choice((None, "r3")))
            found: Counter[tuple[str, str]] = Counter(
                (r.received_at[:width], r.type) for r in rows if _matches(r, query)
            )
            expected = sorted((bucket, kind, n) for (bucket, kind), n in found.items())
            assert sorted(storage.count_events(tenant, query, width).rows) == expected, query


def test_lookups_across_partitions_answer_what_the_entries_say(storage: SQLiteStorage) -> None:
    rng = random.Random(3)
    acme, other = new_tenant(storage, "acme"), new_tenant(storage, "other")
    rows: list[NewEntry] = []
    for _ in range(4):
        rows += append_events(storage, acme, _events(rng, 60))
        append_events(storage, other, _events(rng, 7))  # interleaved; never found for acme
    _check(storage, acme, rows, 1)  # nothing indexed: the entries alone
    storage.index_search(97)  # a slice ending inside a partition
    _check(storage, acme, rows, 2)
    while storage.index_search(50):
        pass
    _check(storage, acme, rows, 3)
    rows += append_events(storage, acme, _events(rng, 30))  # newer than the lookups
    _check(storage, acme, rows, 4)


def test_every_lookup_seeks_partitions_by_equality(storage: SQLiteStorage) -> None:
    """A lookup, a count and an erasure's selection each seek a partition's stretch of the
    index (the partition, the tenant and the value all equal), never one range as long as
    the log."""
    rng = random.Random(5)
    acme = new_tenant(storage)
    append_events(storage, acme, _events(rng, 40))
    storage.index_search(100)
    conn = storage._search_conn
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    for query in (
        EventQuery(event_name="job.run"),
        EventQuery(event_name_prefix="user."),
        EventQuery(request_id="r1", descending=False),
        EventQuery(actor="alice", after_index=20),
    ):
        storage.query(acme, query)
    storage.count_events(acme, EventQuery(actor="bob"), 10)
    storage.count_events(acme, EventQuery(request_id="r2"), 10)
    storage.erasable_indexes(acme, actor="carol")
    conn.set_trace_callback(None)
    lookups = [s for s in statements if "search.lookup AS l" in s]
    assert len(lookups) >= 7
    for statement in lookups:
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement))
        assert "INDEX lookup_by_" in plan and "(<expr>=? AND tenant_id=? AND " in plan, plan


@pytest.mark.parametrize(
    ("layout", "lead"), [("4", ""), ("5", "(entry_rowid >> 16), ")], ids=["layout 4", "layout 5"]
)
def test_an_older_layout_gets_its_lookup_indexes_rebuilt_in_place(
    storage: SQLiteStorage, layout: str, lead: str
) -> None:
    """The lookup indexes of layouts 4 (no partition) and 5 (other partitions) are rebuilt;
    the full-text index is kept as it is (a new file would index the whole log again)."""
    rng = random.Random(7)
    acme = new_tenant(storage)
    rows = append_events(storage, acme, _events(rng, 50))
    storage.index_search(100)
    storage._search_conn.executescript(
        "".join(
            f"DROP INDEX search.lookup_by_{column}; CREATE INDEX search.lookup_by_{column} "
            f"ON lookup ({lead}tenant_id, {column}); "
            for column in lookup.COLUMNS
        )
        + f"UPDATE search.meta SET value = '{layout}' WHERE key = 'layout';"
    )
    storage.close()
    reopened = SQLiteStorage(storage.path)
    try:
        assert reopened.search_backlog() == 0
        assert len(reopened.query(acme, EventQuery(text="n", limit=100))) == 50
        _check(reopened, acme, rows, 8)
        with closing(sqlite3.connect(storage.search_path)) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone() == (
                search._SEARCH_LAYOUT,
            )
            ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'lookup_by_actor'")
            assert "entry_rowid >> 2" in ddl.fetchone()[0]
    finally:
        reopened.close()
