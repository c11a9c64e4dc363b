"""SQLite schema, by version. Each step upgrades the previous version; ``meta`` records it."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 6

_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;
"""

#: The erasable parts' table (version 4), on its own so a test can stand for a previous
#: release's database that this release's code can still write to.
ERASABLES_TABLE: Final = """
CREATE TABLE IF NOT EXISTS erasables (
    tenant_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    salt BLOB NOT NULL,
    erasable_values BLOB NOT NULL,
    PRIMARY KEY (tenant_id, idx)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS erasables_no_update BEFORE UPDATE ON erasables
BEGIN SELECT RAISE(ABORT, 'an erasable part is erased, never changed'); END;
"""

MIGRATIONS: Final[dict[int, str]] = {
    1: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;

CREATE TABLE tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    key_hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    label TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);

-- The entry bytes are the truth; the other columns are derived from them for queries.
CREATE TABLE entries (
    tenant_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    type TEXT NOT NULL,
    event_name TEXT NOT NULL,
    service TEXT NOT NULL,
    env TEXT,
    request_id TEXT,
    actor TEXT,
    idempotency_key TEXT NOT NULL,
    entry BLOB NOT NULL,
    leaf BLOB NOT NULL,
    PRIMARY KEY (tenant_id, idx)
);
CREATE UNIQUE INDEX entries_by_id ON entries (id);
-- Replays are found through the entries themselves: the key is part of every entry.
CREATE INDEX entries_by_idempotency_key ON entries (tenant_id, idempotency_key);
-- Query filters (GET /v1/events); low-cardinality type and env are filtered while scanning.
CREATE INDEX entries_by_event_name ON entries (tenant_id, event_name, idx);
CREATE INDEX entries_by_service ON entries (tenant_id, service, idx);
CREATE INDEX entries_by_request_id ON entries (tenant_id, request_id, idx);
CREATE INDEX entries_by_actor ON entries (tenant_id, actor, idx);
CREATE INDEX entries_by_time ON entries (tenant_id, received_at);

-- Full-text search over payloads (moved to its own file by version 2).
CREATE VIRTUAL TABLE entries_search USING fts5 (payload, content = '', tokenize = 'unicode61');

-- Interior perfect-subtree hashes (level >= 1): (level, idx) covers leaves
-- [idx << level, (idx + 1) << level). Level 0 is entries.leaf.
CREATE TABLE nodes (
    tenant_id INTEGER NOT NULL,
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    tenant_id INTEGER NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, size)
) WITHOUT ROWID;

-- Entries are appended at the end of their tenant's log, never anywhere else.
-- (ORDER BY … DESC LIMIT 1, not MAX(): SQLite would scan the tenant's whole index for MAX.)
CREATE TRIGGER entries_contiguous BEFORE INSERT ON entries
WHEN NEW.idx != COALESCE(
    (SELECT idx + 1 FROM entries WHERE tenant_id = NEW.tenant_id ORDER BY idx DESC LIMIT 1), 0)
BEGIN SELECT RAISE(ABORT, 'entries must be appended in index order'); END;

-- A checkpoint never shrinks the tree it describes.
CREATE TRIGGER checkpoints_grow BEFORE INSERT ON checkpoints
WHEN NEW.size < COALESCE(
    (SELECT size FROM checkpoints WHERE tenant_id = NEW.tenant_id ORDER BY size DESC LIMIT 1), 0)
BEGIN SELECT RAISE(ABORT, 'checkpoints must not shrink the tree'); END;
"""
    + "".join(_APPEND_ONLY.format(table=t) for t in ("entries", "nodes", "checkpoints")),
    2: """
-- Servers cache authenticated keys and drop the cache whenever this number moves, so a
-- revocation (by any process, even by hand in SQL) takes effect on the next request.
INSERT INTO meta (key, value) VALUES ('api_keys_version', '0') ON CONFLICT (key) DO NOTHING;
CREATE TRIGGER api_keys_changed AFTER UPDATE OF tenant_id, key_hash, scopes, revoked_at
ON api_keys
BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'api_keys_version'; END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'api_keys_version'; END;

-- Contiguity is checked once per commit, when its checkpoint is inserted, instead of per
-- entry: any INSERT trigger on entries costs SQLite about a third of every append. What
-- holds is the same for everything a checkpoint covers: the entries below its size are
-- exactly those appended since the previous checkpoint plus those it covered, with no gap
-- and nothing beyond. (A row slipped in without a checkpoint is covered by no signature,
-- and the next checkpoint refuses to cover it.)
DROP TRIGGER entries_contiguous;
CREATE TRIGGER checkpoints_cover_entries BEFORE INSERT ON checkpoints
WHEN EXISTS (SELECT 1 FROM entries WHERE tenant_id = NEW.tenant_id AND idx >= NEW.size)
    OR NEW.size - COALESCE((SELECT size FROM checkpoints WHERE tenant_id = NEW.tenant_id
                            ORDER BY size DESC LIMIT 1), 0)
    != (SELECT COUNT(*) FROM entries WHERE tenant_id = NEW.tenant_id
        AND idx >= COALESCE((SELECT size FROM checkpoints WHERE tenant_id = NEW.tenant_id
                             ORDER BY size DESC LIMIT 1), 0))
BEGIN SELECT RAISE(ABORT, 'a checkpoint must cover exactly the entries appended before it'); END;

-- The full-text index, and the lookups by event name, request id and actor (random keys,
-- the costliest indexes to keep on every append, and the ones that slowed appends as the
-- log grew), move to a derived file of their own: filling it never takes the ledger's
-- write lock, so it runs beside the writer instead of inside it (see SQLiteStorage).
DROP INDEX entries_by_event_name;
DROP INDEX entries_by_request_id;
DROP INDEX entries_by_actor;
DROP TABLE entries_search;
DELETE FROM meta WHERE key = 'search_indexed_rowid';
""",
    3: """
-- The verifier key of the one key that signs this log (meta 'log_key') is written once, by
-- the first process that opens the log with a key whose signatures it checked (Ledger), and
-- never changes: a host with another key refuses to start instead of signing.
CREATE TRIGGER meta_log_key_fixed BEFORE UPDATE ON meta WHEN OLD.key = 'log_key'
BEGIN SELECT RAISE(ABORT, 'the log key is fixed once recorded'); END;
CREATE TRIGGER meta_log_key_kept BEFORE DELETE ON meta WHEN OLD.key = 'log_key'
BEGIN SELECT RAISE(ABORT, 'the log key is fixed once recorded'); END;
""",
    4: """
-- The log's signing keys over time (its rotations). A key signs from added_at until
-- retired_at; during a rotation the outgoing and the incoming key both sign. Rows are never
-- removed, a key and its start never change, and a retirement can only move earlier.
CREATE TABLE log_keys (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TRIGGER log_keys_kept BEFORE DELETE ON log_keys
BEGIN SELECT RAISE(ABORT, 'the log key history is append-only'); END;
CREATE TRIGGER log_keys_fixed BEFORE UPDATE ON log_keys
WHEN NEW.key IS NOT OLD.key OR NEW.added_at IS NOT OLD.added_at OR NEW.id IS NOT OLD.id
    OR NEW.retired_at IS NULL
    OR (OLD.retired_at IS NOT NULL AND NEW.retired_at > OLD.retired_at)
BEGIN SELECT RAISE(ABORT, 'a log key can only be retired, never changed'); END;
INSERT INTO log_keys (key, added_at)
    SELECT value, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM meta WHERE key = 'log_key';

-- Per tenant, a checkpoint signed by an outgoing and an incoming key (the handover).
CREATE TABLE log_key_handovers (
    tenant_id INTEGER NOT NULL,
    old_key TEXT NOT NULL,
    new_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (tenant_id, new_key)
) WITHOUT ROWID;
"""
    + _APPEND_ONLY.format(table="log_key_handovers")
    + """
-- What the witnesses cosigned, shared by every host (a per-host file before): the checked
-- cosignature lines per tenant, size and witness key, and each witness's recent failures.
CREATE TABLE cosignatures (
    tenant_id INTEGER NOT NULL,
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (tenant_id, size, witness)
) WITHOUT ROWID;
CREATE TABLE witness_status (
    witness TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
""",
    5: """
-- Viewer links: read-only tokens bound to a filter of one tenant's events, until they
-- expire or are revoked (ledger/viewer_links.py). Stored like API keys: a hash and a prefix.
CREATE TABLE viewer_links (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    token_hash BLOB NOT NULL UNIQUE,
    prefix TEXT NOT NULL UNIQUE,
    filters TEXT NOT NULL,
    label TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX viewer_links_by_tenant ON viewer_links (tenant_id);
""",
    6: """
-- Entry format 2: a client's payload and extra meta (the erasable part: a random salt and
-- the values) live beside the entry, which holds only their salted hash. Erasing deletes
-- the row (secure_delete overwrites it on disk); the proofs never read it.
"""
    + ERASABLES_TABLE
    + """
-- Entries stay append-only, but for one thing: erasure nulls the derived actor column (a
-- copy of an erasable value, kept for queries). Nothing else of an entry can change.
DROP TRIGGER entries_no_update;
CREATE TRIGGER entries_no_update BEFORE UPDATE OF tenant_id, idx, id, received_at, type,
    event_name, service, env, request_id, idempotency_key, entry, leaf ON entries
BEGIN SELECT RAISE(ABORT, 'entries is append-only'); END;
CREATE TRIGGER entries_actor_erased_only BEFORE UPDATE OF actor ON entries
WHEN NEW.actor IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'entries is append-only (an actor can only be erased)'); END;

-- Retention: how many days a tenant's erasable values are kept (NULL: for good).
ALTER TABLE tenants ADD COLUMN retention_days INTEGER;
""",
}
