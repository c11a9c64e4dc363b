"""A hostile client against a real server: every parameter, body and connection trick gets the
exact 4xx and the JSON error body, never a 500, and the server log holds no traceback."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import HTTP, LiveServer

METRICS_TOKEN = "metrics-secret-7f3a"
READ_TIMEOUT = 0.5
META = {"type": "info", "event_name": "user.login", "service": "web", "env": "test"}

NON_INTEGERS = [
    "²",  # superscript two: str.isdigit() says yes
    "٣",  # Arabic-Indic three
    "５",  # fullwidth five
    "-1",
    "+1",
    " 1",
    "1.5",
    "1e3",
    "0x10",
    "",
    "9223372036854775808",  # 2^63
    "4611686018427387905",  # 2^62 + 1, past the declared maximum
    "123456789012345678901234567890",
]

#: (path, the parameter under test, the other parameters it needs)
INTEGER_PARAMETERS = [
    ("/v1/proofs/inclusion", "index", {}),
    ("/v1/proofs/inclusion", "size", {"index": "0"}),
    ("/v1/proofs/consistency", "first", {}),
    ("/v1/proofs/consistency", "second", {"first": "1"}),
    ("/v1/entries", "start", {}),
    ("/v1/entries", "end", {}),
    ("/v1/checkpoint", "size", {}),
    ("/v1/verify", "from", {}),
    ("/v1/verify", "to", {}),
    ("/v1/events", "limit", {}),
    ("/v1/events", "after", {"order": "asc"}),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("hostile") / "data",
        extra_env={
            "IMMUTABLELOG_METRICS_TOKEN": METRICS_TOKEN,
            "IMMUTABLELOG_READ_TIMEOUT": str(READ_TIMEOUT),
        },
    )
    live.start()
    for n in range(3):
        assert post_event(live, {"n": n}).status_code == 202
    try:
        yield live
        assert "Traceback" not in live.log()
        assert "internal_error" not in live.log()
    finally:
        live.kill()


def post_event(server: LiveServer, payload: Any, **headers: str) -> httpx.Response:
    return post(server, {"payload": json.dumps(payload), "meta": META}, **headers)


def post(server: LiveServer, body: Any, path: str = "/v1/events", **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTP.post(
        server.url + path,
        content=content,
        headers=server.headers(None, **{"Content-Type": "application/json", **headers}),
    )


def get(server: LiveServer, path: str, query: str, **headers: str) -> httpx.Response:
    """GET with a raw query string, sent exactly as written."""
    return HTTP.get(
        f"{server.url}{path}?{query}", headers=server.headers(server.read_key, **headers)
    )


def assert_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["ok"] is False and body["reason"] == reason, body
    assert body["message"]
    return body


def encode(params: dict[str, str]) -> str:
    return str(httpx.QueryParams(params))


# --- integers ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", NON_INTEGERS)
@pytest.mark.parametrize(("path", "name", "others"), INTEGER_PARAMETERS)
def test_an_integer_parameter_takes_only_ascii_digits_in_range(
    server: LiveServer, path: str, name: str, others: dict[str, str], value: str
) -> None:
    body = assert_error(
        get(server, path, encode({**others, name: value})), 400, "invalid_parameter"
    )
    assert name in body["message"]


@pytest.mark.parametrize(("path", "name", "others"), INTEGER_PARAMETERS)
def test_a_repeated_parameter_is_refused(
    server: LiveServer, path: str, name: str, others: dict[str, str]
) -> None:
    query = encode(others) + ("&" if others else "") + f"{name}=1&{name}=2"
    body = assert_error(get(server, path, query), 400, "repeated_parameter")
    assert name in body["message"]


def test_binary_entries_refuse_a_start_past_2_63(server: LiveServer) -> None:
    response = get(
        server, "/v1/entries", "start=9223372036854775808", Accept="application/octet-stream"
    )
    assert_error(response, 400, "invalid_parameter")


def test_the_largest_declared_position_is_answered_not_crashed(server: LiveServer) -> None:
    top = str(2**62)
    entries = get(server, "/v1/entries", f"start={top}")
    assert entries.status_code == 200 and entries.json()["entries"] == []
    binary = get(server, "/v1/entries", f"start={top}", Accept="application/octet-stream")
    assert binary.status_code == 200 and binary.content == b""
    assert_error(get(server, "/v1/checkpoint", f"size={top}"), 404, "not_found")
    assert get(server, "/v1/proofs/inclusion", f"index={top}").status_code == 400
    assert get(server, "/v1/proofs/consistency", f"first=1&second={top}").status_code == 400
    after = get(server, "/v1/events", f"order=asc&after={top}")
    assert after.status_code == 200 and after.json()["events"] == []


def test_a_valid_integer_with_leading_zeros_is_read(server: LiveServer) -> None:
    response = get(server, "/v1/proofs/inclusion", "index=0001&size=003")
    assert response.status_code == 200, response.text
    assert response.json()["index"] == 1 and response.json()["tree_size"] == 3


# --- cursors ----------------------------------------------------------------------------


def _cursor_parts(server: LiveServer) -> dict[str, Any]:
    page = get(server, "/v1/events", "limit=1").json()
    cursor = page["next_cursor"]
    parts: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return parts


def _cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", [2**63, 2**62 + 1, -1, True, 1.5, "3", None])
def test_a_cursor_position_must_be_an_integer_in_range(server: LiveServer, position: Any) -> None:
    parts = _cursor_parts(server)
    forged = _cursor({**parts, "i": position})
    assert_error(get(server, "/v1/events", f"limit=1&cursor={forged}"), 400, "invalid_cursor")


def test_a_genuine_cursor_still_pages(server: LiveServer) -> None:
    parts = _cursor_parts(server)
    page = get(server, "/v1/events", f"limit=1&cursor={_cursor(parts)}")
    assert page.status_code == 200
    assert page.json()["events"][0]["index"] == parts["i"] - 1


@pytest.mark.parametrize(
    "cursor", ["", "!!!", _cursor([1, 2]), _cursor("x"), base64.urlsafe_b64encode(b"\xff").decode()]
)
def test_a_cursor_that_is_not_ours_is_refused(server: LiveServer, cursor: str) -> None:
    assert_error(get(server, "/v1/events", encode({"cursor": cursor})), 400, "invalid_cursor")


# --- text and times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["q", "service", "env", "event_name", "request_id", "actor", "order", "cursor"]
)
def test_nul_in_a_text_parameter_is_400(server: LiveServer, name: str) -> None:
    body = assert_error(get(server, "/v1/events", f"{name}=a%00b"), 400, "invalid_parameter")
    assert "NUL" in body["message"]


@pytest.mark.parametrize(
    "text", ['"', '""', "*", "a OR b", "NEAR(a b)", "'", "\\", "\x01", "^a", "-a", "🦆", "a:b"]
)
def test_search_syntax_in_q_is_just_text(server: LiveServer, text: str) -> None:
    response = get(server, "/v1/events", encode({"q": text}))
    assert response.status_code == 200, response.text
    assert response.json()["events"] == []


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "2026-01-01T00:00:00",  # no zone
        "2026-13-01T00:00:00Z",
        "２０２６-01-01T00:00:00Z",
        "yesterday",
        "",
    ],
)
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_time_that_is_not_a_representable_rfc3339_time_is_400(
    server: LiveServer, name: str, moment: str
) -> None:
    body = assert_error(get(server, "/v1/events", encode({name: moment})), 400, "invalid_parameter")
    assert name in body["message"]


def test_times_before_year_1000_compare_as_times(server: LiveServer) -> None:
    since = get(server, "/v1/events", encode({"since": "0999-01-01T00:00:00Z"}))
    until = get(server, "/v1/events", encode({"until": "0999-01-01T00:00:00Z"}))
    assert len(since.json()["events"]) >= 3
    assert until.json()["events"] == []


def test_a_repeated_tenant_parameter_is_refused(server: LiveServer) -> None:
    response = get(server, "/v1/checkpoint", "tenant=default&tenant=other")
    assert_error(response, 400, "repeated_parameter")


# --- JSON: nesting, numbers, duplicate keys ---------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_payload_nested_64_deep_is_stored_and_65_is_refused(server: LiveServer) -> None:
    assert post(server, {"payload": nested(64), "meta": META}).status_code == 202
    body = assert_error(post(server, {"payload": nested(65), "meta": META}), 422, "json_too_deep")
    assert body["field"] == "payload" and "64" in body["message"]


def test_a_payload_string_of_1025_nested_arrays_is_422(server: LiveServer) -> None:
    body = assert_error(post(server, {"payload": nested(1025), "meta": META}), 422, "json_too_deep")
    assert body["field"] == "payload"


def test_a_payload_object_nested_1000_levels_is_refused(server: LiveServer) -> None:
    deep = "{}"
    for _ in range(999):
        deep = '{"a":' + deep + "}"
    body = '{"payload": ' + deep + ', "meta": ' + json.dumps(META) + "}"
    assert_error(post(server, body.encode()), 400, "json_too_deep")


def test_a_payload_object_at_the_limit_is_stored(server: LiveServer) -> None:
    deep: Any = {}
    for _ in range(63):
        deep = {"a": deep}
    assert post(server, {"payload": deep, "meta": META}).status_code == 202


def test_a_batch_body_nested_1024_deep_is_400(server: LiveServer) -> None:
    body = '{"events": ' + nested(1023) + "}"
    assert_error(post(server, body.encode(), "/v1/events/batch"), 400, "json_too_deep")


@pytest.mark.parametrize(
    "payload",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        "NaN",
        '{"a": 1e400}',
        '{"a": -1e400}',
        '{"a": 1e-400}',
        '{"a": 1.00000000000000000001}',
    ],
)
def test_a_payload_number_that_is_not_a_double_is_422(server: LiveServer, payload: str) -> None:
    body = assert_error(post(server, {"payload": payload, "meta": META}), 422, "invalid_number")
    assert body["field"] == "payload"


def test_a_payload_object_number_that_is_not_a_double_is_refused_not_rewritten(
    server: LiveServer,
) -> None:
    body = '{"payload": {"a": 1e400}, "meta": ' + json.dumps(META) + "}"
    assert_error(post(server, body.encode()), 400, "invalid_number")


@pytest.mark.parametrize(
    "payload",
    [
        '{"n": 0.1}',
        '{"n": 1.5e3}',
        '{"n": -0.0}',
        '{"n": 123456789012345678901234567890}',
        '{"n": 5e-324}',
    ],
)
def test_exact_numbers_are_stored_byte_for_byte(server: LiveServer, payload: str) -> None:
    accepted = post(server, {"payload": payload, "meta": META})
    assert accepted.status_code == 202, accepted.text
    event = get(server, f"/v1/events/{accepted.json()['tx_id']}", "").json()["event"]
    assert event["payload"] == payload


def test_a_big_integer_in_a_payload_object_is_kept_exactly(server: LiveServer) -> None:
    body = '{"payload": {"n": 123456789012345678901234567890}, "meta": ' + json.dumps(META) + "}"
    accepted = post(server, body.encode())
    assert accepted.status_code == 202, accepted.text
    event = get(server, f"/v1/events/{accepted.json()['tx_id']}", "").json()["event"]
    assert event["payload"] == '{"n":123456789012345678901234567890}'


def test_duplicate_keys_in_a_payload_are_422(server: LiveServer) -> None:
    payload = '{"amount": 1, "nested": {"to": "a", "to": "b"}}'
    body = assert_error(post(server, {"payload": payload, "meta": META}), 422, "duplicate_key")
    assert "'to'" in body["message"] and body["field"] == "payload"


@pytest.mark.parametrize(
    "body",
    [
        '{"payload": "{}", "payload": "{}", "meta": {"type": "info", "event_name": "e", '
        '"service": "s"}}',
        '{"payload": "{}", "meta": {"type": "info", "type": "error", "event_name": "e", '
        '"service": "s"}}',
    ],
)
def test_duplicate_keys_in_the_body_are_400(server: LiveServer, body: str) -> None:
    assert_error(post(server, body.encode()), 400, "duplicate_key")


def test_duplicate_keys_in_a_batch_are_400(server: LiveServer) -> None:
    body = '{"events": [], "events": [{"payload": "{}", "meta": {}}]}'
    assert_error(post(server, body.encode(), "/v1/events/batch"), 400, "duplicate_key")


def test_nan_in_the_body_is_400(server: LiveServer) -> None:
    body = '{"payload": "{}", "meta": {"type": "info", "event_name": "e", "service": "s", ' + (
        '"score": NaN}}'
    )
    assert_error(post(server, body.encode()), 400, "invalid_number")


# --- headers ----------------------------------------------------------------------------


def test_an_empty_idempotency_key_is_400(server: LiveServer) -> None:
    response = post_event(server, {}, **{"Idempotency-Key": ""})
    body = assert_error(response, 400, "invalid_header")
    assert "Idempotency-Key" in body["message"]


@pytest.mark.parametrize("value", ["٣", "²", "1.5", "abc", "99999", "-1441"])
def test_a_client_offset_must_be_ascii_minutes(server: LiveServer, value: str) -> None:
    headers: dict[str, str | bytes] = {
        **server.headers(),
        "Content-Type": "application/json",
        "X-Client-Offset-Minutes": value.encode(),  # sent as UTF-8 bytes
    }
    body = {"payload": "{}", "meta": META}
    response = HTTP.post(server.url + "/v1/events", json=body, headers=headers)  # type: ignore[arg-type]
    assert_error(response, 400, "invalid_header")


def test_a_signed_client_offset_is_kept(server: LiveServer) -> None:
    response = post_event(server, {}, **{"X-Client-Offset-Minutes": "+330"})
    assert response.status_code == 202, response.text
    event = get(server, f"/v1/events/{response.json()['tx_id']}", "").json()["event"]
    assert event["client_offset_minutes"] == 330


# --- the connection ---------------------------------------------------------------------


def raw_exchange(server: LiveServer, request: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_raw(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\x00b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
)
def test_a_request_the_parser_cannot_read_gets_the_json_error(
    server: LiveServer, request_bytes: bytes
) -> None:
    status, headers, body = parse_raw(raw_exchange(server, request_bytes))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body["ok"] is False and body["reason"] == "bad_request"


def test_headers_trickled_slower_than_the_read_timeout_get_408(server: LiveServer) -> None:
    answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    status, headers, body = parse_raw(answer)
    assert (status, body["reason"]) == (408, "request_timeout")
    assert headers["connection"] == "close"


def test_an_idle_connection_is_closed(server: LiveServer) -> None:
    status, _, body = parse_raw(raw_exchange(server, b""))
    assert (status, body["reason"]) == (408, "request_timeout")


def partial_post(server: LiveServer) -> bytes:
    """An ingest request whose body stops after its first ten of 100 declared bytes."""
    return (
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {server.ingest_key}\r\nContent-Length: 100\r\n\r\n"
        '{"payload"'
    ).encode()


def test_a_body_that_never_arrives_gets_408(server: LiveServer) -> None:
    status, _, body = parse_raw(raw_exchange(server, partial_post(server)))
    assert (status, body["reason"]) == (408, "request_timeout")


def test_a_client_that_disconnects_mid_body_is_one_info_line(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(partial_post(server))
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while "client disconnected" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in server.log().splitlines() if "client disconnected" in line]
    assert lines and all(" INFO " in line for line in lines), lines
    assert "Traceback" not in server.log()


def test_keep_alive_requests_still_work_under_the_timeout(server: LiveServer) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.get(server.url + "/healthz").status_code == 200
            time.sleep(READ_TIMEOUT / 2)


# --- /metrics ---------------------------------------------------------------------------


def test_metrics_show_tenant_names_only_with_the_token(server: LiveServer) -> None:
    public = HTTP.get(server.url + "/metrics").text
    assert "immutablelog_events_ingested_total" in public
    assert "immutablelog_tenant_" not in public and 'tenant="default"' not in public
    wrong = HTTP.get(server.url + "/metrics", headers={"Authorization": "Bearer nope"}).text
    assert 'tenant="default"' not in wrong
    private = HTTP.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    ).text
    assert 'immutablelog_tenant_events_ingested_total{tenant="default"}' in private
    assert 'immutablelog_tenant_tree_size{tenant="default"}' in private


def test_without_a_configured_token_no_caller_sees_tenant_series(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data")
    live.start()
    try:
        assert post_event(live, {}).status_code == 202
        text = HTTP.get(live.url + "/metrics", headers={"Authorization": "Bearer x"}).text
        assert "immutablelog_events_ingested_total 1.0" in text
        assert 'tenant="default"' not in text
    finally:
        live.kill()


# --- NUL on PostgreSQL, whose text columns cannot hold it --------------------------------


def test_nul_never_reaches_postgresql(tmp_path: Path, postgres_url: str) -> None:
    live = LiveServer(tmp_path / "data", database_url=postgres_url)
    live.start()
    try:
        stored = post(live, {"payload": '{"note": "a\\u0000b"}', "meta": META})
        assert stored.status_code == 202, stored.text
        for field in ("service", "event_name", "env", "request_id", "actor"):
            meta = {**META, field: "a\x00b"}
            refused = assert_error(
                post(live, {"payload": "{}", "meta": meta}), 422, "invalid_field"
            )
            assert refused["field"] == f"meta.{field}"
        batch = post(
            live,
            {"events": [{"payload": "{}", "meta": META, "idempotency_key": "k\x00"}]},
            "/v1/events/batch",
        )
        assert batch.json()["results"][0]["reason"] == "invalid_field"
        assert_error(get(live, "/v1/events/a%00b", ""), 404, "not_found")
        assert get(live, "/v1/events", encode({"q": "note"})).status_code == 200
        assert len(live.entries()) == 1
        assert "Traceback" not in live.log()
    finally:
        live.kill()
