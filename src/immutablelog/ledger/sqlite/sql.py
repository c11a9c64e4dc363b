"""SQL pieces the SQLite modules share."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import NamedTuple, TypeVar

from immutablelog.ledger.rows import checked_run, node_run
from immutablelog.ledger.storage import StorageError
from immutablelog.merkle import NodeID

T = TypeVar("T")
# SQLite caps bound parameters per statement (32766 since 3.32); stay well below.
CHUNK = 500
#: The erasable part beside an entry ``e`` (as ``x``; NULL columns when there is none).
WITH_PART = "LEFT JOIN main.erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``, each small enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def select_nodes(conn: sqlite3.Connection, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
    """O(log n) point reads: one ``IN`` list per tree level, each an index range on the key.

    (An ``OR`` of ``(level, idx)`` pairs would make SQLite scan every node of the tenant.)
    """
    run = node_run(tenant_id, ids)
    if run is not None:
        return checked_run(conn.execute(*run).fetchall(), tenant_id, ids)
    found: dict[NodeID, bytes] = {}
    by_level: dict[int, list[int]] = {}
    for level, idx in ids:
        by_level.setdefault(level, []).append(idx)
    for level, indexes in by_level.items():
        for chunk in chunks(indexes):
            marks = ",".join("?" * len(chunk))
            sql = (
                f"SELECT idx, leaf FROM entries WHERE tenant_id = ? AND idx IN ({marks})"
                if level == 0
                else f"SELECT idx, hash FROM nodes WHERE tenant_id = ? AND level = {level:d} "
                f"AND idx IN ({marks})"
            )
            for idx, digest in conn.execute(sql, (tenant_id, *chunk)):
                found[(level, idx)] = bytes(digest)
    try:
        return [found[node] for node in ids]
    except KeyError as missing:
        raise StorageError(f"tree node {missing} of tenant {tenant_id} is missing") from None


def progress_mark(job: str) -> str:
    """An SQL expression: the rowid of the last entry ``job`` (a job of the search file)
    has taken in, 0 before any."""
    key = f"'{job}_rowid'"
    return f"coalesce((SELECT CAST(value AS INTEGER) FROM search.meta WHERE key = {key}), 0)"


class Slice(NamedTuple):
    """Entries ``after < rowid <= last`` for a job of the search file to take in."""

    after: int
    last: int
    last_id: str


def next_slice(
    conn: sqlite3.Connection, job: str, limit: int, forget: Sequence[str]
) -> Slice | None:
    """The next ``limit`` entries at most that a job deriving rows from the log in the
    search file (``job``: ``indexed``, ``counted``, ``packed``) has yet to take in, or None
    if none.

    The job's progress mark is meta ``<job>_rowid``, with that entry's id in ``<job>_id``.
    An id that no longer matches (:func:`mark_holds`) means the ledger file was replaced (by
    an older copy, say): the ``forget`` statements empty what the job derived, and it starts
    afresh rather than let old rows point at the rowids of other entries.
    """
    row = conn.execute(f"SELECT {progress_mark(job)}, {mark_holds(job)}").fetchone()
    done = int(row[0])
    if not row[1]:
        for statement in forget:
            conn.execute(statement)
        done = 0
    # The last entry of this slice: the limit-th after the progress mark, else the newest.
    last_of_slice = "SELECT rowid, id FROM main.entries WHERE rowid > ? ORDER BY rowid "
    top = (
        conn.execute(last_of_slice + "LIMIT 1 OFFSET ?", (done, limit - 1)).fetchone()
        or conn.execute(last_of_slice + "DESC LIMIT 1", (done,)).fetchone()
    )
    return None if top is None else Slice(done, int(top[0]), str(top[1]))


def mark_holds(job: str) -> str:
    """An SQL condition: ``job``'s progress mark still names the entry it was set at (or
    there is none). False once the ledger file under the search file was replaced, until
    the job's next slice has emptied what it derived from the old one."""
    return (
        f"(SELECT id FROM main.entries WHERE rowid = {progress_mark(job)}) "
        f"IS (SELECT value FROM search.meta WHERE key = '{job}_id')"
    )


def job_backlog(conn: sqlite3.Connection, job: str) -> int:
    """Entries ``job`` has yet to take in (rowids run 1..n without gaps: entries are never
    deleted)."""
    (behind,) = conn.execute(
        f"SELECT (SELECT coalesce(max(rowid), 0) FROM main.entries) - {progress_mark(job)}"
    ).fetchone()
    return max(0, int(behind))


def create_derived(conn: sqlite3.Connection, job: str, ddl: str, table: str) -> None:
    """Create a job's table in the search file (``ddl``: ``IF NOT EXISTS``); empty it if
    the job's progress mark is gone (a rebuilt file, or a first start with an older one)."""
    conn.execute(ddl)
    marked = conn.execute("SELECT 1 FROM search.meta WHERE key = ?", (f"{job}_rowid",))
    if marked.fetchone() is None:
        conn.execute(f"DELETE FROM {table}")


def mark_progress(conn: sqlite3.Connection, job: str, taken: Slice) -> None:
    """Move ``job``'s progress mark past ``taken`` (in the transaction that took it in)."""
    conn.executemany(
        "INSERT INTO search.meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(f"{job}_rowid", str(taken.last)), (f"{job}_id", taken.last_id)],
    )
