"""SQLite rows of the key history and of the witnesses' cosignatures (``ledger/key_history.py``).

Mixed into the backend's transaction and storage classes; kept apart from the log's own rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from immutablelog.ledger.key_history import Handover, LogKey, WitnessLease

_LOG_KEYS = "SELECT key, added_at, retired_at FROM log_keys ORDER BY id"
#: Cosignatures of sizes below the newest one a quorum cosigned: no longer served.
_PRUNE = (
    "DELETE FROM cosignatures WHERE tenant_id = ? AND size < ("
    "SELECT size FROM cosignatures WHERE tenant_id = ? GROUP BY size "
    "HAVING count(*) >= ? ORDER BY size DESC LIMIT 1)"
)


def _log_keys(conn: sqlite3.Connection) -> list[LogKey]:
    return [LogKey(key, added, retired) for key, added, retired in conn.execute(_LOG_KEYS)]


class KeyHistoryTransaction:
    """The key history inside a write transaction."""

    _conn: sqlite3.Connection

    def log_keys(self) -> list[LogKey]:
        return _log_keys(self._conn)

    def add_log_key(self, key: str, now: str) -> None:
        self._conn.execute("INSERT INTO log_keys (key, added_at) VALUES (?, ?)", (key, now))

    def retire_log_keys(self, keep: str, at: str) -> None:
        self._conn.execute(
            "UPDATE log_keys SET retired_at = ? WHERE key <> ? "
            "AND (retired_at IS NULL OR retired_at > ?)",
            (at, keep, at),
        )

    def insert_handover(self, tenant_id: int, handover: Handover) -> None:
        self._conn.execute(
            "INSERT INTO log_key_handovers (tenant_id, old_key, new_key, size, note) "
            "VALUES (?, ?, ?, ?, ?)",
            (tenant_id, handover.old_key, handover.new_key, handover.size, handover.note),
        )


class _FileLease:
    """An exclusive ``flock`` on a file beside the database (one pusher per data file)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def alive(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing releases the lock
            self._fd = -1


class _Backend(Protocol):
    """What the mixin uses of :class:`SQLiteStorage`."""

    path: Path

    @property
    def _conn(self) -> sqlite3.Connection: ...

    def write(self) -> AbstractContextManager[Any]: ...


def _change(backend: _Backend, sql: str, *params: object) -> None:
    with backend.write() as tx:
        tx._conn.execute(sql, params)


class KeyHistoryRows:
    """Reads of the key history, and the cosignature rows every host shares."""

    def log_keys(self: _Backend) -> list[LogKey]:
        return _log_keys(self._conn)

    def handovers(self: _Backend, tenant_id: int) -> list[Handover]:
        rows = self._conn.execute(
            "SELECT old_key, new_key, size, note FROM log_key_handovers WHERE tenant_id = ? "
            "ORDER BY size, new_key",
            (tenant_id,),
        )
        return [Handover(old, new, size, note) for old, new, size, note in rows]

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
                "INSERT OR REPLACE INTO cosignatures VALUES (?, ?, ?, ?, ?)",
                (tenant_id, size, witness, timestamp, line),
            )
            tx._conn.execute(_PRUNE, (tenant_id, tenant_id, quorum))

    def cosignature_lines(self: _Backend, tenant_id: int, size: int) -> list[str]:
        rows = self._conn.execute(
            "SELECT line FROM cosignatures WHERE tenant_id = ? AND size = ? ORDER BY witness",
            (tenant_id, size),
        )
        return [str(line) for (line,) in rows]

    def newest_cosigned(self: _Backend, tenant_id: int, quorum: int) -> int | None:
        row = self._conn.execute(
            "SELECT size FROM cosignatures WHERE tenant_id = ? GROUP BY size "
            "HAVING count(*) >= ? ORDER BY size DESC LIMIT 1",
            (tenant_id, quorum),
        ).fetchone()
        return int(row[0]) if row else None

    def cosigned_sizes(self: _Backend, tenant_id: int) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT witness, max(size) FROM cosignatures WHERE tenant_id = ? GROUP BY witness",
            (tenant_id,),
        )
        return {str(w): int(s) for w, s in rows}

    def record_witness(self: _Backend, witness: str, error: str | None) -> None:
        if error is None:
            _change(self, "INSERT OR REPLACE INTO witness_status VALUES (?, 0, NULL)", witness)
        else:
            _change(
                self,
                "INSERT INTO witness_status VALUES (?, 1, ?) ON CONFLICT (witness) DO UPDATE "
                "SET failures = failures + 1, last_error = excluded.last_error",
                witness,
                error,
            )

    def witness_failures(self: _Backend) -> dict[str, int]:
        rows = self._conn.execute("SELECT witness, failures FROM witness_status")
        return {str(w): int(n) for w, n in rows}

    @contextlib.contextmanager
    def witness_lease(self: _Backend) -> Iterator[WitnessLease | None]:
        path = self.path.with_name(self.path.name + ".witnessing-lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield None
            return
        lease = _FileLease(fd)
        try:
            yield lease
        finally:
            lease.release()
