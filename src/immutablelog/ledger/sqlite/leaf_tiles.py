"""SQLite's packed level-0 tiles (``tiles/source.py``): one row per full tile, in the
search file.

A level-0 tile is the leaf hashes of 256 entries, and those live in the entry rows (about
1 KB each): read from there, one tile is some 60 pages of the ledger file, from disk when
the log outgrows the cache. Each full tile is copied into one row of 8,192 bytes (three
pages), +32 bytes per entry. The copy is derived data like the search index: taken in a
slice of entries per transaction behind the writer from the progress mark ``packed``
(``sql.next_slice``), never by a commit; emptied when the ledger file under it was replaced,
and never read meanwhile (:func:`sql.mark_holds`); rebuilt if the file is lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from immutablelog.ledger.sqlite.sql import (
    create_derived,
    job_backlog,
    mark_holds,
    mark_progress,
    next_slice,
    select_nodes,
)
from immutablelog.tiles.layout import FULL_TILE_BYTES, TILE_WIDTH, full_leaf_tiles

JOB: Final = "packed"
#: The packed tiles (``search`` is the attached search file): ``n`` is the tile's index.
#: WITHOUT ROWID: a read descends one tree, then follows the row's two overflow pages.
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS search.leaf_tiles (
    tenant_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    hashes BLOB NOT NULL CHECK (length(hashes) = {FULL_TILE_BYTES}),
    PRIMARY KEY (tenant_id, n)
) WITHOUT ROWID
"""
_READ: Final = (
    f"SELECT hashes FROM search.leaf_tiles WHERE tenant_id = ? AND n = ? AND {mark_holds(JOB)}"
)


def create(conn: sqlite3.Connection) -> None:
    """Create the table; empty it if its progress mark is gone (a rebuilt file)."""
    create_derived(conn, JOB, SCHEMA, "search.leaf_tiles")


def packed(conn: sqlite3.Connection, tenant_id: int, index: int) -> bytes | None:
    """Full level-0 tile ``index`` as packed, or None if it is not (yet)."""
    row = conn.execute(_READ, (tenant_id, index)).fetchone()
    return None if row is None else bytes(row[0])


def pack(conn: sqlite3.Connection, limit: int) -> int:
    """Pack the full tiles that up to ``limit`` entries after the mark complete; return how
    many entries were taken in. Runs in the caller's transaction, which holds the search
    file's write lock."""
    taken = next_slice(conn, JOB, limit, ["DELETE FROM search.leaf_tiles"])
    if taken is None:
        return 0
    rows = conn.execute(
        "SELECT tenant_id, idx, leaf FROM main.entries WHERE rowid > ? AND rowid <= ? "
        "ORDER BY rowid",
        (taken.after, taken.last),
    )
    for tenant_id, (first, leaves) in runs(rows).items():
        # The tile's leaves from before the slice: entries of a tenant are stored in index
        # order, so those are all at or below the mark.
        start = first - first % TILE_WIDTH
        earlier = select_nodes(conn, tenant_id, [(0, i) for i in range(start, first)])
        conn.executemany(
            "INSERT OR REPLACE INTO search.leaf_tiles (tenant_id, n, hashes) VALUES (?, ?, ?)",
            [(tenant_id, n, hashes) for n, hashes in full_leaf_tiles(start, earlier + leaves)],
        )
    mark_progress(conn, JOB, taken)
    return taken.last - taken.after


def runs(rows: Iterable[tuple[int, int, bytes]]) -> dict[int, tuple[int, list[bytes]]]:
    """Per tenant, the index of its first entry among ``rows`` (``tenant_id, idx, leaf``
    in rowid order, so each tenant's run is gap-free and in index order) and the leaves."""
    found: dict[int, tuple[int, list[bytes]]] = {}
    for tenant_id, idx, leaf in rows:
        found.setdefault(tenant_id, (idx, []))[1].append(bytes(leaf))
    return found


def backlog(conn: sqlite3.Connection) -> int:
    """Entries the packed tiles do not cover yet."""
    return job_backlog(conn, JOB)
