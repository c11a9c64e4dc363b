"""PostgreSQL reads of the log: tree nodes, and entries in keyset pages."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from immutablelog.ledger.postgres.connection import PooledConnections
from immutablelog.ledger.postgres.writes import select_nodes
from immutablelog.ledger.rows import (
    AUDIT_COLUMNS,
    STORED_COLUMNS,
    WITH_PART,
    audit_row,
    stored_entry,
)
from immutablelog.ledger.storage import AuditRow, StoredEntry, joined_part
from immutablelog.merkle import NodeID

# Rows per keyset page when streaming entries (each at most ~14 KB).
_PAGE_ROWS = 500


class LogReads(PooledConnections):
    """Reads of the tree and the entries, each page a statement of its own."""

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return select_nodes(self._query, tenant_id, ids)

    def _pages(
        self, columns: str, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of ``[start, end)`` in index order, fetched in keyset pages.

        Each page borrows a connection only while it is fetched, so a slow or abandoned
        reader (an export over HTTP) pins neither a connection nor a transaction. Entries
        never change once written, so pages read at different moments still fit together.
        ``columns`` (of ``e``, the entry, and ``x``, its erasable part) must start with
        ``e.idx``.
        """
        while start < end:
            rows = self._query(
                f"SELECT {columns} FROM entries AS e {WITH_PART} "
                "WHERE e.tenant_id = %s AND e.idx >= %s AND e.idx < %s ORDER BY e.idx LIMIT %s",
                (tenant_id, start, end, _PAGE_ROWS),
            )
            yield from rows
            if len(rows) < _PAGE_ROWS:
                return
            start = int(rows[-1][0]) + 1

    def entries(self, tenant_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        for row in self._pages(STORED_COLUMNS, tenant_id, start, end):
            yield stored_entry(row)

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        columns = "e.idx, e.entry, x.salt, x.erasable_values"
        for idx, data, salt, values in self._pages(columns, tenant_id, start, end):
            yield int(idx), bytes(data), joined_part(salt, values)

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]:
        for row in self._pages(AUDIT_COLUMNS, tenant_id, start, end):
            yield audit_row(row)
