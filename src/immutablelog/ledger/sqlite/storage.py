"""The embedded default: one SQLite file, WAL, fully durable commits.

:class:`SQLiteStorage` assembles the parts, one job each: ``connection.py`` (each thread's
connections, transactions, the writers' file lock), ``migrate.py`` (the schema),
``writes.py`` (the write transaction), ``reads.py`` (the log), ``accounts.py`` (API keys
and viewer links), ``erasure.py``, ``lease.py`` (the witnessing lease), ``search.py`` (the
search file), ``counts.py`` (the event counts) and ``leaf_tiles.py`` (the packed level-0
tiles); what PostgreSQL runs with the same SQL (tenants, key and link reads, checkpoints,
the key history, cosignatures) is in ``ledger/rows.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from immutablelog.ledger.health import Fault, StorageHealth
from immutablelog.ledger.rollup import Cancel
from immutablelog.ledger.sqlite import counts, leaf_tiles
from immutablelog.ledger.sqlite.accounts import AccountWrites
from immutablelog.ledger.sqlite.connection import Connections, disk_full, transaction
from immutablelog.ledger.sqlite.erasure import Erasure
from immutablelog.ledger.sqlite.lease import Leasing
from immutablelog.ledger.sqlite.migrate import migrate
from immutablelog.ledger.sqlite.reads import LogReads
from immutablelog.ledger.sqlite.search import SearchFile
from immutablelog.ledger.sqlite.writes import Transaction
from immutablelog.ledger.storage import (
    COUNT_MATCHES,
    COUNT_SECONDS,
    EventCounts,
    EventQuery,
    StorageError,
    StorageFull,
)


class SQLiteStorage(Leasing, AccountWrites, LogReads, Erasure):
    """A :class:`~immutablelog.ledger.storage.Storage` on one SQLite database file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        #: The full-text index and lookups (``search.py``), in a file of their own.
        self.search = SearchFile(self.path, lambda: self._conn, lambda: self._search_conn)
        self.search_path = self.search.path
        self._connections = Connections(self.path, self.search.attach)
        #: A file is never "unreachable", so no breaker: only a full disk is tracked.
        self.health = StorageHealth(f"SQLite {self.path}")

    # connections ------------------------------------------------------------------------
    @property
    def _conn(self) -> sqlite3.Connection:
        return self._connections.ledger()

    @property
    def _search_conn(self) -> sqlite3.Connection:
        return self._connections.search()

    def close(self) -> None:
        self._connections.close()

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        conn = self._conn
        changes = conn.total_changes
        try:
            with self._connections.writer_lock(), transaction(conn, "BEGIN IMMEDIATE"):
                yield Transaction(conn)
        except (sqlite3.OperationalError, StorageError) as exc:
            if not disk_full(exc):
                raise
            detail = f"{self.path} cannot grow (disk or size limit full): {exc}"
            self.health.failed(Fault.STORAGE_FULL, detail)
            raise StorageFull(detail) from exc
        if conn.total_changes != changes:  # a commit that wrote nothing proves no space
            self.health.cleared(Fault.STORAGE_FULL)

    def ping(self) -> None:
        try:
            self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc

    def initialize(self, log_name: str) -> str:
        with self.write() as tx:
            return migrate(tx._conn, str(self.path), log_name)

    def reclaim_wal(self) -> None:
        # PASSIVE copies what no reader still needs and neither waits for nor blocks the
        # writer; what it leaves is copied by the next round.
        try:
            self._conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"WAL checkpoint failed: {exc}") from exc

    # derived data: the search file, the event counts, the packed tiles ----------------
    def count_events(
        self,
        tenant_id: int,
        query: EventQuery,
        width: int,
        cancel: Cancel | None = None,
        seconds: float = COUNT_SECONDS,
        matches: int = COUNT_MATCHES,
    ) -> EventCounts:
        return self.search.count_events(tenant_id, query, width, cancel, seconds, matches)

    def index_search(self, limit: int) -> int:
        return self.search.index(limit)

    def search_backlog(self) -> int:
        return self.search.backlog()

    def roll_up(self, limit: int) -> int:
        conn = self._search_conn
        with self.search.lock(), transaction(conn, "BEGIN"):
            return counts.roll_up(conn, limit)

    def rollup_backlog(self) -> int:
        return counts.backlog(self._search_conn)

    def pack_tiles(self, limit: int) -> int:
        conn = self._search_conn
        with self.search.lock(), transaction(conn, "BEGIN"):
            return leaf_tiles.pack(conn, limit)

    def packed_tile(self, tenant_id: int, index: int) -> bytes | None:
        return leaf_tiles.packed(self._search_conn, tenant_id, index)

    def tile_backlog(self) -> int:
        return leaf_tiles.backlog(self._search_conn)
