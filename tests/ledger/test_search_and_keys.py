"""The ledger's caches and derived data: live API keys in memory, the search index in its
own file (SQLite), and the schema upgrade that moved it there."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from immutablelog.entry import validate_submission
from immutablelog.ledger import Accepted, KeyRevoked, Ledger, LedgerConfig
from immutablelog.ledger.sqlite import migrate as sqlite_migrate
from immutablelog.ledger.sqlite.schema import ERASABLES_TABLE, MIGRATIONS
from immutablelog.ledger.sqlite.storage import SQLiteStorage
from immutablelog.ledger.storage import EventQuery, ReclaimsWal, Storage
from immutablelog.ledger.upkeep import Upkeep
from tests.format1 import as_format_1, writing_format_1

META = {"type": "info", "event_name": "e", "service": "s"}


def event(n: int, word: str) -> Any:
    return validate_submission(json.dumps({"n": n, "note": word}), META, f"key-{word}-{n}")


def search(ledger: Ledger, text: str, wait: float = 10.0) -> list[int]:
    """Indexes of matches, waiting up to ``wait`` s for the background indexer to find any."""
    deadline = time.monotonic() + wait
    tenant = ledger.tenant("default")
    while True:
        found = [e.index for e in ledger.query(tenant, EventQuery(text=text))]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class CountingStorage:
    """The real storage, counting how often keys are looked up."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.lookups = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def find_api_key(self, key_hash: bytes) -> Any:
        self.lookups += 1
        return self._storage.find_api_key(key_hash)


# --- API keys ----------------------------------------------------------------------------


def test_a_live_key_is_looked_up_once(ledger: Ledger) -> None:
    secret, _ = ledger.create_api_key("default", frozenset({"ingest"}))
    counting = CountingStorage(ledger.storage)
    ledger.storage = counting  # type: ignore[assignment]
    for _ in range(5):
        assert ledger.authenticate(secret) is not None
    assert counting.lookups == 1
    assert ledger.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert counting.lookups == 2  # unknown keys are never cached


def test_revocation_by_another_process_is_seen_on_the_next_request(
    ledger: Ledger, tmp_path: Path
) -> None:
    secret, record = ledger.create_api_key("default", frozenset({"ingest"}))
    assert ledger.authenticate(secret) is not None  # now cached
    # A second ledger on the same data directory stands for the CLI in another process.
    with Ledger.open(ledger.config) as other:
        other.revoke_api_key(record.prefix)
    assert ledger.authenticate(secret) is None


def test_revocation_by_hand_in_sql_is_seen_too(ledger: Ledger) -> None:
    secret, record = ledger.create_api_key("default", frozenset({"ingest"}))
    keep, _ = ledger.create_api_key("default", frozenset({"ingest"}))
    assert ledger.authenticate(secret) is not None
    assert ledger.authenticate(keep) is not None
    assert isinstance(ledger.storage, SQLiteStorage)
    with closing(sqlite3.connect(ledger.storage.path)) as conn, conn:
        conn.execute(
            "UPDATE api_keys SET revoked_at = '2030-01-01T00:00:00.000000Z' WHERE id = ?",
            (record.id,),
        )
    assert ledger.authenticate(secret) is None
    assert ledger.authenticate(keep) is not None


# --- the search index --------------------------------------------------------------------


def test_the_indexer_fills_the_search_index_beside_the_writer(ledger: Ledger) -> None:
    tenant = ledger.tenant("default")
    ledger.append(tenant, [event(n, "zebra" if n % 2 else "okapi") for n in range(10)])
    okapi = search(ledger, "okapi")
    assert len(okapi) == 5
    matched = [e for e in ledger.entries(tenant, 0, 20) if e.index in okapi]
    assert all("okapi" in ledger.event_view(tenant, e)["payload"] for e in matched)
    assert isinstance(ledger.storage, SQLiteStorage)
    assert ledger.storage.search_path.exists()
    # The ledger file itself holds no search index.
    with closing(sqlite3.connect(ledger.storage.path)) as conn, conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("entries_search") for name in names)


def bulky(n: int) -> Any:
    return validate_submission(json.dumps({"n": n, "note": "x" * 300}), META, f"bulky-{n}")


def _wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def test_commits_leave_the_wal_to_the_upkeep_thread(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(ledger.storage, SQLiteStorage)
    path = ledger.storage.path
    rounds: list[None] = []
    monkeypatch.setattr(Upkeep, "_reclaim", lambda self: rounds.append(None))
    tenant = ledger.tenant("default")
    before = path.stat().st_size
    for start in range(0, 5000, 500):
        ledger.append(tenant, [bulky(n) for n in range(start, start + 500)])
    # Past SQLite's default threshold (1000 pages), no commit copied the WAL into the file.
    assert _wal_pages(path) > 1000
    assert path.stat().st_size == before
    ledger.storage.reclaim_wal()
    assert path.stat().st_size > before + 1000 * 4096


def test_the_upkeep_thread_checkpoints_the_wal(ledger: Ledger) -> None:
    assert isinstance(ledger.storage, SQLiteStorage)
    path = ledger.storage.path
    before = path.stat().st_size
    ledger.append(ledger.tenant("default"), [bulky(n) for n in range(500)])
    deadline = time.monotonic() + 10
    while path.stat().st_size == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > before


def test_only_sqlite_has_its_wal_copied_by_the_ledger(tmp_path: Path) -> None:
    from immutablelog.ledger.postgres import PostgresStorage

    assert isinstance(SQLiteStorage(tmp_path / "ledger.db"), ReclaimsWal)
    # PostgreSQL checkpoints its own WAL: the upkeep thread has nothing to ask of it.
    assert not isinstance(PostgresStorage("postgresql://nobody@127.0.0.1:1/none"), ReclaimsWal)


def _searchable_log(config: LedgerConfig, word: str, count: int) -> Path:
    """A new ledger holding ``count`` events with ``word``, found by search; its search file."""
    with Ledger.open(config) as ledger:
        ledger.create_tenant("default")
        ledger.append(ledger.tenant("default"), [event(n, word) for n in range(count)])
        assert len(search(ledger, word)) == count
        assert isinstance(ledger.storage, SQLiteStorage)
        return ledger.storage.search_path


def test_a_deleted_search_file_is_rebuilt(tmp_path: Path) -> None:
    config = LedgerConfig(data_dir=tmp_path / "d")
    search_file = _searchable_log(config, "narwhal", 1)
    for leftover in search_file.parent.glob(search_file.name + "*"):
        leftover.unlink()
    with Ledger.open(config) as ledger:
        ledger.start()
        assert len(search(ledger, "narwhal")) == 1


def test_an_older_copy_of_the_ledger_does_not_inherit_newer_words(tmp_path: Path) -> None:
    config = LedgerConfig(data_dir=tmp_path / "d")
    backup = tmp_path / "backup.db"
    with Ledger.open(config) as ledger:
        ledger.create_tenant("default")
        assert isinstance(ledger.storage, SQLiteStorage)
        db = ledger.storage.path
        with closing(sqlite3.connect(db)) as conn, closing(sqlite3.connect(backup)) as copy:
            conn.backup(copy)
        ledger.append(ledger.tenant("default"), [event(n, "quokka") for n in range(3)])
        assert len(search(ledger, "quokka")) == 3
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, db)  # restored from before the quokkas
    with Ledger.open(config) as ledger:
        ledger.start()
        ledger.append(ledger.tenant("default"), [event(n, "wombat") for n in range(3)])
        assert len(search(ledger, "wombat")) == 3
        assert search(ledger, "quokka", wait=1.0) == []
        # The event counts start afresh too: the quokkas' counts are not the wombats'.
        while ledger.storage.roll_up(1000):
            pass
        tenant = ledger.tenant("default")
        counts = ledger.storage.count_events(tenant.id, EventQuery(), 4).rows
        assert sum(n for _, _, n in counts) == ledger.checkpoint(tenant).size


def test_a_version_1_ledger_is_upgraded_and_its_payloads_searchable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = LedgerConfig(data_dir=tmp_path / "d")
    with monkeypatch.context() as old_release:
        old_release.setattr(sqlite_migrate, "SCHEMA_VERSION", 1)
        # This release's writer (standing in for the previous one) reads the erasable
        # parts' table; it stays empty, as format 1 entries have none.
        old_release.setitem(sqlite_migrate.MIGRATIONS, 1, MIGRATIONS[1] + ERASABLES_TABLE)
        # Version 1 had no key history: its one key signed, unrecorded.
        old_release.setattr(SQLiteStorage, "log_keys", lambda self: [])
        old_release.setattr(Ledger, "_bind_signing_key", lambda self: None)
        old_release.setattr(Ledger, "_signers", lambda self, tx, now: [self.keyring.primary()])
        with Ledger.open(config) as ledger, writing_format_1():
            ledger.create_tenant("default")
            events = as_format_1([event(n, "axolotl") for n in range(4)])
            ledger.append(ledger.tenant("default"), events)
            assert isinstance(ledger.storage, SQLiteStorage)
            db, search_file = ledger.storage.path, ledger.storage.search_path
    for leftover in search_file.parent.glob(search_file.name + "*"):
        leftover.unlink()
    with closing(sqlite3.connect(db)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"entries_search", "entries_contiguous"} <= names  # what version 1 had
    with Ledger.open(config) as ledger:
        ledger.start()
        assert len(search(ledger, "axolotl")) == 4
        secret, record = ledger.create_api_key("default", frozenset({"read"}))
        assert ledger.authenticate(secret) is not None
        ledger.revoke_api_key(record.prefix)
        assert ledger.authenticate(secret) is None
        ledger.append(ledger.tenant("default"), [event(9, "later")])
        assert ledger.check_integrity(ledger.tenant("default")).valid
    with closing(sqlite3.connect(db)) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert version == (str(sqlite_migrate.SCHEMA_VERSION),)
    assert "entries_search" not in names and "entries_contiguous" not in names
    assert {"api_keys_changed", "checkpoints_cover_entries", "meta_log_key_fixed"} <= names


def test_an_ingest_key_revoked_after_authentication_is_refused_at_commit(
    ledger: Ledger,
) -> None:
    secret, record = ledger.create_api_key("default", frozenset({"ingest"}))
    other_secret, _ = ledger.create_api_key("default", frozenset({"ingest"}))
    key = ledger.authenticate(secret, checked_at_commit=True)
    other = ledger.authenticate(other_secret, checked_at_commit=True)
    assert key is not None and other is not None
    tenant = ledger.tenant("default")
    with Ledger.open(ledger.config) as elsewhere:  # the CLI, in another process
        elsewhere.revoke_api_key(record.prefix)
    size = ledger.checkpoint(tenant).size
    # The cache still holds the key, so authentication alone would pass ...
    assert ledger.authenticate(secret, checked_at_commit=True) == key
    refused = ledger.submit(tenant, [event(1, "late")], key)
    kept = ledger.submit(tenant, [event(2, "fine")], other)
    with pytest.raises(KeyRevoked):
        refused.result(10)
    (accepted,) = kept.result(10)
    # ... but the commit refused its event and wrote nothing of it.
    assert isinstance(accepted, Accepted) and accepted.index == size
    assert ledger.checkpoint(tenant).size == size + 1
    assert ledger.authenticate(secret, checked_at_commit=True) is None  # cache forgotten


def test_a_key_that_lost_the_ingest_scope_is_refused_at_commit(ledger: Ledger) -> None:
    secret, record = ledger.create_api_key("default", frozenset({"ingest", "read"}))
    key = ledger.authenticate(secret, checked_at_commit=True)
    assert key is not None
    assert isinstance(ledger.storage, SQLiteStorage)
    with closing(sqlite3.connect(ledger.storage.path)) as conn, conn:
        conn.execute("UPDATE api_keys SET scopes = 'read' WHERE id = ?", (record.id,))
    tenant = ledger.tenant("default")
    (written,) = ledger.append(tenant, [event(1, "x")])  # no key given: nothing to check
    assert isinstance(written, Accepted)
    with pytest.raises(KeyRevoked):
        ledger.submit(tenant, [event(2, "y")], key).result(10)
    assert ledger.checkpoint(tenant).size == written.index + 1


def test_a_search_file_of_an_older_layout_is_rebuilt(tmp_path: Path) -> None:
    config = LedgerConfig(data_dir=tmp_path / "d")
    search_file = _searchable_log(config, "pangolin", 2)
    with closing(sqlite3.connect(search_file)) as conn, conn:  # an earlier layout
        conn.execute("DROP TABLE entries_search")
        conn.execute("CREATE VIRTUAL TABLE entries_search USING fts5 (payload, content = '')")
        conn.execute("DELETE FROM meta WHERE key = 'layout'")
    with Ledger.open(config) as ledger:
        ledger.start()
        assert len(search(ledger, "pangolin")) == 2
        tenant = ledger.tenant("default")
        found = ledger.query(tenant, EventQuery(text="pangolin", service="s", type="info"))
        assert len(found) == 2


def test_the_search_index_is_created_with_its_merge_setting(tmp_path: Path) -> None:
    config = LedgerConfig(data_dir=tmp_path / "d")
    search_file = _searchable_log(config, "pangolin", 1)
    with closing(sqlite3.connect(search_file)) as conn:
        settings = dict(conn.execute("SELECT k, v FROM entries_search_config").fetchall())
        # Opening again must not rebuild the index or reset what it holds.
        layout = conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
    assert settings["automerge"] == 16
    with Ledger.open(config) as ledger:
        ledger.start()
        assert len(search(ledger, "pangolin")) == 1
    with closing(sqlite3.connect(search_file)) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone() == layout
