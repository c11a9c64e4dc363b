"""SQLite's write transaction: what the single writer of a commit does, in few statements.

Rows go in as multi-row INSERTs and idempotency keys are looked up in padded IN lists,
both to spare the writer statements (each a GIL hand-off) per commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from immutablelog.ledger.rows import TREE_END, SharedTransaction
from immutablelog.ledger.sqlite.sql import chunks, select_nodes
from immutablelog.ledger.storage import (
    ENTRY_COLUMNS,
    AlreadyExists,
    NewEntry,
    StoredEntry,
    Tenant,
    check_tree_end,
    erasable_values,
    joined_part,
    stored_scopes,
)
from immutablelog.merkle import NodeID

#: Most keys one idempotency lookup statement holds (far below SQLite's parameter limit).
_KEYS_PER_LOOKUP = 8192


def _padded(keys: Sequence[str]) -> Sequence[str]:
    """``keys`` lengthened to the next power of two (from 16) by repeating the first one.

    One lookup statement per group instead of one per 500 keys saves the writer a
    statement, and a GIL hand-off, per 500 keys; padding the IN list to a few sizes keeps
    those statements in the connection's cache instead of compiling one per group size
    (SQLite reads an IN list into a set, so a repeated key costs no second probe).
    """
    size = max(16, 1 << (len(keys) - 1).bit_length())
    return [*keys, *[keys[0]] * (size - len(keys))]


#: Rows per multi-row INSERT: 13 columns x 1000 stays far below SQLite's 32766 parameters.
_ROWS_PER_INSERT = 1000


def _insert_rows(conn: sqlite3.Connection, head: str, width: int, values: list[object]) -> None:
    """Multi-row ``INSERT … VALUES (…), (…)`` statements instead of ``executemany``.

    Every statement step releases the GIL and takes it back; with one step per row the
    writer waits for the GIL a thousand times per commit while the event loop parses the
    next requests. One step per slice of rows does the same work with one wait.
    ``values`` holds the rows one after another, ``width`` values each: a flat list costs
    the writer one append per value instead of a tuple per row.
    """
    one = "(" + ",".join("?" * width) + ")"
    step = width * _ROWS_PER_INSERT
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        conn.execute(head + ",".join([one] * (len(chunk) // width)), chunk)


def _entry_values(tenant_id: int, rows: Sequence[NewEntry]) -> list[object]:
    """The rows' :data:`ENTRY_COLUMNS` values, one row after another."""
    values: list[object] = []
    extend = values.extend
    for row in rows:
        extend(row.row(tenant_id))
    return values


def _node_values(tenant_id: int, nodes: Sequence[tuple[NodeID, bytes]]) -> list[object]:
    """``(tenant_id, level, idx, hash)`` of each node, one after another."""
    values: list[object] = []
    extend = values.extend
    for (level, idx), digest in nodes:
        extend((tenant_id, level, idx, digest))
    return values


class Transaction(SharedTransaction):
    """A write transaction on one connection; see :class:`WriteTransaction`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def lock_tenant(self, tenant_id: int) -> int:
        # BEGIN IMMEDIATE already holds the database's write lock.
        size, stored_end = self._conn.execute(TREE_END, (tenant_id, tenant_id)).fetchone()
        return check_tree_end(tenant_id, size, stored_end)

    def create_tenant(self, name: str, now: str) -> Tenant:
        try:
            cur = self._conn.execute(
                "INSERT INTO tenants (name, created_at) VALUES (?, ?)", (name, now)
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"tenant {name!r} already exists") from None
        assert cur.lastrowid is not None
        return Tenant(cur.lastrowid, name, now)

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return select_nodes(self._conn, tenant_id, ids)

    def find_by_idempotency_key(
        self, tenant_id: int, keys: Sequence[str], received_since: str
    ) -> dict[str, StoredEntry]:
        found: dict[str, StoredEntry] = {}
        for chunk in chunks(keys, _KEYS_PER_LOOKUP):
            chunk = _padded(chunk)
            marks = ",".join("?" * len(chunk))
            # INDEXED BY: on its own the planner prefers the time index, scanning the window.
            for key, idx, eid, received, data, salt, values in self._conn.execute(
                f"SELECT e.idempotency_key, e.idx, e.id, e.received_at, e.entry, x.salt, "
                f"x.erasable_values FROM entries AS e "
                f"INDEXED BY entries_by_idempotency_key LEFT JOIN erasables AS x "
                f"ON x.tenant_id = e.tenant_id AND x.idx = e.idx "
                f"WHERE e.tenant_id = ? AND e.idempotency_key IN ({marks})",
                (tenant_id, *chunk),
            ):
                if received < received_since:
                    continue
                if key not in found or found[key].index < idx:
                    found[key] = StoredEntry(
                        idx, eid, received, bytes(data), joined_part(salt, values)
                    )
        return found

    def live_keys(self, key_ids: Collection[int], scope: str) -> set[int]:
        ids = list(key_ids)
        if not ids:
            return set()
        rows = self._conn.execute(
            f"SELECT id, scopes FROM api_keys WHERE id IN ({','.join('?' * len(ids))}) "
            "AND revoked_at IS NULL",
            ids,
        )
        return {int(kid) for kid, scopes in rows if scope in stored_scopes(scopes)}

    def insert_entries(self, tenant_id: int, rows: Sequence[NewEntry]) -> None:
        _insert_rows(
            self._conn,
            f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) VALUES ",
            len(ENTRY_COLUMNS),
            _entry_values(tenant_id, rows),
        )
        parts = erasable_values(tenant_id, rows)
        if parts:
            _insert_rows(
                self._conn,
                "INSERT INTO erasables (tenant_id, idx, salt, erasable_values) VALUES ",
                4,
                parts,
            )

    def insert_nodes(self, tenant_id: int, nodes: Sequence[tuple[NodeID, bytes]]) -> None:
        _insert_rows(
            self._conn,
            "INSERT INTO nodes (tenant_id, level, idx, hash) VALUES ",
            4,
            _node_values(tenant_id, nodes),
        )
