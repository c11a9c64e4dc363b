"""The production backend: many stateless API processes, on any hosts, sharing one PostgreSQL.

Writers of one tenant are serialized across processes by a row lock on the tenant
(``SELECT … FOR NO KEY UPDATE``), taken first in every write transaction; the tree size is
read after the lock, so no two processes can ever append at the same index. Commits are
durable (``synchronous_commit`` is forced back on if a server default turned it off), and
each batch of entries and of tree nodes goes in with one binary ``COPY``.

Connections come from a thread-safe :class:`psycopg_pool.ConnectionPool`, opened on first
use. Create one :class:`PostgresStorage` per process: a pool must not cross a ``fork()``.
Unavailability (connection lost, pool exhausted, server shutting down, read-only replica,
deadlock or serialization failure) surfaces as :class:`StorageError`, which the API answers
with 503; constraint violations surface as psycopg's ``IntegrityError``, as SQLite's do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from immutablelog.entry import timestamp
from immutablelog.ledger import rollup
from immutablelog.ledger.health import Fault, StorageHealth
from immutablelog.ledger.postgres import counts
from immutablelog.ledger.postgres.key_history import KeyHistoryRows, KeyHistoryTransaction
from immutablelog.ledger.postgres.schema import (
    COUNT_LOCK_ID,
    MIGRATION_LOCK_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    SEARCH_LOCK_ID,
)
from immutablelog.ledger.rollup import Cancel
from immutablelog.ledger.storage import (
    API_KEY_COLUMNS,
    COUNT_MATCHES,
    COUNT_SECONDS,
    DERIVED_COLUMNS,
    ENTRY_COLUMNS,
    VIEWER_LINK_COLUMNS,
    AlreadyExists,
    ApiKey,
    AuditRow,
    EventCounts,
    EventQuery,
    NewEntry,
    StorageError,
    StorageFull,
    StorageUnavailable,
    StoredCheckpoint,
    StoredEntry,
    Tenant,
    ViewerLink,
    api_key_from_row,
    check_tree_end,
    erasable_filters,
    erasable_values,
    event_filters,
    joined_part,
    stored_scopes,
    viewer_link_from_row,
)
from immutablelog.ledger.words import search_document, search_words
from immutablelog.merkle import NodeID

Connection = psycopg.Connection[Any]

#: Errors that mean "the database cannot serve this now", not "the request is wrong".
_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,  # connection, pool timeout, shutdown, deadlock, disk full, …
    psycopg.InterfaceError,  # the connection was already closed
    errors.ReadOnlySqlTransaction,  # connected to a standby after a failover
)
# Rows per keyset page when streaming entries (each at most ~14 KB).
_PAGE_ROWS = 500
# A session that sits in an open transaction this long is killed by the server, so a
# stopped or hung process cannot hold a tenant's write lock for ever.
_IDLE_IN_TRANSACTION = "60s"
# Entries per search-indexing transaction (see index_search).
_SEARCH_SLICE = 10_000

#: Seconds a probe of a database that seems down may take to connect.
_PROBE_TIMEOUT = 2
#: Seconds a readiness ping waits for a pooled connection.
_PING_TIMEOUT = 0.8

_ENTRY_TYPES = ["int8", "int8", *["text"] * 9, "bytea", "bytea"]


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), bytes(row[1]), row[2], row[3])


def _entry(row: Sequence[Any]) -> StoredEntry:
    """A :class:`StoredEntry` from ``idx, id, received_at, entry[, salt, values]``."""
    part = joined_part(row[4], row[5]) if len(row) > 4 else None
    return StoredEntry(int(row[0]), row[1], row[2], bytes(row[3]), part)


#: The erasable part beside an entry ``e`` (as ``x``; NULL columns when there is none).
_WITH_PART = "LEFT JOIN erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"
_STORED_COLUMNS = "e.idx, e.id, e.received_at, e.entry, x.salt, x.erasable_values"


def _tenant(row: Sequence[Any]) -> Tenant:
    return Tenant(int(row[0]), row[1], row[2])


_Fetch = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _select_nodes(fetch: _Fetch, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
    if not ids:
        return []
    # One round trip: leaves come from their entries, interior nodes from the nodes table.
    leaves = [idx for level, idx in ids if level == 0]
    interior = [node for node in ids if node[0] > 0]
    rows = fetch(
        "SELECT 0, idx, leaf FROM entries WHERE tenant_id = %s AND idx = ANY(%s::int8[]) "
        "UNION ALL "
        "SELECT n.level, n.idx, n.hash FROM nodes n "
        "JOIN unnest(%s::int8[], %s::int8[]) AS want(level, idx) "
        "ON n.level = want.level AND n.idx = want.idx "
        "WHERE n.tenant_id = %s",
        (
            tenant_id,
            leaves,
            [level for level, _ in interior],
            [idx for _, idx in interior],
            tenant_id,
        ),
    )
    found = {(int(level), int(idx)): bytes(digest) for level, idx, digest in rows}
    try:
        return [found[node] for node in ids]
    except KeyError as missing:
        raise StorageError(f"tree node {missing} of tenant {tenant_id} is missing") from None


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


def _configure(conn: Connection) -> None:
    """Per-connection settings, applied once when the pool opens a connection."""
    # An acknowledged event must survive a server crash: undo a server-wide "off". The
    # other values (local, remote_write, on, remote_apply) are all durable; keep them.
    conn.execute(
        "SELECT set_config('synchronous_commit', 'on', false) "
        "WHERE current_setting('synchronous_commit') = 'off'"
    )
    conn.execute(f"SET idle_in_transaction_session_timeout = '{_IDLE_IN_TRANSACTION}'")


class _Transaction(KeyHistoryTransaction):
    """A write transaction on one connection; see :class:`WriteTransaction`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def lock_tenant(self, tenant_id: int) -> int:
        # FOR NO KEY UPDATE conflicts with itself (one writer per tenant) but not with the
        # key-share locks that foreign keys take, so creating API keys is not blocked.
        # Pipelined: one round trip; the size query starts only once the lock is held,
        # and under READ COMMITTED it then sees what the previous writer committed.
        with self._conn.pipeline():
            self._conn.execute(
                "SELECT 1 FROM tenants WHERE id = %s FOR NO KEY UPDATE", (tenant_id,)
            )
            cur = self._conn.execute(
                "SELECT COALESCE((SELECT size FROM checkpoints WHERE tenant_id = %s "
                "ORDER BY size DESC LIMIT 1), 0), "
                "COALESCE((SELECT idx + 1 FROM entries WHERE tenant_id = %s "
                "ORDER BY idx DESC LIMIT 1), 0)",
                (tenant_id, tenant_id),
            )
        row = cur.fetchone()
        assert row is not None
        return check_tree_end(tenant_id, int(row[0]), int(row[1]))

    def create_tenant(self, name: str, now: str) -> Tenant:
        # ON CONFLICT rather than catching the unique violation: a failed statement would
        # abort the whole transaction, where SQLite lets the caller carry on.
        row = self._conn.execute(
            "INSERT INTO tenants (name, created_at) VALUES (%s, %s) "
            "ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, now),
        ).fetchone()
        if row is None:
            raise AlreadyExists(f"tenant {name!r} already exists")
        return Tenant(int(row[0]), name, now)

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(query, params).fetchall()

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return _select_nodes(self._fetch, tenant_id, ids)

    def live_keys(self, key_ids: Collection[int], scope: str) -> set[int]:
        if not key_ids:
            return set()
        rows = self._conn.execute(
            "SELECT id, scopes FROM api_keys WHERE id = ANY(%s::int8[]) AND revoked_at IS NULL",
            (list(key_ids),),
        )
        return {int(kid) for kid, scopes in rows if scope in stored_scopes(scopes)}

    def find_by_idempotency_key(
        self, tenant_id: int, keys: Sequence[str], received_since: str
    ) -> dict[str, StoredEntry]:
        if not keys:
            return {}
        rows = self._conn.execute(
            f"SELECT DISTINCT ON (e.idempotency_key) e.idempotency_key, {_STORED_COLUMNS} "
            f"FROM entries AS e {_WITH_PART} WHERE e.tenant_id = %s "
            "AND e.idempotency_key = ANY(%s::text[]) "
            "AND e.received_at >= %s ORDER BY e.idempotency_key, e.idx DESC",
            (tenant_id, list(keys), received_since),
        )
        return {row[0]: _entry(row[1:]) for row in rows}

    # Binary COPY: 1.5-2x as fast as (pipelined) executemany for 1000-row batches (see the
    # contract tests' module docstring for the numbers).
    def insert_entries(self, tenant_id: int, rows: Sequence[NewEntry]) -> None:
        if not rows:
            return
        with (
            self._conn.cursor() as cur,
            cur.copy(
                f"COPY entries ({', '.join(ENTRY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(_ENTRY_TYPES)
            for r in rows:
                copy.write_row(r.row(tenant_id))
        parts = erasable_values(tenant_id, rows)
        if parts:
            with (
                self._conn.cursor() as cur,
                cur.copy(
                    "COPY erasables (tenant_id, idx, salt, erasable_values) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int8", "int8", "bytea", "bytea"])
                for start in range(0, len(parts), 4):
                    copy.write_row(parts[start : start + 4])

    def insert_nodes(self, tenant_id: int, nodes: Sequence[tuple[NodeID, bytes]]) -> None:
        if not nodes:
            return
        with (
            self._conn.cursor() as cur,
            cur.copy("COPY nodes (tenant_id, level, idx, hash) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int8", "int8", "int8", "bytea"])
            for (level, idx), digest in nodes:
                copy.write_row((tenant_id, level, idx, digest))

    def insert_checkpoint(
        self, tenant_id: int, size: int, root: bytes, note: str, now: str
    ) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (tenant_id, size, root, note, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, size) DO NOTHING",
            (tenant_id, size, root, note, now),
        )


class PostgresStorage(KeyHistoryRows):
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

    # connections ------------------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = ConnectionPool(
                        self.url,
                        kwargs={"autocommit": True, "application_name": "immutablelog"},
                        min_size=self._min_size,
                        max_size=self._max_size,
                        timeout=self._timeout,
                        configure=_configure,
                        name="immutablelog",
                        open=False,
                    )
                    pool.open()
                    self._pool = pool
        return pool

    def _probe(self) -> None:
        """Raise unless a new connection (not the pool's) reaches the database."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=_PROBE_TIMEOUT) as conn:
            conn.execute("SELECT 1")

    def _drop_pool(self) -> None:
        """Close the pool when the database goes down: its connections are dead, and it
        would retry them in the background (a warning each) with a back-off that grows
        through the outage; the first operation after it opens a fresh pool at once."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=_PROBE_TIMEOUT + 1)

    def _unavailable(self, exc: Exception, conn: Connection | None = None) -> StorageError:
        """The error for a failed operation, noting a full disk or an unreachable database
        in :attr:`health` (which then fails operations at once until a probe succeeds)."""
        detail = f"PostgreSQL at {self._where} is unavailable: {exc}"
        if isinstance(exc, errors.DiskFull):
            self.health.failed(Fault.STORAGE_FULL, f"PostgreSQL at {self._where}: {exc}")
            return StorageFull(f"PostgreSQL at {self._where} is out of disk space: {exc}")
        if isinstance(exc, PoolTimeout) or conn is None or conn.closed:
            # The pool also times out when merely busy: only a failed probe means "down".
            down = self._down()
            if down is not None:
                return down
        return StorageError(detail)

    def _down(self) -> StorageUnavailable | None:
        """After a lost connection: probe with a new one, and if that fails too, note the
        database as down (so that operations fail at once) and return the error to raise."""
        try:
            self._probe()
        except psycopg.Error as probe_failure:
            detail = f"PostgreSQL at {self._where} is unavailable: {probe_failure}"
            self.health.failed(Fault.UNAVAILABLE, detail)
            return StorageUnavailable(detail)
        return None

    @contextmanager
    def _connection(self, *, begin: bool = False) -> Iterator[Connection]:
        """A pooled autocommit connection, in a transaction if ``begin``.

        Unavailability becomes :class:`StorageError`. A pooled connection found dead on
        BEGIN (server restarted, failover, idle timeout) is discarded and another one
        tried, so only a real outage reaches the caller.
        """
        self.health.check()
        conn: Connection | None = None
        try:
            for attempt in range(self._max_size + 1):
                with self._get_pool().connection() as conn:
                    if begin:
                        try:
                            # READ COMMITTED whatever the server default: each statement must
                            # see what the previous lock holder committed (a REPEATABLE READ
                            # snapshot taken before waiting for the tenant lock is stale).
                            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                        except _UNAVAILABLE:
                            if conn.closed and attempt < self._max_size:
                                # A stale pooled connection (the server restarted, say): try
                                # another, unless a new one cannot connect either.
                                down = self._down()
                                if down is not None:
                                    raise down from None
                                continue  # the pool discards it on the way back
                            raise
                    yield conn
                    return
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, conn) from exc

    def _query(
        self, query: str, params: Sequence[Any] = (), *, timeout: float | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one idempotent statement and fetch its rows, retrying on a dead pooled
        connection (as :meth:`_connection` does for BEGIN). ``timeout`` bounds the wait
        for a pooled connection (default: the pool's)."""
        self.health.check()
        for attempt in range(self._max_size + 1):
            conn: Connection | None = None
            try:
                with self._get_pool().connection(timeout) as conn:
                    cur = conn.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except _UNAVAILABLE as exc:
                if conn is None or not conn.closed or attempt == self._max_size:
                    raise self._unavailable(exc, conn) from exc
                down = self._down()  # as in _connection: retry only if the database is up
                if down is not None:
                    raise down from exc
        raise AssertionError("unreachable")

    def ping(self) -> None:
        self._query("SELECT 1", timeout=_PING_TIMEOUT)

    def close(self) -> None:
        self.health.close()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @contextmanager
    def write(self) -> Iterator[_Transaction]:
        with self._connection(begin=True) as conn:
            try:
                yield _Transaction(conn)
            except BaseException:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # The caller swallowed a failed statement; COMMIT would silently roll back.
                conn.execute("ROLLBACK")
                raise StorageError("the transaction failed and was rolled back")
            wrote = True
            if self.health.active(Fault.STORAGE_FULL):
                # A transaction that wrote nothing commits on a full disk too: it proves no
                # space. Asked only while the fault is on, so a normal commit costs nothing.
                row = conn.execute("SELECT txid_current_if_assigned() IS NOT NULL").fetchone()
                wrote = bool(row and row[0])
            try:
                conn.execute("COMMIT")
            except _UNAVAILABLE:
                raise  # classified by _connection (lost, full, …)
            except psycopg.Error as exc:
                raise StorageError(f"commit failed: {exc}") from exc
        if wrote:
            self.health.cleared(Fault.STORAGE_FULL)

    # schema ----------------------------------------------------------------------------
    def initialize(self, log_name: str) -> str:
        # A direct connection, not the pool: a failure here names its cause ("connection
        # refused", "password authentication failed", "permission denied for schema")
        # instead of a pool timeout. Any failure means the store is unusable: StorageError.
        try:
            with psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._timeout))
            ) as conn:
                return self._migrate(conn, log_name)
        except psycopg.Error as exc:
            raise StorageError(f"cannot use PostgreSQL at {self._where}: {exc}") from exc

    def _migrate(self, conn: Connection, log_name: str) -> str:
        with conn.transaction():
            # Several processes may start at once: one migrates, the others wait, then see it.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            # Only the current schema counts: a log in another schema on the search_path
            # (public, say) is a different log.
            row = conn.execute(
                "SELECT current_schema(), to_regclass(format('%I.meta', current_schema()))"
            ).fetchone()
            if row is None or row[0] is None:
                raise StorageError(
                    f"PostgreSQL at {self._where} has no current schema: check search_path"
                )
            schema = sql.Identifier(row[0])
            version = 0
            if row[1] is not None:
                found = conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(found[0]) if found else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self._where} has schema version {version}; this release knows up to "
                    f"{SCHEMA_VERSION}: upgrade immutablelog"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(sql.SQL(MIGRATIONS[step]).format(schema=schema))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('log_name', %s) ON CONFLICT DO NOTHING",
                (log_name,),
            )
            found = conn.execute("SELECT value FROM meta WHERE key = 'log_name'").fetchone()
            assert found is not None
            return str(found[0])

    def log_key(self) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = 'log_key'")
        return str(rows[0][0]) if rows else None

    def bind_log_key(self, verifier_key: str) -> str:
        # Whichever host records first wins; the others wait on its row, then read it.
        with self.write() as tx:
            tx._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('log_key', %s) ON CONFLICT DO NOTHING",
                (verifier_key,),
            )
            if not tx.log_keys():
                tx.add_log_key(verifier_key, timestamp())
        bound = self.log_key()
        assert bound is not None
        return bound

    # tenants and keys ------------------------------------------------------------------
    def get_tenant(self, name: str) -> Tenant | None:
        rows = self._query("SELECT id, name, created_at FROM tenants WHERE name = %s", (name,))
        return _tenant(rows[0]) if rows else None

    def get_tenant_by_id(self, tenant_id: int) -> Tenant | None:
        rows = self._query("SELECT id, name, created_at FROM tenants WHERE id = %s", (tenant_id,))
        return _tenant(rows[0]) if rows else None

    def list_tenants(self) -> list[Tenant]:
        return [
            _tenant(row)
            for row in self._query("SELECT id, name, created_at FROM tenants ORDER BY id")
        ]

    def create_api_key(
        self,
        tenant_id: int,
        key_hash: bytes,
        prefix: str,
        scopes: frozenset[str],
        label: str | None,
        now: str,
    ) -> ApiKey:
        # Not retried through _query: an INSERT whose answer was lost may have committed.
        with self._connection() as conn:
            row = conn.execute(
                "WITH k AS (INSERT INTO api_keys "
                "(tenant_id, key_hash, prefix, scopes, label, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *) "
                f"SELECT {API_KEY_COLUMNS} FROM k JOIN tenants t ON t.id = k.tenant_id",
                (tenant_id, key_hash, prefix, ",".join(sorted(scopes)), label, now),
            ).fetchone()
        assert row is not None  # the foreign key guarantees the join
        return api_key_from_row(row)

    def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        rows = self._query(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            "WHERE k.key_hash = %s",
            (key_hash,),
        )
        return api_key_from_row(rows[0]) if rows else None

    def api_keys_version(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key = 'api_keys_version'")
        return int(rows[0][0]) if rows else 0

    def list_api_keys(self, tenant_id: int | None = None) -> list[ApiKey]:
        query = f"SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        params: tuple[object, ...] = ()
        if tenant_id is not None:
            query += " WHERE k.tenant_id = %s"
            params = (tenant_id,)
        return [api_key_from_row(row) for row in self._query(query + " ORDER BY k.id", params)]

    def revoke_api_key(self, prefix: str, now: str) -> ApiKey | None:
        # One statement, safe to retry: a key already revoked keeps its first revocation time.
        rows = self._query(
            "UPDATE api_keys k SET revoked_at = COALESCE(k.revoked_at, %s) "
            "FROM tenants t WHERE t.id = k.tenant_id AND k.prefix = %s "
            f"RETURNING {API_KEY_COLUMNS}",
            (now, prefix),
        )
        return api_key_from_row(rows[0]) if rows else None

    def touch_api_keys(self, last_used: Mapping[int, str]) -> None:
        if last_used:
            self._query(
                "UPDATE api_keys k SET last_used_at = used.at "
                "FROM unnest(%s::int8[], %s::text[]) AS used(id, at) WHERE k.id = used.id",
                (list(last_used), list(last_used.values())),
            )

    # the log ---------------------------------------------------------------------------
    # viewer links
    def create_viewer_link(
        self,
        tenant_id: int,
        token_hash: bytes,
        prefix: str,
        filters: str,
        label: str | None,
        now: str,
        expires_at: str,
    ) -> ViewerLink:
        # Not retried through _query: an INSERT whose answer was lost may have committed.
        with self._connection() as conn:
            row = conn.execute(
                "WITH v AS (INSERT INTO viewer_links "
                "(tenant_id, token_hash, prefix, filters, label, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *) "
                f"SELECT {VIEWER_LINK_COLUMNS} FROM v JOIN tenants t ON t.id = v.tenant_id",
                (tenant_id, token_hash, prefix, filters, label, now, expires_at),
            ).fetchone()
        assert row is not None  # the foreign key guarantees the join
        return viewer_link_from_row(row)

    def _links_where(self, where: str, *params: object) -> list[ViewerLink]:
        rows = self._query(
            f"SELECT {VIEWER_LINK_COLUMNS} FROM viewer_links v "
            f"JOIN tenants t ON t.id = v.tenant_id WHERE {where} ORDER BY v.id",
            params,
        )
        return [viewer_link_from_row(row) for row in rows]

    def find_viewer_link(self, token_hash: bytes) -> ViewerLink | None:
        found = self._links_where("v.token_hash = %s", token_hash)
        return found[0] if found else None

    def list_viewer_links(self, tenant_id: int | None = None) -> list[ViewerLink]:
        if tenant_id is None:
            return self._links_where("true")
        return self._links_where("v.tenant_id = %s", tenant_id)

    def revoke_viewer_link(self, prefix: str, now: str) -> ViewerLink | None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE viewer_links SET revoked_at = %s WHERE prefix = %s AND revoked_at IS NULL",
                (now, prefix),
            )
        found = self._links_where("v.prefix = %s", prefix)
        return found[0] if found else None

    def latest_checkpoint(self, tenant_id: int) -> StoredCheckpoint | None:
        rows = self._query(
            "SELECT size, root, note, created_at FROM checkpoints WHERE tenant_id = %s "
            "ORDER BY size DESC LIMIT 1",
            (tenant_id,),
        )
        return _checkpoint(rows[0]) if rows else None

    def checkpoint_at(self, tenant_id: int, size: int) -> StoredCheckpoint | None:
        rows = self._query(
            "SELECT size, root, note, created_at FROM checkpoints "
            "WHERE tenant_id = %s AND size = %s",
            (tenant_id, size),
        )
        return _checkpoint(rows[0]) if rows else None

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return _select_nodes(self._query, tenant_id, ids)

    def _pages(
        self, columns: str, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``[start, end)`` in index order, fetched in keyset pages.

        Each page borrows a connection only while it is fetched, so a slow or abandoned
        reader (an export over HTTP) pins neither a connection nor a transaction. Entries
        never change once written, so pages read at different moments still fit together.
        ``columns`` (of ``e``, the entry, and ``x``, its erasable part) must start with
        ``e.idx``.
        """
        while start < end:
            rows = self._query(
                f"SELECT {columns} FROM entries AS e {_WITH_PART} "
                "WHERE e.tenant_id = %s AND e.idx >= %s AND e.idx < %s ORDER BY e.idx LIMIT %s",
                (tenant_id, start, end, _PAGE_ROWS),
            )
            yield from rows
            if len(rows) < _PAGE_ROWS:
                return
            start = int(rows[-1][0]) + 1

    def entries(self, tenant_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        for row in self._pages(_STORED_COLUMNS, tenant_id, start, end):
            yield _entry(row)

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        columns = "e.idx, e.entry, x.salt, x.erasable_values"
        for idx, data, salt, values in self._pages(columns, tenant_id, start, end):
            yield int(idx), bytes(data), joined_part(salt, values)

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]:
        derived_columns = ", ".join(f"e.{c}" for c in DERIVED_COLUMNS)
        columns = f"e.idx, e.entry, e.leaf, x.salt, x.erasable_values, {derived_columns}"
        for idx, data, leaf, salt, parts, *derived in self._pages(columns, tenant_id, start, end):
            values = dict(zip(DERIVED_COLUMNS, derived, strict=True))
            yield AuditRow(
                int(idx),
                values["id"],
                values["received_at"],
                bytes(data),
                bytes(leaf),
                values,
                joined_part(salt, parts),
            )

    def checkpoints(self, tenant_id: int, min_size: int, max_size: int) -> list[StoredCheckpoint]:
        rows = self._query(
            "SELECT size, root, note, created_at FROM checkpoints "
            "WHERE tenant_id = %s AND size >= %s AND size <= %s ORDER BY size",
            (tenant_id, min_size, max_size),
        )
        return [_checkpoint(row) for row in rows]

    def count_entries(self, tenant_id: int, start: int) -> int:
        rows = self._query(
            "SELECT count(*) FROM entries WHERE tenant_id = %s AND idx >= %s", (tenant_id, start)
        )
        return int(rows[0][0])

    def query(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        found = [_entry(row) for row in self._query(*_event_query(tenant_id, query))]
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

    # erasure ---------------------------------------------------------------------------
    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        if not indexes:
            return 0
        with self.write() as tx:
            conn = tx._conn
            # The search indexer holds this lock while it reads values: it must not put
            # back what is erased here.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEARCH_LOCK_ID,))
            wanted = list(indexes)
            conn.execute(
                "DELETE FROM entries_search WHERE tenant_id = %s AND idx = ANY(%s::int8[])",
                (tenant_id, wanted),
            )
            conn.execute(
                "UPDATE entries SET actor = NULL WHERE tenant_id = %s AND idx = ANY(%s::int8[]) "
                "AND actor IS NOT NULL",
                (tenant_id, wanted),
            )
            erased = conn.execute(
                "DELETE FROM erasables WHERE tenant_id = %s AND idx = ANY(%s::int8[])",
                (tenant_id, wanted),
            ).rowcount
            if erased:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('purge_pending', '1') "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
        return int(erased)

    def purge_erased(self) -> bool:
        if not self._query("SELECT 1 FROM meta WHERE key = 'purge_pending'"):
            return False
        self._query("DELETE FROM meta WHERE key = 'purge_pending'")
        # Deleted rows and old row versions (the nulled actor, its index entries) stay in
        # the pages until vacuumed. (Autocommit: VACUUM runs outside a transaction.)
        self._query("VACUUM (INDEX_CLEANUP ON) erasables, entries_search, entries")
        return True

    def erasable_indexes(
        self,
        tenant_id: int,
        *,
        actor: str | None = None,
        received_before: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> list[int]:
        where, params = erasable_filters(tenant_id, "%s", start, end, received_before)
        if actor is not None:
            # Driven by the actor's index, each part probed by its key: a join would let
            # the planner scan every erasable part of a big log.
            rows = self._query(
                "SELECT e.idx FROM entries AS e WHERE e.tenant_id = %s AND e.actor = %s "
                f"AND {' AND '.join(w.replace('x.', 'e.') for w in where)} "
                "AND EXISTS (SELECT 1 FROM erasables AS x "
                "WHERE x.tenant_id = e.tenant_id AND x.idx = e.idx) ORDER BY e.idx",
                [tenant_id, actor, *params],
            )
            return [int(idx) for (idx,) in rows]
        rows = self._query(
            "SELECT x.idx FROM entries AS e JOIN erasables AS x "
            "ON x.tenant_id = e.tenant_id AND x.idx = e.idx "
            f"WHERE e.tenant_id = %s AND {' AND '.join(where)} ORDER BY x.idx",
            [tenant_id, *params],
        )
        return [int(idx) for (idx,) in rows]

    def retention_days(self) -> dict[int, int]:
        rows = self._query(
            "SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL"
        )
        return {int(tid): int(days) for tid, days in rows}

    def set_retention_days(self, tenant_id: int, days: int | None) -> None:
        with self.write() as tx:
            tx._conn.execute(
                "UPDATE tenants SET retention_days = %s WHERE id = %s", (days, tenant_id)
            )

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
        with self.write() as tx:
            conn = tx._conn
            locked = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (SEARCH_LOCK_ID,)
            ).fetchone()
            if not locked or not locked[0]:
                return 0
            pending = conn.execute(_SEARCH_PENDING + " ORDER BY t.id").fetchall()
            ranges = search_ranges(
                [(int(tenant), int(start), int(size)) for tenant, start, size in pending], limit
            )
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
                    f"FROM entries AS e {_WITH_PART} "
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
        with self.write() as tx:
            conn = tx._conn
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (COUNT_LOCK_ID,))
            row = locked.fetchone()
            if not row or not row[0]:
                return 0
            pending = conn.execute(counts.PENDING + " ORDER BY t.id").fetchall()
            ranges = search_ranges(
                [(int(tenant), int(start), int(size)) for tenant, start, size in pending], limit
            )
            for tenant_id, start, end in ranges:
                conn.execute(counts.INSERT_RANGE, (tenant_id, start, end))
            conn.cursor().executemany(
                counts.MOVE_MARK, [(tenant, end) for tenant, _, end in ranges]
            )
        return sum(end - start for _, start, end in ranges)

    def rollup_backlog(self) -> int:
        return int(self._query(counts.BACKLOG)[0][0])

    def search_backlog(self) -> int:
        rows = self._query(
            f"SELECT coalesce(sum(size - next_idx), 0) FROM ({_SEARCH_PENDING}) AS pending"
        )
        return int(rows[0][0])

    def entry_by_id(self, tenant_id: int, entry_id: str) -> StoredEntry | None:
        rows = self._query(
            f"SELECT {_STORED_COLUMNS} FROM entries AS e {_WITH_PART} "
            "WHERE e.id = %s AND e.tenant_id = %s",
            (entry_id, tenant_id),
        )
        return _entry(rows[0]) if rows else None
