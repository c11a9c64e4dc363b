"""PostgreSQL rows of the key history and of the witnesses' cosignatures
(``ledger/key_history.py``).

Mixed into the backend's transaction and storage classes; kept apart from the log's own rows.
Every host of a deployment reads and writes the same rows, and one of them at a time holds
the witnessing lease: a session-level advisory lock on a connection of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg
from psycopg import Connection

from immutablelog.ledger.key_history import Handover, LogKey, WitnessLease
from immutablelog.ledger.postgres.schema import WITNESSING_LOCK_CLASS
from immutablelog.ledger.storage import StorageError

_LOG_KEYS = "SELECT key, added_at, retired_at FROM log_keys ORDER BY id"
#: Cosignatures of sizes below the newest one a quorum cosigned: no longer served.
_PRUNE = (
    "DELETE FROM cosignatures WHERE tenant_id = %s AND size < ("
    "SELECT size FROM cosignatures WHERE tenant_id = %s GROUP BY size "
    "HAVING count(*) >= %s ORDER BY size DESC LIMIT 1)"
)


class KeyHistoryTransaction:
    """The key history inside a write transaction."""

    _conn: Connection

    def log_keys(self) -> list[LogKey]:
        return [LogKey(*row) for row in self._conn.execute(_LOG_KEYS).fetchall()]

    def add_log_key(self, key: str, now: str) -> None:
        self._conn.execute("INSERT INTO log_keys (key, added_at) VALUES (%s, %s)", (key, now))

    def retire_log_keys(self, keep: str, at: str) -> None:
        self._conn.execute(
            "UPDATE log_keys SET retired_at = %s WHERE key <> %s "
            "AND (retired_at IS NULL OR retired_at > %s)",
            (at, keep, at),
        )

    def insert_handover(self, tenant_id: int, handover: Handover) -> None:
        self._conn.execute(
            "INSERT INTO log_key_handovers (tenant_id, old_key, new_key, size, note) "
            "VALUES (%s, %s, %s, %s, %s)",
            (tenant_id, handover.old_key, handover.new_key, handover.size, handover.note),
        )


class _AdvisoryLease:
    """The witnessing lock, held by the session of its own connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def alive(self) -> bool:
        if self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            return False  # the session, and its lock, are gone: another host may lead now
        return True

    def release(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()  # ending the session releases the lock


class _Backend(Protocol):
    """What the mixin uses of :class:`PostgresStorage`."""

    url: str

    def _query(
        self, query: str, params: Sequence[Any] = (), *, timeout: float | None = None
    ) -> list[tuple[Any, ...]]: ...

    def write(self) -> AbstractContextManager[Any]: ...


class KeyHistoryRows:
    """Reads of the key history, and the cosignature rows every host shares."""

    def log_keys(self: _Backend) -> list[LogKey]:
        return [LogKey(*row) for row in self._query(_LOG_KEYS)]

    def handovers(self: _Backend, tenant_id: int) -> list[Handover]:
        rows = self._query(
            "SELECT old_key, new_key, size, note FROM log_key_handovers WHERE tenant_id = %s "
            "ORDER BY size, new_key",
            (tenant_id,),
        )
        return [Handover(old, new, int(size), note) for old, new, size, note in rows]

    def add_cosignature(
        self: _Backend,
        tenant_id: int,
        size: int,
        witness: str,
        timestamp: int,
        line: str,
        quorum: int,
    ) -> None:
        with self.write() as tx:
            tx._conn.execute(
                "INSERT INTO cosignatures VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant_id, size, witness) DO UPDATE "
                "SET timestamp = excluded.timestamp, line = excluded.line",
                (tenant_id, size, witness, timestamp, line),
            )
            tx._conn.execute(_PRUNE, (tenant_id, tenant_id, quorum))

    def cosignature_lines(self: _Backend, tenant_id: int, size: int) -> list[str]:
        rows = self._query(
            "SELECT line FROM cosignatures WHERE tenant_id = %s AND size = %s ORDER BY witness",
            (tenant_id, size),
        )
        return [str(line) for (line,) in rows]

    def newest_cosigned(self: _Backend, tenant_id: int, quorum: int) -> int | None:
        rows = self._query(
            "SELECT size FROM cosignatures WHERE tenant_id = %s GROUP BY size "
            "HAVING count(*) >= %s ORDER BY size DESC LIMIT 1",
            (tenant_id, quorum),
        )
        return int(rows[0][0]) if rows else None

    def cosigned_sizes(self: _Backend, tenant_id: int) -> dict[str, int]:
        rows = self._query(
            "SELECT witness, max(size) FROM cosignatures WHERE tenant_id = %s GROUP BY witness",
            (tenant_id,),
        )
        return {str(w): int(s) for w, s in rows}

    def record_witness(self: _Backend, witness: str, error: str | None) -> None:
        self._query(
            "INSERT INTO witness_status VALUES (%s, %s, %s) ON CONFLICT (witness) DO UPDATE "
            "SET failures = CASE WHEN excluded.failures = 0 THEN 0 "
            "ELSE witness_status.failures + 1 END, last_error = excluded.last_error",
            (witness, 0 if error is None else 1, error),
        )

    def witness_failures(self: _Backend) -> dict[str, int]:
        rows = self._query("SELECT witness, failures FROM witness_status")
        return {str(w): int(n) for w, n in rows}

    @contextlib.contextmanager
    def witness_lease(self: _Backend) -> Iterator[WitnessLease | None]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot take the witnessing lease: {exc}") from exc
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                (WITNESSING_LOCK_CLASS,),
            ).fetchone()
        except BaseException:
            conn.close()
            raise
        if not row or not row[0]:
            conn.close()
            yield None
            return
        lease = _AdvisoryLease(conn)
        try:
            yield lease
        finally:
            lease.release()
