"""The embedded default: one SQLite file, WAL, fully durable commits.

``synchronous=FULL`` in WAL mode fsyncs the log on every commit, so an acknowledged event
survives ``kill -9`` and power loss. Writers across processes are serialized by SQLite's own
lock (``BEGIN IMMEDIATE``); readers never block them. Each thread gets its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

from immutablelog.entry import timestamp
from immutablelog.ledger.health import Fault, StorageHealth
from immutablelog.ledger.rollup import Cancel
from immutablelog.ledger.sqlite import counts
from immutablelog.ledger.sqlite.connection import CACHE_KIB, file_lock, transaction
from immutablelog.ledger.sqlite.key_history import KeyHistoryRows, KeyHistoryTransaction
from immutablelog.ledger.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from immutablelog.ledger.sqlite.search import SearchFile
from immutablelog.ledger.sqlite.sql import WITH_PART, chunks
from immutablelog.ledger.storage import (
    API_KEY_COLUMNS,
    COUNT_MATCHES,
    COUNT_SECONDS,
    DERIVED_COLUMNS,
    ENTRY_COLUMNS,
    VIEWER_LINK_COLUMNS,
    AlreadyExists,
    ApiKey,
    AuditRow,
    EventCounts,
    EventQuery,
    NewEntry,
    StorageError,
    StorageFull,
    StoredCheckpoint,
    StoredEntry,
    Tenant,
    ViewerLink,
    api_key_from_row,
    check_tree_end,
    erasable_filters,
    erasable_values,
    joined_part,
    stored_scopes,
    viewer_link_from_row,
)
from immutablelog.merkle import NodeID

_BUSY_TIMEOUT_MS = 30_000
# The upkeep thread copies the WAL twice a second (reclaim_wal); a commit does it
# itself only past this many pages (64 MiB with 4 KiB pages: a stalled upkeep thread, or a
# process without one), and the WAL file is cut back to this size after it is reset.
_WAL_AUTOCHECKPOINT_PAGES = 16_384
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
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


def _disk_full(exc: BaseException) -> bool:
    """Whether SQLite (directly, or behind the StorageError a failed commit became) said
    the database or the disk is full."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL


def _select_nodes(conn: sqlite3.Connection, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
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


#: A tenant's tree size and the index after its last stored entry (two index probes).
_TREE_END = (
    "SELECT COALESCE((SELECT size FROM checkpoints WHERE tenant_id = ? "
    "ORDER BY size DESC LIMIT 1), 0), "
    "COALESCE((SELECT idx + 1 FROM entries WHERE tenant_id = ? ORDER BY idx DESC LIMIT 1), 0)"
)


class _Transaction(KeyHistoryTransaction):
    """A write transaction on one connection; see :class:`WriteTransaction`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def lock_tenant(self, tenant_id: int) -> int:
        # BEGIN IMMEDIATE already holds the database's write lock.
        size, stored_end = self._conn.execute(_TREE_END, (tenant_id, tenant_id)).fetchone()
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
        return _select_nodes(self._conn, tenant_id, ids)

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

    def insert_checkpoint(
        self, tenant_id: int, size: int, root: bytes, note: str, now: str
    ) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (tenant_id, size, root, note, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, size) DO NOTHING",
            (tenant_id, size, root, note, now),
        )


class SQLiteStorage(KeyHistoryRows):
    """A :class:`~immutablelog.ledger.storage.Storage` on one SQLite database file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".writer-lock")
        #: The full-text index and lookups (``search.py``), in a file of their own.
        self.search = SearchFile(self.path, lambda: self._conn, lambda: self._search_conn)
        self.search_path = self.search.path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: A file is never "unreachable", so no breaker: only a full disk is tracked.
        self.health = StorageHealth(f"SQLite {self.path}")

    # connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        with self._writer_lock():  # switching a new file to WAL does not wait on busy
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT_BYTES}")
        # What is deleted (erased values) is overwritten on disk, not left in free space.
        conn.execute("PRAGMA secure_delete = ON")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @property
    def _search_conn(self) -> sqlite3.Connection:
        """This thread's connection to the ledger with the search file attached as ``search``.

        Separate from :attr:`_conn`: ``BEGIN IMMEDIATE`` locks every attached file, so the
        ledger's writer must never have the search file attached.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "search_conn", None)
        if conn is None:
            conn = self._connect()
            self.search.attach(conn)
            self._local.search_conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _writer_lock(self) -> AbstractContextManager[None]:
        """Queue writers of every process on a file lock before SQLite's own lock.

        SQLite's busy handler polls with sleeps of up to 100 ms, so processes contending for
        the write lock would wait far longer than a commit takes; a blocking ``flock`` wakes
        the next writer the moment the lock is released (and is released if a process dies).
        """
        return file_lock(self._lock_path)

    @contextmanager
    def write(self) -> Iterator[_Transaction]:
        conn = self._conn
        changes = conn.total_changes
        try:
            with self._writer_lock(), transaction(conn, "BEGIN IMMEDIATE"):
                yield _Transaction(conn)
        except (sqlite3.OperationalError, StorageError) as exc:
            if not _disk_full(exc):
                raise
            detail = f"{self.path} cannot grow (disk or size limit full): {exc}"
            self.health.failed(Fault.STORAGE_FULL, detail)
            raise StorageFull(detail) from exc
        if conn.total_changes != changes:  # a commit that wrote nothing proves no space
            self.health.cleared(Fault.STORAGE_FULL)

    def ping(self) -> None:
        try:
            self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc

    # schema ----------------------------------------------------------------------------
    def initialize(self, log_name: str) -> str:
        with self.write() as tx:
            conn = tx._conn
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            version = 0
            if has_meta:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {version}; this release knows up to "
                    f"{SCHEMA_VERSION}: upgrade immutablelog"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split_sql(MIGRATIONS[step]):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('log_name', ?) ON CONFLICT DO NOTHING",
                (log_name,),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'log_name'").fetchone()
            return str(row[0])

    def log_key(self) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'log_key'").fetchone()
        return str(row[0]) if row else None

    def bind_log_key(self, verifier_key: str) -> str:
        with self.write() as tx:
            tx._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('log_key', ?) ON CONFLICT DO NOTHING",
                (verifier_key,),
            )
            if not tx.log_keys():
                tx.add_log_key(verifier_key, timestamp())
        bound = self.log_key()
        assert bound is not None
        return bound

    # tenants and keys ------------------------------------------------------------------
    def get_tenant(self, name: str) -> Tenant | None:
        row = self._conn.execute(
            "SELECT id, name, created_at FROM tenants WHERE name = ?", (name,)
        ).fetchone()
        return Tenant(*row) if row else None

    def get_tenant_by_id(self, tenant_id: int) -> Tenant | None:
        row = self._conn.execute(
            "SELECT id, name, created_at FROM tenants WHERE id = ?", (tenant_id,)
        ).fetchone()
        return Tenant(*row) if row else None

    def list_tenants(self) -> list[Tenant]:
        rows = self._conn.execute("SELECT id, name, created_at FROM tenants ORDER BY id")
        return [Tenant(*row) for row in rows]

    def create_api_key(
        self,
        tenant_id: int,
        key_hash: bytes,
        prefix: str,
        scopes: frozenset[str],
        label: str | None,
        now: str,
    ) -> ApiKey:
        with self.write() as tx:
            cur = tx._conn.execute(
                "INSERT INTO api_keys (tenant_id, key_hash, prefix, scopes, label, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, key_hash, prefix, ",".join(sorted(scopes)), label, now),
            )
            key_id = cur.lastrowid
        found = self._key_where("k.id = ?", key_id)
        assert found is not None
        return found

    def _key_where(self, where: str, *params: object) -> ApiKey | None:
        row = self._conn.execute(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            f"WHERE {where}",
            params,
        ).fetchone()
        return api_key_from_row(row) if row else None

    def find_api_key(self, key_hash: bytes) -> ApiKey | None:
        return self._key_where("k.key_hash = ?", key_hash)

    def api_keys_version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'api_keys_version'").fetchone()
        return int(row[0]) if row else 0

    def list_api_keys(self, tenant_id: int | None = None) -> list[ApiKey]:
        sql = f"SELECT {API_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        params: tuple[object, ...] = ()
        if tenant_id is not None:
            sql += " WHERE k.tenant_id = ?"
            params = (tenant_id,)
        return [api_key_from_row(row) for row in self._conn.execute(sql + " ORDER BY k.id", params)]

    def revoke_api_key(self, prefix: str, now: str) -> ApiKey | None:
        with self.write() as tx:
            tx._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (now, prefix),
            )
        return self._key_where("k.prefix = ?", prefix)

    def touch_api_keys(self, last_used: Mapping[int, str]) -> None:
        if not last_used:
            return
        with self.write() as tx:
            tx._conn.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                [(when, key_id) for key_id, when in last_used.items()],
            )

    # viewer links ----------------------------------------------------------------------
    def create_viewer_link(
        self,
        tenant_id: int,
        token_hash: bytes,
        prefix: str,
        filters: str,
        label: str | None,
        now: str,
        expires_at: str,
    ) -> ViewerLink:
        with self.write() as tx:
            cur = tx._conn.execute(
                "INSERT INTO viewer_links "
                "(tenant_id, token_hash, prefix, filters, label, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant_id, token_hash, prefix, filters, label, now, expires_at),
            )
            link_id = cur.lastrowid
        found = self._links_where("v.id = ?", link_id)
        return found[0]

    def _links_where(self, where: str, *params: object) -> list[ViewerLink]:
        rows = self._conn.execute(
            f"SELECT {VIEWER_LINK_COLUMNS} FROM viewer_links v "
            f"JOIN tenants t ON t.id = v.tenant_id WHERE {where} ORDER BY v.id",
            params,
        )
        return [viewer_link_from_row(row) for row in rows]

    def find_viewer_link(self, token_hash: bytes) -> ViewerLink | None:
        found = self._links_where("v.token_hash = ?", token_hash)
        return found[0] if found else None

    def list_viewer_links(self, tenant_id: int | None = None) -> list[ViewerLink]:
        if tenant_id is None:
            return self._links_where("1")
        return self._links_where("v.tenant_id = ?", tenant_id)

    def revoke_viewer_link(self, prefix: str, now: str) -> ViewerLink | None:
        with self.write() as tx:
            tx._conn.execute(
                "UPDATE viewer_links SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (now, prefix),
            )
        found = self._links_where("v.prefix = ?", prefix)
        return found[0] if found else None

    # the log ---------------------------------------------------------------------------
    def latest_checkpoint(self, tenant_id: int) -> StoredCheckpoint | None:
        row = self._conn.execute(
            "SELECT size, root, note, created_at FROM checkpoints WHERE tenant_id = ? "
            "ORDER BY size DESC LIMIT 1",
            (tenant_id,),
        ).fetchone()
        return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3]) if row else None

    def checkpoint_at(self, tenant_id: int, size: int) -> StoredCheckpoint | None:
        row = self._conn.execute(
            "SELECT size, root, note, created_at FROM checkpoints WHERE tenant_id = ? AND size = ?",
            (tenant_id, size),
        ).fetchone()
        return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3]) if row else None

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        return _select_nodes(self._conn, tenant_id, ids)

    def entries(self, tenant_id: int, start: int, end: int) -> Iterator[StoredEntry]:
        cur = self._conn.execute(
            f"SELECT e.idx, e.id, e.received_at, e.entry, x.salt, x.erasable_values "
            f"FROM entries AS e {WITH_PART} "
            "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (tenant_id, start, end),
        )
        for idx, eid, received, data, salt, values in cur:
            yield StoredEntry(idx, eid, received, bytes(data), joined_part(salt, values))

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        cur = self._conn.execute(  # BLOBs come back as bytes
            f"SELECT e.idx, e.entry, x.salt, x.erasable_values FROM entries AS e {WITH_PART} "
            "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (tenant_id, start, end),
        )
        for idx, data, salt, values in cur:
            yield idx, data, None if salt is None else salt + values

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]:
        columns = ", ".join(f"e.{c}" for c in DERIVED_COLUMNS)
        cur = self._conn.execute(
            f"SELECT e.idx, e.entry, e.leaf, x.salt, x.erasable_values, {columns} "
            f"FROM entries AS e {WITH_PART} "
            "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (tenant_id, start, end),
        )
        for idx, data, leaf, salt, parts, *derived in cur:
            values = dict(zip(DERIVED_COLUMNS, derived, strict=True))
            yield AuditRow(
                idx,
                values["id"],
                values["received_at"],
                bytes(data),
                bytes(leaf),
                values,
                joined_part(salt, parts),
            )

    def checkpoints(self, tenant_id: int, min_size: int, max_size: int) -> list[StoredCheckpoint]:
        rows = self._conn.execute(
            "SELECT size, root, note, created_at FROM checkpoints "
            "WHERE tenant_id = ? AND size >= ? AND size <= ? ORDER BY size",
            (tenant_id, min_size, max_size),
        )
        return [StoredCheckpoint(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def count_entries(self, tenant_id: int, start: int) -> int:
        row = self._conn.execute(
            "SELECT COUNT(*) FROM entries WHERE tenant_id = ? AND idx >= ?", (tenant_id, start)
        ).fetchone()
        return int(row[0])

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

    def count_events(
        self,
        tenant_id: int,
        query: EventQuery,
        width: int,
        cancel: Cancel | None = None,
        seconds: float = COUNT_SECONDS,
        matches: int = COUNT_MATCHES,
    ) -> EventCounts:
        return self.search.count_events(tenant_id, query, width, cancel, seconds, matches)

    def index_search(self, limit: int) -> int:
        return self.search.index(limit)

    def roll_up(self, limit: int) -> int:
        conn = self._search_conn
        with self.search.lock(), transaction(conn, "BEGIN"):
            return counts.roll_up(conn, limit)

    def rollup_backlog(self) -> int:
        return counts.backlog(self._search_conn)

    def search_backlog(self) -> int:
        return self.search.backlog()

    # erasure ---------------------------------------------------------------------------
    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        if not indexes:
            return 0
        erased = 0
        with self.search.purging(tenant_id, indexes), self.write() as tx:
            for chunk in chunks(indexes):
                marks = ",".join("?" * len(chunk))
                erased += tx._conn.execute(
                    f"DELETE FROM erasables WHERE tenant_id = ? AND idx IN ({marks})",
                    (tenant_id, *chunk),
                ).rowcount
                tx._conn.execute(
                    f"UPDATE entries SET actor = NULL WHERE tenant_id = ? "
                    f"AND idx IN ({marks}) AND actor IS NOT NULL",
                    (tenant_id, *chunk),
                )
        # Old page images stay in the write-ahead log until it is reset.
        self._conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchall()
        return erased

    def purge_erased(self) -> bool:
        return self.search.purge_erased()

    def erasable_indexes(
        self,
        tenant_id: int,
        *,
        actor: str | None = None,
        received_before: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> list[int]:
        where, params = erasable_filters(tenant_id, "?", start, end, received_before)
        join = "JOIN main.erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"
        if actor is None:
            rows = self._conn.execute(
                f"SELECT x.idx FROM main.entries AS e {join} WHERE {' AND '.join(where)} "
                "ORDER BY x.idx",
                params,
            )
            return [int(idx) for (idx,) in rows]
        return self.search.actor_indexes(tenant_id, actor, join, where, params)

    def retention_days(self) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT id, retention_days FROM tenants WHERE retention_days IS NOT NULL"
        )
        return {int(tid): int(days) for tid, days in rows}

    def set_retention_days(self, tenant_id: int, days: int | None) -> None:
        with self.write() as tx:
            tx._conn.execute(
                "UPDATE tenants SET retention_days = ? WHERE id = ?", (days, tenant_id)
            )

    def reclaim_wal(self) -> None:
        # PASSIVE copies what no reader still needs and neither waits for nor blocks the
        # writer; what it leaves is copied by the next round.
        try:
            self._conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"WAL checkpoint failed: {exc}") from exc

    def entry_by_id(self, tenant_id: int, entry_id: str) -> StoredEntry | None:
        row = self._conn.execute(
            f"SELECT e.idx, e.id, e.received_at, e.entry, x.salt, x.erasable_values "
            f"FROM entries AS e {WITH_PART} WHERE e.id = ? AND e.tenant_id = ?",
            (entry_id, tenant_id),
        ).fetchone()
        if row is None:
            return None
        return StoredEntry(row[0], row[1], row[2], bytes(row[3]), joined_part(row[4], row[5]))


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN … END;) whole."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
