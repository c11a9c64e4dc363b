"""PostgreSQL's witnessing lease: every host of a deployment shares the cosignature rows,
and one of them at a time pushes to the witnesses, holding a session-level advisory lock on
a connection of its own (``server/witnessing.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import Connection

from immutablelog.ledger.key_history import WitnessLease
from immutablelog.ledger.postgres.schema import WITNESSING_LOCK_CLASS
from immutablelog.ledger.storage import StorageError


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


class WitnessLeasing:
    """The lease, taken on the database at :attr:`url`."""

    url: str

    @contextlib.contextmanager
    def witness_lease(self) -> Iterator[WitnessLease | None]:
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
