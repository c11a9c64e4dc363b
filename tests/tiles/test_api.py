"""The tlog-tiles read API: read by a third-party tiles client, and its refusals."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from starlette.testclient import TestClient
from tlog_scales import backend, tiles, tlog
from tlog_scales.reader import TilesReader
from tlog_scales.signing import Vkey

from immutablelog.entry import validate_submission
from immutablelog.ledger import DEFAULT_TENANT, Ledger
from immutablelog.server.app import create_app
from tests.live import LiveServer
from tests.verify.helpers import ingest


def reader_for(server: LiveServer, tenant: str = DEFAULT_TENANT) -> TilesReader:
    """tlog-scales' reader over HTTP, sending the read key (the tiles are not public)."""
    http = backend.HttpBackend(f"{server.url}/tlog/{tenant}")
    http.session.headers["Authorization"] = f"Bearer {server.read_key}"
    return TilesReader(http)


def test_a_third_party_tiles_client_reads_and_verifies_the_log(
    live_server: LiveServer,
) -> None:
    ingest(live_server, 600)
    reader = reader_for(live_server)
    old = reader.get_checkpoint()
    old.verify(Vkey.from_string(live_server.verifier_key))
    assert reader.calculate_root_hash() == old.root_hash

    ingest(live_server, 200)  # the partial tiles of the old size stay readable
    new = reader.get_checkpoint()
    new.verify(Vkey.from_string(live_server.verifier_key))
    assert new.size > old.size
    assert reader.calculate_root_hash() == new.root_hash
    reader.get_consistency_proof(old.size, new.size).check(old.root_hash, new.root_hash)

    stored = live_server.raw_entries()
    for index in [0, 255, 256, new.size - 1, *random.sample(range(new.size), 20)]:
        entry = reader.get_entry(index)
        assert entry == stored[index]
        proof = reader.get_inclusion_proof(index, new.size)
        proof.check(tiles.leaf_hash(entry), new.root_hash)
    # A tampered entry does not verify.
    with pytest.raises(tlog.InclusionProofInvalid):
        reader.get_inclusion_proof(7, new.size).check(
            tiles.leaf_hash(stored[7] + b" "), new.root_hash
        )


def test_tiles_carry_the_headers_the_spec_asks_for(live_server: LiveServer) -> None:
    ingest(live_server, 300)
    get = requests.Session()
    get.headers["Authorization"] = f"Bearer {live_server.read_key}"
    prefix = f"{live_server.url}/tlog/{DEFAULT_TENANT}"
    checkpoint = get.get(f"{prefix}/checkpoint")
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert checkpoint.headers["cache-control"] == "private, max-age=2"
    full = get.get(f"{prefix}/tile/0/000")
    assert full.status_code == 200
    assert full.headers["content-type"] == "application/octet-stream"
    assert "immutable" in full.headers["cache-control"]
    assert len(full.content) == 256 * 32
    bundle = get.get(f"{prefix}/tile/entries/000", stream=True)
    assert bundle.headers["content-encoding"] == "gzip"
    raw = gzip.decompress(bundle.raw.read())
    stored = live_server.raw_entries()
    expected = b"".join(len(e).to_bytes(2, "big") + e for e in stored[:256])
    assert raw == expected
    plain = get.get(f"{prefix}/tile/entries/000", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == expected
    # The tile after the last one is not there yet; a partial prefix of one is.
    size = int(checkpoint.text.split("\n")[1])
    assert get.get(f"{prefix}/tile/0/001").status_code == 404
    assert get.get(f"{prefix}/tile/0/001.p/{size - 256}").status_code == 200
    assert get.get(f"{prefix}/tile/0/001.p/{size - 255}").status_code == 404


@pytest.fixture
def two_tenants(ledger: Ledger) -> Iterator[tuple[Ledger, dict[str, str]]]:
    ledger.create_tenant("open")
    keys = {
        name: ledger.create_api_key(name, frozenset({scope}))[0]
        for name, scope in [("default", "read"), ("open", "read")]
    }
    keys["ingest"] = ledger.create_api_key("default", frozenset({"ingest"}))[0]
    subs = [validate_submission("{}", {"type": "info", "event_name": "e", "service": "s"}, "k")]
    ledger.append(ledger.tenant("open"), subs)
    yield ledger, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_and_public_tenants(two_tenants: tuple[Ledger, dict[str, str]]) -> None:
    ledger, keys = two_tenants
    client = TestClient(create_app(ledger, public_tiles=["open"]))
    # A private tenant: a read key of that tenant, nothing else (asked first, before the path).
    assert client.get("/tlog/default/checkpoint").status_code == 401
    assert client.get("/tlog/default/tile/0").status_code == 401
    assert (
        client.get("/tlog/default/tile/0/000.p/1", headers=bearer(keys["open"])).json()["reason"]
        == "wrong_tenant"
    )
    ingest_only = client.get("/tlog/default/checkpoint", headers=bearer(keys["ingest"]))
    assert ingest_only.status_code == 403
    own = client.get("/tlog/default/checkpoint", headers=bearer(keys["default"]))
    assert own.status_code == 200
    # A public tenant: checkpoint and hash tiles for anyone, entries with its key only.
    public = client.get("/tlog/open/checkpoint")
    assert public.status_code == 200
    assert public.headers["cache-control"] == "public, max-age=2"
    assert public.text == ledger.checkpoint(ledger.tenant("open")).note
    size = int(public.text.split("\n")[1])
    tile = client.get(f"/tlog/open/tile/0/000.p/{size}")
    assert tile.status_code == 200
    assert tile.headers["cache-control"].startswith("public")
    assert client.get(f"/tlog/open/tile/entries/000.p/{size}").status_code == 401
    with_key = client.get(f"/tlog/open/tile/entries/000.p/{size}", headers=bearer(keys["open"]))
    assert with_key.status_code == 200
    assert with_key.headers["cache-control"].startswith("private")
    # Unknown tenants are not told apart from badly named ones.
    for name in ("nobody", "BAD", "a" * 65, "%00"):
        answer = client.get(f"/tlog/{name}/checkpoint")
        assert answer.status_code in (401, 404), name
    assert client.get("/tlog/nobody/checkpoint", headers=bearer(keys["default"])).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/0001",
        "tile/00/000",
        "tile/0/\u0661\u0662\u0663",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/x000/000",
        "tile/64/000",
        "tile/0/000%00",
        "tile/0/000.p/1%0a",
        "tile/x/000",
        "tile/0/" + "x001/" * 40 + "000",
    ],
)
def test_bad_tile_paths_get_a_json_400(
    two_tenants: tuple[Ledger, dict[str, str]], path: str
) -> None:
    ledger, keys = two_tenants
    client = TestClient(create_app(ledger))
    answer = client.get(f"/tlog/default/{path}", headers=bearer(keys["default"]))
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["ok"] is False
    assert body["reason"] == "invalid_tile_path"


def test_tiles_past_the_tree_are_404(two_tenants: tuple[Ledger, dict[str, str]]) -> None:
    ledger, keys = two_tenants
    client = TestClient(create_app(ledger))
    size = ledger.checkpoint(ledger.tenant("default")).size
    beyond = f"tile/entries/000.p/{size + 1}"
    # The last: well-formed, but past any int64 tree.
    never = "tile/0/x999/x999/x999/x999/x999/x999/x999/999"
    for path in ("tile/0/000", "tile/1/000.p/1", beyond, "tile/0/001.p/1", never):
        answer = client.get(f"/tlog/default/{path}", headers=bearer(keys["default"]))
        assert answer.status_code == 404, path
        assert answer.json()["reason"] == "not_found"


def test_tiles_from_postgresql_read_and_verify(postgres_url: str, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "host", database_url=postgres_url)
    server.start()
    try:
        ingest(server, 700)
        reader = reader_for(server)
        checkpoint = reader.get_checkpoint()
        checkpoint.verify(Vkey.from_string(server.verifier_key))
        assert reader.calculate_root_hash() == checkpoint.root_hash
        stored = server.raw_entries()
        for index in [0, 511, checkpoint.size - 1, *random.sample(range(checkpoint.size), 10)]:
            entry = reader.get_entry(index)
            assert entry == stored[index]
            proof = reader.get_inclusion_proof(index, checkpoint.size)
            proof.check(tiles.leaf_hash(entry), checkpoint.root_hash)
    finally:
        server.kill()
