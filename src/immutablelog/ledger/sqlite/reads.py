"""SQLite reads of the log: tree nodes, entries with their erasable parts, audit rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from immutablelog.ledger.rows import (
    AUDIT_COLUMNS,
    STORED_COLUMNS,
    WITH_PART,
    audit_row,
    stored_entry,
)
from immutablelog.ledger.sqlite.base import SQLiteBase
from immutablelog.ledger.sqlite.sql import chunks, select_nodes
from immutablelog.ledger.storage import AuditRow, EventQuery, StoredEntry
from immutablelog.merkle import NodeID

#: Entries ``[start, end)`` of one tenant, in index order.
_RANGE = "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx"


class LogReads(SQLiteBase):
    """Reads of the tree and the entries, each one statement on this thread's connection."""

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return select_nodes(self._conn, tenant_id, ids)

    def entries(self, tenant_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        cur = self._conn.execute(
            f"SELECT {STORED_COLUMNS} FROM entries AS e {WITH_PART} {_RANGE}",
            (tenant_id, start, end),
        )
        for row in cur:
            yield stored_entry(row)

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        cur = self._conn.execute(  # BLOBs come back as bytes
            f"SELECT e.idx, e.entry, x.salt, x.erasable_values FROM entries AS e {WITH_PART} "
            f"{_RANGE}",
            (tenant_id, start, end),
        )
        for idx, data, salt, values in cur:
            yield idx, data, None if salt is None else salt + values

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]:
        cur = self._conn.execute(
            f"SELECT {AUDIT_COLUMNS} FROM entries AS e {WITH_PART} {_RANGE}",
            (tenant_id, start, end),
        )
        for row in cur:
            yield audit_row(row)

    def query(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        return self._with_parts(tenant_id, self.search.query(tenant_id, query))

    def _with_parts(self, tenant_id: int, found: list[StoredEntry]) -> list[StoredEntry]:
        """``found`` with their erasable parts, read in one statement (the query builders
        select entries only)."""
        if not found:
            return found
        parts: dict[int, bytes] = {}
        for chunk in chunks([e.index for e in found]):
            rows = self._conn.execute(
                "SELECT idx, salt, erasable_values FROM erasables WHERE tenant_id = ? "
                f"AND idx IN ({','.join('?' * len(chunk))})",
                (tenant_id, *chunk),
            )
            parts.update((idx, salt + values) for idx, salt, values in rows)
        return [replace(e, erasable=parts.get(e.index)) for e in found]
