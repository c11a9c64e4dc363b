"""Faults below the ledger, on both backends: a row written behind the tree, a full disk.

A row inserted beyond the latest signed checkpoint is covered by no signature; appending
after it would either fail on every commit for ever (the old behaviour: 503 "retry") or
sign over it. The writer refuses that tenant's appends with a distinct error instead, while
the other tenants go on, and takes them again once the row is gone.

A full disk is provoked for real where the tests may mount a small filesystem (root);
PostgreSQL's own disk cannot be filled here, so its disk_full error is raised in its place.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from immutablelog.entry import validate_submission
from immutablelog.ledger import Accepted, Ledger, LedgerConfig
from immutablelog.ledger.health import Fault
from immutablelog.ledger.postgres import PostgresStorage
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.storage import LogIntegrityError, Storage, StorageFull
from tests.ledger.test_storage_contract import (
    META,
    _config,
    backend_location,
    entry_row,
    new_tenant,
    storage,
)

__all__ = ["storage"]


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    location = backend_location(request, tmp_path)
    with Ledger.open(_config(location, tmp_path / "data")) as opened:
        opened.create_tenant("default")
        opened.create_tenant("globex")
        yield opened


def _event(n: int) -> list[object]:
    return [validate_submission(f'{{"n": {n}}}', META, f"fault-{n}")]


def _insert_behind(storage: Storage, tenant_id: int, index: int) -> None:
    """A row appended outside the ledger: no tree node, no checkpoint covers it."""
    with storage.write() as tx:
        tx.insert_entries(tenant_id, [entry_row(index)])


def test_lock_tenant_refuses_a_tenant_with_an_entry_beyond_its_checkpoint(
    storage: Storage,
) -> None:
    tenant_id = new_tenant(storage)
    _insert_behind(storage, tenant_id, 0)
    with pytest.raises(LogIntegrityError) as refused, storage.write() as tx:
        tx.lock_tenant(tenant_id)
    assert "covers 0 entries" in str(refused.value) and refused.value.tenant_id == tenant_id


def test_an_entry_behind_the_tree_refuses_that_tenant_only_until_it_is_removed(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    broken, globex = ledger.tenant("default"), ledger.tenant("globex")
    size = ledger.checkpoint(broken).size
    _insert_behind(ledger.storage, broken.id, size)

    with caplog.at_level(logging.WARNING, "immutablelog"):
        for n in range(3):
            refused = ledger.submit(broken, _event(n))  # type: ignore[arg-type]
            other = ledger.submit(globex, _event(n))  # type: ignore[arg-type]
            with pytest.raises(LogIntegrityError):
                refused.result(30)
            assert isinstance(other.result(30)[0], Accepted)
        assert ledger.checkpoint(broken).size == size  # nothing signed over the stray row
        assert set(ledger.broken_logs()) == {"default"}
        told = [r for r in caplog.records if "no longer matches" in r.getMessage()]
        assert len(told) == 1 and told[0].levelno == logging.ERROR  # once, not per request

        # The operator removes the stray row as the README says.
        _run_readme_repair(ledger.storage)
        (result,) = ledger.append(broken, _event(9))  # type: ignore[arg-type]
        assert isinstance(result, Accepted) and result.index == size
        assert ledger.broken_logs() == {}
        assert any("accepts appends again" in r.getMessage() for r in caplog.records)
    assert ledger.check_integrity(broken).valid


def _run_readme_repair(storage: Storage) -> None:
    """The README's repair for a stray row, exactly as written there, on this backend."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    # Plain fences: run here, by this test, rather than as shell or Python.
    section = readme.split("### When something fails", 1)[1].split("\n## ", 1)[0]
    sqlite_repair, postgres_repair = re.findall(r"```\n(.*?)```", section, re.S)
    if isinstance(storage, SQLiteStorage):
        with closing(sqlite3.connect(storage.path, isolation_level=None)) as conn:
            conn.executescript(sqlite_repair)
    else:
        import psycopg

        assert isinstance(storage, PostgresStorage)
        with psycopg.connect(storage.url, autocommit=True) as pg:
            pg.execute(postgres_repair)


def test_postgres_disk_full_is_storage_full_until_a_write_succeeds(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's disk cannot be filled here without root, so its error is raised where
    the server raises it (extending a table file during the insert)."""
    import psycopg

    from immutablelog.ledger.postgres import writes as pg_writes

    def no_space(*args: object) -> None:
        raise psycopg.errors.DiskFull('could not extend file "base/16384/16999": No space left')

    with Ledger.open(_config(postgres_url, tmp_path / "data")) as ledger:
        tenant = ledger.create_tenant("default")
        size = ledger.checkpoint(tenant).size
        # Indexing and counting the tenant's first entries (the upkeep thread starts after
        # the first commit) is a write that rightly clears the fault: done before it.
        while ledger.storage.search_backlog() or ledger.storage.rollup_backlog():
            ledger.storage.index_search(1000)
            ledger.storage.roll_up(1000)
        with monkeypatch.context() as full:
            full.setattr(pg_writes.Transaction, "insert_entries", no_space)
            for n in range(3):
                with pytest.raises(StorageFull):
                    ledger.append(tenant, _event(n))  # type: ignore[arg-type]
            assert set(ledger.storage.health.faults()) == {Fault.STORAGE_FULL}
            ledger.storage.ping()  # reads still work: the database is up
        (result,) = ledger.append(tenant, _event(9))  # type: ignore[arg-type]
        assert isinstance(result, Accepted) and result.index == size
        assert ledger.storage.health.faults() == {}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB filesystem of its own (tmpfs), where one is allowed to mount one."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small filesystem here (needs root); max_page_count covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_disk_is_storage_full_and_appends_resume_when_it_grows(
    small_disk: Path,
) -> None:
    """ENOSPC from the kernel, at commit (the WAL cannot grow), not a size limit."""
    meta = {"type": "info", "event_name": "disk.fill", "service": "tests"}
    with Ledger.open(LedgerConfig(data_dir=small_disk / "data")) as ledger:
        tenant = ledger.create_tenant("default")
        acknowledged: dict[int, str] = {}
        failures = 0
        for n in range(1000):
            payload = json.dumps({"blob": "x" * 8000, "n": n})
            try:
                (result,) = ledger.append(tenant, [validate_submission(payload, meta, f"d{n}")])
            except StorageFull:
                failures += 1
                if failures == 5:
                    break
                continue
            assert isinstance(result, Accepted)
            acknowledged[result.index] = result.entry_id
        assert failures == 5 and acknowledged
        assert Fault.STORAGE_FULL in ledger.storage.health.faults()

        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        (result,) = ledger.append(tenant, [validate_submission("{}", meta, "after")])
        assert isinstance(result, Accepted) and ledger.storage.health.faults() == {}
        stored = {e.index: e.id for e in ledger.entries(tenant, 0, result.index + 1)}
        assert all(stored[index] == entry_id for index, entry_id in acknowledged.items())
        assert ledger.check_integrity(tenant).valid


def test_only_a_commit_that_wrote_clears_storage_full(storage: Storage) -> None:
    """Background jobs (the search indexer, the rollup) open write transactions that often
    write nothing. Such a commit succeeds on a full disk too, so it must not clear the
    fault: only a commit that wrote rows proves there is space again."""
    new_tenant(storage)
    storage.health.failed(Fault.STORAGE_FULL, "no space left on device")
    with storage.write():
        pass  # a transaction that writes nothing
    assert set(storage.health.faults()) == {Fault.STORAGE_FULL}
    storage.index_search(100)  # an idle indexer round writes nothing either
    assert set(storage.health.faults()) == {Fault.STORAGE_FULL}
    with storage.write() as tx:
        tx.create_tenant("globex", "2026-01-01T00:00:00Z")
    assert storage.health.faults() == {}
