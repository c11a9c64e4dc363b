"""The erasure API over HTTP: who may erase, what is refused, what readers see afterwards
(events, entries, exports) and that every proof still holds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from immutablelog.entry import ENTRIES_MEDIA_TYPE, decode_erasable
from immutablelog.erasure import MAX_REASON_CHARS
from immutablelog.ledger import Ledger, LedgerConfig
from immutablelog.ledger.erasing import MAX_ERASE_IDS
from tests.live import LiveServer
from tests.server.test_bad_input import assert_error
from tests.verify.helpers import decode_records_with_parts

SECRET = "marmoset-carburettor-4412"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("erasure") / "data")
    live.start()
    yield live
    live.stop()


def post_events(server: LiveServer, actor: str, count: int, word: str = "routine") -> list[str]:
    events = [
        {
            "payload": json.dumps({"n": n, "note": f"{word} note"}),
            "meta": {"type": "info", "event_name": "user.login", "service": "web", "actor": actor},
            "idempotency_key": f"{actor}-{n}-{uuid.uuid4()}",
        }
        for n in range(count)
    ]
    response = httpx.post(
        server.url + "/v1/events/batch",
        json={"events": events},
        headers=server.headers(server.ingest_key),
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text
    return [r["tx_id"] for r in response.json()["results"]]


def erase(server: LiveServer, body: Any, key: str | None = None) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/erasures",
        content=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers=server.headers(key or server.admin_key, **{"Content-Type": "application/json"}),
        timeout=60,
    )


def delete(
    server: LiveServer, event_id: str, key: str | None = None, **params: str
) -> httpx.Response:
    return httpx.delete(
        f"{server.url}/v1/events/{event_id}",
        params=params,
        headers=server.headers(key or server.admin_key),
        timeout=60,
    )


def test_erasing_one_event_over_the_api(server: LiveServer) -> None:
    (target,) = post_events(server, "dave", 1, SECRET)
    before = server.checkpoint()
    response = delete(server, target, reason="data subject request #12")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["erased"] == 1 and len(body["records"]) == 1
    (record,) = body["records"]

    event = server.get(f"/v1/events/{target}").json()["event"]
    assert event["payload"] is None and "actor" not in event
    assert event["erased"] == {
        "index": record,
        "at": event["erased"]["at"],
        "reason": "data subject request #12",
        "by": server.admin_key[: len(event["erased"]["by"])],
    }
    listed = server.get("/v1/events", actor="dave").json()["events"]
    assert listed == []
    server.assert_consistent(before, server.assert_tree_intact())
    report = server.get("/v1/verify").json()
    assert report["valid"] and report["events_erased"] >= 1, report
    # The erasure is listed, by index only.
    erasures = httpx.get(
        server.url + "/v1/erasures", headers=server.headers(server.admin_key)
    ).json()["erasures"]
    assert [e["index"] for e in erasures][-1] == record
    assert "dave" not in json.dumps(erasures)


def test_entries_and_exports_carry_erasable_parts_until_erased(server: LiveServer) -> None:
    ids = post_events(server, "erin", 3, SECRET)
    page = server.get("/v1/entries", start=0, end=10_000).json()["entries"]
    with_parts = [e for e in page if "erasable" in e]
    assert with_parts and all(len(e["erasable"]["salt"]) == 32 for e in with_parts)
    for item in with_parts:
        part = bytes.fromhex(item["erasable"]["salt"]) + item["erasable"]["values"].encode()
        assert "payload" in decode_erasable(json.loads(item["entry"]), part)
    binary = httpx.get(
        server.url + "/v1/entries",
        params={"start": 0, "end": 10_000},
        headers=server.headers(server.read_key, Accept=ENTRIES_MEDIA_TYPE),
    ).content
    parts = {i: p for i, _, p in decode_records_with_parts(binary)}
    assert {e["index"] for e in with_parts} == {i for i, p in parts.items() if p}

    assert erase(server, {"ids": ids, "reason": "retention by hand"}).json()["erased"] == 3
    post_events(server, "kept", 1)
    export = server.get("/v1/export", format="jsonl").text
    assert SECRET not in export
    header, *lines = [json.loads(line) for line in export.splitlines()]
    assert header["format"] == "immutablelog-bundle/2"
    assert any("erasable" in line for line in lines)
    bare = server.get("/v1/export", format="jsonl", erasable="0").text
    assert all("erasable" not in json.loads(line) for line in bare.splitlines()[1:])
    assert SECRET not in server.get("/v1/export", format="csv").text
    assert server.get("/v1/events", q=SECRET.split("-")[0]).json()["events"] == []


def test_erasing_every_event_of_one_actor(server: LiveServer) -> None:
    post_events(server, "frank", 50, SECRET)
    post_events(server, "grace", 5)
    body = erase(server, {"actor": "frank", "reason": "account deleted"}).json()
    assert body["erased"] == 50
    assert server.get("/v1/events", actor="frank").json()["events"] == []
    assert len(server.get("/v1/events", actor="grace").json()["events"]) == 5
    # Nothing left to erase: no new record.
    again = erase(server, {"actor": "frank", "reason": "account deleted"}).json()
    assert again == {"erased": 0, "records": [], "ranges": []}


def test_only_an_admin_key_erases(server: LiveServer) -> None:
    (target,) = post_events(server, "heidi", 1)
    for key in (server.read_key, server.ingest_key):
        assert_error(delete(server, target, key, reason="r"), 403, "insufficient_scope")
        assert_error(erase(server, {"ids": [target], "reason": "r"}, key), 403)
    assert_error(httpx.delete(f"{server.url}/v1/events/{target}", params={"reason": "r"}), 401)
    assert server.get(f"/v1/events/{target}").json()["event"]["payload"] is not None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"ids": ["no-such-event"], "reason": "r"}, 404),
        ({"ids": [], "reason": "r"}, 422),
        ({"ids": "abc", "reason": "r"}, 422),
        ({"ids": [1], "reason": "r"}, 422),
        ({"ids": ["a\u0000b"], "reason": "r"}, 422),
        ({"ids": ["x" * 5000], "reason": "r"}, 422),
        ({"ids": ["x"] * (MAX_ERASE_IDS + 1), "reason": "r"}, 413),
        ({"actor": "a", "ids": ["x"], "reason": "r"}, 422),
        ({"actor": "a"}, 422),
        ({"actor": "", "reason": "r"}, 422),
        ({"actor": "a", "reason": ""}, 400),
        ({"actor": "a", "reason": "line\nbreak"}, 400),
        ({"actor": "a", "reason": "x" * (MAX_REASON_CHARS + 1)}, 400),
        ({"actor": "a", "reason": "r", "extra": 1}, 422),
        ({"actor": {"deep": [[[[]]]]}, "reason": "r"}, 400),
        ([], 400),
        (b'{"actor": "a", "actor": "b", "reason": "r"}', 400),
        (b"not json", 400),
        (b'{"actor": NaN, "reason": "r"}', 400),
    ],
)
def test_bad_erasure_requests_are_json_errors(server: LiveServer, body: Any, status: int) -> None:
    assert_error(erase(server, body), status)


def test_bad_delete_requests_are_json_errors(server: LiveServer) -> None:
    (target,) = post_events(server, "ivan", 1)
    assert_error(delete(server, target), 400)  # no reason
    assert_error(
        httpx.delete(
            f"{server.url}/v1/events/{target}?reason=a&reason=b",
            headers=server.headers(server.admin_key),
        ),
        400,
        "repeated_parameter",
    )
    assert_error(delete(server, target, reason="a\u0000b"), 400)
    assert_error(delete(server, "no-such-event", reason="r"), 404, "not_found")
    assert_error(delete(server, "x" * 2000, reason="r"), 404)
    # The log's own records are never erased.
    admin = [e for e in server.entries(admin=True) if e["service"] == "immutablelog"]
    assert_error(delete(server, admin[0]["id"], reason="r"), 422, "not_erasable")


def test_the_erasure_api_is_in_the_openapi_document(server: LiveServer) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"get", "delete"} <= set(paths["/v1/events/{event_id}"])
    assert {"get", "post"} <= set(paths["/v1/erasures"])


def test_a_restored_backup_is_erased_again_by_replay(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    live.start()
    backup = tmp_path / "backup.db"
    listing = tmp_path / "erasures.json"
    try:
        post_events(live, "judy", 5, SECRET)
        _cli("backup", str(backup), "--data-dir", str(live.data_dir))
        assert erase(live, {"actor": "judy", "reason": "erased before restore"}).status_code == 200
        _cli("erasures", "export", str(listing), "--url", live.url, "--key", live.admin_key)
    finally:
        live.stop()
    # Restore the older copy (with the log's key): the values are back until replayed.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(backup, restored / "ledger.db")
    shutil.copy(live.data_dir / "log-signing.key", restored / "log-signing.key")
    assert SECRET.encode() in _raw(restored)
    _cli("erase", "--replay", str(listing), "--data-dir", str(restored))
    assert SECRET.encode() not in _raw(restored)
    _cli("erase", "--replay", str(listing), "--data-dir", str(restored))  # idempotent
    with Ledger.open(LedgerConfig(data_dir=restored)) as ledger:
        report = ledger.check_integrity(ledger.tenant("default"))
    assert report.valid and report.events_erased == 5, report.breaks


def _raw(data_dir: Path) -> bytes:
    return b"".join(f.read_bytes() for f in data_dir.glob("ledger*") if f.is_file())


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "immutablelog", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_the_cli_erases_through_a_server_and_sets_retention(server: LiveServer) -> None:
    (target,) = post_events(server, "mallory", 1, SECRET)
    out = _cli(
        "erase", "--id", target, "--reason", "by the cli", "--url", server.url,
        "--key", server.admin_key,
    )  # fmt: skip
    assert json.loads(out)["erased"] == 1
    assert server.get(f"/v1/events/{target}").json()["event"]["erased"]["reason"] == "by the cli"
    refused = subprocess.run(
        [sys.executable, "-m", "immutablelog", "erase", "--id", target, "--reason", "r",
         "--url", server.url, "--key", server.read_key],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1 and "403" in refused.stderr
    assert "give --id" in _cli_fails("erase", "--reason", "r", "--url", server.url)
    _cli("tenants", "set-retention", "default", "--days", "30", "--data-dir", str(server.data_dir))
    records = [
        e for e in server.entries(admin=True) if e["event_name"] == "immutablelog.retention.set"
    ]
    assert json.loads(records[-1]["payload"])["days"] == 30
    assert "give --days" in _cli_fails("tenants", "set-retention", "default")


def _cli_fails(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "immutablelog", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    return done.stderr
