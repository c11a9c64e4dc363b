"""The storage contract, run against every backend: one SQLite file, one PostgreSQL database.

Everything above the storage line (sequencer, proofs, API) assumes the backends are
interchangeable, so each test here runs on both and asserts the same outcome: the protocol
methods, the append-only rules enforced inside the database, and a full ``Ledger`` round
trip. The multi-process tests are the reason the PostgreSQL backend exists: four processes
append to one tenant at once, and the result must be one contiguous log whose every signed
checkpoint is a prefix of the final tree (no fork, no gap, no duplicate index).

Insert path, measured on the dev box (PostgreSQL 15 on localhost, a shared 2-CPU host under
load, so absolute numbers are pessimistic): one transaction of 1024 entries (~650-byte entry
bytes) + 1023 interior nodes + a checkpoint, append-only triggers on. With only the primary
and lookup indexes: binary COPY 37-58 ms median, psycopg's pipelined ``executemany`` 70-107
ms (~1.9x). With the query-filter indexes added since: COPY ~100 ms (~10k entries/s),
``executemany`` ~150 ms (~6.8k entries/s). Hence COPY.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from immutablelog.checkpoint import Verifier, open_checkpoint
from immutablelog.entry import build_entry, decode_entry, encode_entry, validate_submission
from immutablelog.ledger import Accepted, Ledger, LedgerConfig, LedgerError, Rejected
from immutablelog.ledger.ledger import open_storage
from immutablelog.ledger.postgres.schema import SCHEMA_VERSION as POSTGRES_VERSION
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.sqlite.schema import SCHEMA_VERSION as SQLITE_VERSION
from immutablelog.ledger.storage import (
    DERIVED_COLUMNS,
    AlreadyExists,
    EventQuery,
    NewEntry,
    Storage,
    StorageError,
)
from immutablelog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    frontier_ids,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

try:
    import psycopg
except ImportError:  # the SQLite half still runs
    psycopg = None

LOG_NAME = "contract.example"
NOW = "2024-05-01T12:00:00.000000Z"
LATER = "2024-05-02T12:00:00.000000Z"
META = {"type": "info", "event_name": "contract.test", "service": "tests"}
# What each backend raises when a database rule refuses a write.
INTEGRITY: tuple[type[Exception], ...] = (sqlite3.IntegrityError,) + (
    (psycopg.IntegrityError,) if psycopg else ()
)


# --- fixtures and helpers ---------------------------------------------------------------


def _config(location: Path | str, data_dir: Path) -> LedgerConfig:
    """A ledger configuration for a SQLite directory or a PostgreSQL URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(location, Path):
        return LedgerConfig(data_dir=location, log_name=LOG_NAME)
    return LedgerConfig(data_dir=data_dir, log_name=LOG_NAME, database_url=location)


def _location(storage: Storage) -> Path | str:
    return storage.path.parent if isinstance(storage, SQLiteStorage) else storage.url


def backend_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A SQLite directory or a fresh PostgreSQL database, as ``request.param`` says."""
    if request.param == "sqlite":
        return tmp_path / "sqlite"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """An initialized, empty store on each backend."""
    location = backend_location(request, tmp_path)
    opened = open_storage(_config(location, tmp_path / "data"))
    assert opened.initialize(LOG_NAME) == LOG_NAME
    yield opened
    opened.close()


def _is_sqlite(storage: Storage) -> bool:
    return isinstance(storage, SQLiteStorage)


def raw_sql(storage: Storage, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on a separate, plain connection (not through the backend)."""
    if isinstance(storage, SQLiteStorage):
        conn = sqlite3.connect(storage.path, isolation_level=None)
        try:
            return conn.execute(statement).fetchall()
        finally:
            conn.close()
    assert psycopg is not None
    with psycopg.connect(storage.url, autocommit=True) as pg:
        cur = pg.execute(statement)
        return cur.fetchall() if cur.description else []


def blob(storage: Storage, value: bytes) -> str:
    """A binary literal in the backend's SQL dialect."""
    return f"X'{value.hex()}'" if _is_sqlite(storage) else f"'\\x{value.hex()}'::bytea"


def new_tenant(storage: Storage, name: str = "acme") -> int:
    with storage.write() as tx:
        tenant = tx.create_tenant(name, NOW)
        tx.insert_checkpoint(tenant.id, 0, EMPTY_ROOT, "empty", NOW)
    return tenant.id


def append(
    storage: Storage,
    tenant_id: int,
    count: int,
    *,
    keys: list[str] | None = None,
    received_at: str = NOW,
) -> list[NewEntry]:
    """Append ``count`` entries exactly as the sequencer does: lock, extend, insert, sign."""
    with storage.write() as tx:
        size = tx.lock_tenant(tenant_id)
        rng = CompactRange(size, tx.nodes(tenant_id, frontier_ids(size)))
        rows, nodes = [], []
        for i, index in enumerate(range(size, size + count)):
            data = json.dumps({"tenant": tenant_id, "index": index}).encode()
            leaf = leaf_hash(data)
            nodes.extend(rng.append(leaf)[1:])  # the leaf itself is stored with its entry
            key = keys[i] if keys else f"k-{index}"
            rows.append(entry_row(index, key, data, received_at, leaf))
        tx.insert_entries(tenant_id, rows)
        tx.insert_nodes(tenant_id, nodes)
        tx.insert_checkpoint(tenant_id, rng.size, rng.root(), f"note {rng.size}", received_at)
    return rows


def entry_row(
    index: int, key: str = "x", data: bytes = b"{}", received_at: str = NOW, leaf: bytes = b""
) -> NewEntry:
    return NewEntry(
        index=index,
        id=str(uuid.uuid4()),
        received_at=received_at,
        data=data,
        type="info",
        event_name="e",
        service="s",
        env=None,
        request_id=None,
        actor=None,
        idempotency_key=key,
        leaf=leaf or leaf_hash(data),
    )


def append_events(
    storage: Storage, tenant_id: int, events: list[tuple[dict[str, Any], str, str]]
) -> list[NewEntry]:
    """Append real entries, each from (meta, payload, received_at), in one transaction."""
    with storage.write() as tx:
        size = tx.lock_tenant(tenant_id)
        rng = CompactRange(size, tx.nodes(tenant_id, frontier_ids(size)))
        rows, nodes = [], []
        for index, (meta, payload, received_at) in enumerate(events, start=size):
            sub = validate_submission(payload, {**META, **meta}, f"event-{index}")
            entry_id = str(uuid.uuid4())
            data = encode_entry(
                build_entry(
                    sub, tenant="t", index=index, entry_id=entry_id, received_at=received_at
                )
            )
            nodes.extend(rng.append(leaf_hash(data))[1:])
            rows.append(
                NewEntry(
                    index=index,
                    id=entry_id,
                    received_at=received_at,
                    data=data,
                    type=sub.meta["type"],
                    event_name=sub.meta["event_name"],
                    service=sub.meta["service"],
                    env=sub.meta.get("env"),
                    request_id=sub.meta.get("request_id"),
                    actor=sub.meta.get("actor"),
                    idempotency_key=sub.idempotency_key,
                    leaf=leaf_hash(data),
                    erasable=sub.erasable,
                )
            )
        tx.insert_entries(tenant_id, rows)
        tx.insert_nodes(tenant_id, nodes)
        tx.insert_checkpoint(tenant_id, rng.size, rng.root(), f"note {rng.size}", NOW)
    return rows


def make_key(storage: Storage, tenant_id: int, name: str, scopes: set[str] | None = None) -> Any:
    return storage.create_api_key(
        tenant_id,
        hashlib.sha256(name.encode()).digest(),
        f"iml_live_{name}",
        frozenset(scopes or {"ingest"}),
        f"label {name}",
        NOW,
    )


# --- schema -----------------------------------------------------------------------------


def test_initialize_is_idempotent_and_keeps_the_first_log_name(storage: Storage) -> None:
    assert storage.initialize("another.name") == LOG_NAME
    current = SQLITE_VERSION if _is_sqlite(storage) else POSTGRES_VERSION
    assert raw_sql(storage, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(current),)
    ]


def test_concurrent_initialize_of_a_fresh_store(
    storage: Storage, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Several processes starting at once on an empty database must not race on CREATE TABLE.
    if _is_sqlite(storage):
        location: Path | str = tmp_path / "fresh"
    else:
        raw_sql(storage, "CREATE SCHEMA fresh")
        location = f"{storage.url}?options=-csearch_path%3Dfresh%2Cpublic"
    stores = [open_storage(_config(location, tmp_path / "d")) for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def init(store: Storage) -> str:
        barrier.wait()
        return store.initialize(LOG_NAME)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            assert list(pool.map(init, stores)) == [LOG_NAME] * len(stores)
        assert new_tenant(stores[0], "in-fresh") == 1
        assert stores[1].get_tenant("in-fresh") is not None
    finally:
        for store in stores:
            store.close()
    if not _is_sqlite(storage):  # the tables went to the chosen schema only
        assert storage.get_tenant("in-fresh") is None


# --- tenants and keys -------------------------------------------------------------------


def test_tenants(storage: Storage) -> None:
    assert storage.list_tenants() == []
    first, second = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    acme = storage.get_tenant("acme")
    assert acme is not None and (acme.id, acme.name, acme.created_at) == (first, "acme", NOW)
    assert storage.get_tenant_by_id(second) == storage.get_tenant("beta")
    assert [t.name for t in storage.list_tenants()] == ["acme", "beta"]
    assert storage.get_tenant("nobody") is None
    assert storage.get_tenant_by_id(9999) is None


def test_duplicate_tenant_raises_already_exists_and_the_transaction_goes_on(
    storage: Storage,
) -> None:
    new_tenant(storage, "acme")
    with storage.write() as tx:
        with pytest.raises(AlreadyExists):
            tx.create_tenant("acme", NOW)
        tx.create_tenant("other", NOW)
    assert [t.name for t in storage.list_tenants()] == ["acme", "other"]


def test_write_rolls_back_on_exception(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    with pytest.raises(RuntimeError), storage.write() as tx:
        tx.create_tenant("ghost", NOW)
        tx.insert_entries(tenant_id, [entry_row(i, f"k{i}") for i in range(5)])
        tx.insert_checkpoint(tenant_id, 5, b"\x01" * 32, "never", NOW)
        raise RuntimeError("abort")
    assert storage.get_tenant("ghost") is None
    assert storage.checkpoint_at(tenant_id, 5) is None
    append(storage, tenant_id, 2)  # the store is still usable
    assert [e.index for e in storage.entries(tenant_id, 0, 10)] == [0, 1]


def test_api_keys_create_find_list(storage: Storage) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    key = make_key(storage, acme, "one", {"read", "ingest"})
    assert (key.tenant_id, key.tenant, key.prefix, key.scopes, key.label) == (
        acme,
        "acme",
        "iml_live_one",
        frozenset({"read", "ingest"}),
        "label one",
    )
    assert (key.created_at, key.revoked_at, key.last_used_at) == (NOW, None, None)
    assert key.key_hash == hashlib.sha256(b"one").digest()
    other = make_key(storage, beta, "two", {"admin"})
    assert storage.find_api_key(key.key_hash) == key
    assert storage.find_api_key(b"\x00" * 32) is None
    assert storage.list_api_keys() == [key, other]
    assert storage.list_api_keys(beta) == [other]
    assert storage.list_api_keys(9999) == []


def test_api_key_constraints(storage: Storage) -> None:
    acme = new_tenant(storage)
    make_key(storage, acme, "one")
    with pytest.raises(INTEGRITY):  # same hash and prefix
        make_key(storage, acme, "one")
    with pytest.raises(INTEGRITY):  # no such tenant
        make_key(storage, 9999, "two")
    assert len(storage.list_api_keys()) == 1


def test_revoke_api_key(storage: Storage) -> None:
    key = make_key(storage, new_tenant(storage), "one")
    revoked = storage.revoke_api_key(key.prefix, LATER)
    assert revoked is not None and revoked.id == key.id and revoked.revoked_at == LATER
    again = storage.revoke_api_key(key.prefix, "2030-01-01T00:00:00.000000Z")
    assert again is not None and again.revoked_at == LATER  # the first revocation stands
    assert storage.find_api_key(key.key_hash) == revoked
    assert storage.revoke_api_key("iml_live_unknown", LATER) is None


def test_api_keys_version_moves_on_revocation_not_on_use(storage: Storage) -> None:
    tenant = new_tenant(storage)
    start = storage.api_keys_version()
    key = make_key(storage, tenant, "one")
    storage.touch_api_keys({key.id: LATER})
    assert storage.api_keys_version() == start  # use is not a change callers must see
    storage.revoke_api_key(key.prefix, LATER)
    after_revoke = storage.api_keys_version()
    assert after_revoke != start
    other = make_key(storage, tenant, "two")
    # By hand, bypassing the code: the database itself moves the version.
    raw_sql(storage, f"UPDATE api_keys SET scopes = 'ingest,read' WHERE id = {other.id}")
    assert storage.api_keys_version() not in (start, after_revoke)


def test_touch_api_keys(storage: Storage) -> None:
    acme = new_tenant(storage)
    one, two = make_key(storage, acme, "one"), make_key(storage, acme, "two")
    storage.touch_api_keys({})
    storage.touch_api_keys({one.id: LATER})
    assert [k.last_used_at for k in storage.list_api_keys()] == [LATER, None]
    storage.touch_api_keys({one.id: "2024-06-01T00:00:00.000000Z", two.id: LATER, 9999: LATER})
    assert [k.last_used_at for k in storage.list_api_keys()] == [
        "2024-06-01T00:00:00.000000Z",
        LATER,
    ]


# --- the log ----------------------------------------------------------------------------


def test_lock_tenant_returns_the_tree_size(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    with storage.write() as tx:
        assert tx.lock_tenant(tenant_id) == 0
    append(storage, tenant_id, 3)
    append(storage, tenant_id, 4)
    with storage.write() as tx:
        assert tx.lock_tenant(tenant_id) == 7


def test_entries_read_back_per_tenant(storage: Storage) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    rows = append(storage, acme, 5) + append(storage, acme, 3)
    beta_rows = append(storage, beta, 2)  # each tenant's log starts at 0
    stored = list(storage.entries(acme, 0, 100))
    assert [(e.index, e.id, e.received_at, e.data) for e in stored] == [
        (r.index, r.id, r.received_at, r.data) for r in rows
    ]
    assert [e.index for e in storage.entries(acme, 2, 5)] == [2, 3, 4]
    assert list(storage.entry_bytes(acme, 0, 100)) == [
        (e.index, e.data, e.erasable) for e in stored
    ]
    assert [i for i, _, _ in storage.entry_bytes(acme, 2, 5)] == [2, 3, 4]
    assert list(storage.entry_bytes(beta, 5, 5)) == []
    assert list(storage.entries(acme, 5, 5)) == []
    assert [e.data for e in storage.entries(beta, 0, 10)] == [r.data for r in beta_rows]
    assert storage.entry_by_id(acme, rows[4].id) == stored[4]
    assert storage.entry_by_id(beta, rows[4].id) is None  # another tenant's entry
    assert storage.entry_by_id(acme, "not-an-id") is None


def test_entries_stream_in_order_across_pages(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    rows = append(storage, tenant_id, 1300)
    stream = storage.entries(tenant_id, 0, 1300)
    assert next(stream).index == 0  # lazy: a generator, not a list
    assert [e.index for e in stream] == list(range(1, 1300))
    assert [e.data for e in storage.entries(tenant_id, 499, 1001)] == [
        r.data for r in rows[499:1001]
    ]
    assert [d for _, d, _ in storage.entry_bytes(tenant_id, 499, 1001)] == [
        r.data for r in rows[499:1001]
    ]


def test_nodes_in_request_order_and_missing_is_an_error(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    rows = append(storage, tenant_id, 4)
    leaves = [leaf_hash(r.data) for r in rows]
    ids = [(2, 0), (0, 3), (1, 0), (0, 0)]
    got = storage.nodes(tenant_id, ids)
    assert got[0] == root_from_leaves(leaves)
    assert got[1] == leaves[3] and got[3] == leaves[0]
    assert got[2] == root_from_leaves(leaves[:2])
    assert storage.nodes(tenant_id, []) == []
    with pytest.raises(StorageError):  # a leaf beyond the log
        storage.nodes(tenant_id, [(0, 0), (0, 4)])
    with pytest.raises(StorageError):  # an interior node never completed
        storage.nodes(tenant_id, [(1, 2)])
    with storage.write() as tx:
        assert tx.nodes(tenant_id, [(0, 2)]) == [leaves[2]]


def test_a_run_of_nodes_is_read_as_one_range(storage: Storage) -> None:
    """A tile asks for consecutive nodes of one level: read as a range, same answers."""
    tenant_id, other = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    append(storage, other, 8)
    rows = append(storage, tenant_id, 8)
    leaves = [leaf_hash(r.data) for r in rows]
    assert storage.nodes(tenant_id, [(0, i) for i in range(2, 7)]) == leaves[2:7]
    pairs = [root_from_leaves(leaves[i : i + 2]) for i in range(0, 8, 2)]
    assert storage.nodes(tenant_id, [(1, i) for i in range(4)]) == pairs
    with storage.write() as tx:
        assert tx.nodes(tenant_id, [(1, 1), (1, 2)]) == pairs[1:3]
    for beyond in ([(0, i) for i in range(6, 9)], [(1, i) for i in range(3, 5)]):
        with pytest.raises(StorageError, match="missing"):
            storage.nodes(tenant_id, beyond)


def test_find_by_idempotency_key(storage: Storage) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    append(storage, acme, 2, keys=["a", "b"], received_at=NOW)
    append(storage, acme, 2, keys=["a", "c"], received_at=LATER)  # "a" again, later
    append(storage, beta, 1, keys=["a"], received_at=LATER)
    stored = list(storage.entries(acme, 0, 10))
    with storage.write() as tx:
        everything = tx.find_by_idempotency_key(acme, ["a", "b", "c", "zz"], NOW)
        recent = tx.find_by_idempotency_key(acme, ["a", "b", "c"], LATER)
        future = tx.find_by_idempotency_key(acme, ["a"], "2030-01-01T00:00:00.000000Z")
        other = tx.find_by_idempotency_key(beta, ["a", "b"], NOW)
        assert tx.find_by_idempotency_key(acme, [], NOW) == {}
    # The newest entry carrying the key wins; the received_since bound is inclusive.
    assert everything == {"a": stored[2], "b": stored[1], "c": stored[3]}
    assert recent == {"a": stored[2], "c": stored[3]}
    assert future == {}
    assert {key: e.index for key, e in other.items()} == {"a": 0}


def test_find_by_idempotency_key_in_a_long_list_with_repeats(storage: Storage) -> None:
    # Longer than one lookup statement holds (SQLite: 8192 keys), with a key repeated
    # within and across statements, and a found key beyond the first statement.
    acme = new_tenant(storage)
    append(storage, acme, 3, keys=["first", "mid", "last"])
    absent = [f"absent-{i}" for i in range(9000)]
    wanted = ["first", "first", *absent[:8500], "mid", "first", *absent[8500:], "last"]
    with storage.write() as tx:
        found = tx.find_by_idempotency_key(acme, wanted, NOW)
        one = tx.find_by_idempotency_key(acme, ["last"], NOW)
    assert {key: e.index for key, e in found.items()} == {"first": 0, "mid": 1, "last": 2}
    assert {key: e.index for key, e in one.items()} == {"last": 2}


def test_checkpoints(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    assert storage.checkpoint_at(tenant_id, 0) == storage.latest_checkpoint(tenant_id)
    append(storage, tenant_id, 2)
    append(storage, tenant_id, 3)
    latest = storage.latest_checkpoint(tenant_id)
    assert latest is not None and (latest.size, latest.note) == (5, "note 5")
    earlier = storage.checkpoint_at(tenant_id, 2)
    assert earlier is not None and earlier.root == root_from_leaves(
        leaf_hash(e.data) for e in storage.entries(tenant_id, 0, 2)
    )
    assert storage.checkpoint_at(tenant_id, 3) is None
    assert storage.latest_checkpoint(9999) is None
    with storage.write() as tx:  # the same size again is ignored: the first one stays
        tx.insert_checkpoint(tenant_id, 5, b"\x02" * 32, "impostor", LATER)
    assert storage.latest_checkpoint(tenant_id) == latest
    with pytest.raises(INTEGRITY), storage.write() as tx:
        tx.insert_checkpoint(tenant_id, 4, b"\x02" * 32, "shrinks", LATER)
    assert storage.checkpoint_at(tenant_id, 4) is None


def test_checkpoint_ranges_and_counts(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    append(storage, tenant_id, 2)
    append(storage, tenant_id, 3)
    assert [c.size for c in storage.checkpoints(tenant_id, 0, 100)] == [0, 2, 5]
    assert [c.size for c in storage.checkpoints(tenant_id, 1, 5)] == [2, 5]
    assert [c.size for c in storage.checkpoints(tenant_id, 3, 4)] == []
    assert storage.checkpoints(tenant_id, 2, 2) == [storage.checkpoint_at(tenant_id, 2)]
    assert [storage.count_entries(tenant_id, s) for s in (0, 3, 5, 9)] == [5, 2, 0, 0]
    assert storage.count_entries(9999, 0) == 0


def test_audit_rows_carry_every_stored_column(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    rows = append_events(
        storage,
        tenant_id,
        [
            ({"env": "prod", "request_id": "r1", "actor": "alice"}, '{"a": 1}', NOW),
            ({}, '{"b": 2}', LATER),
        ],
    )
    audit = list(storage.audit_rows(tenant_id, 0, 10))
    assert [(a.index, a.id, a.received_at, a.data, a.leaf) for a in audit] == [
        (r.index, r.id, r.received_at, r.data, r.leaf) for r in rows
    ]
    for a, r in zip(audit, rows, strict=True):
        assert a.columns == {column: getattr(r, column) for column in DERIVED_COLUMNS}
    assert [a.index for a in storage.audit_rows(tenant_id, 1, 2)] == [1]


T = [f"2024-05-0{day}T00:00:00.000000Z" for day in range(1, 8)]
EVENTS: list[tuple[dict[str, Any], str, str]] = [
    (
        {"service": "api", "env": "prod", "event_name": "user.login", "request_id": "r1"}
        | {"actor": "alice"},
        '{"user": "Alice@Example.com", "action": "login"}',
        T[0],
    ),
    (
        {"service": "api", "env": "dev", "type": "error", "event_name": "user.logout"}
        | {"request_id": "r2", "actor": "bob"},
        '{"user": "bob", "action": "Login failed"}',
        T[1],
    ),
    (
        {"service": "worker", "env": "prod", "event_name": "job.run"},
        '{"msg": "café au lait"}',
        T[2],
    ),
    (
        {"service": "api", "env": "prod", "type": "warning", "event_name": "user.login"}
        | {"request_id": "r3", "actor": "alice"},
        '{"user": "alice", "action": "login", "attempt": 2}',
        T[3],
    ),
    ({"service": "api", "event_name": "user"}, '{"n": 4}', T[4]),
    ({"service": "api", "event_name": "userz"}, '{"n": 5}', T[5]),
]


QUERIES: list[tuple[EventQuery, list[int]]] = [
    (EventQuery(), [5, 4, 3, 2, 1, 0]),
    (EventQuery(descending=False), [0, 1, 2, 3, 4, 5]),
    (EventQuery(limit=2), [5, 4]),
    (EventQuery(service="api"), [5, 4, 3, 1, 0]),
    (EventQuery(env="prod"), [3, 2, 0]),
    (EventQuery(type="error"), [1]),
    (EventQuery(event_name="user.login"), [3, 0]),
    (EventQuery(event_name_prefix="user."), [3, 1, 0]),
    (EventQuery(event_name_prefix="user"), [5, 4, 3, 1, 0]),
    (EventQuery(request_id="r2"), [1]),
    (EventQuery(actor="alice"), [3, 0]),
    (EventQuery(since=T[1], until=T[3]), [2, 1]),  # since inclusive, until exclusive
    (EventQuery(after_index=3), [2, 1, 0]),
    (EventQuery(after_index=3, descending=False), [4, 5]),
    (EventQuery(service="api", env="prod", actor="alice", after_index=3), [0]),
    (EventQuery(actor="alice", limit=1), [3]),
    (EventQuery(actor="alice", after_index=3, limit=1), [0]),
    (EventQuery(event_name_prefix="user", after_index=4, limit=2), [3, 1]),
    (EventQuery(event_name_prefix="user", descending=False, after_index=1, limit=2), [3, 4]),
    (EventQuery(event_name="user.login", descending=False), [0, 3]),
    (EventQuery(request_id="r1", service="worker"), []),
]


# Derived lookups (SQLite's search file) may cover none, some or all of the entries: the
# answers must not depend on how far the indexer has come. Beta's 3 entries come first.
@pytest.mark.parametrize("indexed", [0, 3 + 2, 3 + 4, 100])
def test_query_filters(storage: Storage, indexed: int) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    append_events(storage, beta, EVENTS[:3])  # another tenant's events never show
    rows = append_events(storage, acme, EVENTS)
    if indexed:
        storage.index_search(indexed)
    for query, expected in QUERIES:
        found = storage.query(acme, query)
        assert [e.index for e in found] == expected, query
        assert all(e.data == rows[e.index].data and e.id == rows[e.index].id for e in found)


def test_full_text_search(storage: Storage) -> None:
    acme, beta = new_tenant(storage, "acme"), new_tenant(storage, "beta")
    append_events(storage, acme, EVENTS)
    append_events(storage, beta, EVENTS[:2])

    def search(text: str, **filters: Any) -> list[int]:
        return [e.index for e in storage.query(acme, EventQuery(text=text, **filters))]

    assert search("login") == []  # the index is filled behind the writer
    assert storage.search_backlog() == len(EVENTS) + 2  # both tenants' entries
    assert storage.index_search(4) == 4
    assert storage.search_backlog() == len(EVENTS) + 2 - 4
    assert storage.index_search(100) == len(EVENTS) + 2 - 4
    assert storage.index_search(100) == 0
    assert storage.search_backlog() == 0
    assert search("login") == [3, 1, 0]  # case-insensitive, JSON keys and values alike
    assert search("LOGIN bob") == [1]  # every word must occur
    assert search("failed   Login") == [1]
    assert search("alice") == [3, 0]
    assert search("alice@example.com") == [0]  # punctuation splits words ...
    assert search("example.alice") == []  # ... which must then occur in that order
    assert search("café") == [2]
    assert search("attempt 2") == [3]
    assert search("login", type="error") == [1]
    assert search("login", after_index=1) == [0]
    assert search("nowhere") == []
    assert search("   ") == [5, 4, 3, 2, 1, 0]  # no words: no text filter
    append_events(storage, acme, [({}, '{"late": "login"}', LATER)])
    assert search("late") == []
    assert storage.search_backlog() == 1
    assert storage.index_search(100) == 1
    assert search("late login") == [6]


#: Payload texts whose words split at the edges of Unicode's letters and digits, and the
#: entries each query finds: SQLite's tokenizer (unicode61) and PostgreSQL's words agree.
SPLIT_TEXTS = [
    "foo\u2014bar x\u00b2",  # an em dash separates; a superscript two is a digit
    "\u00bd \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3",  # a fraction; a final sigma
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u65e5\u672c\u8a9e",  # a vowel sign separates
    "\u0130stanbul snake_case 2.31.0 <b>bold</b>",
    "a" * 3000 + " tail",  # too long a word for PostgreSQL: the rest is still found
]
SPLIT_QUERIES = [
    ("foo", [0]),
    ("foo\u2014bar", [0]),
    ("bar foo", [0]),
    ("x", []),
    ("x\u00b2", [0]),
    ("\u00bd", [1]),
    ("\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2", [1]),
    ("\u0928\u092e\u0938", [2]),
    ("\u65e5\u672c\u8a9e", [2]),
    ("istanbul", [3]),
    ("case snake", [3]),
    ("snake_case", [3]),
    ("case_snake", []),
    ("31", [3]),
    ("b bold", [3]),
    ("--- tail", [4]),
    ("---", []),
]


def test_full_text_search_splits_words_alike(storage: Storage) -> None:
    acme = new_tenant(storage)
    payloads = [json.dumps({"msg": text}, ensure_ascii=False) for text in SPLIT_TEXTS]
    append_events(storage, acme, [({}, payload, NOW) for payload in payloads])
    storage.index_search(100)
    for text, expected in SPLIT_QUERIES:
        found = storage.query(acme, EventQuery(text=text))
        assert [e.index for e in found] == expected, text


def test_full_text_search_with_filters_matches_values_exactly(storage: Storage) -> None:
    acme = new_tenant(storage)
    services = ["api-gw", "API-GW", "---", "api", "gw api"]
    append_events(
        storage, acme, [({"service": name}, '{"msg": "needle"}', NOW) for name in services]
    )
    storage.index_search(100)
    for index, name in enumerate(services):
        found = storage.query(acme, EventQuery(text="needle", service=name))
        assert [e.index for e in found] == [index], name
    assert storage.query(acme, EventQuery(text="needle", service="gw")) == []


# --- append-only, enforced by the database itself ----------------------------------------


TABLES = ("entries", "nodes", "checkpoints")
REFUSED = [
    "UPDATE entries SET entry = {blob} WHERE idx = 1",
    "UPDATE entries SET type = 'error'",
    "UPDATE entries SET leaf = {blob} WHERE idx = 0",
    "DELETE FROM entries WHERE idx = 2",
    "DELETE FROM entries",
    "UPDATE nodes SET hash = {blob}",
    "DELETE FROM nodes WHERE level = 1",
    "UPDATE checkpoints SET note = 'forged'",
    "DELETE FROM checkpoints WHERE size = 3",
]


def test_append_only_tables_refuse_changes(storage: Storage) -> None:
    # Through a plain connection, as an operator or an attacker with the credentials would.
    tenant_id = new_tenant(storage)
    rows = append(storage, tenant_id, 3)
    before = storage.latest_checkpoint(tenant_id)
    truncates = [] if _is_sqlite(storage) else [f"TRUNCATE {t}" for t in TABLES]
    for statement in REFUSED + truncates:
        with pytest.raises(INTEGRITY, match="append-only"):
            raw_sql(storage, statement.format(blob=blob(storage, b"\x00")))
    assert [e.data for e in storage.entries(tenant_id, 0, 10)] == [r.data for r in rows]
    assert storage.latest_checkpoint(tenant_id) == before
    assert len(storage.nodes(tenant_id, [(0, 0), (0, 1), (0, 2), (1, 0)])) == 4


def test_a_checkpoint_covers_only_a_gap_free_log(storage: Storage) -> None:
    for existing, index in [(0, 1), (3, 4), (3, 7)]:
        tenant_id = new_tenant(storage, f"t{existing}-{index}")
        append(storage, tenant_id, existing)
        with pytest.raises(INTEGRITY), storage.write() as tx:
            tx.insert_entries(tenant_id, [entry_row(index)])
            tx.insert_checkpoint(tenant_id, index + 1, b"\x01" * 32, "gap", LATER)
        assert [e.index for e in storage.entries(tenant_id, 0, 100)] == list(range(existing))
        # Nor behind the backend's back: a row slipped in with no checkpoint is one that the
        # next checkpoint refuses to cover, however it claims the tree grew.
        raw_sql(
            storage,
            "INSERT INTO entries (tenant_id, idx, id, received_at, type, event_name, "
            f"service, idempotency_key, entry, leaf) VALUES ({tenant_id}, {index}, "
            f"'raw-{tenant_id}', 'now', 'info', 'e', 's', 'raw', {blob(storage, b'{}')}, "
            f"{blob(storage, leaf_hash(b'{}'))})",
        )
        for claimed in (existing, existing + 1, index + 1):
            with pytest.raises(INTEGRITY):
                raw_sql(
                    storage,
                    "INSERT INTO checkpoints (tenant_id, size, root, note, created_at) VALUES "
                    f"({tenant_id}, {claimed}, {blob(storage, b'r')}, 'n', 'now')",
                )


def test_an_entry_cannot_take_an_existing_place(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    append(storage, tenant_id, 3)
    with pytest.raises(INTEGRITY), storage.write() as tx:
        tx.insert_entries(tenant_id, [entry_row(2, "again")])


def test_a_batch_with_a_gap_is_refused_whole(storage: Storage) -> None:
    tenant_id = new_tenant(storage)
    rows = [entry_row(i, f"k{i}") for i in (0, 1, 2, 4)]
    with pytest.raises(INTEGRITY), storage.write() as tx:
        tx.insert_entries(tenant_id, rows)
        tx.insert_checkpoint(tenant_id, 5, b"\x01" * 32, "gap", LATER)
    assert list(storage.entries(tenant_id, 0, 10)) == []


# --- the whole ledger on top --------------------------------------------------------------


def test_ledger_round_trip(storage: Storage, tmp_path: Path) -> None:
    config = _config(_location(storage), tmp_path / "ledger")
    with Ledger.open(config) as ledger:
        tenant = ledger.create_tenant("acme")
        with pytest.raises(LedgerError):
            ledger.create_tenant("acme")
        secret, key = ledger.create_api_key("acme", frozenset({"ingest", "read"}), "ci")
        found = ledger.authenticate(secret)
        assert found is not None and found.id == key.id

        base = ledger.checkpoint(tenant).size  # the log records its own admin events too
        subs = [validate_submission(json.dumps({"n": i}), dict(META), f"evt-{i}") for i in range(9)]
        first = ledger.append(tenant, subs[:4])
        old = ledger.checkpoint(tenant)
        second = ledger.append(tenant, [*subs[4:], subs[1]])
        reused = ledger.append(tenant, [validate_submission('{"n": -1}', dict(META), "evt-2")])
        new = ledger.checkpoint(tenant)

        accepted = [r for r in first + second if isinstance(r, Accepted)]
        assert [r.index - base for r in accepted] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 1]
        assert accepted[-1].duplicate and accepted[-1].entry_id == accepted[1].entry_id
        assert isinstance(reused[0], Rejected) and reused[0].reason == "idempotency_key_reused"
        assert (old.size, new.size) == (base + 4, base + 9)

        verifier = Verifier(ledger.verifier_key())
        head = open_checkpoint(verifier, new.note, ledger.origin(tenant))
        assert (head.size, head.root_hash) == (new.size, new.root)
        for result in accepted[:-1]:
            proof = ledger.inclusion_proof(tenant, result.index, new.size)
            verify_inclusion(result.index, new.size, result.leaf_hash, proof, new.root)
            stored = ledger.entry(tenant, result.entry_id)
            assert leaf_hash(stored.data) == result.leaf_hash
            assert decode_entry(stored.data)["idempotency_key"] == f"evt-{result.index - base}"
        proof = ledger.consistency_proof(tenant, old.size, new.size)
        verify_consistency(old.size, new.size, proof, old.root, new.root)
        assert ledger.checkpoint_at(tenant, old.size) == old

        ledger.revoke_api_key(key.prefix)
        assert ledger.authenticate(secret) is None

    with Ledger.open(config) as reopened:  # the same log, read back by a new process
        tenant = reopened.tenant("acme")
        head = reopened.checkpoint(tenant)
        leaves = [leaf_hash(e.data) for e in reopened.entries(tenant, 0, head.size)]
        assert len(leaves) == head.size >= base + 9
        assert root_from_leaves(leaves) == head.root
        report = reopened.check_integrity(tenant)  # the server's self-check, on this backend
        assert report.valid and report.events_checked == head.size, report.breaks


# --- many processes, one log ----------------------------------------------------------------

WORKERS, PER_WORKER, THREADS = 4, 200, 4


def _append_worker(config: LedgerConfig, worker: int, start: Any) -> None:
    """One API process: its own ledger, several request threads, single-event appends."""
    with Ledger.open(config) as ledger:
        tenant = ledger.tenant("shared")
        start.wait(60)  # all processes ready: append at the same moment

        def requests(thread: int) -> None:
            for i in range(PER_WORKER // THREADS):
                payload = json.dumps({"worker": worker, "thread": thread, "i": i})
                sub = validate_submission(payload, dict(META), f"w{worker}-t{thread}-{i}")
                [result] = ledger.append(tenant, [sub])
                assert isinstance(result, Accepted) and not result.duplicate

        with ThreadPoolExecutor(THREADS) as pool:
            for done in [pool.submit(requests, t) for t in range(THREADS)]:
                done.result()


def test_processes_appending_to_one_tenant_build_one_log(storage: Storage, tmp_path: Path) -> None:
    config = _config(_location(storage), tmp_path / "shared")
    with Ledger.open(config) as ledger:  # also creates the signing key they all share
        tenant = ledger.create_tenant("shared")
        base = ledger.checkpoint(tenant).size  # the log's own "tenant created" event
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_append_worker, args=(config, w, start)) for w in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * WORKERS

    total = base + WORKERS * PER_WORKER
    with Ledger.open(config) as ledger:
        entries = list(ledger.entries(tenant, 0, total + 10))
        assert [e.index for e in entries] == list(range(total))
        decoded = [decode_entry(e.data) for e in entries]
        assert [d["index"] for d in decoded] == list(range(total))
        appended = {d["idempotency_key"] for d in decoded[base:] if d["service"] == "tests"}
        assert len(appended) == WORKERS * PER_WORKER
        leaves = [leaf_hash(e.data) for e in entries]
        head = ledger.checkpoint(tenant)
        assert head.size == total and head.root == root_from_leaves(leaves)
        signed = open_checkpoint(Verifier(ledger.verifier_key()), head.note, ledger.origin(tenant))
        assert (signed.size, signed.root_hash) == (total, head.root)
        # No fork ever: every checkpoint any process signed is a prefix of the final tree.
        sizes = [s for s in range(total) if storage.checkpoint_at(tenant.id, s) is not None]
        assert len(sizes) > 1
        for size in sizes:
            old = ledger.checkpoint_at(tenant, size)
            assert old.root == root_from_leaves(leaves[:size])
            proof = ledger.consistency_proof(tenant, size, total)
            verify_consistency(size, total, proof, old.root, head.root)
        report = ledger.check_integrity(tenant)
        assert report.valid and report.events_checked == total, report.breaks
        # An idempotency key committed by one process is known to every other one.
        payload = json.dumps({"worker": 2, "thread": 1, "i": 7})
        [again] = ledger.append(tenant, [validate_submission(payload, dict(META), "w2-t1-7")])
        assert isinstance(again, Accepted) and again.duplicate


# --- PostgreSQL only: failures are StorageError (the API's 503) ------------------------------


def test_unreachable_postgres_is_a_storage_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    from immutablelog.ledger.postgres import PostgresStorage

    with pytest.raises(StorageError):
        PostgresStorage("postgresql://nobody:secret@127.0.0.1:1/none", timeout=1).initialize("x")
    store = PostgresStorage("postgresql://nobody:secret@127.0.0.1:1/none", timeout=0.5)
    try:
        with pytest.raises(StorageError) as info:
            store.get_tenant("acme")
        assert "secret" not in str(info.value)
    finally:
        store.close()
    with pytest.raises(StorageError):
        PostgresStorage("host=x port=notaport =broken")


def test_dead_pooled_connections_are_replaced(storage: Storage) -> None:
    # After a server restart or failover every pooled connection is dead; reads and new
    # transactions must get fresh ones rather than answer 503 once per stale connection.
    if _is_sqlite(storage):
        pytest.skip("PostgreSQL connection handling")
    tenant_id = new_tenant(storage)
    with ThreadPoolExecutor(4) as pool:  # grow the pool beyond one connection
        list(pool.map(lambda _: storage.list_tenants(), range(16)))
    for reuse in (
        lambda: storage.get_tenant_by_id(tenant_id),
        lambda: append(storage, tenant_id, 1),
    ):
        killed = raw_sql(
            storage,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'immutablelog' AND datname = current_database()",
        )
        assert killed
        assert reuse()
    head = storage.latest_checkpoint(tenant_id)
    assert head is not None and head.size == 1


def test_commit_after_a_swallowed_error_is_refused(storage: Storage) -> None:
    if _is_sqlite(storage):
        pytest.skip("SQLite lets a transaction go on after a failed statement")
    tenant_id = new_tenant(storage)
    append(storage, tenant_id, 1)
    with pytest.raises(StorageError), storage.write() as tx:
        tx.create_tenant("lost", NOW)
        with pytest.raises(INTEGRITY):
            tx.insert_entries(tenant_id, [entry_row(0, "again")])  # that place is taken
    assert storage.get_tenant("lost") is None
