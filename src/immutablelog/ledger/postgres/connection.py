"""PostgreSQL connections: a pool opened on first use, its faults, and write transactions.

Unavailability (connection lost, pool exhausted, server shutting down, read-only replica,
deadlock or serialization failure) surfaces as :class:`StorageError`, which the API answers
with 503; a pooled connection found dead is replaced, and a database found down is probed
until it answers (``StorageHealth``), failing operations at once meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from immutablelog.ledger.health import Fault, StorageHealth
from immutablelog.ledger.postgres.writes import Connection, Transaction
from immutablelog.ledger.rows import SharedRows, psycopg_sql
from immutablelog.ledger.storage import StorageError, StorageFull, StorageUnavailable

#: Errors that mean "the database cannot serve this now", not "the request is wrong".
_UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,  # connection, pool timeout, shutdown, deadlock, disk full, …
    psycopg.InterfaceError,  # the connection was already closed
    errors.ReadOnlySqlTransaction,  # connected to a standby after a failover
)
# A session that sits in an open transaction this long is killed by the server, so a
# stopped or hung process cannot hold a tenant's write lock for ever.
_IDLE_IN_TRANSACTION = "60s"
#: Seconds a probe of a database that seems down may take to connect.
_PROBE_TIMEOUT = 2
#: Seconds a readiness ping waits for a pooled connection.
_PING_TIMEOUT = 0.8


def _configure(conn: Connection) -> None:
    """Per-connection settings, applied once when the pool opens a connection."""
    # An acknowledged event must survive a server crash: undo a server-wide "off". The
    # other values (local, remote_write, on, remote_apply) are all durable; keep them.
    conn.execute(
        "SELECT set_config('synchronous_commit', 'on', false) "
        "WHERE current_setting('synchronous_commit') = 'off'"
    )
    conn.execute(f"SET idle_in_transaction_session_timeout = '{_IDLE_IN_TRANSACTION}'")


class PooledConnections(SharedRows):
    """The storage's pool and the ways its parts run statements: :meth:`_query` (one
    idempotent statement, retried on a dead pooled connection), :meth:`_connection` and
    :meth:`write`."""

    url: str
    _where: str
    _min_size: int
    _max_size: int
    _timeout: float
    _pool: ConnectionPool | None
    _lock: threading.Lock
    health: StorageHealth

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._query(psycopg_sql(sql), params)

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
    def write(self) -> Iterator[Transaction]:
        with self._connection(begin=True) as conn:
            try:
                yield Transaction(conn)
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
