"""Ingest against the running server: the answer, idempotency, proofs right after a 2xx."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from immutablelog.entry import encode_entry
from immutablelog.merkle import leaf_hash, verify_inclusion
from tests.live import HTTP, LiveServer, free_port, serve_command

META = {
    "type": "success",
    "event_name": "payment.checkout",
    "service": "shop",
    "request_id": "req-1",
    "env": "production",
    "trace_id": "abc",
}


def send(server: LiveServer, payload: str, key: str, **headers: str) -> httpx.Response:
    return HTTP.post(
        server.url + "/v1/events",
        json={"payload": payload, "meta": META},
        headers=server.headers(**{"Idempotency-Key": key, **headers}),
        timeout=30,
    )


def test_answer_matches_the_wire_contract_and_the_stored_entry(live_server: LiveServer) -> None:
    payload = '{"id": "x",  "kind": "success", "message": "POST /checkout ok", "n": 1.50}'
    response = send(
        live_server,
        payload,
        "key-1",
        **{"X-Client-TZ": "Europe/Lisbon", "X-Client-Offset-Minutes": "-60"},
    )
    assert response.status_code == 202
    answer = response.json()
    assert answer["ok"] is True and answer["status"] == "accepted"
    assert answer["duplicate"] is False
    assert answer["request_id"] == "req-1"
    stored = live_server.raw_entries()[-1]
    assert answer["index"] == len(live_server.raw_entries()) - 1
    assert encode_entry(json.loads(stored)) == stored
    assert answer["leaf_hash"] == leaf_hash(stored).hex()
    entry = live_server.entries()[-1]  # with its erasable values
    # The payload string is stored byte for byte: odd spacing and "1.50" survive.
    assert entry["payload"] == payload
    assert answer["payload_hash"] == __import__("hashlib").sha256(payload.encode()).hexdigest()
    assert entry["id"] == answer["tx_id"] and entry["received_at"] == answer["received_at"]
    assert entry["client_tz"] == "Europe/Lisbon" and entry["client_offset_minutes"] == -60
    assert entry["trace_id"] == "abc" and entry["idempotency_key"] == "key-1"


def test_payload_object_is_stored_compact(live_server: LiveServer) -> None:
    response = HTTP.post(
        live_server.url + "/v1/events",
        json={"payload": {"b": 1, "a": [1, 2]}, "meta": META},
        headers=live_server.headers(),
        timeout=30,
    )
    assert response.status_code == 202
    assert live_server.entries()[0]["payload"] == '{"b":1,"a":[1,2]}'


def test_replay_answers_the_original_and_reuse_is_422(live_server: LiveServer) -> None:
    first = send(live_server, '{"a": 1}', "same-key").json()
    again = send(live_server, '{"a": 1}', "same-key")
    assert again.status_code == 202
    assert again.json() == {**first, "duplicate": True}
    other = send(live_server, '{"a": 2}', "same-key")
    assert other.status_code == 422
    assert other.json()["reason"] == "idempotency_key_reused"
    assert len(live_server.entries()) == 1


def test_an_empty_idempotency_key_is_refused_not_replaced(live_server: LiveServer) -> None:
    # What `-H "Idempotency-Key: $(uuidgen)"` sends where uuidgen is missing.
    response = send(live_server, '{"a": 1}', "")
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert response.json()["reason"] == "invalid_header"
    assert "Idempotency-Key" in response.json()["message"]
    assert live_server.entries() == []
    assert send(live_server, '{"a": 1}', "a-real-key").status_code == 202


def test_same_key_twenty_times_in_parallel_is_one_entry(live_server: LiveServer) -> None:
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: send(live_server, '{"p": 1}', "parallel"), range(20)))
    assert all(a.status_code == 202 for a in answers)
    assert len({a.json()["tx_id"] for a in answers}) == 1
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    assert len(live_server.entries()) == 1


def test_checkpoint_after_a_2xx_already_covers_the_event(live_server: LiveServer) -> None:
    for n in range(7):
        answer = send(live_server, json.dumps({"n": n}), f"k{n}").json()
        checkpoint = live_server.checkpoint()
        assert checkpoint.size == answer["index"] + 1
        proof = live_server.get(
            "/v1/proofs/inclusion", index=answer["index"], size=checkpoint.size
        ).json()
        verify_inclusion(
            answer["index"],
            checkpoint.size,
            bytes.fromhex(answer["leaf_hash"]),
            [base64.b64decode(h) for h in proof["hashes"]],
            checkpoint.root_hash,
        )
    live_server.assert_tree_intact()


def test_every_checkpoint_is_kept_and_consistent(live_server: LiveServer) -> None:
    seen = [live_server.checkpoint()]
    for n in range(5):
        send(live_server, json.dumps({"n": n}), f"c{n}")
        seen.append(live_server.checkpoint())
    for old in seen:
        again = live_server.get("/v1/checkpoint", size=old.size)
        assert again.status_code == 200
        live_server.assert_consistent(old, seen[-1])


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "immutablelog", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_created_and_revoked_by_cli_while_serving(live_server: LiveServer) -> None:
    created = _cli(live_server.data_dir, "keys", "create", "--scope", "ingest,read")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("iml_live_")
    key = lines[0]
    assert send(live_server, "{}", "cli-1", Authorization=f"Bearer {key}").status_code == 202
    listed = [
        json.loads(line)
        for line in _cli(live_server.data_dir, "keys", "list", "--json").stdout.splitlines()
    ]
    mine = [k for k in listed if k["prefix"] == key[:21]]
    assert len(mine) == 1 and mine[0]["scopes"] == ["ingest", "read"]
    assert all(key not in json.dumps(k) for k in listed)
    revoked = _cli(live_server.data_dir, "keys", "revoke", key[:21])
    assert revoked.returncode == 0, revoked.stderr
    after = send(live_server, "{}", "cli-2", Authorization=f"Bearer {key}")
    assert after.status_code == 401 and after.json()["reason"] == "invalid_api_key"


def test_cli_refuses_bad_input_cleanly(tmp_path: Path) -> None:
    bad_scope = _cli(tmp_path, "keys", "create", "--scope", "root")
    assert bad_scope.returncode == 2 and "scopes must be" in bad_scope.stderr
    no_tenant = _cli(tmp_path, "keys", "create", "--tenant", "ghost")
    assert no_tenant.returncode == 1 and "no tenant named 'ghost'" in no_tenant.stderr
    bad_name = _cli(tmp_path, "tenants", "create", "Not Valid")
    assert bad_name.returncode == 1 and "Traceback" not in bad_name.stderr


def test_first_serve_creates_default_tenant_and_prints_working_keys(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        serve_command(tmp_path / "d", port, "--log-format", "text"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        found: dict[str, str] = {}
        for line in process.stdout:
            if line.startswith("Log verifier key:"):
                break
            if " key:" in line:
                scope, _, secret = line.strip().partition(" key:")
                found[scope] = secret.strip()
        assert set(found) == {"ingest", "read"}
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                __import__("time").sleep(0.05)
        ok = HTTP.post(
            url + "/v1/events",
            json={"payload": "{}", "meta": META},
            headers={"Authorization": f"Bearer {found['ingest']}"},
            timeout=10,
        )
        assert ok.status_code == 202
        note = httpx.get(
            url + "/v1/checkpoint", headers={"Authorization": f"Bearer {found['read']}"}, timeout=10
        )
        # The tenant and its two keys were recorded in the log itself, then our event.
        assert note.text.startswith("immutablelog/default\n4\n")
    finally:
        process.terminate()
        process.wait(30)


def test_metrics_count_ingest_and_rejections(live_server: LiveServer) -> None:
    send(live_server, "{}", "m1")
    send(live_server, "{}", "m1")
    HTTP.post(live_server.url + "/v1/events", json={}, timeout=10)
    text = httpx.get(live_server.url + "/metrics", timeout=10).text
    assert "immutablelog_events_ingested_total 1.0" in text
    assert "immutablelog_duplicate_events_total 1.0" in text
    assert 'immutablelog_rejected_requests_total{reason="unauthorized"} 1.0' in text
    assert "immutablelog_commit_seconds_count" in text


def test_metrics_report_the_search_backlog_until_it_is_indexed(live_server: LiveServer) -> None:
    for n in range(3):
        send(live_server, '{"word": "wombat"}', f"backlog-{n}")
    deadline, backlog = time.monotonic() + 10, None
    while backlog != 0.0 and time.monotonic() < deadline:
        text = httpx.get(live_server.url + "/metrics", timeout=10).text
        lines = [ln for ln in text.splitlines() if ln.startswith("immutablelog_search_backlog_")]
        assert len(lines) == 1, text
        backlog = float(lines[0].split()[-1])
        time.sleep(0.05)
    assert backlog == 0.0  # the upkeep thread indexed what was committed
