"""SQLite's search file: the full-text index and the lookups, and the queries they plan.

Derived data in a file of its own (``ledger-search.db`` beside ``ledger.db``), so that
filling it takes that file's write lock, never the ledger's (deleting it only costs a
rebuild). It is attached as ``search`` to a connection of its own: ``BEGIN IMMEDIATE``
locks every attached file, so the ledger's writer never has it attached.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

from immutablelog.ledger.rollup import Cancel, newest_matches
from immutablelog.ledger.sqlite import counts, leaf_tiles, lookup
from immutablelog.ledger.sqlite.connection import CACHE_KIB, file_lock, transaction
from immutablelog.ledger.sqlite.sql import (
    WITH_PART,
    chunks,
    job_backlog,
    mark_progress,
    next_slice,
)
from immutablelog.ledger.storage import (
    COUNT_MATCHES,
    COUNT_SECONDS,
    EventCounts,
    EventQuery,
    StoredEntry,
    event_filters,
    prefix_range,
)

Connect = Callable[[], sqlite3.Connection]


class SearchFile:
    """The search file of one ledger file, read and filled through this thread's connections.

    ``ledger`` gives the thread's plain ledger connection, ``search`` the one with this file
    attached (made by :meth:`attach`).
    """

    def __init__(self, ledger_path: Path, ledger: Connect, search: Connect) -> None:
        self.path = ledger_path.with_name(ledger_path.stem + "-search.db")
        self._lock_path = self.path.with_name(self.path.name + ".writer-lock")
        self._ledger = ledger
        self._search = search

    def lock(self) -> AbstractContextManager[None]:
        """The search file's writer lock (filling, purging and the counts take it)."""
        return file_lock(self._lock_path)

    def attach(self, conn: sqlite3.Connection) -> None:
        """Attach the search file to ``conn`` as ``search``, creating its tables."""
        with self.lock():
            conn.execute("ATTACH DATABASE ? AS search", (str(self.path),))
            conn.execute("PRAGMA search.journal_mode = WAL")
            _create_search_file(conn)
            counts.create(conn)
            leaf_tiles.create(conn)
        # Derived data: a commit lost to power loss is simply indexed again.
        conn.execute("PRAGMA search.synchronous = NORMAL")
        conn.execute(f"PRAGMA search.cache_size = {CACHE_KIB}")  # per file, not inherited

    def query(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        """The page of entries ``query`` finds (without their erasable parts)."""
        if query.event_name_prefix and not query.text:
            # A prefix range must be sorted by idx before the limit applies, which is slow
            # when the prefix is common. Common prefixes fill a page from the newest rows,
            # so first walk a bounded window in idx order; rare ones fall through to the
            # index range, whose sort is then small.
            page = self._query_window(tenant_id, query)
            if len(page) == query.limit:
                return page
        if query.text and query.text.split():
            return self._run_query(*_text_query_sql(tenant_id, query), conn=self._search())
        if _lookup_driver(query) is not None:
            return self._query_lookup(tenant_id, query)
        return self._run_query(*_query_sql(tenant_id, query))

    def count_events(
        self,
        tenant_id: int,
        query: EventQuery,
        width: int,
        cancel: Cancel | None = None,
        seconds: float = COUNT_SECONDS,
        matches: int = COUNT_MATCHES,
    ) -> EventCounts:
        text = bool(query.text and query.text.split())
        if text:
            # The words alone pick the newest matches, as on PostgreSQL; filters narrow them.
            words = _fts_match(replace(query, service=None, type=None, env=None))
            sql, params = counts.text_count_sql(tenant_id, query, width, words, matches)
        else:
            sql, params = counts.count_sql(tenant_id, query, width)
        conn = self._search()  # one statement: one snapshot of both files
        with counts.time_limit(conn, seconds, cancel):
            rows = conn.execute(sql, params).fetchall()
        if text:
            return newest_matches(rows)
        return EventCounts([(bucket, kind, int(count)) for bucket, kind, count in rows])

    def _run_query(
        self, sql: str, params: Sequence[object], conn: sqlite3.Connection | None = None
    ) -> list[StoredEntry]:
        return [
            StoredEntry(idx, eid, received, bytes(data))
            for idx, eid, received, data in (conn or self._ledger()).execute(sql, params)
        ]

    def _query_lookup(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        """Filters by event name, request id or actor: the search file's lookup table for
        entries it covers, plus a scan of the few newest entries it does not cover yet."""
        conn = self._search()
        conn.execute("BEGIN")  # one snapshot for the progress mark and both parts
        try:
            row = conn.execute(_COVERED_ROWID).fetchone()
            covered = int(row[0]) if row else 0
            # Within a tenant rowids grow with idx, so every uncovered entry comes after
            # every covered one.
            tail = _tail_sql(tenant_id, query, covered)
            if query.descending:
                page = self._run_query(*tail(query.limit), conn=conn)
                if len(page) < query.limit:
                    page += _looked_up(conn, tenant_id, query, covered, query.limit - len(page))
            else:
                page = _looked_up(conn, tenant_id, query, covered, query.limit)
                if len(page) < query.limit:
                    page += self._run_query(*tail(query.limit - len(page)), conn=conn)
            return page
        finally:
            conn.execute("COMMIT")

    def _query_window(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        where, params = event_filters(tenant_id, query, "?")
        if query.descending:
            if query.after_index is not None:
                top = query.after_index
            else:
                row = (
                    self._ledger()
                    .execute(
                        "SELECT idx + 1 FROM entries WHERE tenant_id = ? ORDER BY idx DESC LIMIT 1",
                        (tenant_id,),
                    )
                    .fetchone()
                )
                top = int(row[0]) if row else 0
            where.append("idx >= ?")
            params.append(top - _PREFIX_WINDOW)
        else:
            where.append("idx <= ?")
            params.append((query.after_index or -1) + _PREFIX_WINDOW)
        order = _direction(query)
        return self._run_query(
            "SELECT idx, id, received_at, entry FROM entries "
            f"INDEXED BY sqlite_autoindex_entries_1 WHERE {' AND '.join(where)} "
            f"ORDER BY idx {order} LIMIT ?",
            [*params, query.limit],
        )

    def index(self, limit: int) -> int:
        """Index up to ``limit`` more entries; how many were indexed."""
        conn = self._search()
        # A deferred BEGIN: reading the ledger takes a snapshot, writing takes only the
        # search file's lock, so the ledger's writer is never held up.
        with self.lock(), transaction(conn, "BEGIN"):
            return _index_slice(conn, limit)

    def backlog(self) -> int:
        """How many entries the search file does not cover yet."""
        return job_backlog(self._search(), "indexed")

    @contextmanager
    def purging(self, tenant_id: int, indexes: Sequence[int]) -> Iterator[None]:
        """Take the entries at ``indexes`` out of the search file, then hold its lock while
        the block deletes their values: the indexer must not read the values between their
        purge from the index and their deletion."""
        search = self._search()  # before the lock: attaching the file takes it too
        with self.lock():
            with transaction(search, "BEGIN"):
                _purge_search(search, tenant_id, indexes)
                # Pending even if the index held none of them: the ledger's write-ahead log
                # keeps the values' old pages until a reset succeeds, and a reader can make
                # the one after the deletion fail.
                search.execute(
                    "INSERT INTO search.meta (key, value) VALUES ('purge_pending', '1') "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
            yield

    def purge_erased(self) -> bool:
        search, ledger = self._search(), self._ledger()  # before the lock (attach takes it)
        # The pending mark goes only once the purge is over, so a caller that finds none
        # never returns while another thread's purge still has erased values in a
        # write-ahead log, and the usual round, with nothing pending, takes no lock.
        pending = "SELECT value FROM search.meta WHERE key = 'purge_pending'"
        if search.execute(pending).fetchone() is None:
            return False
        with self.lock():
            if search.execute(pending).fetchone() is None:
                return False  # another thread purged it meanwhile
            # A 'delete' only adds tombstones: the words stay in older segments until those
            # are merged with them. Merge them all, overwriting what is freed.
            search.execute("PRAGMA search.secure_delete = ON")
            try:
                with transaction(search, "BEGIN IMMEDIATE"):
                    search.execute(
                        "INSERT INTO search.entries_search (entries_search) VALUES ('optimize')"
                    )
            finally:
                search.execute("PRAGMA search.secure_delete = OFF")
            resets = [
                conn.execute(f"PRAGMA {name}.wal_checkpoint(TRUNCATE)").fetchone()
                for conn, name in ((search, "search"), (ledger, "main"))
            ]
            if any(busy for busy, *_ in resets):
                return True  # a reader held a log: still pending, the next round resets it
            with transaction(search, "BEGIN IMMEDIATE"):
                search.execute("DELETE FROM search.meta WHERE key = 'purge_pending'")
        return True

    def actor_indexes(
        self, tenant_id: int, actor: str, join: str, where: Sequence[str], params: Sequence[object]
    ) -> list[int]:
        """The indexes of ``actor``'s entries that also match ``where`` (on ``e`` and its
        part ``x``, joined by ``join``)."""
        # By actor: the search file's lookup for what it covers, a scan of the rest.
        conn = self._search()
        with transaction(conn, "BEGIN"):
            row = conn.execute(_COVERED_ROWID).fetchone()
            covered = int(row[0]) if row else 0
            looked_up = conn.execute(
                f"{lookup.partitions_cte('?')} SELECT x.idx "
                "FROM search.lookup AS l INDEXED BY lookup_by_actor "
                f"JOIN main.entries AS e ON e.rowid = l.entry_rowid {join} "
                f"WHERE {lookup.partition('l.')} IN (SELECT n FROM parts) AND l.tenant_id = ? "
                f"AND l.actor = ? AND l.entry_rowid <= ? AND e.actor = ? "
                f"AND {' AND '.join(where)}",
                [covered, tenant_id, actor, covered, actor, *params],
            ).fetchall()
            tail = conn.execute(
                f"SELECT x.idx FROM main.entries AS e NOT INDEXED {join} "
                f"WHERE e.rowid > ? AND e.tenant_id = ? AND e.actor = ? "
                f"AND {' AND '.join(where)}",
                [covered, tenant_id, actor, *params],
            ).fetchall()
        return sorted({int(idx) for (idx,) in looked_up + tail})


def _index_slice(conn: sqlite3.Connection, limit: int) -> int:
    """Index the next ``limit`` entries at most (inside the caller's transaction)."""
    taken = next_slice(conn, "indexed", limit, _FORGET_INDEXED)
    if taken is None:
        return 0
    cur = conn.execute(
        "INSERT INTO search.entries_search (rowid, payload, service, type, env) "
        f"SELECT e.rowid, {_PAYLOAD}, e.service, e.type, e.env "
        f"FROM main.entries AS e {WITH_PART} "
        "WHERE e.rowid > ? AND e.rowid <= ?",
        (taken.after, taken.last),
    )
    conn.execute(
        "INSERT INTO search.lookup (entry_rowid, tenant_id, event_name, request_id, actor) "
        "SELECT rowid, tenant_id, event_name, request_id, actor FROM main.entries "
        "WHERE rowid > ? AND rowid <= ?",
        (taken.after, taken.last),
    )
    mark_progress(conn, "indexed", taken)
    return cur.rowcount


#: What the indexing job derived, emptied when the ledger file under it was replaced.
_FORGET_INDEXED = (
    "INSERT INTO search.entries_search (entries_search) VALUES ('delete-all')",
    "DELETE FROM search.lookup",
    "DELETE FROM search.erased",
)


#: The payload of an entry ``e`` with its part ``x``: in the entry (format 1, clear
#: records) or in the erasable values (format 2; NULL once erased).
_PAYLOAD = (
    "COALESCE(json_extract(e.entry, '$.payload'), "
    "json_extract(CAST(x.erasable_values AS TEXT), '$.payload'))"
)
#: Bump when the search file's tables change: an older file is then dropped and rebuilt
#: (but layouts 4 and 5, whose lookup indexes differ only in how they lead with the
#: partition, are migrated in place).
_SEARCH_LAYOUT = "6"
#: Layouts whose lookup indexes alone are rebuilt: 4 (no partition), 5 (65,536 entries).
_LOOKUP_INDEXES_ONLY = ("4", "5")
#: Filters that the full-text index also answers, so that a search with them intersects
#: posting lists instead of joining every match of a common word.
_FTS_FILTERS = ("service", "type", "env")
#: The derived file's tables (beside ``search.meta``): the full-text index and lookups by
#: random-valued columns, keyed by the entries' rowids (their indexes, partitioned by rowid
#: range, in ``lookup.py``); meta 'indexed_rowid' (and that entry's id, 'indexed_id') marks
#: how far they cover the ledger. Results are ordered by rowid, never ranked, so the index
#: keeps no per-row column sizes (``columnsize = 0``, which only ranking reads).
_SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS search.entries_search USING fts5 (
    payload, service, type, env, content = '', columnsize = 0, tokenize = 'unicode61'
);
CREATE TABLE IF NOT EXISTS search.lookup (
    entry_rowid INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    event_name TEXT NOT NULL,
    request_id TEXT,
    actor TEXT
);
CREATE TABLE IF NOT EXISTS search.erased (entry_rowid INTEGER PRIMARY KEY);
"""
_FTS_AUTOMERGE = 16
#: The rowid of the last entry the search file covers (absent: none).
_COVERED_ROWID = "SELECT value FROM search.meta WHERE key = 'indexed_rowid'"
#: The most selective lookup first: it drives the walk, the others filter.
_LOOKUP_DRIVERS = ("request_id", "actor", "event_name", "event_name_prefix")
#: How many of the newest rows a prefix query walks before it uses the event_name index.
_PREFIX_WINDOW = 20_000


def _create_search_file(conn: sqlite3.Connection) -> None:
    """Create the search file's tables, rebuilding them if an older layout is found."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS search.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
        "WITHOUT ROWID"
    )
    row = conn.execute("SELECT value FROM search.meta WHERE key = 'layout'").fetchone()
    if row is not None and row[0] == _SEARCH_LAYOUT:
        return
    if row is not None and row[0] in _LOOKUP_INDEXES_ONLY:
        # Only the lookup indexes changed: rebuilding them is one sort of each column,
        # where a new file would index every entry again (and search none meanwhile).
        conn.executescript(
            "BEGIN; "
            + "".join(f"DROP INDEX search.lookup_by_{column}; " for column in lookup.COLUMNS)
            + f"{lookup.index_ddl()} "
            f"UPDATE search.meta SET value = '{_SEARCH_LAYOUT}' WHERE key = 'layout'; COMMIT;"
        )
        return
    conn.executescript(
        "DROP TABLE IF EXISTS search.entries_search; DROP TABLE IF EXISTS search.lookup; "
        "DROP TABLE IF EXISTS search.erased; DELETE FROM search.meta;"
    )
    conn.executescript(_SEARCH_SCHEMA + lookup.index_ddl())
    # FTS5 merges a level's segments once it holds this many (default 4): each word's
    # postings are then rewritten about half as often as the index grows, a fifth of the
    # indexer's CPU, for a few more segments for a query to read. (A stored setting.)
    conn.execute(
        "INSERT INTO search.entries_search (entries_search, rank) VALUES ('automerge', ?)",
        (_FTS_AUTOMERGE,),
    )
    conn.execute("INSERT INTO search.meta (key, value) VALUES ('layout', ?)", (_SEARCH_LAYOUT,))


def _purge_search(conn: sqlite3.Connection, tenant_id: int, indexes: Sequence[int]) -> int:
    """Take the entries at ``indexes`` out of the search file (inside its transaction):
    their words from the full-text index, their actor from the lookups. A contentless
    index forgets a row only when told the words it was given, so this runs while the
    values are still stored; ``search.erased`` marks rows already taken out, so that a
    second run (after a crash before the values were deleted) never deletes twice."""
    row = conn.execute(_COVERED_ROWID).fetchone()
    covered = int(row[0]) if row else 0
    purged = 0
    for chunk in chunks(indexes):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT e.rowid, {_PAYLOAD}, e.service, e.type, e.env "
            f"FROM main.entries AS e {WITH_PART} "
            f"WHERE e.tenant_id = ? AND e.idx IN ({marks}) AND e.rowid <= ? "
            "AND x.salt IS NOT NULL AND e.rowid NOT IN (SELECT entry_rowid FROM search.erased)",
            (tenant_id, *chunk, covered),
        ).fetchall()
        conn.executemany(
            "INSERT INTO search.entries_search (entries_search, rowid, payload, service, type, "
            "env) VALUES ('delete', ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO search.erased (entry_rowid) VALUES (?)", [(r[0],) for r in rows]
        )
        conn.execute(
            "UPDATE search.lookup SET actor = NULL WHERE actor IS NOT NULL AND entry_rowid IN "
            f"(SELECT rowid FROM main.entries WHERE tenant_id = ? AND idx IN ({marks}))",
            (tenant_id, *chunk),
        )
        purged += len(rows)
    return purged


def _fts_phrase(text: str) -> str:
    """Each word as a quoted FTS5 string: all must occur, and no input is FTS syntax."""
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _fts_match(query: EventQuery) -> str:
    """The MATCH expression: the words in the payload, and each of the filters the index
    also holds as a phrase in its own column (checked exactly on the entry afterwards)."""
    assert query.text
    terms = [f"payload : ({_fts_phrase(query.text)})"]
    for column in _FTS_FILTERS:
        value = getattr(query, column)
        # A value with no letter or digit has no words to match: the exact check alone.
        if value and any(ch.isalnum() for ch in value):
            terms.append(f'{column} : "{value.replace(chr(34), chr(34) * 2)}"')
    return " AND ".join(terms)


def _query_sql(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    where, params = event_filters(tenant_id, query, "?")
    order = _direction(query)
    sql = (
        f"SELECT idx, id, received_at, entry FROM entries WHERE {' AND '.join(where)} "
        f"ORDER BY idx {order} LIMIT ?"
    )
    return sql, [*params, query.limit]


def _text_query_sql(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    """Let the full-text index drive, newest match first, and stop at the limit: the
    entries' rowids grow in index order within a tenant (append-only, contiguous), so
    ordering by the search rowid is ordering by idx. (An ``IN (SELECT … MATCH …)`` would
    collect every match of a common word before taking the newest few.)"""
    assert query.text
    where, params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    sql = (
        "SELECT e.idx, e.id, e.received_at, e.entry FROM search.entries_search AS s "
        "JOIN main.entries AS e ON e.rowid = s.rowid "
        f"WHERE entries_search MATCH ? AND {' AND '.join(where)} "
        f"ORDER BY s.rowid {order} LIMIT ?"
    )
    return sql, [_fts_match(query), *params, query.limit]


def _direction(query: EventQuery) -> str:
    return "DESC" if query.descending else "ASC"


def _lookup_driver(query: EventQuery) -> str | None:
    return next((name for name in _LOOKUP_DRIVERS if getattr(query, name)), None)


_Sql = Callable[[int], tuple[str, list[object]]]


def _tail_sql(tenant_id: int, query: EventQuery, covered: int) -> _Sql:
    """The matching entries that the lookup table does not cover yet (rowid > covered)."""
    where, params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    # NOT INDEXED: walk the rowid range, never a whole tenant's index.
    sql = (
        "SELECT e.idx, e.id, e.received_at, e.entry FROM main.entries AS e NOT INDEXED "
        f"WHERE e.rowid > ? AND {' AND '.join(where)} ORDER BY e.idx {order} LIMIT ?"
    )
    return lambda limit: (sql, [covered, *params, limit])


def _looked_up(
    conn: sqlite3.Connection, tenant_id: int, query: EventQuery, covered: int, limit: int
) -> list[StoredEntry]:
    """Up to ``limit`` matching entries the lookup table covers (rowid <= ``covered``), in
    rowid (= idx) order: the partitions are sought in that order on the most selective
    lookup index, one at first, a group twice as large after each that did not fill the
    page (a rare value costs a few statements, not one per partition); every filter is
    checked again on the entry itself."""
    driver = _lookup_driver(query)
    assert driver is not None
    if driver == "event_name_prefix":
        assert query.event_name_prefix is not None
        key, keys, index = (
            "l.event_name >= ? AND l.event_name < ?",
            [*prefix_range(query.event_name_prefix)],
            "lookup_by_event_name",
        )
    else:
        key, keys, index = f"l.{driver} = ?", [getattr(query, driver)], f"lookup_by_{driver}"
    low, high = 1, covered
    if query.after_index is not None:
        # The cursor as a rowid bound, so that a later page starts where the last one ended.
        row = conn.execute(
            "SELECT rowid FROM main.entries WHERE tenant_id = ? AND idx = ?",
            (tenant_id, query.after_index),
        ).fetchone()
        if row is not None and query.descending:
            high = min(high, row[0] - 1)
        elif row is not None:
            low = max(low, row[0] + 1)
    if low > high:
        return []
    filters, filter_params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    parts = lookup.walk(low, high, query.descending)
    found: list[StoredEntry] = []
    group = 1
    while parts and len(found) < limit:
        chosen, parts = parts[:group], parts[group:]
        rows = conn.execute(
            "SELECT e.idx, e.id, e.received_at, e.entry "
            f"FROM search.lookup AS l INDEXED BY {index} "
            "JOIN main.entries AS e ON e.rowid = l.entry_rowid "
            f"WHERE {lookup.partition('l.')} IN ({','.join('?' * len(chosen))}) "
            f"AND l.tenant_id = ? AND {key} AND l.entry_rowid BETWEEN ? AND ? "
            f"AND {' AND '.join(filters)} ORDER BY l.entry_rowid {order} LIMIT ?",
            [*chosen, tenant_id, *keys, low, high, *filter_params, limit - len(found)],
        ).fetchall()
        found += [StoredEntry(i, eid, at, bytes(data)) for i, eid, at, data in rows]
        group = min(group * 2, lookup.MAX_GROUP)
    return found
