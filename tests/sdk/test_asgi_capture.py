"""What the ASGI middleware keeps of an exchange (its raw facts) becomes the same event the
shared builder makes of a request capture: header decoding, redaction and the client address
are worked out once the response is sent."""

from __future__ import annotations

import json
from typing import Any

from immutablelog.asgi import _Finisher
from immutablelog.sdk.capture import EventBuilder, RequestCapture
from immutablelog.sdk.events import UUIDS
from immutablelog.sdk.redaction import Redactor


def builder() -> EventBuilder:
    return EventBuilder(
        service_name="svc", env="test", redactor=Redactor(("tenant_secret",)), trusted_proxies=1
    )


def raw(**overrides: Any) -> tuple[Any, ...]:
    fields: dict[str, Any] = {
        "event_id": UUIDS.take(),
        "timestamp": 1_700_000_000.5,
        "latency": 0.004,
        "method": "POST",
        "path": "/orders",
        "query": b"tenant_secret=x&page=2",
        "status": 422,
        "exc_type": None,
        "exc_message": None,
        "client": ("10.0.0.5", 51000),
        "headers": (
            (b"host", b"shop"),
            (b"User-Agent", b"probe/1.0"),  # a server that keeps the case it was sent in
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-for", b"203.0.113.9"),  # repeated: joined, as RFC 9110 reads it
            (b"content-type", b"application/json"),
            (b"x-tenant", b"acme"),
            (b"authorization", b"Bearer s3cret"),
        ),
        "event_name": None,
        "actor": {"id": 7, "password": "hunter2"},
        "request_id": "req-1",
        "body": b'{"password": "pw", "qty": 3}',
    }
    fields.update(overrides)
    return tuple(fields.values())


def test_a_raw_capture_builds_what_the_request_capture_builds() -> None:
    finish = _Finisher(builder(), ["X-Tenant", "Authorization"])
    capture = raw()
    expected = RequestCapture(
        event_id=capture[0],
        timestamp=1_700_000_000.5,
        latency_seconds=0.004,
        method="POST",
        path="/orders",
        query_string="tenant_secret=x&page=2",
        status_code=422,
        exc_type=None,
        exc_message=None,
        remote_addr="10.0.0.5",
        forwarded_for="6.6.6.6, 203.0.113.9",
        user_agent="probe/1.0",
        event_name=None,
        actor={"id": 7, "password": "hunter2"},
        request_id="req-1",
        body=b'{"password": "pw", "qty": 3}',
        content_type="application/json",
        headers=(("X-Tenant", "acme"), ("Authorization", "Bearer s3cret")),
    )
    event = finish(capture)
    assert event == builder().build(expected)
    payload = json.loads(event.payload)
    assert payload["request"]["headers"] == {"X-Tenant": "acme", "Authorization": "[Filtered]"}
    assert payload["request"]["query_params"] == {"tenant_secret": "[Filtered]", "page": "2"}
    assert payload["context"] == {
        "ip": "203.0.113.9",
        "user_agent": "probe/1.0",
        "actor": {"id": 7, "password": "[Filtered]"},
    }
    assert payload["error"]["request_body"] == '{"password": "[Filtered]", "qty": 3}'
    for secret in ("s3cret", "hunter2", '"pw"', "tenant_secret=x"):
        assert secret not in event.payload


def test_without_headers_to_capture_none_are_stored() -> None:
    event = _Finisher(builder(), ())(raw(body=None, status=200))
    payload = json.loads(event.payload)
    assert "headers" not in payload["request"]
    assert payload["context"]["ip"] == "203.0.113.9"


def test_a_raw_capture_that_cannot_be_read_still_yields_an_event() -> None:
    broken = raw(headers=None)  # not iterable: the worker's decoding fails
    event = _Finisher(builder(), ["X-Tenant"])(broken)
    assert event.meta["type"] == "error" and event.meta["request_id"] == "req-1"
    assert json.loads(event.payload)["message"] == "event could not be built: TypeError"
