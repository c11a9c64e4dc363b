"""``tiles sync``: the static tree, read by a third-party client from disk and over a plain
file server, written incrementally, and never switched to another history."""

from __future__ import annotations

import functools
import http.server
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from tlog_scales import backend, tiles
from tlog_scales.reader import TilesReader
from tlog_scales.signing import Vkey

from immutablelog.cli.commands import cli
from immutablelog.entry import validate_submission
from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.server.app import create_app
from immutablelog.tiles.sync import SyncError, sync_tiles

META = {"type": "info", "event_name": "e", "service": "svc"}


def append(ledger: Ledger, count: int) -> None:
    tenant = ledger.tenant(DEFAULT_TENANT)
    start = ledger.checkpoint(tenant).size
    for first in range(start, start + count, 5000):
        last = min(start + count, first + 5000)
        subs = [validate_submission(f'{{"n":{n}}}', META, f"k{n}") for n in range(first, last)]
        ledger.append(tenant, subs)


def check_log(reader: TilesReader, ledger: Ledger, samples: int = 12) -> int:
    """Verify the checkpoint, the whole tree and some entries with tlog-scales."""
    checkpoint = reader.get_checkpoint()
    checkpoint.verify(Vkey.from_string(ledger.verifier_key()))
    assert reader.calculate_root_hash() == checkpoint.root_hash
    tenant = ledger.tenant(DEFAULT_TENANT)
    size = checkpoint.size
    for index in [0, size - 1, *random.sample(range(size), samples)]:
        entry = reader.get_entry(index)
        assert entry == next(ledger.entry_bytes(tenant, index, index + 1))[1]
        reader.get_inclusion_proof(index, size).check(tiles.leaf_hash(entry), checkpoint.root_hash)
    return size


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain static file server (the standard library's) over a fresh directory."""
    root = tmp_path / "static"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_synced_tree_reads_like_the_api(ledger: Ledger, file_server: tuple[str, Path]) -> None:
    url, root = file_server
    tenant = ledger.tenant(DEFAULT_TENANT)
    key = ledger.create_api_key(DEFAULT_TENANT, frozenset({"read"}))[0]
    append(ledger, 65_600)  # level 0, 1 and 2 tiles, full and partial
    first = sync_tiles(ledger, tenant, root)
    assert (first.previous_size, first.size) == (0, ledger.checkpoint(tenant).size)
    assert check_log(TilesReader(backend.LocalBackend(root)), ledger) == first.size
    over_http = TilesReader(backend.HttpBackend(url))
    assert check_log(over_http, ledger) == first.size

    # Byte for byte what the API serves, for every tile of the tree.
    api = TestClient(create_app(ledger), headers={"Authorization": f"Bearer {key}"})
    assert api.get("/tlog/default/checkpoint").text == (root / "checkpoint").read_text()
    for path in ("tile/0/255", "tile/1/000", "tile/2/000.p/1", "tile/entries/255"):
        assert api.get(f"/tlog/default/{path}").content == (root / path).read_bytes(), path

    # Incremental: the next run writes only the tiles the tree gained.
    append(ledger, 300)
    old_partial = root / f"tile/0/256.p/{first.size - 65_536}"
    assert old_partial.exists()
    second = sync_tiles(ledger, tenant, root)
    assert second.previous_size == first.size
    # Level 0 and entries: tile 256, now full, and the new partial 257; level 1: its new
    # partial tile 1 (tile 0 was full already); level 2: as it was.
    assert (second.size >> 8, second.size >> 16) == (257, 1)
    assert second.tiles_written == 2 + 2 + 1
    assert old_partial.exists()  # kept for clients of the older checkpoint
    assert check_log(over_http, ledger) == second.size
    assert sync_tiles(ledger, tenant, root).tiles_written == 0


def test_sync_refuses_a_directory_of_another_history(ledger: Ledger, tmp_path: Path) -> None:
    tenant = ledger.tenant(DEFAULT_TENANT)
    append(ledger, 10)
    # Another log under the same name and key: a fork from the same start.
    key_file = ledger.config.key_path
    other_config = LedgerConfig(data_dir=tmp_path / "fork", signing_key_file=key_file)
    with Ledger.open(other_config) as fork:
        fork.create_tenant(DEFAULT_TENANT)
        append(fork, 30)
        sync_tiles(fork, fork.tenant(DEFAULT_TENANT), tmp_path / "forked")
    with pytest.raises(SyncError, match="beyond"):
        sync_tiles(ledger, tenant, tmp_path / "forked")
    append(ledger, 40)
    with pytest.raises(SyncError, match="different history"):
        sync_tiles(ledger, tenant, tmp_path / "forked")
    # A checkpoint signed by some other key is not this log's.
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "checkpoint").write_text("x\n1\nAAAA\n\n— x AAAA\n")
    with pytest.raises(SyncError, match="not a checkpoint of this log"):
        sync_tiles(ledger, tenant, tmp_path / "foreign")


def test_a_tile_left_by_an_unfinished_run_is_written_again(ledger: Ledger, tmp_path: Path) -> None:
    tenant = ledger.tenant(DEFAULT_TENANT)
    append(ledger, 100)
    sync_tiles(ledger, tenant, tmp_path / "out")
    append(ledger, 200)
    # A crash after writing this tile but before syncing it could leave it empty.
    (tmp_path / "out/tile/0/000").write_bytes(b"")
    sync_tiles(ledger, tenant, tmp_path / "out")
    size = check_log(TilesReader(backend.LocalBackend(tmp_path / "out")), ledger)
    assert size == ledger.checkpoint(tenant).size


def test_tiles_sync_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Ledger.open(LedgerConfig(data_dir=data_dir)) as ledger:
        ledger.create_tenant(DEFAULT_TENANT)
        append(ledger, 5)
    out = tmp_path / "published"

    def sync(*more: str) -> tuple[int, str]:
        args = ["tiles", "sync", "--to", str(out), "--data-dir", str(data_dir), *more]
        result = CliRunner().invoke(cli, args)
        return result.exit_code, result.output

    assert sync() == (0, f"{out}: size 0 -> 6, 2 tiles written\n")
    assert sync() == (0, f"{out}: size 6 -> 6, 0 tiles written\n")
    (out / "checkpoint").write_text("garbage")
    code, output = sync()
    assert code == 1
    assert "not a checkpoint of this log" in output
    code, output = sync("--tenant", "nobody")
    assert code == 1
    assert "no tenant named" in output
