"""SQL pieces the SQLite modules share."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import TypeVar

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
