"""The embedded default: one SQLite file, WAL, fully durable commits.

``synchronous=FULL`` in WAL mode fsyncs the log on every commit, so an acknowledged event
survives ``kill -9`` and power loss. Writers across processes are serialized by SQLite's own
lock (``BEGIN IMMEDIATE``); readers never block them. Each thread gets its own connection.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from immutablelog.entry import timestamp
from immutablelog.ledger.health import Fault, StorageHealth
from immutablelog.ledger.rollup import COUNT_SECONDS
from immutablelog.ledger.sqlite import counts
from immutablelog.ledger.sqlite.key_history import KeyHistoryRows, KeyHistoryTransaction
from immutablelog.ledger.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from immutablelog.ledger.storage import (
    API_KEY_COLUMNS,
    DERIVED_COLUMNS,
    ENTRY_COLUMNS,
    VIEWER_LINK_COLUMNS,
    AlreadyExists,
    ApiKey,
    AuditRow,
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
    event_filters,
    joined_part,
    prefix_range,
    stored_scopes,
    viewer_link_from_row,
)
from immutablelog.merkle import NodeID

T = TypeVar("T")
_BUSY_TIMEOUT_MS = 30_000
_CACHE_KIB = -65536  # negative: KiB, so 64 MiB of page cache per connection and file
# The upkeep thread checkpoints the WAL twice a second (checkpoint_log); a commit does it
# itself only past this many pages (64 MiB with 4 KiB pages: a stalled upkeep thread, or a
# process without one), and the WAL file is cut back to this size after it is reset.
_WAL_AUTOCHECKPOINT_PAGES = 16_384
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
# SQLite caps bound parameters per statement (32766 since 3.32); stay well below.
_CHUNK = 500


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


@contextmanager
def _transaction(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """``begin``, then COMMIT, or ROLLBACK if the block raises; failures to start or to
    commit are :class:`StorageError` (the caller holds whatever file lock guards it)."""
    try:
        conn.execute(begin)
    except sqlite3.OperationalError as exc:
        raise StorageError(f"cannot start a write: {exc}") from exc
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite itself rolls back on some errors (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StorageError(f"commit failed: {exc}") from exc


def _select_nodes(conn: sqlite3.Connection, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
    """O(log n) point reads: one ``IN`` list per tree level, each an index range on the key.

    (An ``OR`` of ``(level, idx)`` pairs would make SQLite scan every node of the tenant.)
    """
    found: dict[NodeID, bytes] = {}
    by_level: dict[int, list[int]] = {}
    for level, idx in ids:
        by_level.setdefault(level, []).append(idx)
    for level, indexes in by_level.items():
        for chunk in _chunks(indexes):
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
        for chunk in _chunks(keys, _KEYS_PER_LOOKUP):
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
        #: The full-text index: derived data in a file of its own, so that filling it takes
        #: that file's write lock, never the ledger's (deleting it only costs a rebuild).
        self.search_path = self.path.with_name(self.path.stem + "-search.db")
        self._search_lock_path = self.search_path.with_name(self.search_path.name + ".writer-lock")
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
        conn.execute(f"PRAGMA cache_size = {_CACHE_KIB}")
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
            with self._file_lock(self._search_lock_path):
                conn.execute("ATTACH DATABASE ? AS search", (str(self.search_path),))
                conn.execute("PRAGMA search.journal_mode = WAL")
                _create_search_file(conn)
                counts.create(conn)
            # Derived data: a commit lost to power loss is simply indexed again.
            conn.execute("PRAGMA search.synchronous = NORMAL")
            conn.execute(f"PRAGMA search.cache_size = {_CACHE_KIB}")  # per file, not inherited
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
        return self._file_lock(self._lock_path)

    @staticmethod
    @contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def write(self) -> Iterator[_Transaction]:
        conn = self._conn
        changes = conn.total_changes
        try:
            with self._writer_lock(), _transaction(conn, "BEGIN IMMEDIATE"):
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
            f"FROM entries AS e {_WITH_PART} "
            "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (tenant_id, start, end),
        )
        for idx, eid, received, data, salt, values in cur:
            yield StoredEntry(idx, eid, received, bytes(data), joined_part(salt, values))

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        cur = self._conn.execute(  # BLOBs come back as bytes
            f"SELECT e.idx, e.entry, x.salt, x.erasable_values FROM entries AS e {_WITH_PART} "
            "WHERE e.tenant_id = ? AND e.idx >= ? AND e.idx < ? ORDER BY e.idx",
            (tenant_id, start, end),
        )
        for idx, data, salt, values in cur:
            yield idx, data, None if salt is None else salt + values

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]:
        columns = ", ".join(f"e.{c}" for c in DERIVED_COLUMNS)
        cur = self._conn.execute(
            f"SELECT e.idx, e.entry, e.leaf, x.salt, x.erasable_values, {columns} "
            f"FROM entries AS e {_WITH_PART} "
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
        return self._with_parts(tenant_id, self._query_entries(tenant_id, query))

    def _with_parts(self, tenant_id: int, found: list[StoredEntry]) -> list[StoredEntry]:
        """``found`` with their erasable parts, read in one statement (the query builders
        select entries only)."""
        if not found:
            return found
        parts: dict[int, bytes] = {}
        for chunk in _chunks([e.index for e in found]):
            rows = self._conn.execute(
                "SELECT idx, salt, erasable_values FROM erasables WHERE tenant_id = ? "
                f"AND idx IN ({','.join('?' * len(chunk))})",
                (tenant_id, *chunk),
            )
            parts.update((idx, salt + values) for idx, salt, values in rows)
        return [replace(e, erasable=parts.get(e.index)) for e in found]

    def _query_entries(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        if query.event_name_prefix and not query.text:
            # A prefix range must be sorted by idx before the limit applies, which is slow
            # when the prefix is common. Common prefixes fill a page from the newest rows,
            # so first walk a bounded window in idx order; rare ones fall through to the
            # index range, whose sort is then small.
            page = self._query_window(tenant_id, query)
            if len(page) == query.limit:
                return page
        if query.text and query.text.split():
            return self._run_query(*_text_query_sql(tenant_id, query), conn=self._search_conn)
        if _lookup_driver(query) is not None:
            return self._query_lookup(tenant_id, query)
        return self._run_query(*_query_sql(tenant_id, query))

    def count_events(
        self, tenant_id: int, query: EventQuery, width: int
    ) -> list[tuple[str, str, int]]:
        if query.text and query.text.split():
            where, params = event_filters(tenant_id, query, "?", "e.")
            sql = (
                "SELECT substr(e.received_at, 1, ?), e.type, COUNT(*) "
                "FROM search.entries_search AS s JOIN main.entries AS e ON e.rowid = s.rowid "
                f"WHERE entries_search MATCH ? AND {' AND '.join(where)} GROUP BY 1, 2 ORDER BY 1"
            )
            params = [width, _fts_match(query), *params]
        else:
            sql, params = counts.count_sql(tenant_id, query, width)
        conn = self._search_conn  # one statement: one snapshot of both files
        with counts.time_limit(conn, COUNT_SECONDS):
            rows = conn.execute(sql, params).fetchall()
        return [(bucket, kind, int(count)) for bucket, kind, count in rows]

    def _run_query(
        self, sql: str, params: Sequence[object], conn: sqlite3.Connection | None = None
    ) -> list[StoredEntry]:
        return [
            StoredEntry(idx, eid, received, bytes(data))
            for idx, eid, received, data in (conn or self._conn).execute(sql, params)
        ]

    def _query_lookup(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        """Filters by event name, request id or actor: the search file's lookup table for
        entries it covers, plus a scan of the few newest entries it does not cover yet."""
        conn = self._search_conn
        conn.execute("BEGIN")  # one snapshot for the progress mark and both parts
        try:
            row = conn.execute(_COVERED_ROWID).fetchone()
            covered = int(row[0]) if row else 0
            # Within a tenant rowids grow with idx, so every uncovered entry comes after
            # every covered one.
            tail = _tail_sql(tenant_id, query, covered)
            looked_up = _lookup_sql(tenant_id, query, covered)
            if query.descending:
                page = self._run_query(*tail(query.limit), conn=conn)
                if len(page) < query.limit:
                    page += self._run_query(*looked_up(query.limit - len(page)), conn=conn)
            else:
                page = self._run_query(*looked_up(query.limit), conn=conn)
                if len(page) < query.limit:
                    page += self._run_query(*tail(query.limit - len(page)), conn=conn)
            return page
        finally:
            conn.execute("COMMIT")

    def _query_window(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]:
        where, params = event_filters(tenant_id, query, "?")
        if query.descending:
            if query.after_index is not None:
                top = query.after_index
            else:
                row = self._conn.execute(
                    "SELECT idx + 1 FROM entries WHERE tenant_id = ? ORDER BY idx DESC LIMIT 1",
                    (tenant_id,),
                ).fetchone()
                top = int(row[0]) if row else 0
            where.append("idx >= ?")
            params.append(top - _PREFIX_WINDOW)
        else:
            where.append("idx <= ?")
            params.append((query.after_index or -1) + _PREFIX_WINDOW)
        order = _direction(query)
        return self._run_query(
            "SELECT idx, id, received_at, entry FROM entries "
            f"INDEXED BY sqlite_autoindex_entries_1 WHERE {' AND '.join(where)} "
            f"ORDER BY idx {order} LIMIT ?",
            [*params, query.limit],
        )

    def index_search(self, limit: int) -> int:
        conn = self._search_conn
        # A deferred BEGIN: reading the ledger takes a snapshot, writing takes only the
        # search file's lock, so the ledger's writer is never held up.
        with self._file_lock(self._search_lock_path), _transaction(conn, "BEGIN"):
            return self._index_slice(conn, limit)

    def roll_up(self, limit: int) -> int:
        conn = self._search_conn
        with self._file_lock(self._search_lock_path), _transaction(conn, "BEGIN"):
            return counts.roll_up(conn, limit)

    def rollup_backlog(self) -> int:
        return counts.backlog(self._search_conn)

    def search_backlog(self) -> int:
        # Entries are never deleted, so their rowids run 1..n without gaps.
        (backlog,) = self._search_conn.execute(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM main.entries) - "
            f"COALESCE(CAST(({_COVERED_ROWID}) AS INTEGER), 0)"
        ).fetchone()
        return max(0, int(backlog))

    # erasure ---------------------------------------------------------------------------
    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        if not indexes:
            return 0
        erased = 0
        search = self._search_conn
        # The search file's lock throughout: the indexer must not read the values between
        # their purge from the index and their deletion.
        with self._file_lock(self._search_lock_path):
            with _transaction(search, "BEGIN"):
                if _purge_search(search, tenant_id, indexes):
                    search.execute(
                        "INSERT INTO search.meta (key, value) VALUES ('purge_pending', '1') "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    )
            with self.write() as tx:
                for chunk in _chunks(indexes):
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
        search = self._search_conn
        row = search.execute("SELECT value FROM search.meta WHERE key = 'purge_pending'").fetchone()
        if row is None:
            return False
        with self._file_lock(self._search_lock_path):
            # A 'delete' only adds tombstones: the words stay in older segments until those
            # are merged with them. Merge them all, overwriting what is freed.
            search.execute("PRAGMA search.secure_delete = ON")
            try:
                with _transaction(search, "BEGIN IMMEDIATE"):
                    search.execute(
                        "INSERT INTO search.entries_search (entries_search) VALUES ('optimize')"
                    )
                    search.execute("DELETE FROM search.meta WHERE key = 'purge_pending'")
            finally:
                search.execute("PRAGMA search.secure_delete = OFF")
            search.execute("PRAGMA search.wal_checkpoint(TRUNCATE)").fetchall()
        self._conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchall()
        return True

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
        # By actor: the search file's lookup for what it covers, a scan of the rest.
        conn = self._search_conn
        with _transaction(conn, "BEGIN"):
            row = conn.execute(_COVERED_ROWID).fetchone()
            covered = int(row[0]) if row else 0
            looked_up = conn.execute(
                "SELECT x.idx FROM search.lookup AS l INDEXED BY lookup_by_actor "
                f"JOIN main.entries AS e ON e.rowid = l.entry_rowid {join} "
                f"WHERE l.tenant_id = ? AND l.actor = ? AND l.entry_rowid <= ? "
                f"AND e.actor = ? AND {' AND '.join(where)}",
                [tenant_id, actor, covered, actor, *params],
            ).fetchall()
            tail = conn.execute(
                f"SELECT x.idx FROM main.entries AS e NOT INDEXED {join} "
                f"WHERE e.rowid > ? AND e.tenant_id = ? AND e.actor = ? "
                f"AND {' AND '.join(where)}",
                [covered, tenant_id, actor, *params],
            ).fetchall()
        return sorted({int(idx) for (idx,) in looked_up + tail})

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

    def checkpoint_log(self) -> None:
        # PASSIVE copies what no reader still needs and neither waits for nor blocks the
        # writer; what it leaves is copied by the next round.
        try:
            self._conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"WAL checkpoint failed: {exc}") from exc

    @staticmethod
    def _index_slice(conn: sqlite3.Connection, limit: int) -> int:
        meta = dict(conn.execute("SELECT key, value FROM search.meta").fetchall())
        done = int(meta.get("indexed_rowid", 0))
        if done:
            row = conn.execute("SELECT id FROM main.entries WHERE rowid = ?", (done,)).fetchone()
            if row is None or row[0] != meta.get("indexed_id"):
                # The ledger file was replaced (by an older copy, say): start afresh rather
                # than let old words point at the rowids of other entries.
                conn.execute(
                    "INSERT INTO search.entries_search (entries_search) VALUES ('delete-all')"
                )
                conn.execute("DELETE FROM search.lookup")
                conn.execute("DELETE FROM search.erased")
                done = 0
        # The last entry of this slice: the limit-th after the progress mark, else the newest.
        last_of_slice = "SELECT rowid, id FROM main.entries WHERE rowid > ? ORDER BY rowid "
        top = (
            conn.execute(last_of_slice + "LIMIT 1 OFFSET ?", (done, limit - 1)).fetchone()
            or conn.execute(last_of_slice + "DESC LIMIT 1", (done,)).fetchone()
        )
        if top is None:
            return 0
        cur = conn.execute(
            "INSERT INTO search.entries_search (rowid, payload, service, type, env) "
            f"SELECT e.rowid, {_PAYLOAD}, e.service, e.type, e.env "
            f"FROM main.entries AS e {_WITH_PART} "
            "WHERE e.rowid > ? AND e.rowid <= ?",
            (done, top[0]),
        )
        conn.execute(
            "INSERT INTO search.lookup (entry_rowid, tenant_id, event_name, request_id, actor) "
            "SELECT rowid, tenant_id, event_name, request_id, actor FROM main.entries "
            "WHERE rowid > ? AND rowid <= ?",
            (done, top[0]),
        )
        conn.executemany(
            "INSERT INTO search.meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("indexed_rowid", str(top[0])), ("indexed_id", top[1])],
        )
        return cur.rowcount

    def entry_by_id(self, tenant_id: int, entry_id: str) -> StoredEntry | None:
        row = self._conn.execute(
            f"SELECT e.idx, e.id, e.received_at, e.entry, x.salt, x.erasable_values "
            f"FROM entries AS e {_WITH_PART} WHERE e.id = ? AND e.tenant_id = ?",
            (entry_id, tenant_id),
        ).fetchone()
        if row is None:
            return None
        return StoredEntry(row[0], row[1], row[2], bytes(row[3]), joined_part(row[4], row[5]))


#: The erasable part beside an entry ``e`` (as ``x``; NULL columns when there is none).
_WITH_PART = "LEFT JOIN main.erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"
#: The payload of an entry ``e`` with its part ``x``: in the entry (format 1, clear
#: records) or in the erasable values (format 2; NULL once erased).
_PAYLOAD = (
    "COALESCE(json_extract(e.entry, '$.payload'), "
    "json_extract(CAST(x.erasable_values AS TEXT), '$.payload'))"
)
#: Bump when the search file's tables change: an older file is then dropped and rebuilt.
_SEARCH_LAYOUT = "4"
#: Filters that the full-text index also answers, so that a search with them intersects
#: posting lists instead of joining every match of a common word.
_FTS_FILTERS = ("service", "type", "env")
#: The derived file's tables (beside ``search.meta``): the full-text index and lookups by
#: random-valued columns, keyed by the entries' rowids; meta 'indexed_rowid' (and that
#: entry's id, 'indexed_id') marks how far they cover the ledger. Results are ordered by
#: rowid, never ranked, so the index keeps no per-row column sizes (``columnsize = 0``,
#: which only ranking reads).
_SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS search.entries_search USING fts5 (
    payload, service, type, env, content = '', columnsize = 0, tokenize = 'unicode61'
);
CREATE TABLE IF NOT EXISTS search.lookup (
    entry_rowid INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    event_name TEXT NOT NULL,
    request_id TEXT,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS search.lookup_by_event_name ON lookup (tenant_id, event_name);
CREATE INDEX IF NOT EXISTS search.lookup_by_request_id ON lookup (tenant_id, request_id);
CREATE INDEX IF NOT EXISTS search.lookup_by_actor ON lookup (tenant_id, actor);
CREATE TABLE IF NOT EXISTS search.erased (entry_rowid INTEGER PRIMARY KEY);
"""
_FTS_AUTOMERGE = 16
#: The rowid of the last entry the search file covers (absent: none).
_COVERED_ROWID = "SELECT value FROM search.meta WHERE key = 'indexed_rowid'"
#: The most selective lookup first: it drives the walk, the others filter.
_LOOKUP_DRIVERS = ("request_id", "actor", "event_name", "event_name_prefix")
#: How many of the newest rows a prefix query walks before it uses the event_name index.
_PREFIX_WINDOW = 20_000


def _create_search_file(conn: sqlite3.Connection) -> None:
    """Create the search file's tables, rebuilding them if an older layout is found."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS search.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
        "WITHOUT ROWID"
    )
    row = conn.execute("SELECT value FROM search.meta WHERE key = 'layout'").fetchone()
    if row is not None and row[0] == _SEARCH_LAYOUT:
        return
    conn.executescript(
        "DROP TABLE IF EXISTS search.entries_search; DROP TABLE IF EXISTS search.lookup; "
        "DROP TABLE IF EXISTS search.erased; DELETE FROM search.meta;"
    )
    conn.executescript(_SEARCH_SCHEMA)
    # FTS5 merges a level's segments once it holds this many (default 4): each word's
    # postings are then rewritten about half as often as the index grows, a fifth of the
    # indexer's CPU, for a few more segments for a query to read. (A stored setting.)
    conn.execute(
        "INSERT INTO search.entries_search (entries_search, rank) VALUES ('automerge', ?)",
        (_FTS_AUTOMERGE,),
    )
    conn.execute("INSERT INTO search.meta (key, value) VALUES ('layout', ?)", (_SEARCH_LAYOUT,))


def _purge_search(conn: sqlite3.Connection, tenant_id: int, indexes: Sequence[int]) -> int:
    """Take the entries at ``indexes`` out of the search file (inside its transaction):
    their words from the full-text index, their actor from the lookups. A contentless
    index forgets a row only when told the words it was given, so this runs while the
    values are still stored; ``search.erased`` marks rows already taken out, so that a
    second run (after a crash before the values were deleted) never deletes twice."""
    row = conn.execute(_COVERED_ROWID).fetchone()
    covered = int(row[0]) if row else 0
    purged = 0
    for chunk in _chunks(indexes):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT e.rowid, {_PAYLOAD}, e.service, e.type, e.env "
            f"FROM main.entries AS e {_WITH_PART} "
            f"WHERE e.tenant_id = ? AND e.idx IN ({marks}) AND e.rowid <= ? "
            "AND x.salt IS NOT NULL AND e.rowid NOT IN (SELECT entry_rowid FROM search.erased)",
            (tenant_id, *chunk, covered),
        ).fetchall()
        conn.executemany(
            "INSERT INTO search.entries_search (entries_search, rowid, payload, service, type, "
            "env) VALUES ('delete', ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO search.erased (entry_rowid) VALUES (?)", [(r[0],) for r in rows]
        )
        conn.execute(
            "UPDATE search.lookup SET actor = NULL WHERE actor IS NOT NULL AND entry_rowid IN "
            f"(SELECT rowid FROM main.entries WHERE tenant_id = ? AND idx IN ({marks}))",
            (tenant_id, *chunk),
        )
        purged += len(rows)
    return purged


def _fts_phrase(text: str) -> str:
    """Each word as a quoted FTS5 string: all must occur, and no input is FTS syntax."""
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _fts_match(query: EventQuery) -> str:
    """The MATCH expression: the words in the payload, and each of the filters the index
    also holds as a phrase in its own column (checked exactly on the entry afterwards)."""
    assert query.text
    terms = [f"payload : ({_fts_phrase(query.text)})"]
    for column in _FTS_FILTERS:
        value = getattr(query, column)
        # A value with no letter or digit has no words to match: the exact check alone.
        if value and any(ch.isalnum() for ch in value):
            terms.append(f'{column} : "{value.replace(chr(34), chr(34) * 2)}"')
    return " AND ".join(terms)


def _query_sql(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    where, params = event_filters(tenant_id, query, "?")
    order = _direction(query)
    sql = (
        f"SELECT idx, id, received_at, entry FROM entries WHERE {' AND '.join(where)} "
        f"ORDER BY idx {order} LIMIT ?"
    )
    return sql, [*params, query.limit]


def _text_query_sql(tenant_id: int, query: EventQuery) -> tuple[str, list[object]]:
    """Let the full-text index drive, newest match first, and stop at the limit: the
    entries' rowids grow in index order within a tenant (append-only, contiguous), so
    ordering by the search rowid is ordering by idx. (An ``IN (SELECT … MATCH …)`` would
    collect every match of a common word before taking the newest few.)"""
    assert query.text
    where, params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    sql = (
        "SELECT e.idx, e.id, e.received_at, e.entry FROM search.entries_search AS s "
        "JOIN main.entries AS e ON e.rowid = s.rowid "
        f"WHERE entries_search MATCH ? AND {' AND '.join(where)} "
        f"ORDER BY s.rowid {order} LIMIT ?"
    )
    return sql, [_fts_match(query), *params, query.limit]


def _direction(query: EventQuery) -> str:
    return "DESC" if query.descending else "ASC"


def _lookup_driver(query: EventQuery) -> str | None:
    return next((name for name in _LOOKUP_DRIVERS if getattr(query, name)), None)


_Sql = Callable[[int], tuple[str, list[object]]]


def _tail_sql(tenant_id: int, query: EventQuery, covered: int) -> _Sql:
    """The matching entries that the lookup table does not cover yet (rowid > covered)."""
    where, params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    # NOT INDEXED: walk the rowid range, never a whole tenant's index.
    sql = (
        "SELECT e.idx, e.id, e.received_at, e.entry FROM main.entries AS e NOT INDEXED "
        f"WHERE e.rowid > ? AND {' AND '.join(where)} ORDER BY e.idx {order} LIMIT ?"
    )
    return lambda limit: (sql, [covered, *params, limit])


def _lookup_sql(tenant_id: int, query: EventQuery, covered: int) -> _Sql:
    """The matching entries the lookup table covers, walked in rowid (= idx) order on the
    most selective lookup index; every filter is checked again on the entry itself."""
    driver = _lookup_driver(query)
    assert driver is not None
    where = ["l.tenant_id = ?", "l.entry_rowid <= ?"]
    params: list[object] = [tenant_id, covered]
    if driver == "event_name_prefix":
        assert query.event_name_prefix is not None
        where.append("l.event_name >= ? AND l.event_name < ?")
        params += prefix_range(query.event_name_prefix)
        index = "lookup_by_event_name"
    else:
        where.append(f"l.{driver} = ?")
        params.append(getattr(query, driver))
        index = f"lookup_by_{driver}"
    if query.after_index is not None:
        # The cursor as a rowid bound, so that a later page starts where the last one ended.
        bound = "9223372036854775807" if query.descending else "-1"
        where.append(
            f"l.entry_rowid {'<' if query.descending else '>'} COALESCE((SELECT rowid FROM "
            f"main.entries WHERE tenant_id = ? AND idx = ?), {bound})"
        )
        params += (tenant_id, query.after_index)
    filters, filter_params = event_filters(tenant_id, query, "?", "e.")
    order = _direction(query)
    sql = (
        f"SELECT e.idx, e.id, e.received_at, e.entry FROM search.lookup AS l INDEXED BY {index} "
        "JOIN main.entries AS e ON e.rowid = l.entry_rowid "
        f"WHERE {' AND '.join(where + filters)} ORDER BY l.entry_rowid {order} LIMIT ?"
    )
    return lambda limit: (sql, [*params, *filter_params, limit])


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
