"""Backlogs: where events wait while the server cannot take them.

:class:`SqliteSpool` is the durable one. Each process appends to its *own* SQLite file in the
spool directory and holds an exclusive ``flock`` on a sidecar lock file for as long as it lives.
The kernel drops that lock when the process dies — however it dies, ``kill -9`` included — so a
spool file whose lock can be taken belongs to a dead process. A starting process *adopts* such
orphans: it copies their events, oldest file first and in their original order, to the head of
its own spool, then deletes them. That is how events spooled before a crash or a restart are
replayed on the next start, and why gunicorn workers never write to the same file.

The spool is bounded by ``max_bytes`` (the sum of stored event sizes). When it is full, new
events are refused: the pipeline counts them as dropped and logs it. Already-durable events are
never evicted to make room (the oldest events of an outage are the ones most likely to matter in
an audit), and adopted events are always taken in, even past the bound.

:class:`MemoryBacklog` has the same interface for deployments without a writable directory:
events survive an outage only as long as the process does, and the bound is a count.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from immutablelog.sdk.events import WireEvent

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no durable spool
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("immutablelog.sdk")

SPOOL_PREFIX = "spool-"
SPOOL_SUFFIX = ".sqlite3"
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    """An event waiting in a backlog. ``own`` is False for events adopted from a dead process."""

    seq: int
    event: WireEvent
    own: bool
    size: int


class Backlog(Protocol):
    """A FIFO of events waiting for the server; only the pipeline's threads touch it."""

    durable: bool

    def append(self, events: Sequence[WireEvent], *, own: bool = True) -> int:
        """Store ``events`` at the tail; return how many fit (a prefix of ``events``)."""
        ...

    def peek(self, max_events: int, max_bytes: int) -> list[SpooledEvent]:
        """The oldest events, at most ``max_events`` and (beyond the first) ``max_bytes``."""
        ...

    def remove(self, seqs: Sequence[int]) -> None:
        """Forget events that reached a final state (delivered or dead-lettered)."""
        ...

    def count(self) -> int:
        """How many events are waiting."""
        ...

    def bytes_used(self) -> int:
        """The size of the waiting events (a durable spool is bounded by it)."""
        ...

    def adopt_orphans(self) -> int:
        """Take over events left by dead processes; return how many were adopted."""
        ...

    def suspend_for_fork(self) -> None:
        """Called just before ``fork()``: no open database handle may cross into the child."""
        ...

    def resume_after_fork(self) -> None:
        """Called in the parent after ``fork()``."""
        ...

    def close(self) -> None:
        """Release files (an empty spool file is deleted)."""
        ...


class MemoryBacklog:
    """A bounded in-memory FIFO: the fallback when no spool directory can be used."""

    durable = False

    def __init__(self, max_events: int) -> None:
        self._max_events = max_events
        self._items: collections.deque[SpooledEvent] = collections.deque()
        self._next_seq = 0
        self._lock = threading.Lock()

    def append(self, events: Sequence[WireEvent], *, own: bool = True) -> int:
        with self._lock:
            room = max(0, self._max_events - len(self._items))
            for event in events[:room]:
                self._next_seq += 1
                self._items.append(SpooledEvent(self._next_seq, event, own, len(event.encoded)))
            return min(room, len(events))

    def peek(self, max_events: int, max_bytes: int) -> list[SpooledEvent]:
        with self._lock:
            return list(self._items)[:max_events]

    def remove(self, seqs: Sequence[int]) -> None:
        gone = set(seqs)
        with self._lock:
            self._items = collections.deque(i for i in self._items if i.seq not in gone)

    def count(self) -> int:
        return len(self._items)

    def bytes_used(self) -> int:
        return sum(item.size for item in self._items)

    def adopt_orphans(self) -> int:
        return 0

    def suspend_for_fork(self) -> None:
        return None

    def resume_after_fork(self) -> None:
        return None

    def close(self) -> None:
        return None


def open_backlog(
    spool_dir: str | None, *, max_bytes: int, synchronous: str, max_events: int
) -> Backlog:
    """A durable spool in ``spool_dir`` if it is usable, else (logged) a memory backlog."""
    if spool_dir:
        try:
            os.makedirs(spool_dir, mode=0o700, exist_ok=True)
            if os.access(spool_dir, os.W_OK | os.X_OK):
                return SqliteSpool(spool_dir, max_bytes=max_bytes, synchronous=synchronous)
        except OSError as exc:
            logger.error(
                "ImmutableLog: spool directory %s is unusable (%s); events will wait in "
                "memory only during an outage",
                spool_dir,
                exc,
            )
        else:
            logger.error(
                "ImmutableLog: spool directory %s is not writable; events will wait in "
                "memory only during an outage",
                spool_dir,
            )
    return MemoryBacklog(max_events)


class SqliteSpool:
    """A durable, size-bounded FIFO in a per-process SQLite file (see the module docstring).

    The database is opened lazily, on the first spool or adoption, so an app that never sees an
    outage never creates a file. ``synchronous="FULL"`` (the default) makes each spooled batch
    survive a power loss, not only a process crash; ``"NORMAL"`` trades that for fewer fsyncs.
    """

    durable = True

    def __init__(self, directory: str, *, max_bytes: int, synchronous: str = "FULL") -> None:
        if fcntl is None:  # pragma: no cover
            raise OSError("a durable spool needs flock(), which this platform lacks")
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.directory = directory
        self.max_bytes = max_bytes
        self._synchronous = synchronous.upper()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._path: str | None = None
        self._bytes = 0
        self._count = 0
        self._owner_pid = os.getpid()

    @property
    def path(self) -> str | None:
        """This process's spool file, once created."""
        return self._path

    # -- lifecycle ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._path is None:
            self._create_own_file()
        assert self._path is not None
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spool ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " item BLOB NOT NULL,"
            " size INTEGER NOT NULL,"
            " own INTEGER NOT NULL,"
            " spooled_at REAL NOT NULL)"
        )
        count, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
        self._count, self._bytes = int(count), int(total)
        self._conn = conn
        return conn

    def _create_own_file(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        base = os.path.join(self.directory, f"{SPOOL_PREFIX}{os.getpid()}-{os.urandom(4).hex()}")
        # Lock first, then create the database: a scanning process only considers database
        # files, and ours is locked before it exists.
        fd = os.open(base + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        self._path = base + SPOOL_SUFFIX
        self._owner_pid = os.getpid()

    def suspend_for_fork(self) -> None:
        # Held until resume_after_fork() so the worker cannot reopen the database in between.
        self._lock.acquire()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def resume_after_fork(self) -> None:
        self._lock.release()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file and lock; the child gets its own lazily."""
        self._lock = threading.RLock()
        self._conn = None
        if self._lock_fd is not None:
            # Closing our copy does not release the parent's flock: the parent still holds the
            # open file description through its own descriptor.
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock_fd = None
        self._path = None
        self._bytes = 0
        self._count = 0
        self._owner_pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            if self._owner_pid != os.getpid():
                return
            conn, self._conn = self._conn, None
            empty = self._count == 0
            if conn is not None:
                conn.close()
            if self._path is not None and empty:
                _remove_database(self._path)
            if self._lock_fd is not None:
                if empty and self._path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._path[: -len(SPOOL_SUFFIX)] + LOCK_SUFFIX)
                os.close(self._lock_fd)
                self._lock_fd = None
            if empty:
                self._path = None

    # -- the queue ------------------------------------------------------------------------

    def append(self, events: Sequence[WireEvent], *, own: bool = True) -> int:
        if not events:
            return 0
        with self._lock:
            conn = self._db()
            rows = []
            added = 0
            now = time.time()
            for event in events:
                item = event.encoded
                if own and self._bytes + added + len(item) > self.max_bytes:
                    break
                added += len(item)
                rows.append((item, len(item), 1 if own else 0, now))
            if rows:
                with _transaction(conn):
                    conn.executemany(
                        "INSERT INTO spool (item, size, own, spooled_at) VALUES (?, ?, ?, ?)",
                        rows,
                    )
                self._bytes += added
                self._count += len(rows)
            return len(rows)

    def peek(self, max_events: int, max_bytes: int) -> list[SpooledEvent]:
        with self._lock:
            if self._conn is None and self._path is None:
                return []
            rows = (
                self._db()
                .execute(
                    "SELECT seq, item, own, size FROM spool ORDER BY seq LIMIT ?", (max_events,)
                )
                .fetchall()
            )
        batch: list[SpooledEvent] = []
        total = 0
        for seq, item, own, size in rows:
            if batch and total + size > max_bytes:
                break
            total += size
            batch.append(SpooledEvent(int(seq), WireEvent.decode(item), bool(own), int(size)))
        return batch

    def remove(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            conn = self._db()
            with _transaction(conn):
                freed = conn.execute(
                    f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM spool WHERE seq IN "
                    f"({','.join('?' * len(seqs))})",
                    list(seqs),
                ).fetchone()
                conn.executemany("DELETE FROM spool WHERE seq = ?", [(s,) for s in seqs])
            self._bytes -= int(freed[0])
            self._count -= int(freed[1])

    def count(self) -> int:
        return self._count

    def bytes_used(self) -> int:
        """Sum of the sizes of the events waiting in this process's spool."""
        return self._bytes

    # -- adoption -------------------------------------------------------------------------

    def has_orphans(self) -> bool:
        """Cheap check (no copying) for spool files left by dead processes."""
        return any(True for _ in self._orphan_candidates(probe_only=True))

    def adopt_orphans(self) -> int:
        adopted = 0
        for path, lock_fd in self._orphan_candidates(probe_only=False):
            try:
                adopted += self._adopt(path)
            except sqlite3.DatabaseError:
                logger.exception("ImmutableLog: could not read orphaned spool file %s", path)
            finally:
                os.close(lock_fd)
        return adopted

    def _orphan_candidates(self, *, probe_only: bool) -> list[tuple[str, int]]:
        if not os.path.isdir(self.directory):
            return []
        found: list[tuple[str, int]] = []
        paths = glob.glob(
            os.path.join(glob.escape(self.directory), SPOOL_PREFIX + "*" + SPOOL_SUFFIX)
        )
        paths.sort(key=_mtime)
        for path in paths:
            if path == self._path:
                continue
            lock_path = path[: -len(SPOOL_SUFFIX)] + LOCK_SUFFIX
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its owner is alive
                continue
            if probe_only:
                os.close(fd)
                return [(path, -1)]
            found.append((path, fd))
        return found

    def _adopt(self, path: str) -> int:
        lock_path = path[: -len(SPOOL_SUFFIX)] + LOCK_SUFFIX
        try:
            # mode=rw: never create a database that another adopter has just deleted.
            orphan = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
        except sqlite3.OperationalError:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            return 0
        try:
            try:
                rows = orphan.execute("SELECT item FROM spool ORDER BY seq").fetchall()
            except sqlite3.OperationalError:
                rows = []  # created but never written
        finally:
            orphan.close()
        events = [WireEvent.decode(row[0]) for row in rows]
        for start in range(0, len(events), 1000):
            self.append(events[start : start + 1000], own=False)
        # Our copy is committed; a crash before the unlink below only causes a duplicate
        # delivery, which the server's idempotency absorbs.
        _remove_database(path)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        if events:
            logger.info("ImmutableLog: adopted %d spooled events from %s", len(events), path)
        return len(events)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(path + suffix)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
