"""The reads and writes both storage backends run with the same SQL, written once.

Each text uses SQLite's ``?`` marks; PostgreSQL's side runs it through :func:`psycopg_sql`,
which turns every mark into ``%s`` once per text. A backend mixes :class:`SharedRows` into
its storage and :class:`SharedTransaction` into its write transaction, and gives each one
way to run a statement (:meth:`SharedRows._rows`, :meth:`SharedTransaction._execute`).
What differs stays in the backend: bulk inserts, array parameters, locks, and writes that
PostgreSQL makes safe to retry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

from immutablelog.entry import timestamp
from immutablelog.ledger.key_history import Handover, LogKey
from immutablelog.ledger.storage import (
    API_KEY_COLUMNS,
    DERIVED_COLUMNS,
    VIEWER_LINK_COLUMNS,
    ApiKey,
    AuditRow,
    StorageError,
    StoredCheckpoint,
    StoredEntry,
    Tenant,
    ViewerLink,
    api_key_from_row,
    joined_part,
    viewer_link_from_row,
)
from immutablelog.merkle import NodeID

#: The erasable part beside an entry ``e`` (as ``x``; NULL columns when there is none).
WITH_PART = "LEFT JOIN erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"
#: The columns of :func:`stored_entry` and of :func:`audit_row`, of ``e`` and ``x``.
STORED_COLUMNS = "e.idx, e.id, e.received_at, e.entry, x.salt, x.erasable_values"
AUDIT_COLUMNS = "e.idx, e.entry, e.leaf, x.salt, x.erasable_values, " + ", ".join(
    f"e.{c}" for c in DERIVED_COLUMNS
)
#: A tenant's tree size and the index after its last stored entry (two index probes).
TREE_END = (
    "SELECT COALESCE((SELECT size FROM checkpoints WHERE tenant_id = ? "
    "ORDER BY size DESC LIMIT 1), 0), "
    "COALESCE((SELECT idx + 1 FROM entries WHERE tenant_id = ? ORDER BY idx DESC LIMIT 1), 0)"
)
#: Cosignatures of sizes below the newest one a quorum cosigned: no longer served.
_PRUNE_COSIGNATURES = (
    "DELETE FROM cosignatures WHERE tenant_id = ? AND size < ("
    "SELECT size FROM cosignatures WHERE tenant_id = ? GROUP BY size "
    "HAVING count(*) >= ? ORDER BY size DESC LIMIT 1)"
)
#: Revoke the unrevoked viewer link of a prefix: (now, prefix).
REVOKE_VIEWER_LINK = (
    "UPDATE viewer_links SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL"
)
_SET_SCHEMA_VERSION = (
    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_SET_LOG_NAME = "INSERT INTO meta (key, value) VALUES ('log_name', ?) ON CONFLICT DO NOTHING"
_LOG_NAME = "SELECT value FROM meta WHERE key = 'log_name'"
_LEAF_RUN = "SELECT leaf FROM entries WHERE tenant_id = ? AND idx >= ? AND idx < ? ORDER BY idx"
_NODE_RUN = (
    "SELECT hash FROM nodes WHERE tenant_id = ? AND level = ? AND idx >= ? AND idx < ? ORDER BY idx"
)
#: The schema version a database records (no row: 0).
SCHEMA_VERSION = "SELECT value FROM meta WHERE key = 'schema_version'"
_LOG_KEYS = "SELECT key, added_at, retired_at FROM log_keys ORDER BY id"
_CHECKPOINT_COLUMNS = "SELECT size, root, note, created_at FROM checkpoints"
_API_KEYS = f"SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
_VIEWER_LINKS = (
    f"SELECT {VIEWER_LINK_COLUMNS} FROM viewer_links v JOIN tenants t ON t.id = v.tenant_id"
)


def node_run(tenant_id: int, ids: Sequence[NodeID]) -> tuple[str, tuple[int, ...]] | None:
    """One range read (SQL and parameters) for ``ids`` if they are consecutive nodes of one
    level in order, as a tile's are; else None. A range read of a tile's 256 nodes costs a
    quarter of the point reads of the same nodes."""
    if not ids:
        return None
    level, start = ids[0]
    if any(node != (level, start + i) for i, node in enumerate(ids)):
        return None
    end = start + len(ids)
    if level == 0:
        return _LEAF_RUN, (tenant_id, start, end)
    return _NODE_RUN, (tenant_id, level, start, end)


def checked_run(
    rows: Sequence[Sequence[Any]], tenant_id: int, ids: Sequence[NodeID]
) -> list[bytes]:
    """The hashes a :func:`node_run` read returned, all of them or an error."""
    if len(rows) != len(ids):
        raise StorageError(f"tree nodes {ids[0]}..{ids[-1]} of tenant {tenant_id} are missing")
    return [bytes(row[0]) for row in rows]


@cache
def psycopg_sql(text: str) -> str:
    """``text`` with psycopg's ``%s`` for each ``?`` (the texts hold no other ``?`` or ``%``)."""
    assert "%" not in text, text
    return text.replace("?", "%s")


Run = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]


def migrate(
    run: Run, version: int, known: int, where: str, step: Callable[[int], None], log_name: str
) -> str:
    """Take a schema at ``version`` to ``known`` (``step`` applies one migration) and
    record the log's name unless one is recorded already; return the recorded name.
    ``run`` executes a text of this module in the migration's transaction. A database a
    newer release has migrated is refused."""
    if version > known:
        raise StorageError(
            f"{where} has schema version {version}; this release knows up to "
            f"{known}: upgrade immutablelog"
        )
    for number in range(version + 1, known + 1):
        step(number)
    run(_SET_SCHEMA_VERSION, (str(known),))
    run(_SET_LOG_NAME, (log_name,))
    return str(run(_LOG_NAME, ())[0][0])


def stored_entry(row: Sequence[Any]) -> StoredEntry:
    """A :class:`StoredEntry` from a row of :data:`STORED_COLUMNS`."""
    idx, eid, received, data, salt, values = row
    return StoredEntry(int(idx), eid, received, bytes(data), joined_part(salt, values))


def audit_row(row: Sequence[Any]) -> AuditRow:
    """An :class:`AuditRow` from a row of :data:`AUDIT_COLUMNS`."""
    idx, data, leaf, salt, parts, *derived = row
    values = dict(zip(DERIVED_COLUMNS, derived, strict=True))
    return AuditRow(
        int(idx),
        values["id"],
        values["received_at"],
        bytes(data),
        bytes(leaf),
        values,
        joined_part(salt, parts),
    )


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), bytes(row[1]), row[2], row[3])


def _tenant(row: Sequence[Any]) -> Tenant:
    return Tenant(int(row[0]), row[1], row[2])


class SharedTransaction:
    """The statements of a write transaction that both backends run as they are."""

    def _execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``?`` marks) in the transaction; its rows, if it returns any."""
        raise NotImplementedError

    def log_keys(self) -> list[LogKey]:
        return [LogKey(key, added, retired) for key, added, retired in self._execute(_LOG_KEYS)]

    def add_log_key(self, key: str, now: str) -> None:
        self._execute("INSERT INTO log_keys (key, added_at) VALUES (?, ?)", (key, now))

    def retire_log_keys(self, keep: str, at: str) -> None:
        self._execute(
            "UPDATE log_keys SET retired_at = ? WHERE key <> ? "
            "AND (retired_at IS NULL OR retired_at > ?)",
            (at, keep, at),
        )

    def insert_handover(self, tenant_id: int, handover: Handover) -> None:
        self._execute(
            "INSERT INTO log_key_handovers (tenant_id, old_key, new_key, size, note) "
            "VALUES (?, ?, ?, ?, ?)",
            (tenant_id, handover.old_key, handover.new_key, handover.size, handover.note),
        )

    def insert_checkpoint(
        self, tenant_id: int, size: int, root: bytes, note: str, now: str
    ) -> None:
        self._execute(
            "INSERT INTO checkpoints (tenant_id, size, root, note, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, size) DO NOTHING",
            (tenant_id, size, root, note, now),
        )


class SharedRows:
    """The reads (and a few writes in a transaction of their own) both backends share."""

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read (``?`` marks) outside any transaction; its rows."""
        raise NotImplementedError

    def write(self) -> AbstractContextManager[SharedTransaction]:
        raise NotImplementedError

    # the log's key ----------------------------------------------------------------------
    def log_key(self) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = 'log_key'")
        return str(rows[0][0]) if rows else None

    def bind_log_key(self, verifier_key: str) -> str:
        # Whichever host records first wins; the others wait on its row, then read it.
        with self.write() as tx:
            tx._execute(
                "INSERT INTO meta (key, value) VALUES ('log_key', ?) ON CONFLICT DO NOTHING",
                (verifier_key,),
            )
            if not tx.log_keys():
                tx.add_log_key(verifier_key, timestamp())
        bound = self.log_key()
        assert bound is not None
        return bound

    def log_keys(self) -> list[LogKey]:
        return [LogKey(key, added, retired) for key, added, retired in self._rows(_LOG_KEYS)]

    def handovers(self, tenant_id: int) -> list[Handover]:
        rows = self._rows(
            "SELECT old_key, new_key, size, note FROM log_key_handovers WHERE tenant_id = ? "
            "ORDER BY size, new_key",
            (tenant_id,),
        )
        return [Handover(old, new, int(size), note) for old, new, size, note in rows]

    # cosignatures ------------------------------------------------------------------------
    def cosignature_lines(self, tenant_id: int, size: int) -> list[str]:
        rows = self._rows(
            "SELECT line FROM cosignatures WHERE tenant_id = ? AND size = ? ORDER BY witness",
            (tenant_id, size),
        )
        return [str(line) for (line,) in rows]

    def newest_cosigned(self, tenant_id: int, quorum: int) -> int | None:
        rows = self._rows(
            "SELECT size FROM cosignatures WHERE tenant_id = ? GROUP BY size "
            "HAVING count(*) >= ? ORDER BY size DESC LIMIT 1",
            (tenant_id, quorum),
        )
        return int(rows[0][0]) if rows else None

    def cosigned_sizes(self, tenant_id: int) -> dict[str, int]:
        rows = self._rows(
            "SELECT witness, max(size) FROM cosignatures WHERE tenant_id = ? GROUP BY witness",
            (tenant_id,),
        )
        return {str(w): int(s) for w, s in rows}

    def add_cosignature(
        self, tenant_id: int, size: int, witness: str, timestamp: int, line: str, quorum: int
    ) -> None:
        with self.write() as tx:
            tx._execute(
                "INSERT INTO cosignatures VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, size, witness) DO UPDATE "
                "SET timestamp = excluded.timestamp, line = excluded.line",
                (tenant_id, size, witness, timestamp, line),
            )
            tx._execute(_PRUNE_COSIGNATURES, (tenant_id, tenant_id, quorum))

    def record_witness(self, witness: str, error: str | None) -> None:
        with self.write() as tx:
            tx._execute(
                "INSERT INTO witness_status VALUES (?, ?, ?) ON CONFLICT (witness) DO UPDATE "
                "SET failures = CASE WHEN excluded.failures = 0 THEN 0 "
                "ELSE witness_status.failures + 1 END, last_error = excluded.last_error",
                (witness, 0 if error is None else 1, error),
            )

    def witness_failures(self) -> dict[str, int]:
        rows = self._rows("SELECT witness, failures FROM witness_status")
        return {str(w): int(n) for w, n in rows}

    # tenants, API keys, viewer links -----------------------------------------------------
    def get_tenant(self, name: str) -> Tenant | None:
        rows = self._rows("SELECT id, name, created_at FROM tenants WHERE name = ?", (name,))
        return _tenant(rows[0]) if rows else None

    def get_tenant_by_id(self, tenant_id: int) -> Tenant | None:
        rows = self._rows("SELECT id, name, created_at FROM tenants WHERE id = ?", (tenant_id,))
        return _tenant(rows[0]) if rows else None

    def list_tenants(self) -> list[Tenant]:
        rows = self._rows("SELECT id, name, created_at FROM tenants ORDER BY id")
        return [_tenant(row) for row in rows]

    def retention_days(self) -> dict[int, int]:
        rows = self._rows("SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL")
        return {int(tid): int(days) for tid, days in rows}

    def set_retention_days(self, tenant_id: int, days: int | None) -> None:
        with self.write() as tx:
            tx._execute("UPDATE tenants SET retention_days = ? WHERE id = ?", (days, tenant_id))

    def _key_where(self, where: str, *params: object) -> ApiKey | None:
        rows = self._rows(f"{_API_KEYS} WHERE {where}", params)
        return api_key_from_row(rows[0]) if rows else None

    def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        return self._key_where("k.key_hash = ?", key_hash)

    def api_keys_version(self) -> int:
        rows = self._rows("SELECT value FROM meta WHERE key = 'api_keys_version'")
        return int(rows[0][0]) if rows else 0

    def list_api_keys(self, tenant_id: int | None = None) -> list[ApiKey]:
        if tenant_id is None:
            rows = self._rows(f"{_API_KEYS} ORDER BY k.id")
        else:
            rows = self._rows(f"{_API_KEYS} WHERE k.tenant_id = ? ORDER BY k.id", (tenant_id,))
        return [api_key_from_row(row) for row in rows]

    def _links_where(self, where: str, *params: object) -> list[ViewerLink]:
        rows = self._rows(f"{_VIEWER_LINKS} WHERE {where} ORDER BY v.id", params)
        return [viewer_link_from_row(row) for row in rows]

    def find_viewer_link(self, token_hash: bytes) -> ViewerLink | None:
        found = self._links_where("v.token_hash = ?", token_hash)
        return found[0] if found else None

    def list_viewer_links(self, tenant_id: int | None = None) -> list[ViewerLink]:
        if tenant_id is None:
            return self._links_where("true")
        return self._links_where("v.tenant_id = ?", tenant_id)

    # checkpoints and counts --------------------------------------------------------------
    def latest_checkpoint(self, tenant_id: int) -> StoredCheckpoint | None:
        rows = self._rows(
            f"{_CHECKPOINT_COLUMNS} WHERE tenant_id = ? ORDER BY size DESC LIMIT 1", (tenant_id,)
        )
        return _checkpoint(rows[0]) if rows else None

    def checkpoint_at(self, tenant_id: int, size: int) -> StoredCheckpoint | None:
        rows = self._rows(
            f"{_CHECKPOINT_COLUMNS} WHERE tenant_id = ? AND size = ?", (tenant_id, size)
        )
        return _checkpoint(rows[0]) if rows else None

    def checkpoints(self, tenant_id: int, min_size: int, max_size: int) -> list[StoredCheckpoint]:
        rows = self._rows(
            f"{_CHECKPOINT_COLUMNS} WHERE tenant_id = ? AND size >= ? AND size <= ? ORDER BY size",
            (tenant_id, min_size, max_size),
        )
        return [_checkpoint(row) for row in rows]

    def entry_by_id(self, tenant_id: int, entry_id: str) -> StoredEntry | None:
        rows = self._rows(
            f"SELECT {STORED_COLUMNS} FROM entries AS e {WITH_PART} "
            "WHERE e.id = ? AND e.tenant_id = ?",
            (entry_id, tenant_id),
        )
        return stored_entry(rows[0]) if rows else None

    def count_entries(self, tenant_id: int, start: int) -> int:
        rows = self._rows(
            "SELECT count(*) FROM entries WHERE tenant_id = ? AND idx >= ?", (tenant_id, start)
        )
        return int(rows[0][0])
