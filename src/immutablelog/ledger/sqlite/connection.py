"""Each thread's connections to the ledger file, their settings, transactions and locks.

``synchronous=FULL`` in WAL mode fsyncs the log on every commit, so an acknowledged event
survives ``kill -9`` and power loss. Writers across processes queue on a file lock, then
take SQLite's own (``BEGIN IMMEDIATE``); readers never block them. Each thread gets its own
connections: one to the ledger, one with the search file attached.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from immutablelog.ledger.storage import StorageError

CACHE_KIB = -65536  # negative: KiB, so 64 MiB of page cache per connection and file
_BUSY_TIMEOUT_MS = 30_000
# The upkeep thread copies the WAL twice a second (reclaim_wal); a commit does it
# itself only past this many pages (64 MiB with 4 KiB pages: a stalled upkeep thread, or a
# process without one), and the WAL file is cut back to this size after it is reset.
_WAL_AUTOCHECKPOINT_PAGES = 16_384
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


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


def disk_full(exc: BaseException) -> bool:
    """Whether SQLite (directly, or behind the StorageError a failed commit became) said
    the database or the disk is full."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL


class Connections:
    """This thread's connections to the ledger file at ``path``, opened on first use;
    ``attach`` prepares the one that reads and fills the search file."""

    def __init__(self, path: Path, attach: Callable[[sqlite3.Connection], None]) -> None:
        self._path = path
        self._lock_path = path.with_name(path.name + ".writer-lock")
        self._attach = attach
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        with self.writer_lock():  # switching a new file to WAL does not wait on busy
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
        # What is deleted (erased values) is overwritten on disk, not left in free space.
        conn.execute("PRAGMA secure_delete = ON")
        return conn

    def _kept(self, name: str, prepare: Callable[[sqlite3.Connection], None]) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, name, None)
        if conn is None:
            conn = self._connect()
            prepare(conn)
            setattr(self._local, name, conn)
            with self._lock:
                self._all.append(conn)
        return conn

    def ledger(self) -> sqlite3.Connection:
        """This thread's connection to the ledger alone (the writer's)."""
        return self._kept("conn", lambda conn: None)

    def search(self) -> sqlite3.Connection:
        """This thread's connection to the ledger with the search file attached as ``search``.

        Separate from :meth:`ledger`: ``BEGIN IMMEDIATE`` locks every attached file, so the
        ledger's writer must never have the search file attached.
        """
        return self._kept("search_conn", self._attach)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def writer_lock(self) -> AbstractContextManager[None]:
        """Queue writers of every process on a file lock before SQLite's own lock.

        SQLite's busy handler polls with sleeps of up to 100 ms, so processes contending for
        the write lock would wait far longer than a commit takes; a blocking ``flock`` wakes
        the next writer the moment the lock is released (and is released if a process dies).
        """
        return file_lock(self._lock_path)
