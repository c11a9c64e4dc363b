"""What every SQLite connection of the ledger shares: cache size, transactions, file locks."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from immutablelog.ledger.storage import StorageError

CACHE_KIB = -65536  # negative: KiB, so 64 MiB of page cache per connection and file


@contextmanager
def transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """``begin``, then COMMIT, or ROLLBACK if the block raises; failures to start or to
    commit are :class:`StorageError` (the caller holds whatever file lock guards it)."""
    try:
        conn.execute(begin)
    except sqlite3.OperationalError as exc:
        raise StorageError(f"cannot start a write: {exc}") from exc
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolls back on some errors (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StorageError(f"commit failed: {exc}") from exc


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, released when the block ends (or the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
