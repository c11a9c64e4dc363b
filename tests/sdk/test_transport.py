"""The HTTP transport against a real (in-test) peer: answers, faults, headers, keep-alive."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from immutablelog._uuid import uuid7
from immutablelog.retry_policy import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from immutablelog.sdk.events import WireEvent
from immutablelog.sdk.transport import (
    HttpTransport,
    ItemResult,
    RejectedBatchError,
    RetryableDeliveryError,
)
from tests.live import LiveServer
from tests.sdk.fake_ledger import FakeLedger, Fault


def event(name: str = "thing.happened") -> WireEvent:
    key = uuid7()
    meta = {"type": "info", "event_name": name, "service": "s", "request_id": key, "env": "test"}
    return WireEvent(key, json.dumps({"id": key, "kind": "info"}), meta)


@pytest.fixture
def transport(sink: FakeLedger):  # type: ignore[no-untyped-def]
    client = HttpTransport(sink.url, "secret-key", connect_timeout=1.0, read_timeout=5.0)
    yield client
    client.close()


def test_batch_is_posted_with_the_seed_headers(sink: FakeLedger, transport: HttpTransport) -> None:
    events = [event(), event()]
    results = transport.send_batch(events)
    assert [r.accepted for r in results] == [True, True]
    path, headers, body = sink.requests[0]
    assert path == "/v1/events/batch"
    assert headers["Authorization"] == "Bearer secret-key"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Client-TZ"] == "UTC" and headers["X-Client-Offset-Minutes"] == "0"
    # The fake answers one result per item, as a server that predates return=minimal does.
    assert headers["Prefer"] == "return=minimal"
    assert json.loads(body) == {"events": [e.item() for e in events]}
    assert sink.stored_keys() == [e.idempotency_key for e in events]


def test_redelivery_is_reported_as_duplicate(transport: HttpTransport) -> None:
    e = event()
    transport.send_batch([e])
    (again,) = transport.send_batch([e])
    assert again.accepted and again.duplicate


def test_per_item_rejections(sink: FakeLedger, transport: HttpTransport) -> None:
    sink.reject_event_names = {"bad"}
    ok, bad = transport.send_batch([event("good"), event("bad")])
    assert ok.accepted
    assert not bad.accepted and bad.reason == "invalid_event"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_transient_statuses_are_retryable(
    sink: FakeLedger, transport: HttpTransport, status: int
) -> None:
    sink.fail_next(1, Fault(status, retry_after="7"))
    with pytest.raises(RetryableDeliveryError) as caught:
        transport.send_batch([event()])
    assert caught.value.status == status
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_permanent_statuses_reject_the_batch(
    sink: FakeLedger, transport: HttpTransport, status: int
) -> None:
    sink.fail_next(1, Fault(status, reason="nope"))
    with pytest.raises(RejectedBatchError) as caught:
        transport.send_batch([event()])
    assert caught.value.status == status and caught.value.reason == "nope"
    assert not caught.value.splittable


def test_too_large_is_splittable(sink: FakeLedger, transport: HttpTransport) -> None:
    sink.fail_next(1, Fault(413, reason="too_large"))
    with pytest.raises(RejectedBatchError) as caught:
        transport.send_batch([event(), event()])
    assert caught.value.splittable


def test_connection_refused_is_retryable(sink: FakeLedger, transport: HttpTransport) -> None:
    sink.stop()
    with pytest.raises(RetryableDeliveryError):
        transport.send_batch([event()])


def test_a_hanging_server_times_out_as_retryable(sink: FakeLedger) -> None:
    sink.fail_next(1, Fault(hang=True))
    client = HttpTransport(sink.url, "k", connect_timeout=1.0, read_timeout=0.2)
    try:
        with pytest.raises(RetryableDeliveryError):
            client.send_batch([event()])
    finally:
        sink.hang_release.set()
        client.close()


def test_connection_is_kept_alive_across_batches(
    sink: FakeLedger, transport: HttpTransport
) -> None:
    for _ in range(3):
        transport.send_batch([event()])
    assert len(sink.connections_seen) == 1


def test_reconnects_after_the_server_restarts(sink: FakeLedger, transport: HttpTransport) -> None:
    transport.send_batch([event()])
    sink.stop()
    with pytest.raises(RetryableDeliveryError):
        transport.send_batch([event()])
    sink.start()
    assert transport.send_batch([event()])[0].accepted


def test_a_keep_alive_connection_the_server_dropped_is_replaced_without_an_error(
    sink: FakeLedger, transport: HttpTransport
) -> None:
    transport.send_batch([event()])
    sink.stop()  # cuts the kept-alive connection ...
    sink.start()  # ... and listens again on the same port
    second = event()
    assert transport.send_batch([second])[0].accepted
    assert sink.stored_keys()[-1] == second.idempotency_key
    assert len(sink.connections_seen) == 2


def test_a_header_value_cannot_inject_headers(sink: FakeLedger) -> None:
    client = HttpTransport(sink.url, "k", endpoint="single")
    tricky = event()
    tricky.meta["request_id"] = "r-1\r\nX-Injected: yes"
    try:
        assert client.send_batch([tricky])[0].accepted
    finally:
        client.close()
    _, headers, _ = sink.requests[0]
    assert "X-Injected" not in headers
    assert headers["Request-Id"] == "r-1  X-Injected: yes"


def test_urls_it_cannot_speak_to_are_refused_at_once() -> None:
    for url in ("ftp://example.com", "http://", "example.com:8080"):
        with pytest.raises(ValueError):
            HttpTransport(url, "k")


def test_falls_back_to_the_single_event_endpoint(
    sink: FakeLedger, transport: HttpTransport
) -> None:
    sink.batch_endpoint = False
    events = [event(), event()]
    results = transport.send_batch(events)
    assert all(r.accepted for r in results)
    singles = [r for r in sink.requests if r[0] == "/v1/events"]
    assert len(singles) == 2
    _, headers, body = singles[0]
    assert headers["Idempotency-Key"] == events[0].idempotency_key
    assert headers["Request-Id"] == events[0].meta["request_id"]
    assert json.loads(body) == {"payload": events[0].payload, "meta": events[0].meta}
    transport.send_batch([event()])
    assert sink.requests[-1][0] == "/v1/events", "the fallback sticks for the process"


def test_answer_with_wrong_result_count_is_retryable(sink: FakeLedger) -> None:
    class Short(FakeLedger):
        pass

    client = HttpTransport(sink.url, "k")
    sink.reject_event_names = set()
    original = sink._batch

    def truncated(handler, body, headers):  # type: ignore[no-untyped-def]
        sink._answer(handler, 200, {"ok": True, "results": []})

    sink._batch = truncated  # type: ignore[method-assign]
    try:
        with pytest.raises(RetryableDeliveryError):
            client.send_batch([event()])
    finally:
        sink._batch = original  # type: ignore[method-assign]
        client.close()


def test_the_minimal_answer_of_a_real_server_settles_each_event(live_server: LiveServer) -> None:
    client = HttpTransport(live_server.url, live_server.ingest_key)
    try:
        first, second = event(), event()
        assert client.send_batch([first]) == [ItemResult(accepted=True)]
        changed = WireEvent(first.idempotency_key, '{"other": 1}', first.meta)
        invalid = WireEvent(uuid7(), "{}", {**first.meta, "type": "nope"})
        results = client.send_batch([second, first, invalid, changed])
    finally:
        client.close()
    assert results[:2] == [ItemResult(accepted=True), ItemResult(accepted=True, duplicate=True)]
    assert [(r.accepted, r.reason) for r in results[2:]] == [
        (False, "invalid_type"),
        (False, "idempotency_key_reused"),
    ]
    assert all(r.message for r in results[2:])
    stored = {e["idempotency_key"] for e in live_server.entries()}
    assert {first.idempotency_key, second.idempotency_key} <= stored
    assert invalid.idempotency_key not in stored


@pytest.mark.parametrize(
    "answer",
    [
        {"ok": True, "accepted": 2, "rejected": 0, "duplicates": [], "errors": []},  # one too many
        {"ok": True, "accepted": 1, "rejected": 0, "duplicates": [1], "errors": []},  # no event 1
        {"ok": True, "accepted": 1, "rejected": 0, "duplicates": [0, 0], "errors": []},
        {"ok": True, "accepted": 1, "rejected": 0, "duplicates": [True], "errors": []},
        {
            "ok": True,
            "accepted": 0,
            "rejected": 1,
            "duplicates": [0],
            "errors": [{"index": 0, "ok": False, "reason": "r", "message": "m"}],
        },
        {"ok": True, "accepted": 0, "rejected": 1, "duplicates": [], "errors": [{"index": 0}]},
        {"ok": True, "accepted": 1, "rejected": 0, "errors": []},
        {"ok": True, "accepted": 1, "rejected": 0, "duplicates": "0", "errors": []},
        [],
        "ok",
    ],
)
def test_a_summary_that_does_not_add_up_is_retryable(sink: FakeLedger, answer: Any) -> None:
    client = HttpTransport(sink.url, "k")

    def answering(handler: Any, body: bytes, headers: dict[str, str]) -> None:
        sink._answer(handler, 200, answer)

    sink._batch = answering  # type: ignore[method-assign]
    try:
        with pytest.raises(RetryableDeliveryError, match="unreadable batch answer"):
            client.send_batch([event()])
    finally:
        client.close()


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999") == MAX_RETRY_AFTER_SECONDS
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
