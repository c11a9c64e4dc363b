"""PostgreSQL's leases: one process of all the hosts of a deployment at a time runs each
background job (:class:`~immutablelog.ledger.key_history.Job`: pushing to the witnesses, the
retention sweep), holding a session-level advisory lock on a connection of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import Connection

from immutablelog.ledger.key_history import Job, Lease
from immutablelog.ledger.postgres.schema import RETENTION_LOCK_CLASS, WITNESSING_LOCK_CLASS
from immutablelog.ledger.storage import StorageError


class _AdvisoryLease:
    """A job's lock, held by the session of its own connection."""

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


#: The advisory lock class of each job; the current schema's hash is the second key.
_LOCK_CLASSES = {Job.WITNESSING: WITNESSING_LOCK_CLASS, Job.RETENTION: RETENTION_LOCK_CLASS}


class Leasing:
    """The leases, taken on the database at :attr:`url`."""

    url: str

    @contextlib.contextmanager
    def lease(self, job: Job) -> Iterator[Lease | None]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot take the {job.value} lease: {exc}") from exc
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                (_LOCK_CLASSES[job],),
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
