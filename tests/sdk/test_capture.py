"""What a captured request becomes: the seed's schema, redacted, with a trustworthy IP and id."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix

from immutablelog.entry import validate_submission
from immutablelog.sdk.capture import (
    MAX_REQUEST_ID_LENGTH,
    CustomCapture,
    EventBuilder,
    RequestCapture,
    RequestInfo,
    accept_request_id,
    client_ip,
    custom_capture,
    first_query_values,
)
from immutablelog.sdk.events import UUIDS, WireEvent
from immutablelog.sdk.redaction import FILTERED

REQUEST_ID = "req-123"


def capture(**overrides: Any) -> RequestCapture:
    fields: dict[str, Any] = {
        "event_id": UUIDS.take(),  # where the integrations take event ids from
        "timestamp": 1_700_000_000.25,
        "latency_seconds": 0.0123,
        "method": "POST",
        "path": "/login",
        "query_string": "",
        "status_code": 200,
        "exc_type": None,
        "exc_message": None,
        "remote_addr": "10.0.0.7",
        "forwarded_for": None,
        "user_agent": "curl/8",
        "event_name": None,
        "actor": None,
        "request_id": REQUEST_ID,
        "body": None,
        "content_type": None,
        "headers": None,
    }
    fields.update(overrides)
    return RequestCapture(**fields)


def build(cap: RequestCapture | CustomCapture, **builder_args: Any) -> tuple[dict[str, Any], Any]:
    builder = EventBuilder(service_name="svc", env="staging", **builder_args)
    event = builder.build(cap)
    return json.loads(event.payload), event


def test_success_event_has_the_seed_schema() -> None:
    payload, event = build(capture())
    assert list(payload) == [
        "id",
        "kind",
        "message",
        "timestamp",
        "context",
        "request",
        "metrics",
        "severity",
        "success",
    ]
    assert payload["kind"] == "success" and payload["severity"] == "low"
    assert payload["message"] == "POST /login completed successfully"
    assert payload["timestamp"] == "2023-11-14T22:13:20.250000+00:00"
    assert payload["context"] == {"ip": "10.0.0.7", "user_agent": "curl/8"}
    assert payload["request"] == {
        "request_id": REQUEST_ID,
        "method": "POST",
        "path": "/login",
        "query_params": None,
    }
    assert payload["metrics"] == {"latency_ms": 12, "status_code": 200}
    assert payload["success"] == {"status_code": 200, "result": "ok"}
    assert event.meta == {
        "type": "success",
        "event_name": "http.POST./login",
        "service": "svc",
        "request_id": REQUEST_ID,
        "env": "staging",
    }


def test_the_event_id_is_the_idempotency_key_and_a_uuid7() -> None:
    payload, event = build(capture())
    assert payload["id"] == event.idempotency_key
    assert uuid.UUID(event.idempotency_key).version == 7
    assert event.idempotency_key != REQUEST_ID


def test_info_event_for_redirects() -> None:
    payload, event = build(capture(status_code=302, method="GET"))
    assert payload["info"] == {"status_code": 302, "action": "get"}
    assert event.meta["type"] == "info"


def test_error_event_with_exception() -> None:
    payload, event = build(
        capture(status_code=None, exc_type="ZeroDivisionError", exc_message="division by zero")
    )
    assert payload["message"] == "POST /login failed with exception: ZeroDivisionError"
    assert payload["metrics"]["status_code"] == 500
    assert payload["error"] == {
        "status_code": 500,
        "retryable": True,
        "exception": "ZeroDivisionError",
        "exception_message": "division by zero",
    }
    assert payload["severity"] == "high" and event.meta["type"] == "error"


def test_error_body_is_redacted_and_hashed_as_stored() -> None:
    body = b'{"username": "bob", "password": "hunter2"}'
    payload, _ = build(capture(status_code=401, body=body, content_type="application/json"))
    error = payload["error"]
    assert json.loads(error["request_body"]) == {"username": "bob", "password": FILTERED}
    assert "hunter2" not in json.dumps(payload)
    assert error["request_body_hash"] == hashlib.sha256(error["request_body"].encode()).hexdigest()


def test_query_parameters_are_redacted_first_value_per_key() -> None:
    payload, _ = build(capture(query_string="token=abc&page=2&page=3&q=caf%C3%A9"))
    assert payload["request"]["query_params"] == {"token": FILTERED, "page": "2", "q": "café"}


def test_raw_utf8_in_the_wsgi_query_string_decodes_like_flask() -> None:
    wsgi_text = "q=café".encode().decode("latin-1")  # how a WSGI server hands it over
    assert first_query_values(wsgi_text) == {"q": "café"}


def test_custom_event_name_and_actor() -> None:
    payload, event = build(capture(event_name="auth.login", actor={"id": 7, "session_token": "t"}))
    assert event.meta["event_name"] == "auth.login"
    assert payload["context"]["actor"] == {"id": 7, "session_token": FILTERED}


def test_headers_only_from_the_allowlist_and_still_redacted() -> None:
    payload, _ = build(capture(headers=(("X-Tenant", "acme"), ("Authorization", "Bearer x"))))
    assert payload["request"]["headers"] == {"X-Tenant": "acme", "Authorization": FILTERED}


def test_custom_scrubber_runs_last() -> None:
    def drop_path(payload: dict[str, Any]) -> dict[str, Any]:
        payload["request"]["path"] = "/redacted"
        return payload

    payload, _ = build(capture(), scrubber=drop_path)
    assert payload["request"]["path"] == "/redacted"


def test_a_failing_scrubber_strips_free_form_fields_instead_of_leaking() -> None:
    def broken(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug")

    payload, _ = build(
        capture(
            status_code=400,
            query_string="email=a@b.c",
            body=b"email=a@b.c",
            content_type="application/x-www-form-urlencoded",
        ),
        scrubber=broken,
    )
    assert "a@b.c" not in json.dumps(payload)
    assert payload["request"]["query_params"] == FILTERED


def test_an_unbuildable_capture_still_yields_a_marked_event() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    builder = EventBuilder(service_name="svc", env="e")
    event = builder.build(capture(actor=Unprintable()))
    payload = json.loads(event.payload)
    assert payload["message"].startswith("event could not be built")
    assert event.meta["event_name"] == "http.POST./login"


def test_custom_event_inside_and_outside_a_request() -> None:
    outside = CustomCapture(
        event_id=str(uuid.uuid4()),
        timestamp=time.time(),
        event_name="invoice.deleted",
        kind="warning",
        message=None,
        data={"invoice": 42, "api_key": "k"},
        actor="alice",
        request=None,
    )
    payload, event = build(outside)
    assert payload["data"] == {"invoice": 42, "api_key": FILTERED}
    assert payload["message"] == "invoice.deleted" and payload["severity"] == "medium"
    assert payload["context"] == {"actor": "alice"}
    assert event.meta["request_id"] == outside.event_id
    inside = outside._replace(
        event_id=str(uuid.uuid4()),
        request=RequestInfo("r-1", "DELETE", "/invoices/42", "10.0.0.1", None, "ua"),
    )
    payload, event = build(inside)
    assert payload["request"] == {"request_id": "r-1", "method": "DELETE", "path": "/invoices/42"}
    assert payload["context"]["ip"] == "10.0.0.1"
    assert event.meta["request_id"] == "r-1"


# -- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [
        "abc",
        str(uuid.uuid4()),
        "01HV6ZQ3J6Y8N7X2C1M0R4B5T9",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"[:40].replace(";", "."),
        "host:1234/5",
        "a" * MAX_REQUEST_ID_LENGTH,
    ],
)
def test_safe_request_ids_are_kept(candidate: str) -> None:
    assert accept_request_id(candidate) == candidate


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "a" * (MAX_REQUEST_ID_LENGTH + 1),
        "has space",
        'quote"d',
        "new\nline",
        "carriage\r\nX-Injected: 1",
        "<script>",
        "ünïcode",
    ],
)
def test_unsafe_request_ids_are_refused(candidate: str | None) -> None:
    assert accept_request_id(candidate) is None


# -- client ip --------------------------------------------------------------------------------


def _proxyfix_remote_addr(remote: str, xff: str | None, trusted: int) -> str:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["addr"] = environ.get("REMOTE_ADDR")
        return []

    environ: dict[str, Any] = {"REMOTE_ADDR": remote}
    if xff is not None:
        environ["HTTP_X_FORWARDED_FOR"] = xff
    ProxyFix(app, x_for=trusted, x_proto=0, x_host=0)(environ, lambda *a: None)
    return str(seen["addr"])


@pytest.mark.parametrize("trusted", [1, 2, 3])
@pytest.mark.parametrize(
    "xff",
    [None, "", "1.1.1.1", "6.6.6.6, 1.1.1.1", "6.6.6.6,1.1.1.1, 2.2.2.2", " 3.3.3.3 ,4.4.4.4"],
)
def test_client_ip_follows_proxyfix(trusted: int, xff: str | None) -> None:
    assert client_ip("10.0.0.1", xff, trusted) == _proxyfix_remote_addr("10.0.0.1", xff, trusted)


@given(
    xff=st.lists(st.ip_addresses().map(str), max_size=5).map(", ".join),
    trusted=st.integers(min_value=0, max_value=4),
)
def test_client_ip_matches_proxyfix_for_any_chain(xff: str, trusted: int) -> None:
    assert client_ip("10.9.9.9", xff, trusted) == _proxyfix_remote_addr("10.9.9.9", xff, trusted)


def test_forwarded_for_is_ignored_by_default() -> None:
    assert client_ip("10.0.0.1", "6.6.6.6", 0) == "10.0.0.1"
    assert client_ip(None, "6.6.6.6", 0) == "unknown"


# -- the fast path writes exactly what the general path writes --------------------------------

_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=_texts.map(lambda t: "/" + t),
    query=st.sampled_from(["", "a=1", "token=x&b=%C3%A9", "q"]),
    status=st.sampled_from([None, 200, 201, 302, 404, 500]),
    exc=st.sampled_from([None, ("KeyError", "'k'"), ("ValueError", 'bad "quote" é')]),
    actor=st.sampled_from([None, "alice", {"id": 1, "password": "p"}]),
    user_agent=st.one_of(st.none(), _texts),
    event_name=st.one_of(st.none(), _texts),
    headers=st.sampled_from([None, (("X-Tenant", "t"), ("Cookie", "c"))]),
    body=st.sampled_from([None, b'{"password": "p", "n": 1}']),
    latency=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
)
def test_fast_path_is_identical_to_compact_json_dumps_of_the_dict(
    method: str,
    path: str,
    query: str,
    status: int | None,
    exc: tuple[str, str] | None,
    actor: Any,
    user_agent: str | None,
    event_name: str | None,
    headers: tuple[tuple[str, str], ...] | None,
    body: bytes | None,
    latency: float | None,
) -> None:
    cap = capture(
        method=method,
        path=path,
        query_string=query,
        status_code=status,
        exc_type=exc[0] if exc else None,
        exc_message=exc[1] if exc else None,
        actor=actor,
        user_agent=user_agent,
        event_name=event_name,
        headers=headers,
        body=body,
        content_type="application/json",
        latency_seconds=latency,
    )
    builder = EventBuilder(service_name="svc é", env="prod")
    fast = builder.build(cap)
    general = EventBuilder(service_name="svc é", env="prod", scrubber=lambda p: p).build(cap)
    assert fast.payload == general.payload
    assert fast.meta == general.meta
    # Compact JSON, as the ledger writes a payload it receives as a document.
    document = json.loads(fast.payload)
    assert fast.payload == json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    # The batch item (the payload as a document or as a string) makes the ledger store exactly
    # that text, with the same meta and key as the item the general path writes.
    for event in (fast, general):
        item = json.loads(event.encoded)
        stored = validate_submission(item["payload"], item["meta"], item["idempotency_key"])
        assert (stored.payload, stored.idempotency_key) == (fast.payload, fast.idempotency_key)
        assert dict(stored.meta) == {**fast.meta}
        assert WireEvent.decode(event.encoded) == fast
    again = builder.build(cap)  # the route's parts from the builder's cache this time
    assert (again.payload, again.meta, again.encoded) == (fast.payload, fast.meta, fast.encoded)


def test_routes_past_the_cache_size_build_the_same_events() -> None:
    from immutablelog.sdk.capture import ROUTE_CACHE_SIZE

    builder = EventBuilder(service_name="svc", env="prod")
    general = EventBuilder(service_name="svc", env="prod", scrubber=lambda p: p)
    for n in range(ROUTE_CACHE_SIZE + 10):
        cap = capture(path=f"/users/{n % (ROUTE_CACHE_SIZE + 5)}", status_code=200 + n % 3)
        assert builder.build(cap).payload == general.build(cap).payload
    assert len(builder._routes) <= ROUTE_CACHE_SIZE


def test_user_agents_past_the_cache_size_build_the_same_events() -> None:
    from immutablelog.sdk.capture import AGENT_CACHE_SIZE

    builder = EventBuilder(service_name="svc", env="prod")
    general = EventBuilder(service_name="svc", env="prod", scrubber=lambda p: p)
    for n in range(AGENT_CACHE_SIZE + 10):
        cap = capture(user_agent=f'agent "{n % (AGENT_CACHE_SIZE + 5)}" \\ é\t')
        event = builder.build(cap)
        assert event.payload == general.build(cap).payload
        assert json.loads(event.payload)["context"]["user_agent"] == cap.user_agent
    assert len(builder._agents) <= AGENT_CACHE_SIZE


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_timestamps_are_formatted_like_datetime(timestamp: float) -> None:
    from datetime import UTC, datetime

    from immutablelog.sdk.capture import _iso

    assert _iso(timestamp) == datetime.fromtimestamp(timestamp, UTC).isoformat()
    whole = float(int(timestamp))
    assert _iso(whole) == datetime.fromtimestamp(whole, UTC).isoformat()


def test_a_plain_tuple_builds_the_same_event_as_the_named_capture() -> None:
    builder = EventBuilder(service_name="svc", env="prod")
    cap = capture(query_string="a=1", status_code=404, body=b'{"password": "p"}')
    assert builder.build(tuple(cap)) == builder.build(cap)


def test_a_malformed_tuple_still_yields_an_event() -> None:
    event = EventBuilder(service_name="svc", env="prod").build(("too", "short"))
    assert event.meta["event_name"] == "capture.malformed" and event.meta["type"] == "error"
    assert json.loads(event.payload)["id"] == event.idempotency_key


@pytest.mark.parametrize("path", ["/a\x00b", "/" + "x" * 400, "/é" * 300])
@pytest.mark.parametrize("event_name", [None, "n\x00" * 200])
@pytest.mark.parametrize("scrubber", [None, lambda payload: payload])
def test_an_event_named_after_any_path_is_one_the_ledger_accepts(
    path: str, event_name: str | None, scrubber: Any
) -> None:
    """The default name ``http.GET.<path>`` of a long path, or of one with NUL in it, would
    break the ledger's meta rules (at most 255 characters, no NUL): the event would be
    refused and lost. Each path of the builder stores it, its name cut and NUL replaced."""
    builder = EventBuilder(service_name="svc", env="prod", scrubber=scrubber)
    for event in (
        builder.build(capture(path=path, event_name=event_name)),
        builder.build(capture(path=path, event_name=event_name, exc_type="KeyError")),
        builder.build(
            custom_capture(
                event_name or path,
                "info",
                message=None,
                data={},
                actor=None,
                request=None,
                request_id=event_name,
            )
        ),
    ):
        item = json.loads(event.encoded)
        stored = validate_submission(item["payload"], item["meta"], item["idempotency_key"])
        name = stored.meta["event_name"]
        assert len(name) <= 255 and "\x00" not in name
        assert name.startswith((event_name or "")[:1].replace("\x00", "\ufffd"))
        assert len(stored.meta["request_id"]) <= 255
        if len(f"http.POST.{path}") > 255 and event_name is None:
            assert name.endswith("\u2026") and len(name) == 255
