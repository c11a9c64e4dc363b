"""The witness's memory: the latest checkpoint it cosigned for each log, in SQLite.

Checking a request against the stored size and storing the new checkpoint happen in one
``BEGIN IMMEDIATE`` transaction, committed (synchronous=FULL) before the witness answers:
two racing requests can never both pass against the same old size, and a witness that
restarts or crashes never cosigns a tree smaller than one it already cosigned.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from immutablelog.merkle import EMPTY_ROOT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    checkpoint TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Witnessed:
    size: int
    root: bytes


class SizeConflict(Exception):
    """The request's old size is not the size the witness holds for that log."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the witness holds size {size}")
        self.size = size


class WitnessState:
    """One SQLite file; safe across threads (one lock) and processes (the file lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def latest(self, origin: str) -> Witnessed | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT size, root FROM witnessed WHERE origin = ?", (origin,)
            ).fetchone()
        return None if row is None else Witnessed(int(row[0]), bytes(row[1]))

    def advance(
        self,
        origin: str,
        old_size: int,
        new: Witnessed,
        checkpoint: str,
        check_consistency: Callable[[Witnessed], None],
    ) -> None:
        """Record ``new`` for ``origin`` if the stored size is ``old_size`` and
        ``check_consistency(stored)`` passes; all under one write lock, durable on return.

        Raises :class:`SizeConflict` on a size or root mismatch, and whatever
        ``check_consistency`` raises when the proof fails.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT size, root FROM witnessed WHERE origin = ?", (origin,)
                ).fetchone()
                stored = Witnessed(0, EMPTY_ROOT) if row is None else Witnessed(row[0], row[1])
                if old_size != stored.size:
                    raise SizeConflict(stored.size)
                if new.size == stored.size and new.root != stored.root:
                    raise SizeConflict(stored.size)
                check_consistency(stored)
                self._conn.execute(
                    "INSERT INTO witnessed (origin, size, root, checkpoint) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
                    "root = excluded.root, checkpoint = excluded.checkpoint, "
                    "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                    (origin, new.size, new.root, checkpoint),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
