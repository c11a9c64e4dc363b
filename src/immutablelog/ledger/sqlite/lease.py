"""SQLite's witnessing lease: one pusher per data file (``server/witnessing.py``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from immutablelog.ledger.key_history import WitnessLease


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


class WitnessLeasing:
    """The lease, taken on a lock file beside the database at :attr:`path`."""

    path: Path

    @contextlib.contextmanager
    def witness_lease(self) -> Iterator[WitnessLease | None]:
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
