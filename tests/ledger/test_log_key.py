"""One log, one key: the database names the key that signs it, and no other key may sign.

Each test runs on both backends. "Another host" is a second ledger on the same database
with its own data directory (PostgreSQL) or its own key file (SQLite): exactly what a
second ``immutablelog serve`` started from another directory would open.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from immutablelog.checkpoint import Signer
from immutablelog.ledger import SIGNING_KEY_ENV, Ledger, LedgerConfig, LedgerError
from immutablelog.ledger.postgres.schema import SCHEMA_VERSION as POSTGRES_VERSION
from immutablelog.ledger.sqlite.schema import SCHEMA_VERSION as SQLITE_VERSION
from immutablelog.ledger.storage import Storage
from tests.ledger.test_storage_contract import (
    INTEGRITY,
    LOG_NAME,
    _config,
    _is_sqlite,
    _location,
    raw_sql,
    storage,
)

__all__ = ["storage"]


def _host(storage: Storage, tmp_path: Path, name: str, key: Path | None = None) -> LedgerConfig:
    """The configuration of a host with its own data directory (and so its own key file)."""
    config = _config(_location(storage), tmp_path / name)
    if _is_sqlite(storage):  # one database file, but this host's own key file
        key = key or tmp_path / name / "log-signing.key"
    return LedgerConfig(
        data_dir=config.data_dir,
        log_name=LOG_NAME,
        database_url=config.database_url,
        signing_key_file=key,
    )


def _host_with_a_new_key(storage: Storage, tmp_path: Path) -> LedgerConfig:
    host = _host(storage, tmp_path, "host-b")
    host.data_dir.mkdir(parents=True, exist_ok=True)
    host.key_path.write_text(Signer.generate(LOG_NAME).private_key_string() + "\n")
    return host


def _checkpoints(storage: Storage) -> int:
    return int(raw_sql(storage, "SELECT count(*) FROM checkpoints")[0][0])


def _forget_log_key(storage: Storage) -> None:
    """Make the database look as it did before the log key was recorded (version 2)."""
    # Later versions undone first: packed tiles (PostgreSQL 9), erasable parts (SQLite 6,
    # PostgreSQL 7), viewer links and event counts (SQLite 5, PostgreSQL 5-6), key history (4).
    for table in ("log_keys", "log_key_handovers", "cosignatures", "witness_status"):
        raw_sql(storage, f"DROP TABLE {table}")
    if _is_sqlite(storage):
        statements = [
            "DROP TABLE erasables",
            "DROP TRIGGER entries_actor_erased_only",
            "ALTER TABLE tenants DROP COLUMN retention_days",
            "DROP TRIGGER meta_log_key_fixed",
            "DROP TRIGGER meta_log_key_kept",
            "DROP TABLE viewer_links",  # version 5
        ]
    else:
        statements = [
            "DROP TABLE erasables",
            "DROP TRIGGER entries_actor_erased_only ON entries",
            "DROP TRIGGER entries_no_update ON entries",
            "CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries "
            "FOR EACH ROW EXECUTE FUNCTION immutablelog_append_only()",
            "ALTER TABLE tenants DROP COLUMN retention_days",
            "DROP TRIGGER meta_log_key_fixed ON meta",
            "DROP FUNCTION immutablelog_log_key_fixed()",
            "DROP FUNCTION immutablelog_log_keys_fixed()",
            "DROP TABLE event_counts, count_progress",  # version 5
            "DROP TABLE viewer_links",  # version 6
            "DROP TABLE leaf_tiles",  # version 9
        ]
    statements += [
        "DELETE FROM meta WHERE key = 'log_key'",
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
    ]
    for statement in statements:
        raw_sql(storage, statement)


def test_a_new_log_records_its_key_and_refuses_a_host_with_another(
    storage: Storage, tmp_path: Path
) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as first:
        first.create_tenant("acme")
        key = first.verifier_key()
        assert storage.log_key() == key
    before = _checkpoints(storage)

    with pytest.raises(LedgerError) as refused:
        Ledger.open(_host_with_a_new_key(storage, tmp_path))
    assert refused.value.reason == "key_mismatch"
    assert key in refused.value.message
    assert "--signing-key" in refused.value.message and SIGNING_KEY_ENV in refused.value.message
    assert _checkpoints(storage) == before  # it signed nothing
    assert storage.log_key() == key

    # Given the log's key, the second host opens the same log.
    right = _host(storage, tmp_path, "host-b", key=_host(storage, tmp_path, "host-a").key_path)
    with Ledger.open(right) as second:
        assert second.verifier_key() == key
        assert second.check_integrity(second.tenant("acme")).valid


def test_a_host_without_a_key_file_is_told_which_key_to_bring(
    storage: Storage, tmp_path: Path
) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as first:
        key = first.verifier_key()
    newcomer = _host(storage, tmp_path, "host-b")
    with pytest.raises(LedgerError) as refused:
        Ledger.open(newcomer)
    assert refused.value.reason == "key_missing"
    assert key in refused.value.message and SIGNING_KEY_ENV in refused.value.message
    # No stray key was made that a later start would pick up instead of the right one.
    assert not newcomer.key_path.exists()


def test_an_existing_log_adopts_the_key_that_signed_its_latest_checkpoints(
    storage: Storage, tmp_path: Path
) -> None:
    host_a = _host(storage, tmp_path, "host-a")
    with Ledger.open(host_a) as first:
        first.create_tenant("acme")
        first.create_tenant("globex")
        key = first.verifier_key()
    _forget_log_key(storage)
    assert storage.log_key() is None

    # A key that signed none of the checkpoints is refused, and not recorded.
    with pytest.raises(LedgerError) as refused:
        Ledger.open(_host_with_a_new_key(storage, tmp_path))
    assert refused.value.reason == "key_mismatch"
    assert "latest checkpoint of tenant 'acme'" in refused.value.message
    assert storage.log_key() is None

    # The key that did sign them is checked and recorded by the migration to version 3.
    with Ledger.open(host_a) as reopened:
        assert reopened.verifier_key() == key
    assert storage.log_key() == key
    current = SQLITE_VERSION if _is_sqlite(storage) else POSTGRES_VERSION
    assert raw_sql(storage, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(current),)
    ]
    assert [k.key for k in storage.log_keys()] == [key]


def test_the_recorded_key_cannot_be_changed_or_removed(storage: Storage, tmp_path: Path) -> None:
    with Ledger.open(_host(storage, tmp_path, "host-a")) as first:
        key = first.verifier_key()
    impostor = Signer.generate(LOG_NAME).verifier_key()
    with pytest.raises(INTEGRITY):
        raw_sql(storage, f"UPDATE meta SET value = '{impostor}' WHERE key = 'log_key'")
    with pytest.raises(INTEGRITY):
        raw_sql(storage, "DELETE FROM meta WHERE key = 'log_key'")
    assert storage.bind_log_key(impostor) == key
    assert storage.log_key() == key
