"""Full level-0 tiles packed into one row each (``tiles/source.py``), on both backends: the
same bytes as the entries' leaves whether a tile is packed, not packed yet or partial; the
upkeep packs a log filled before the rows existed; a replaced SQLite ledger file never
lends its packed tiles to another history; a tampered row is reported."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from immutablelog.entry import validate_submission
from immutablelog.ledger import Ledger, LedgerConfig, Tenant
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.upkeep import Upkeep
from immutablelog.merkle import leaf_hash, root_from_leaves
from immutablelog.server.app import create_app
from immutablelog.tiles.layout import TILE_WIDTH, TileRef, tiles_for_size
from immutablelog.tiles.source import tile_bytes
from tests.ledger.test_storage_contract import backend_location

try:
    import psycopg
except ImportError:  # the SQLite half still runs
    psycopg = None  # type: ignore[assignment]

META = {"type": "info", "event_name": "tiles.test", "service": "tests"}


@pytest.fixture(params=["sqlite", "postgres"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerConfig:
    """A new log on each backend."""
    location = backend_location(request, tmp_path)
    if isinstance(location, Path):
        return LedgerConfig(data_dir=location)
    return LedgerConfig(data_dir=tmp_path / "data", database_url=location)


@pytest.fixture
def ledger(config: LedgerConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """A ledger with tenants ``acme`` and ``beta`` whose upkeep thread never starts (its
    first commit would start it): the tests pack when they choose."""
    monkeypatch.setattr(Upkeep, "start", lambda self: None)
    with Ledger.open(config) as opened:
        opened.create_tenant("acme")
        opened.create_tenant("beta")
        yield opened


def append(ledger: Ledger, tenant: str, count: int, label: str = "e") -> None:
    subs = [
        validate_submission(json.dumps({"n": n}), dict(META), f"{tenant}-{label}-{n}")
        for n in range(count)
    ]
    for first in range(0, count, 100):
        ledger.append(ledger.tenant(tenant), subs[first : first + 100])


def fill(ledger: Ledger, rounds: int = 4) -> None:
    """Both tenants, their entries interleaved in the store (each row of one tenant between
    rows of the other), ending with partial tiles."""
    for n in range(rounds):
        append(ledger, "acme", 150, f"r{n}")
        append(ledger, "beta", 90, f"r{n}")


def level_0(ledger: Ledger, tenant: Tenant) -> list[TileRef]:
    size = ledger.checkpoint(tenant).size
    return [t for t in tiles_for_size(size, entries=False) if t.level == 0]


def expected(ledger: Ledger, tenant: Tenant, tile: TileRef) -> bytes:
    """The tile as the entries themselves say: their bytes hashed, not a stored column."""
    entries = ledger.entries(tenant, tile.first, tile.first + tile.width)
    return b"".join(leaf_hash(e.data) for e in entries)


def assert_tiles_read_as_the_entries_say(ledger: Ledger) -> None:
    for tenant in ledger.tenants():
        for tile in level_0(ledger, tenant):
            assert tile_bytes(ledger, tenant, tile) == expected(ledger, tenant, tile), tile


def packed(ledger: Ledger, tenant: Tenant) -> list[int]:
    """Indexes of the tenant's full tiles that are packed."""
    full = ledger.checkpoint(tenant).size // TILE_WIDTH
    return [n for n in range(full) if ledger.storage.packed_tile(tenant.id, n) is not None]


def pack_all(ledger: Ledger, limit: int) -> int:
    calls = 0
    while ledger.storage.pack_tiles(limit):
        calls += 1
    return calls


def wait_packed(ledger: Ledger, timeout: float = 60.0) -> None:
    """Until the upkeep thread has packed every full tile."""
    deadline = time.monotonic() + timeout
    while ledger.tile_backlog() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.tile_backlog() == 0


def test_tiles_read_the_same_packed_unpacked_and_partial(ledger: Ledger) -> None:
    fill(ledger)
    acme, beta = ledger.tenant("acme"), ledger.tenant("beta")
    assert packed(ledger, acme) == packed(ledger, beta) == []
    assert ledger.tile_backlog() > 0
    assert_tiles_read_as_the_entries_say(ledger)

    ledger.storage.pack_tiles(97)  # one slice, ending inside a tile (SQLite: mid-tenant)
    assert_tiles_read_as_the_entries_say(ledger)
    assert pack_all(ledger, 97) > 1  # in many slices, each on the last one's mark
    assert ledger.tile_backlog() == 0
    for tenant in (acme, beta):
        full = ledger.checkpoint(tenant).size // TILE_WIDTH
        assert full >= 1 and packed(ledger, tenant) == list(range(full))
        for n in range(full):
            assert ledger.storage.packed_tile(tenant.id, n) == expected(
                ledger, tenant, TileRef(0, n)
            )
        assert ledger.storage.packed_tile(tenant.id, full) is None  # the partial one
    assert_tiles_read_as_the_entries_say(ledger)

    # The partial tiles fill up; the next packing takes in exactly what is new.
    before = {t.id: packed(ledger, t) for t in (acme, beta)}
    append(ledger, "acme", 300, "more")
    assert ledger.tile_backlog() > 0
    assert_tiles_read_as_the_entries_say(ledger)
    pack_all(ledger, 1000)
    assert packed(ledger, beta) == before[beta.id]
    assert len(packed(ledger, acme)) == ledger.checkpoint(acme).size // TILE_WIDTH
    assert len(packed(ledger, acme)) > len(before[acme.id])
    assert_tiles_read_as_the_entries_say(ledger)


def test_the_http_api_serves_packed_tiles_and_refuses_bad_paths(ledger: Ledger) -> None:
    fill(ledger)
    key = ledger.create_api_key("acme", frozenset({"read"}))[0]  # an admin event, logged
    pack_all(ledger, 50_000)
    tenant = ledger.tenant("acme")
    client = TestClient(create_app(ledger))

    def get(path: str) -> Any:
        return client.get(f"/tlog/acme/{path}", headers={"Authorization": f"Bearer {key}"})

    size = ledger.checkpoint(tenant).size
    full, rest = divmod(size, TILE_WIDTH)
    assert get("tile/0/000").content == expected(ledger, tenant, TileRef(0, 0))
    assert get(f"tile/0/{full:03d}.p/{rest}").content == expected(
        ledger, tenant, TileRef(0, full, rest)
    )
    for path in (f"tile/0/{full:03d}", f"tile/0/{full:03d}.p/{rest + 1}", "tile/0/999"):
        answer = get(path)
        assert answer.status_code == 404 and answer.json()["reason"] == "not_found", path
    for path in ("tile/0/000.p/256", "tile/0/0000", "tile/0/000.p/0"):
        answer = get(path)
        assert answer.status_code == 400 and answer.json()["reason"] == "invalid_tile_path", path
    metrics = client.get("/metrics").text
    assert "immutablelog_tile_backlog_entries 0.0" in metrics


def tamper(ledger: Ledger, tenant: Tenant, n: int) -> None:
    """Flip a bit of packed tile ``n``, behind the storage's back."""
    original = ledger.storage.packed_tile(tenant.id, n)
    assert original is not None
    altered = bytes([original[0] ^ 1]) + original[1:]
    storage = ledger.storage
    if isinstance(storage, SQLiteStorage):
        with closing(sqlite3.connect(storage.search_path)) as conn, conn:
            conn.execute(
                "UPDATE leaf_tiles SET hashes = ? WHERE tenant_id = ? AND n = ?",
                (altered, tenant.id, n),
            )
        return
    assert psycopg is not None and ledger.config.database_url
    with psycopg.connect(ledger.config.database_url, autocommit=True) as pg:
        pg.execute(
            "UPDATE leaf_tiles SET hashes = %s WHERE tenant_id = %s AND n = %s",
            (altered, tenant.id, n),
        )


def test_a_tampered_packed_tile_is_reported(ledger: Ledger) -> None:
    append(ledger, "acme", 3 * TILE_WIDTH)
    pack_all(ledger, 50_000)
    tenant = ledger.tenant("acme")
    assert ledger.check_integrity(tenant).valid
    tamper(ledger, tenant, 1)

    report = ledger.check_integrity(tenant)
    assert not report.valid
    assert [(b.kind, b.index) for b in report.breaks] == [("altered_tile", TILE_WIDTH)]
    # From an index inside tile 0: tile 1 is still checked whole.
    assert [b.kind for b in ledger.check_integrity(tenant, 10).breaks] == ["altered_tile"]
    # Not when the range covers only part of it.
    assert ledger.check_integrity(tenant, TILE_WIDTH + 1).valid
    # A client that checks tiles against the signed root catches the served copy too.
    checkpoint = ledger.checkpoint(tenant)
    served = b"".join(tile_bytes(ledger, tenant, t) for t in level_0(ledger, tenant))
    leaves = [served[i : i + 32] for i in range(0, len(served), 32)]
    assert len(leaves) == checkpoint.size
    assert root_from_leaves(leaves) != checkpoint.root


def test_a_log_filled_before_packing_existed_is_packed_in_the_background(
    config: LedgerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upgrade: the log's entries were written by a release without packed tiles, and
    the first start packs them behind the writer while the tiles are served meanwhile."""
    with monkeypatch.context() as older:
        if config.database_url:  # the schema before the packed tiles
            older.setattr("immutablelog.ledger.postgres.migrate.SCHEMA_VERSION", 8)
        with Ledger.open(config) as ledger:
            ledger.create_tenant("acme")
            ledger.create_tenant("beta")
            fill(ledger, 6)
            if isinstance(ledger.storage, SQLiteStorage):
                search_path = ledger.storage.search_path
                ledger.search_backlog()  # the search file exists, as an older release left it
    if not config.database_url:
        with closing(sqlite3.connect(search_path)) as conn, conn:
            conn.execute("DROP TABLE leaf_tiles")
            conn.execute("DELETE FROM meta WHERE key LIKE 'packed%'")
            layout = conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
    with Ledger.open(config) as ledger:
        assert_tiles_read_as_the_entries_say(ledger)
        ledger.start()
        wait_packed(ledger)
        for name in ("acme", "beta"):
            tenant = ledger.tenant(name)
            assert packed(ledger, tenant) == list(range(ledger.checkpoint(tenant).size // 256))
        assert_tiles_read_as_the_entries_say(ledger)
    if not config.database_url:  # the table was added, the search index left as it was
        with closing(sqlite3.connect(search_path)) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone() == layout


def test_a_replaced_sqlite_ledger_lends_no_packed_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger file restored from a backup, then grown with other entries: the packed rows
    of the history it replaced are never served, and are packed afresh."""
    monkeypatch.setattr(Upkeep, "start", lambda self: None)  # packed when the test says
    config = LedgerConfig(data_dir=tmp_path / "d")
    backup = tmp_path / "backup.db"
    with Ledger.open(config) as ledger:
        ledger.create_tenant("acme")
        append(ledger, "acme", 100)
        assert isinstance(ledger.storage, SQLiteStorage)
        db = ledger.storage.path
        with closing(sqlite3.connect(db)) as conn, closing(sqlite3.connect(backup)) as copy:
            conn.backup(copy)
        append(ledger, "acme", 3 * TILE_WIDTH, "old")
        pack_all(ledger, 50_000)
        assert packed(ledger, ledger.tenant("acme")) == [0, 1, 2]
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, db)  # restored from before the "old" events
    with Ledger.open(config) as ledger:
        append(ledger, "acme", 3 * TILE_WIDTH, "new")
        tenant = ledger.tenant("acme")
        assert packed(ledger, tenant) == []  # the old history's rows stay unread
        assert_tiles_read_as_the_entries_say(ledger)
        pack_all(ledger, 50_000)
        assert packed(ledger, tenant) == [0, 1, 2]
        assert_tiles_read_as_the_entries_say(ledger)
        assert ledger.check_integrity(tenant).valid
