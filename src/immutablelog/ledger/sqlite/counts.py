"""SQLite's event counts (``ledger/rollup.py``): the rollup lives in the search file.

It is derived data like the full-text index, so it sits beside it in ``ledger-search.db``:
filled behind the writer without the ledger's write lock, and rebuilt if the file is lost.
Its progress mark (``counted_rowid``, with that entry's id to notice a replaced ledger)
is in ``search.meta``, written in the same transaction as the counts.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from immutablelog.ledger import rollup
from immutablelog.ledger.sqlite import lookup
from immutablelog.ledger.sqlite.sql import (
    create_derived,
    job_backlog,
    mark_progress,
    next_slice,
    progress_mark,
)
from immutablelog.ledger.storage import EventQuery, event_filters

#: The rollup table (``search`` is the attached search file).
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS search.event_counts (
    tenant_id INTEGER NOT NULL,
    width INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    type TEXT NOT NULL,
    service TEXT NOT NULL,
    env TEXT NOT NULL,
    event_name TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, width, bucket, type, service, env, event_name)
) WITHOUT ROWID
"""
_COUNTED: Final = progress_mark("counted")
_INDEXED: Final = progress_mark("indexed")
DIALECT: Final = rollup.Dialect(
    mark="?",
    rollup_table="search.event_counts",
    entries_table="main.entries",
    covered=f"e.rowid <= {_COUNTED}",
    uncovered=f"e.rowid > {_COUNTED}",
    # Walk the rowid range of the newest entries, never a whole tenant's index.
    uncovered_source="main.entries AS e NOT INDEXED",
)
#: VM steps between two looks at the clock while a count runs.
_PROGRESS_STEPS: Final = 10_000


def create(conn: sqlite3.Connection) -> None:
    """Create the rollup table; empty it if its progress mark is gone (a rebuilt file)."""
    create_derived(conn, "counted", SCHEMA, "search.event_counts")


def roll_up(conn: sqlite3.Connection, limit: int) -> int:
    """Add up to ``limit`` entries after the mark to the rollup; return how many. Runs in
    the caller's transaction, which holds the search file's write lock."""
    taken = next_slice(conn, "counted", limit, ["DELETE FROM search.event_counts"])
    if taken is None:
        return 0
    conn.execute(
        rollup.rollup_insert(DIALECT, "e.rowid > ? AND e.rowid <= ?"), (taken.after, taken.last)
    )
    mark_progress(conn, "counted", taken)
    return taken.last - taken.after


def backlog(conn: sqlite3.Connection) -> int:
    """Entries the rollup does not cover yet."""
    return job_backlog(conn, "counted")


def count_sql(tenant_id: int, query: EventQuery, width: int) -> tuple[str, list[object]]:
    """The statement for :meth:`Storage.count_events` without full text: from the rollup
    when it holds the filters; else driven by the search file's lookups (actor, request
    id) for the entries they cover, plus a scan of the few they do not cover yet."""
    if rollup.answers(query):
        return rollup.count_sql(DIALECT, tenant_id, query, width)
    where, params = event_filters(tenant_id, query, "?", "e.")
    driver = "request_id" if query.request_id is not None else "actor"
    looked_up = (
        "SELECT substr(e.received_at, 1, ?) AS b, e.type AS t, count(*) AS c "
        f"FROM search.lookup AS l INDEXED BY lookup_by_{driver} "
        "JOIN main.entries AS e ON e.rowid = l.entry_rowid "
        f"WHERE {lookup.partition('l.')} IN (SELECT n FROM parts) AND l.tenant_id = ? "
        f"AND l.{driver} = ? AND l.entry_rowid <= {_INDEXED} "
        f"AND {' AND '.join(where)} GROUP BY 1, 2"
    )
    tail = (
        "SELECT substr(e.received_at, 1, ?), e.type, count(*) FROM main.entries AS e NOT INDEXED "
        f"WHERE e.rowid > {_INDEXED} AND {' AND '.join(where)} GROUP BY 1, 2"
    )
    sql = (
        f"{lookup.partitions_cte(_INDEXED)} SELECT b, t, sum(c) "
        f"FROM ({looked_up} UNION ALL {tail}) GROUP BY b, t ORDER BY b, t"
    )
    return sql, [width, tenant_id, getattr(query, driver), *params, width, *params]


def text_count_sql(
    tenant_id: int, query: EventQuery, width: int, match: str, matches: int
) -> tuple[str, list[object]]:
    """The statement for a full-text count (read by :func:`rollup.newest_matches`): the
    newest ``matches`` events the full-text index finds for the tenant (rowids grow with the
    index within a tenant), narrowed by every filter, grouped; one more found says that
    older ones were left out, and where."""
    where, params = event_filters(tenant_id, query, "?", "e.")
    sql = (
        "WITH w AS (SELECT e.rowid AS r, e.idx AS i FROM search.entries_search AS s "
        "JOIN main.entries AS e ON e.rowid = s.rowid "
        "WHERE entries_search MATCH ? AND e.tenant_id = ? ORDER BY s.rowid DESC LIMIT ?), "
        "edge AS (SELECT CASE WHEN count(*) > ? THEN min(i) END AS low FROM w) "
        "SELECT substr(e.received_at, 1, ?) AS b, e.type AS t, count(*), NULL "
        "FROM w JOIN main.entries AS e ON e.rowid = w.r "
        f"WHERE w.i > coalesce((SELECT low FROM edge), -1) AND {' AND '.join(where)} "
        "GROUP BY b, t UNION ALL SELECT NULL, NULL, 0, low FROM edge ORDER BY 1, 2"
    )
    return sql, [match, tenant_id, matches + 1, matches, width, *params]


@contextmanager
def time_limit(
    conn: sqlite3.Connection, seconds: float, cancel: rollup.Cancel | None = None
) -> Iterator[None]:
    """Interrupt the statements run inside once ``seconds`` have passed (they then raise
    :class:`rollup.CountTooSlow`) or ``cancel`` is set (:class:`rollup.CountCancelled`)."""
    deadline = time.monotonic() + seconds
    cancelled = cancel or rollup.Cancel()
    conn.set_progress_handler(
        lambda: int(cancelled.is_set or time.monotonic() > deadline), _PROGRESS_STEPS
    )
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc) and cancelled.is_set:
            raise rollup.CountCancelled() from exc
        if "interrupt" in str(exc) and time.monotonic() > deadline:
            raise rollup.CountTooSlow(seconds) from exc
        raise
    finally:
        conn.set_progress_handler(None, 0)
