"""SQLite's leases: one process per data file runs each background job
(:class:`~immutablelog.ledger.key_history.Job`), holding an ``flock`` on a file beside the
database (``ledger.db.witnessing-lock``, ``ledger.db.retention-lock``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from immutablelog.ledger.key_history import Job, Lease


class _FileLease:
    """An exclusive ``flock``, released by closing its file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def alive(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing releases the lock
            self._fd = -1


class Leasing:
    """The leases, taken on lock files beside the database at :attr:`path`."""

    path: Path

    @contextlib.contextmanager
    def lease(self, job: Job) -> Iterator[Lease | None]:
        path = self.path.with_name(f"{self.path.name}.{job.value}-lock")
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
