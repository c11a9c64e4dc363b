"""PostgreSQL's search index, filled on several connections at once: the slice is split into
runs that commit on their own, so a failure of one run must leave no gap and no duplicate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from immutablelog.ledger.postgres import storage as postgres_storage
from immutablelog.ledger.postgres.storage import PostgresStorage, search_ranges, split_ranges
from immutablelog.ledger.storage import EventQuery
from tests.ledger.test_storage_contract import EVENTS, LOG_NAME, append_events, new_tenant

psycopg = pytest.importorskip("psycopg")


def test_search_ranges_take_tenants_in_order_up_to_the_limit() -> None:
    pending = [(1, 0, 5), (2, 3, 10), (3, 0, 4)]
    assert search_ranges(pending, 100) == [(1, 0, 5), (2, 3, 10), (3, 0, 4)]
    assert search_ranges(pending, 8) == [(1, 0, 5), (2, 3, 6)]
    assert search_ranges(pending, 5) == [(1, 0, 5)]
    assert search_ranges(pending, 0) == []
    assert search_ranges([], 10) == []


def test_split_ranges_cuts_equal_runs_across_tenants() -> None:
    ranges = [(1, 0, 5), (2, 3, 10)]  # 12 entries
    assert split_ranges(ranges, 1) == [[(1, 0, 5), (2, 3, 10)]]
    assert split_ranges(ranges, 2) == [[(1, 0, 5), (2, 3, 4)], [(2, 4, 10)]]
    assert split_ranges(ranges, 3) == [[(1, 0, 4)], [(1, 4, 5), (2, 3, 6)], [(2, 6, 10)]]
    # More runs than entries: one entry each, never an empty run.
    assert split_ranges([(1, 0, 2)], 4) == [[(1, 0, 1)], [(1, 1, 2)]]
    assert split_ranges([], 2) == []


@pytest.fixture
def storage(postgres_url: str) -> Iterator[PostgresStorage]:
    opened = PostgresStorage(postgres_url, search_workers=3)
    assert opened.initialize(LOG_NAME) == LOG_NAME
    yield opened
    opened.close()


def _search(storage: PostgresStorage, tenant: int, text: str) -> list[int]:
    return [e.index for e in storage.query(tenant, EventQuery(text=text))]


def _indexed(storage: PostgresStorage) -> list[tuple[int, int]]:
    with psycopg.connect(storage.url) as conn:
        rows = conn.execute("SELECT tenant_id, idx FROM entries_search ORDER BY 1, 2").fetchall()
    return [(int(tenant), int(idx)) for tenant, idx in rows]


def test_several_connections_index_every_entry_once(storage: PostgresStorage) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    append_events(storage, acme, EVENTS)
    append_events(storage, beta, EVENTS[:2])
    assert storage.index_search(100) == len(EVENTS) + 2
    assert storage.search_backlog() == 0
    expected = [(acme, i) for i in range(len(EVENTS))] + [(beta, 0), (beta, 1)]
    assert _indexed(storage) == expected
    assert _search(storage, acme, "login") == [3, 1, 0]
    assert _search(storage, beta, "login") == [1, 0]


def test_a_failed_run_moves_no_progress_and_is_indexed_again(storage: PostgresStorage) -> None:
    acme = new_tenant(storage, "acme")
    append_events(storage, acme, EVENTS)
    # A real failure inside one of the runs (the one holding entry 4): the others commit.
    with psycopg.connect(storage.url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_four() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.idx = 4 THEN RAISE EXCEPTION 'disk trouble'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_four BEFORE INSERT ON entries_search "
            "FOR EACH ROW EXECUTE FUNCTION refuse_four()"
        )
    with pytest.raises(psycopg.Error, match="disk trouble"):
        storage.index_search(100)
    assert storage.search_backlog() == len(EVENTS)  # no progress moved
    assert _indexed(storage) == [(acme, i) for i in range(4)]  # the other runs committed
    with psycopg.connect(storage.url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_four ON entries_search")
    # The next slice covers the same entries again, skipping those already there.
    assert storage.index_search(100) == len(EVENTS)
    assert storage.search_backlog() == 0
    assert _indexed(storage) == [(acme, i) for i in range(len(EVENTS))]
    assert _search(storage, acme, "alice") == [3, 0]


def test_a_large_limit_is_indexed_in_several_slices(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_storage, "_SEARCH_SLICE", 2)
    acme = new_tenant(storage, "acme")
    append_events(storage, acme, EVENTS)
    with psycopg.connect(storage.url, autocommit=True) as conn:
        # One statement per slice moves the progress marks (an upsert fires INSERT once).
        conn.execute("CREATE TABLE slices (at timestamptz DEFAULT clock_timestamp())")
        conn.execute(
            "CREATE FUNCTION count_slice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO slices DEFAULT VALUES; RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER count_slice AFTER INSERT ON search_progress "
            "FOR EACH STATEMENT EXECUTE FUNCTION count_slice()"
        )
    assert storage.index_search(5) == 5  # three slices: 2 + 2 + 1
    assert storage.search_backlog() == len(EVENTS) - 5
    with psycopg.connect(storage.url) as conn:
        assert conn.execute("SELECT count(*) FROM slices").fetchone() == (3,)
    assert storage.index_search(100) == len(EVENTS) - 5
    assert _indexed(storage) == [(acme, i) for i in range(len(EVENTS))]
