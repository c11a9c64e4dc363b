"""Every kind of bad input, against the running server: the right 4xx and the JSON error body."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from immutablelog.entry import MAX_PAYLOAD_BYTES
from tests.live import LiveServer

BATCH = "/v1/events/batch"
META = {
    "type": "info",
    "event_name": "user.login",
    "service": "web",
    "request_id": "r1",
    "env": "test",
}


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"payload": json.dumps({"hello": "world"}), "meta": dict(META)}
    body.update(changes)
    return body


def assert_error(
    response: httpx.Response, status: int, reason: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["ok"] is False
    assert isinstance(body["message"], str) and body["message"]
    if reason is not None:
        assert body["reason"] == reason
    return body


def post(
    server: LiveServer,
    body: Any = None,
    *,
    content: bytes | None = None,
    key: str | None = None,
    path: str = "/v1/events",
    **headers: str,
) -> httpx.Response:
    return httpx.post(
        server.url + path,
        json=body if content is None else None,
        content=content,
        headers={**server.headers(key), "Content-Type": "application/json", **headers},
        timeout=10,
    )


def test_malformed_json_is_400(shared_server: LiveServer) -> None:
    assert_error(post(shared_server, content=b'{"payload": '), 400, "malformed_json")


def test_not_utf8_is_400(shared_server: LiveServer) -> None:
    assert_error(post(shared_server, content=b'{"payload": "\xff"}'), 400, "malformed_json")


@pytest.mark.parametrize("missing", ["type", "event_name", "service"])
def test_missing_meta_field_is_422_naming_it(shared_server: LiveServer, missing: str) -> None:
    meta = {k: v for k, v in META.items() if k != missing}
    body = assert_error(post(shared_server, event(meta=meta)), 422, "missing_field")
    assert body["field"] == f"meta.{missing}"


@pytest.mark.parametrize(
    ("meta_change", "field"),
    [
        ({"event_name": 5}, "meta.event_name"),
        ({"service": ["x"]}, "meta.service"),
        ({"env": {"a": 1}}, "meta.env"),
        ({"request_id": "x" * 300}, "meta.request_id"),
        ({"Bad Key": "x"}, "meta.Bad Key"),
        ({"nested": {"a": 1}}, "meta.nested"),
        ({"tenant": "other"}, "meta.tenant"),
    ],
)
def test_ill_typed_meta_is_422_naming_it(
    shared_server: LiveServer, meta_change: dict[str, Any], field: str
) -> None:
    body = assert_error(post(shared_server, event(meta={**META, **meta_change})), 422)
    assert body["field"] == field


def test_missing_payload_and_meta_are_422(shared_server: LiveServer) -> None:
    assert assert_error(post(shared_server, {"meta": META}), 422)["field"] == "payload"
    assert assert_error(post(shared_server, {"payload": "{}"}), 422)["field"] == "meta"
    assert_error(post(shared_server, [1, 2]), 422)


def test_payload_that_is_not_json_is_422(shared_server: LiveServer) -> None:
    body = assert_error(post(shared_server, event(payload="not json")), 422)
    assert body["field"] == "payload"
    assert_error(post(shared_server, event(payload=12)), 422)


def test_unknown_type_is_422(shared_server: LiveServer) -> None:
    body = assert_error(
        post(shared_server, event(meta={**META, "type": "fatal"})), 422, "invalid_type"
    )
    assert body["field"] == "meta.type"


def test_payload_over_12_kib_is_413(shared_server: LiveServer) -> None:
    big = json.dumps({"blob": "x" * MAX_PAYLOAD_BYTES})
    assert_error(post(shared_server, event(payload=big)), 413, "payload_too_large")
    # Multi-byte characters count as their UTF-8 bytes, not as characters.
    wide = json.dumps({"b": "é" * (MAX_PAYLOAD_BYTES // 2)}, ensure_ascii=False)
    assert len(wide) < MAX_PAYLOAD_BYTES
    assert_error(post(shared_server, event(payload=wide)), 413, "payload_too_large")


def test_payload_at_the_limit_is_accepted(shared_server: LiveServer) -> None:
    filler = "x" * (MAX_PAYLOAD_BYTES - len(json.dumps({"blob": ""})))
    payload = json.dumps({"blob": filler})
    assert len(payload.encode()) == MAX_PAYLOAD_BYTES
    assert post(shared_server, event(payload=payload)).status_code == 202


def test_oversized_body_is_refused_before_it_is_read(shared_server: LiveServer) -> None:
    # Declares 64 MiB but sends only the headers: the answer must come from them alone.
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /v1/events/batch HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {shared_server.ingest_key}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413"), head
    assert json.loads(body)["reason"] == "body_too_large"


def test_oversized_chunked_body_is_413(shared_server: LiveServer) -> None:
    def chunks() -> Any:
        for _ in range(200):
            yield b"x" * 65536

    response = httpx.post(
        shared_server.url + "/v1/events",
        content=chunks(),
        headers=shared_server.headers(),
        timeout=10,
    )
    assert_error(response, 413, "body_too_large")


def test_batch_over_the_event_cap_is_413(shared_server: LiveServer) -> None:
    body = {"events": [event() for _ in range(1001)]}
    assert_error(post(shared_server, body, path="/v1/events/batch"), 413, "too_many_events")


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, []])
def test_batch_without_events_is_422(shared_server: LiveServer, body: Any) -> None:
    assert_error(post(shared_server, body, path="/v1/events/batch"), 422)


def test_no_key_is_401(shared_server: LiveServer) -> None:
    response = httpx.post(shared_server.url + "/v1/events", json=event(), timeout=10)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer iml_live_" + "A" * 43,
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "iml_live_x",
    ],
)
def test_bad_key_is_401(shared_server: LiveServer, authorization: str) -> None:
    response = httpx.post(
        shared_server.url + "/v1/events",
        json=event(),
        headers={"Authorization": authorization},
        timeout=10,
    )
    assert_error(response, 401)


def test_ingest_key_cannot_read(shared_server: LiveServer) -> None:
    for path in ("/v1/checkpoint", "/v1/entries", "/v1/proofs/consistency?first=0"):
        response = httpx.get(shared_server.url + path, headers=shared_server.headers(), timeout=10)
        assert_error(response, 403, "insufficient_scope")


def test_read_key_cannot_ingest(shared_server: LiveServer) -> None:
    assert_error(
        post(shared_server, event(), key=shared_server.read_key), 403, "insufficient_scope"
    )


def test_key_of_another_tenant_is_403(shared_server: LiveServer) -> None:
    response = httpx.get(
        shared_server.url + "/v1/checkpoint?tenant=someone-else",
        headers=shared_server.headers(shared_server.read_key),
        timeout=10,
    )
    assert_error(response, 403, "wrong_tenant")


def test_oversized_idempotency_key_is_400(shared_server: LiveServer) -> None:
    response = post(shared_server, event(), **{"Idempotency-Key": "k" * 256})
    assert_error(response, 400, "invalid_header")


@pytest.mark.parametrize("offset", ["abc", "99999", "1e3"])
def test_bad_client_offset_header_is_400(shared_server: LiveServer, offset: str) -> None:
    assert_error(post(shared_server, event(), **{"X-Client-Offset-Minutes": offset}), 400)


def test_bad_query_parameters_are_400(shared_server: LiveServer) -> None:
    headers = shared_server.headers(shared_server.read_key)
    for path in (
        "/v1/proofs/inclusion",
        "/v1/proofs/inclusion?index=-1",
        "/v1/proofs/inclusion?index=abc",
        "/v1/entries?start=5&end=1",
        "/v1/proofs/inclusion?index=0&size=999999999",
        "/v1/proofs/consistency?first=9&second=1",
    ):
        response = httpx.get(shared_server.url + path, headers=headers, timeout=10)
        assert_error(response, 400)


def test_unknown_checkpoint_size_is_404(shared_server: LiveServer) -> None:
    response = httpx.get(
        shared_server.url + "/v1/checkpoint?size=987654321",
        headers=shared_server.headers(shared_server.read_key),
        timeout=10,
    )
    assert_error(response, 404, "not_found")


def test_unknown_path_and_method_are_json(shared_server: LiveServer) -> None:
    assert_error(httpx.get(shared_server.url + "/nowhere", timeout=10), 404)
    assert_error(httpx.delete(shared_server.url + "/v1/events", timeout=10), 405)


def test_batch_items_are_judged_one_by_one(shared_server: LiveServer) -> None:
    items = [
        event(idempotency_key="batch-ok-1"),
        {"payload": "{}"},
        event(meta={**META, "type": "nope"}),
        event(idempotency_key="batch-ok-2"),
        event(idempotency_key=7),
    ]
    response = post(shared_server, {"events": items}, path="/v1/events/batch")
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [r["ok"] for r in results] == [True, False, False, True, False]
    assert results[1]["field"] == "events[1].meta"
    assert results[2]["reason"] == "invalid_type"
    assert results[4]["field"] == "events[4].idempotency_key"
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert results[3]["index"] == results[0]["index"] + 1


def test_a_batch_that_prefers_return_minimal_is_answered_with_a_summary(
    shared_server: LiveServer,
) -> None:
    earlier = post(shared_server, {"events": [event(idempotency_key="min-dup")]}, path=BATCH)
    assert earlier.json()["results"][0]["duplicate"] is False
    items = [
        event(idempotency_key="min-new-1"),
        event(idempotency_key="min-dup"),  # stored before: a duplicate
        event(meta={**META, "type": "nope"}, idempotency_key="min-bad"),
        event(idempotency_key="min-dup", payload='{"other": 1}'),  # the key, another event
        event(idempotency_key="min-new-2"),
    ]
    response = post(shared_server, {"events": items}, path=BATCH, Prefer="return=minimal")
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "return=minimal"
    body = response.json()
    errors = body.pop("errors")
    assert body == {"ok": True, "accepted": 3, "rejected": 2, "duplicates": [1]}
    assert [(e["index"], e["ok"], e["reason"]) for e in errors] == [
        (2, False, "invalid_type"),
        (3, False, "idempotency_key_reused"),
    ]
    assert errors[0]["field"] == "events[2].meta.type" and errors[1]["message"]
    # Stored for real: a resend in the default form tells each one is there.
    again = post(shared_server, {"events": [items[0], items[4]]}, path=BATCH)
    assert [r["duplicate"] for r in again.json()["results"]] == [True, True]
    assert "preference-applied" not in again.headers


@pytest.mark.parametrize(
    ("prefer", "minimal"),
    [
        ("return=minimal", True),
        ('respond-async, RETURN="Minimal"; x=1', True),
        ("return=representation", False),
        ("wait=5", False),
        ("", False),
    ],
)
def test_the_prefer_header_decides_the_batch_answer(
    shared_server: LiveServer, prefer: str, minimal: bool
) -> None:
    response = httpx.post(
        shared_server.url + BATCH,
        json={"events": [event()]},
        headers={**shared_server.headers(None), **({"Prefer": prefer} if prefer else {})},
        timeout=10,
    )
    assert response.status_code == 200
    assert ("results" not in response.json()) is minimal
    assert ("preference-applied" in response.headers) is minimal


def test_no_stack_trace_leaks(shared_server: LiveServer) -> None:
    assert "Traceback" not in shared_server.log()
