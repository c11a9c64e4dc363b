"""Reading the log back: filters, cursors, one event with its proof, exports, server self-check."""

from __future__ import annotations

import base64
import csv
import io
import json
import sqlite3
import time
import uuid
from typing import Any

import httpx
import pytest

from immutablelog.checkpoint import Verifier, open_checkpoint
from immutablelog.merkle import verify_inclusion
from tests.live import LiveServer


def ingest(server: LiveServer, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    for event in events:
        meta = {"type": "info", "service": "web", "env": "prod", **event.get("meta", {})}
        meta.setdefault("event_name", "page.viewed")
        items.append(
            {
                "payload": json.dumps(event.get("payload", {})),
                "meta": meta,
                "idempotency_key": str(uuid.uuid4()),
            }
        )
    response = httpx.post(
        server.url + "/v1/events/batch",
        json={"events": items},
        headers=server.headers(),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


def events(server: LiveServer, **params: Any) -> dict[str, Any]:
    response = server.get("/v1/events", **params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def names(page: dict[str, Any]) -> list[str]:
    return [e["event_name"] for e in page["events"]]


@pytest.fixture(scope="module")
def seeded(shared_server: LiveServer) -> LiveServer:
    ingest(
        shared_server,
        [
            {
                "meta": {"event_name": "user.login", "actor": "alice", "request_id": "r-1"},
                "payload": {"message": "alice signed in from Lisbon"},
            },
            {"meta": {"event_name": "user.logout", "actor": "alice"}},
            {
                "meta": {
                    "event_name": "invoice.deleted",
                    "actor": "bob",
                    "service": "billing",
                    "type": "warning",
                },
                "payload": {"message": "invoice 7 deleted"},
            },
            {
                "meta": {
                    "event_name": "user.login",
                    "actor": "bob",
                    "env": "staging",
                    "type": "error",
                },
                "payload": {"message": "wrong password for bob"},
            },
        ],
    )
    return shared_server


def test_filters_match_exactly(seeded: LiveServer) -> None:
    assert names(events(seeded, service="billing")) == ["invoice.deleted"]
    assert names(events(seeded, actor="alice")) == ["user.logout", "user.login"]
    assert names(events(seeded, type="error")) == ["user.login"]
    assert names(events(seeded, env="staging")) == ["user.login"]
    assert names(events(seeded, request_id="r-1")) == ["user.login"]
    assert names(events(seeded, event_name="user.login", actor="bob")) == ["user.login"]
    assert names(events(seeded, event_name="user.*", order="asc")) == [
        "user.login",
        "user.logout",
        "user.login",
    ]
    assert events(seeded, event_name="nothing")["events"] == []


def test_events_are_the_stored_entries_with_their_leaf_hash(seeded: LiveServer) -> None:
    (event,) = events(seeded, request_id="r-1")["events"]
    assert json.loads(event["payload"]) == {"message": "alice signed in from Lisbon"}
    assert event["actor"] == "alice" and len(event["leaf_hash"]) == 64


def test_full_text_search_over_payloads(seeded: LiveServer) -> None:
    deadline = time.monotonic() + 10
    found: list[str] = []
    while not found and time.monotonic() < deadline:  # indexed just behind the writer
        found = names(events(seeded, q="password"))
        time.sleep(0.1)
    assert found == ["user.login"]
    assert names(events(seeded, q="invoice deleted")) == ["invoice.deleted"]
    assert events(seeded, q='"; DROP TABLE entries --')["events"] == []


def test_time_window(seeded: LiveServer) -> None:
    everything = events(seeded, limit=1000)["events"]
    middle = everything[len(everything) // 2]["received_at"]
    newer = events(seeded, since=middle, limit=1000)["events"]
    older = events(seeded, until=middle, limit=1000)["events"]
    assert len(newer) + len(older) == len(everything)
    assert all(e["received_at"] >= middle for e in newer)


def test_cursor_pages_stay_correct_while_events_arrive(live_server: LiveServer) -> None:
    ingest(live_server, [{"meta": {"event_name": f"e{n}"}} for n in range(10)])
    first = events(live_server, service="web", limit=4)
    ingest(live_server, [{"meta": {"event_name": "late"}}])  # arrives between pages
    seen = names(first)
    cursor = first["next_cursor"]
    while cursor:
        page = events(live_server, service="web", limit=4, cursor=cursor)
        seen += names(page)
        cursor = page["next_cursor"]
    assert seen == [f"e{n}" for n in range(9, -1, -1)]
    forward = names(events(live_server, service="web", order="asc", limit=1000))
    assert forward == [f"e{n}" for n in range(10)] + ["late"]


def test_a_cursor_only_works_with_its_own_query(seeded: LiveServer) -> None:
    page = events(seeded, actor="alice", limit=1)
    other = seeded.get("/v1/events", actor="bob", limit=1, cursor=page["next_cursor"])
    assert other.status_code == 400 and other.json()["reason"] == "invalid_cursor"
    garbage = seeded.get("/v1/events", cursor="bm90IGEgY3Vyc29y")
    assert garbage.status_code == 400 and garbage.json()["reason"] == "invalid_cursor"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"order": "sideways"},
        {"type": "fatal"},
        {"since": "yesterday"},
        {"until": "2026-01-01T00:00:00"},
        {"after": 3},
    ],
)
def test_bad_query_parameters_are_400(seeded: LiveServer, params: dict[str, Any]) -> None:
    response = seeded.get("/v1/events", **params)
    assert response.status_code == 400
    assert response.json()["ok"] is False


def test_tailing_with_after(seeded: LiveServer) -> None:
    newest = events(seeded, limit=1)["events"][0]["index"]
    ingest(seeded, [{"meta": {"event_name": "tail.me"}}])
    page = events(seeded, order="asc", after=newest)
    assert names(page) == ["tail.me"]


def test_one_event_with_an_inclusion_proof(seeded: LiveServer) -> None:
    (listed,) = events(seeded, request_id="r-1")["events"]
    response = seeded.get(f"/v1/events/{listed['id']}")
    assert response.status_code == 200
    body = response.json()
    checkpoint = open_checkpoint(Verifier(seeded.verifier_key), body["checkpoint"])
    assert checkpoint.size == body["tree_size"]
    verify_inclusion(
        body["index"],
        checkpoint.size,
        bytes.fromhex(body["leaf_hash"]),
        [base64.b64decode(h) for h in body["inclusion_proof"]],
        checkpoint.root_hash,
    )
    assert body["event"] == listed
    missing = seeded.get(f"/v1/events/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["reason"] == "not_found"


def test_ingest_key_cannot_search(seeded: LiveServer) -> None:
    response = httpx.get(seeded.url + "/v1/events", headers=seeded.headers(), timeout=10)
    assert response.status_code == 403


def test_export_bundle_is_complete_and_recorded(seeded: LiveServer) -> None:
    response = seeded.get("/v1/export")
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    header, entries = lines[0], lines[1:]
    assert header["format"] == "immutablelog-bundle/2"
    assert header["log_key"] == seeded.verifier_key
    checkpoint = open_checkpoint(Verifier(seeded.verifier_key), header["checkpoint"])
    assert [e["index"] for e in entries] == list(range(checkpoint.size))
    assert [e["entry"].encode() for e in entries] == seeded.raw_entries()[: checkpoint.size]
    exported = [
        e for e in seeded.entries(admin=True) if e["event_name"] == "immutablelog.log.exported"
    ]
    assert exported and json.loads(exported[-1]["payload"])["format"] == "jsonl"


def test_export_csv_for_auditors(seeded: LiveServer) -> None:
    response = seeded.get("/v1/export", format="csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert int(response.headers["x-tree-size"]) == len(rows)
    assert any(r["event_name"] == "invoice.deleted" and r["actor"] == "bob" for r in rows)
    assert seeded.get("/v1/export", format="xml").status_code == 400


def tamper(server: LiveServer, *statements: str) -> None:
    """Change the database behind the API, as an attacker with file access could."""
    server.stop()
    conn = sqlite3.connect(server.data_dir / "ledger.db")
    for trigger in ("entries_no_update", "entries_no_delete", "entries_contiguous"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    server.start()


def verify(server: LiveServer) -> dict[str, Any]:
    response = server.get("/v1/verify")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_server_check_passes_on_an_honest_log(seeded: LiveServer) -> None:
    report = verify(seeded)
    assert report["valid"] is True and report["breaks"] == []
    assert report["events_checked"] == report["tree_size"] > 0
    assert report["checkpoints_checked"] >= 1


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("UPDATE entries SET event_name = 'forged' WHERE idx = 5", "altered_column"),
        (
            "UPDATE entries SET entry = CAST(replace(CAST(entry AS TEXT), "
            '\'"event_name":"e1"\', \'"event_name":"e9"\') AS BLOB) WHERE idx = 5',
            "altered_entry",
        ),
        ("DELETE FROM entries WHERE idx = 5", "missing_entry"),
    ],
)
def test_server_check_pinpoints_tampering(
    live_server: LiveServer, statement: str, kind: str
) -> None:
    ingest(live_server, [{"meta": {"event_name": f"e{n}"}} for n in range(6)])
    assert verify(live_server)["valid"] is True
    tamper(live_server, statement)
    report = verify(live_server)
    assert report["valid"] is False
    assert report["breaks"][0]["kind"] == kind
    assert report["breaks"][0]["index"] == 5
