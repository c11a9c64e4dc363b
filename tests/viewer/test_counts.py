"""``GET /v1/event-counts``: the chart's numbers, checked against the stored entries on both
backends, and its parameters against bad input."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.live import HTTP, LiveServer
from tests.viewer.test_viewer import post, seeded_event


def _counts(server: LiveServer, **params: Any) -> dict[str, Any]:
    response = server.get("/v1/event-counts", **params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _expected(server: LiveServer, width: int, **match: Any) -> dict[str, Counter[str]]:
    expected: dict[str, Counter[str]] = {}
    for entry in server.entries(admin=True):
        if all(entry.get(k) == v for k, v in match.items()):
            expected.setdefault(entry["received_at"][:width], Counter())[entry["type"]] += 1
    return expected


def _as_counters(body: dict[str, Any], width: int) -> dict[str, Counter[str]]:
    return {
        b["start"][:width]: Counter({k: v for k, v in b["counts"].items() if v})
        for b in body["buckets"]
    }


def _check(server: LiveServer) -> None:
    post(server, [seeded_event(n) for n in range(60)])
    body = _counts(server, interval="minute")
    assert body["interval"] == "minute"
    assert _as_counters(body, 16) == _expected(server, 16)
    for bucket in body["buckets"]:
        assert bucket["total"] == sum(bucket["counts"].values())
        assert bucket["start"] < bucket["end"]
    filtered = _counts(server, interval="hour", service="billing", type="error")
    assert _as_counters(filtered, 13) == _expected(server, 13, service="billing", type="error")
    actor = _counts(server, interval="day", actor="bob")
    assert _as_counters(actor, 10) == _expected(server, 10, actor="bob")
    auto = _counts(server)
    assert auto["interval"] == "minute"  # the log spans seconds
    assert sum(b["total"] for b in auto["buckets"]) == len(server.raw_entries())
    empty = _counts(server, service="nothing")
    assert empty["buckets"] == []
    # Full text, once the search index has caught up with the writer.
    needles = sum(1 for n in range(60) if n % 40 == 7)
    deadline = time.monotonic() + 30
    while sum(b["total"] for b in _counts(server, q="needle")["buckets"]) != needles:
        assert time.monotonic() < deadline, "the search index never caught up"
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"interval": "week"}, "invalid_parameter"),
        ({"interval": ""}, "invalid_parameter"),
        ({"type": "fatal"}, "invalid_parameter"),
        ({"since": "yesterday"}, "invalid_parameter"),
        ({"service": "x" * 1001}, "invalid_parameter"),
    ],
)
def test_counts_refuse_bad_parameters(
    shared_server: LiveServer, params: dict[str, str], reason: str
) -> None:
    response = shared_server.get("/v1/event-counts", **params)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == reason


def test_counts_need_a_read_key(shared_server: LiveServer) -> None:
    assert HTTP.get(shared_server.url + "/v1/event-counts").status_code == 401
    denied = HTTP.get(
        shared_server.url + "/v1/event-counts",
        headers=shared_server.headers(shared_server.ingest_key),
    )
    assert denied.status_code == 403


def test_counts_match_the_stored_entries_on_sqlite(live_server: LiveServer) -> None:
    _check(live_server)


def test_counts_match_the_stored_entries_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    server = LiveServer(tmp_path / "data", database_url=postgres_url)
    server.start()
    try:
        _check(server)
    finally:
        server.kill()
