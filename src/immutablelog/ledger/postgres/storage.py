"""The production backend: many stateless API processes, on any hosts, sharing one PostgreSQL.

:class:`PostgresStorage` assembles the parts, as SQLite's does: ``connection.py`` (the
pool, its faults, write transactions), ``migrate.py``, ``writes.py`` (the write
transaction: the tenant's row lock, binary ``COPY``), ``reads.py``, ``accounts.py``,
``erasure.py`` and ``lease.py``; what SQLite runs with the same SQL is in
``ledger/rows.py``. The search index (each payload's words under GIN, filled on several
connections at once) and the event counts (``counts.py``) are here.

Create one :class:`PostgresStorage` per process: a pool must not cross a ``fork()``.
Constraint violations surface as psycopg's ``IntegrityError``, as SQLite's do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from immutablelog.ledger import rollup
from immutablelog.ledger.health import StorageHealth
from immutablelog.ledger.postgres import counts, leaf_tiles
from immutablelog.ledger.postgres.accounts import AccountWrites
from immutablelog.ledger.postgres.erasure import Erasure
from immutablelog.ledger.postgres.lease import Leasing
from immutablelog.ledger.postgres.migrate import migrate
from immutablelog.ledger.postgres.reads import LogReads
from immutablelog.ledger.postgres.schema import COUNT_LOCK_ID, SEARCH_LOCK_ID, TILE_LOCK_ID
from immutablelog.ledger.postgres.writes import Connection
from immutablelog.ledger.rollup import Cancel
from immutablelog.ledger.rows import WITH_PART
from immutablelog.ledger.storage import (
    COUNT_MATCHES,
    COUNT_SECONDS,
    EventCounts,
    EventQuery,
    StorageError,
    StoredEntry,
    event_filters,
)
from immutablelog.ledger.words import search_document, search_words
from immutablelog.tiles.layout import TILE_WIDTH

# Entries per search-indexing transaction (see index_search).
_SEARCH_SLICE = 10_000

#: Each tenant whose entries the search index does not all cover yet: the next index to
#: index, and the size of its latest checkpoint (O(tenants) index probes).
_SEARCH_PENDING = (
    "SELECT t.id AS tenant_id, coalesce(p.next_idx, 0) AS next_idx, c.size AS size "
    "FROM tenants t LEFT JOIN search_progress p ON p.tenant_id = t.id "
    "CROSS JOIN LATERAL (SELECT size FROM checkpoints WHERE tenant_id = t.id "
    "ORDER BY size DESC LIMIT 1) c "
    "WHERE c.size > coalesce(p.next_idx, 0)"
)


#: Entries ``[start, end)`` of one tenant: (tenant_id, start, end).
_Range = tuple[int, int, int]


def search_ranges(pending: Sequence[tuple[int, int, int]], limit: int) -> list[_Range]:
    """The next ``limit`` entries to index: each pending (tenant, next index, tree size)
    from its next index on, in the given order, until ``limit`` entries are taken."""
    ranges: list[_Range] = []
    left = limit
    for tenant_id, start, size in pending:
        if left <= 0:
            break
        end = min(size, start + left)
        ranges.append((tenant_id, start, end))
        left -= end - start
    return ranges


def split_ranges(ranges: Sequence[_Range], parts: int) -> list[list[_Range]]:
    """``ranges`` cut into at most ``parts`` runs of (nearly) equal numbers of entries."""
    total = sum(end - start for _, start, end in ranges)
    share = -(-total // max(1, parts))  # ceiling division
    runs: list[list[_Range]] = []
    run: list[_Range] = []
    room = share
    for tenant_id, start, end in ranges:
        while start < end:
            cut = min(end, start + room)
            run.append((tenant_id, start, cut))
            room -= cut - start
            start = cut
            if room == 0:
                runs.append(run)
                run, room = [], share
    if run:
        runs.append(run)
    return runs


def _pending_ranges(conn: Connection, pending: str, limit: int) -> list[_Range]:
    """The next ``limit`` of what a derived job has to take in (:func:`search_ranges`):
    ``pending`` selects (tenant, next, end) of each tenant behind, in any order."""
    rows = conn.execute(pending + " ORDER BY t.id").fetchall()
    return search_ranges([(int(t), int(start), int(end)) for t, start, end in rows], limit)


def _event_where(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    """The WHERE condition of an event query: the SQLite backend's, filter for filter."""
    where, params = event_filters(tenant_id, query, "%s")
    found = _words_condition(tenant_id, query)
    if found is not None:
        where.append(f"idx IN (SELECT idx FROM entries_search WHERE {found[0]})")
        params += found[1]
    return " AND ".join(where), params


def _words_condition(tenant_id: int, query: EventQuery) -> tuple[str, list[object]] | None:
    """The condition on ``entries_search`` rows for the query's words, or None without any.

    Every word must occur; a word that splits into several (alice@example.com) must
    occur as that sequence of words, as an FTS5 quoted string does. A word with nothing
    to index (---) is left out, as FTS5 leaves it out."""
    if not (query.text and query.text.split()):
        return None
    parts = [found for word in query.text.split() if (found := search_words(word))]
    if not parts:
        return "false", []  # words, none of them indexable: nothing matches
    # Words hold no ASCII punctuation, so quoting them needs no escapes.
    lexemes = " & ".join(f"'{word}'" for word in sorted({w for ws in parts for w in ws}))
    sequences = [f" {' '.join(words)} " for words in parts if len(words) > 1]
    found_in = "".join(" AND position(%s IN ' ' || words || ' ') > 0" for _ in sequences)
    return f"tenant_id = %s AND lexemes @@ %s::tsquery{found_in}", [tenant_id, lexemes, *sequences]


def _event_query(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    """The SQL for :meth:`PostgresStorage.query`."""
    where, params = _event_where(tenant_id, query)
    order = "DESC" if query.descending else "ASC"
    sql_text = (
        f"SELECT idx, id, received_at, entry FROM entries WHERE {where} "
        f"ORDER BY idx {order} LIMIT %s"
    )
    return sql_text, [*params, query.limit]


class PostgresStorage(Leasing, AccountWrites, LogReads, Erasure):
    """A :class:`~immutablelog.ledger.storage.Storage` on a PostgreSQL database.

    ``url`` is a libpq connection string or ``postgresql://`` URL; the tables live in the
    connection's current schema (set ``options=-csearch_path=…`` in it to choose another).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        search_workers: int = 4,
    ) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            # Do not echo the URL: it may carry a password.
            raise StorageError("the PostgreSQL database URL is not valid") from None
        #: The connection string, as given (like ``SQLiteStorage.path``; may hold a password).
        self.url = url
        self._where = "{}:{}/{}".format(
            params.get("host") or "localhost", params.get("port") or 5432, params.get("dbname")
        )
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        #: Connections filling the search index at once (see :meth:`index_search`).
        self._search_workers = max(1, search_workers)
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self.health = StorageHealth(
            f"PostgreSQL at {self._where}", self._probe, on_down=self._drop_pool
        )

    def __repr__(self) -> str:
        return f"PostgresStorage({self._where!r})"

    # schema ----------------------------------------------------------------------------
    def initialize(self, log_name: str) -> str:
        # A direct connection, not the pool: a failure here names its cause ("connection
        # refused", "password authentication failed", "permission denied for schema")
        # instead of a pool timeout. Any failure means the store is unusable: StorageError.
        try:
            with psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._timeout))
            ) as conn:
                return migrate(conn, self._where, log_name)
        except psycopg.Error as exc:
            raise StorageError(f"cannot use PostgreSQL at {self._where}: {exc}") from exc

    def query(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        found = [
            StoredEntry(int(idx), eid, received, bytes(data))
            for idx, eid, received, data in self._query(*_event_query(tenant_id, query))
        ]
        if not found:
            return found
        # The erasable parts in a second statement: the query builder selects entries only.
        rows = self._query(
            "SELECT idx, salt, erasable_values FROM erasables "
            "WHERE tenant_id = %s AND idx = ANY(%s::int8[])",
            (tenant_id, [e.index for e in found]),
        )
        parts = {int(idx): bytes(salt) + bytes(values) for idx, salt, values in rows}
        return [replace(e, erasable=parts.get(e.index)) for e in found]

    def count_events(
        self,
        tenant_id: int,
        query: EventQuery,
        width: int,
        cancel: Cancel | None = None,
        seconds: float = COUNT_SECONDS,
        matches: int = COUNT_MATCHES,
    ) -> EventCounts:
        # One snapshot for the mark and the counts: the mark is then a constant in the
        # statement, so the planner walks the few uncounted entries by index, never a
        # whole time range's entries to find them.
        text = bool(query.text and query.text.split())
        with self._connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    (f"{max(1, round(seconds * 1000))}ms",),
                )
                if rollup.answers(query):
                    found = conn.execute(counts.MARK, (tenant_id,)).fetchone()
                    mark = int(found[0]) if found else 0
                    sql_text, params = rollup.count_sql(
                        counts.dialect(tenant_id, mark), tenant_id, query, width
                    )
                elif text:
                    words = _words_condition(tenant_id, query)
                    assert words is not None
                    where, params = _event_where(tenant_id, replace(query, text=None))
                    sql_text, params = counts.text_count_sql(words, (where, params), width, matches)
                else:
                    where, params = _event_where(tenant_id, query)
                    sql_text = (
                        f"SELECT left(received_at, %s) AS bucket, type, COUNT(*) FROM entries "
                        f"WHERE {where} GROUP BY bucket, type ORDER BY bucket"
                    )
                    params = [width, *params]
                if cancel is not None and cancel.is_set:
                    raise rollup.CountCancelled()
                # A cancel request stops the statement on the server, not just our wait.
                with (cancel or rollup.Cancel()).hook(conn.cancel):
                    rows = conn.execute(sql_text, params).fetchall()
            except errors.QueryCanceled as exc:
                if cancel is not None and cancel.is_set:
                    raise rollup.CountCancelled() from exc
                raise rollup.CountTooSlow(seconds) from exc
            finally:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
        if text:
            return rollup.newest_matches(rows)
        return EventCounts([(bucket, kind, int(count)) for bucket, kind, count in rows])

    def index_search(self, limit: int) -> int:
        """Index up to ``limit`` entries, oldest first per tenant, tenants in id order, in
        slices of at most ``_SEARCH_SLICE``: each slice holds its transaction open while
        its runs index, and must end well within the idle-in-transaction timeout even on
        a saturated server."""
        done = 0
        while done < limit:
            indexed = self._index_slice(min(_SEARCH_SLICE, limit - done))
            if not indexed:
                break
            done += indexed
        return done

    def _index_slice(self, limit: int) -> int:
        """Index up to ``limit`` entries in one slice.

        One process at a time (a try-lock: the others return 0 at once rather than wait,
        since they run on the upkeep thread). Tenants are found by comparing each one's
        progress with its tree size, O(tenants) index probes, so an idle call is cheap.

        The slice is split into ``search_workers`` runs indexed at once, each on its own
        connection: PostgreSQL fills the GIN index in the connection's backend process
        (about 60 µs of CPU per entry on a busy machine, as much as the entry's ingest),
        so one connection indexes on one core at most, below what the writer commits. On
        a saturated server each backend also gets its share of the CPU: four connections
        are what let the index keep pace with sustained ingest on two cores. Each run
        commits on its own, replacing what a run of a failed slice left; the progress
        marks move once all have committed, so a failed slice is indexed again in full
        and never leaves a gap.
        """
        with self._one_at_a_time(SEARCH_LOCK_ID) as conn:
            if conn is None:
                return 0
            ranges = _pending_ranges(conn, _SEARCH_PENDING, limit)
            runs = split_ranges(ranges, self._search_workers)
            if len(runs) > 1:
                with ThreadPoolExecutor(
                    len(runs), thread_name_prefix="immutablelog-search"
                ) as pool:
                    list(pool.map(self._index_ranges, runs))
            elif runs:
                self._index_ranges(runs[0])
            conn.cursor().executemany(
                "INSERT INTO search_progress (tenant_id, next_idx) VALUES (%s, %s) "
                "ON CONFLICT (tenant_id) DO UPDATE SET next_idx = excluded.next_idx",
                [(tenant, end) for tenant, _, end in ranges],
            )
        return sum(end - start for _, start, end in ranges)

    def _index_ranges(self, ranges: Sequence[_Range]) -> None:
        """Index entries ``[start, end)`` of each tenant, in one transaction: the payloads
        are read, split into words here (``ledger/words.py``), and copied back in."""
        with self.write() as tx:
            conn = tx._conn
            for tenant_id, start, end in ranges:
                # ::json, not ::jsonb: only the payload is unescaped, so an escaped NUL
                # elsewhere in the entry cannot fail the cast.
                # The payload is in the entry (format 1, clear records) or in its
                # erasable values (format 2; none once erased).
                rows = conn.execute(
                    "SELECT e.idx, coalesce(convert_from(e.entry, 'UTF8')::json ->> 'payload', "
                    "convert_from(x.erasable_values, 'UTF8')::json ->> 'payload') "
                    f"FROM entries AS e {WITH_PART} "
                    "WHERE e.tenant_id = %s AND e.idx >= %s AND e.idx < %s",
                    (tenant_id, start, end),
                ).fetchall()
                # What a run of a failed slice committed is indexed again, not twice.
                conn.execute(
                    "DELETE FROM entries_search WHERE tenant_id = %s AND idx >= %s AND idx < %s",
                    (tenant_id, start, end),
                )
                with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY entries_search (tenant_id, idx, words) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["int8", "int8", "text"])
                    for idx, payload in rows:
                        copy.write_row((tenant_id, idx, search_document(payload or "")))

    def roll_up(self, limit: int) -> int:
        """Count up to ``limit`` entries into the rollup, oldest first per tenant, in one
        transaction with the marks; one process at a time (a try-lock, as for search).
        Nothing is written while nothing waits to be counted."""
        if not self._query(counts.PENDING + " LIMIT 1"):
            return 0
        with self._one_at_a_time(COUNT_LOCK_ID) as conn:
            if conn is None:
                return 0
            ranges = _pending_ranges(conn, counts.PENDING, limit)
            for tenant_id, start, end in ranges:
                conn.execute(counts.INSERT_RANGE, (tenant_id, start, end))
            conn.cursor().executemany(
                counts.MOVE_MARK, [(tenant, end) for tenant, _, end in ranges]
            )
        return sum(end - start for _, start, end in ranges)

    def rollup_backlog(self) -> int:
        return int(self._query(counts.BACKLOG)[0][0])

    def pack_tiles(self, limit: int) -> int:
        """Pack the next full tiles of up to ``limit`` entries (rounded up to whole tiles),
        oldest first per tenant, in one transaction; one process at a time (a try-lock, as
        for the counts). Nothing is written while nothing waits to be packed."""
        if not self._query(leaf_tiles.PENDING + " LIMIT 1"):
            return 0
        with self._one_at_a_time(TILE_LOCK_ID) as conn:
            if conn is None:
                return 0
            ranges = _pending_ranges(conn, leaf_tiles.PENDING, -(-limit // TILE_WIDTH))
            for tenant_id, first, end in ranges:
                conn.execute(
                    leaf_tiles.PACK_RANGE, (tenant_id, first * TILE_WIDTH, end * TILE_WIDTH)
                )
        return sum(end - first for _, first, end in ranges) * TILE_WIDTH

    def packed_tile(self, tenant_id: int, index: int) -> bytes | None:
        rows = self._query(leaf_tiles.READ, (tenant_id, index))
        return bytes(rows[0][0]) if rows else None

    def tile_backlog(self) -> int:
        return int(self._query(leaf_tiles.BACKLOG)[0][0])

    @contextmanager
    def _one_at_a_time(self, lock_id: int) -> Iterator[Connection | None]:
        """A write transaction holding the advisory lock ``lock_id``, or None at once if
        another process holds it (the derived jobs run on the upkeep thread: never wait)."""
        with self.write() as tx:
            conn = tx._conn
            row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_id,)).fetchone()
            yield conn if row and row[0] else None

    def search_backlog(self) -> int:
        rows = self._query(
            f"SELECT coalesce(sum(size - next_idx), 0) FROM ({_SEARCH_PENDING}) AS pending"
        )
        return int(rows[0][0])
