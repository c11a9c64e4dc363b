"""The seed-compatible rules (kind, severity, message, 12 KB clamp) and the wire encoding."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from immutablelog._uuid import uuid7, uuid7_batch, uuid7_millis
from immutablelog.sdk.events import (
    MAX_PAYLOAD_BYTES,
    UuidPool,
    WireEvent,
    clamp_payload,
    http_message,
    severity_from,
    severity_level,
)
from tests.fixtures import seed_middleware as seed


@pytest.mark.parametrize("status", [None, 100, 200, 201, 204, 301, 304, 400, 404, 429, 500, 503])
@pytest.mark.parametrize("exc", [None, ValueError("x")])
def test_kind_and_severity_match_the_seed(status: int | None, exc: Exception | None) -> None:
    exc_type = type(exc).__name__ if exc else None
    assert severity_from(status, exc_type) == seed.severity_from(status, exc)
    kind = severity_from(status, exc_type)
    assert severity_level(kind) == seed.get_severity_level(kind, status)


def test_warning_severity_is_medium_like_the_seed() -> None:
    assert severity_level("warning") == seed.get_severity_level("warning", None) == "medium"


@pytest.mark.parametrize(
    ("status", "exc_type", "expected"),
    [
        (200, None, "GET /a completed successfully"),
        (302, None, "GET /a processed"),
        (404, None, "GET /a returned error 404"),
        (500, "KeyError", "GET /a failed with exception: KeyError"),
        (None, None, "GET /a processed"),
    ],
)
def test_messages_are_the_seeds(status: int | None, exc_type: str | None, expected: str) -> None:
    assert http_message("GET", "/a", status, exc_type) == expected


def _payload(**extra: Any) -> dict[str, Any]:
    return {
        "id": "i",
        "kind": "error",
        "message": "m",
        "timestamp": "t",
        "context": {"ip": "1.2.3.4"},
        **extra,
    }


@pytest.mark.parametrize(
    "payload",
    [
        _payload(),
        _payload(error={"request_body": "x" * 1_999}),
        _payload(error={"request_body": "é" * 7_000}),  # over 12 KB only as UTF-8
        _payload(context={"blob": "y" * 20_000}),  # still too big without the error block
        _payload(message="z" * 20_000),
    ],
)
def test_clamp_produces_what_the_seed_would_have_sent(payload: dict[str, Any]) -> None:
    ours = clamp_payload(payload)
    assert json.loads(ours) == json.loads(seed.clamp_payload(payload))
    assert len(ours.encode()) <= MAX_PAYLOAD_BYTES


def test_clamp_also_sheds_custom_event_data() -> None:
    clamped = json.loads(clamp_payload(_payload(data={"rows": "r" * 20_000})))
    assert "data" not in clamped
    assert clamped["context"] == {"ip": "1.2.3.4"}


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=5_000), max_size=8))
def test_clamp_is_always_within_the_limit_and_valid_json(extra: dict[str, str]) -> None:
    text = clamp_payload(_payload(data=extra, error={"request_body": "b" * 3_000}))
    assert len(text.encode("utf-8")) <= MAX_PAYLOAD_BYTES
    json.loads(text)


def test_lone_surrogates_are_replaced_so_the_payload_is_valid_utf8() -> None:
    text = clamp_payload(_payload(message="bad \udcff byte"))
    text.encode("utf-8")  # would raise for a lone surrogate
    assert "bad" in json.loads(text)["message"]


def test_uuid7_format_and_time() -> None:
    before = time.time_ns() // 1_000_000
    values = [uuid7() for _ in range(100)] + uuid7_batch(100)
    after = time.time_ns() // 1_000_000
    assert len(set(values)) == len(values)
    for value in values:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == value
        assert before <= uuid7_millis(value) <= after
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", value
        )


def test_every_random_digit_of_a_uuid7_varies() -> None:
    """The batch is written through masks and a template: a wrong mask would fix a digit (or
    let one stray outside hex, or the variant's range), which a format check on a few ids could
    miss. Across 4,000 ids each random position takes each of its values."""
    values = uuid7_batch(2000) + [uuid7() for _ in range(2000)]
    for position in [*range(15, 18), *range(20, 23), *range(24, 36)]:
        assert {value[position] for value in values} == set("0123456789abcdef"), position
    assert {value[19] for value in values} == set("89ab")
    assert {value[14] for value in values} == {"7"}
    assert {value[8] + value[13] + value[18] + value[23] for value in values} == {"----"}
    assert uuid7_batch(0) == []


def test_uuid7s_made_later_sort_later() -> None:
    first = uuid7_batch(50)
    time.sleep(0.002)
    second = uuid7_batch(50)
    assert max(first) < min(second), "index keys must grow with time"


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


@given(
    key=st.uuids().map(str),
    payload=_text,
    meta=st.dictionaries(_text.filter(bool), _text, max_size=6),
)
def test_wire_encoding_is_the_json_of_the_item(
    key: str, payload: str, meta: dict[str, str]
) -> None:
    event = WireEvent(key, payload, meta)
    assert json.loads(event.encoded) == event.item()
    assert WireEvent.decode(event.encoded) == event


def test_wire_encoding_copes_with_non_string_meta() -> None:
    event = WireEvent("k", "{}", {"type": "info", "count": 3})  # type: ignore[dict-item]
    assert json.loads(event.encoded)["meta"] == {"type": "info", "count": 3}


def test_the_id_pool_hands_out_each_id_once_and_forgets_them_in_a_fork() -> None:
    pool = UuidPool()
    taken = [pool.take() for _ in range(3 * UuidPool.CHUNK + 5)]
    assert {uuid.UUID(t).version for t in taken} == {7}
    assert len(set(taken)) == len(taken)
    assert pool._ids, "ids are made a chunk at a time"
    pool.forget()
    assert not pool._ids, "a forked child must not reuse ids its parent may hand out"


def test_threads_taking_ids_at_once_never_share_one() -> None:
    pool = UuidPool()
    taken: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def take_many(into: list[str]) -> None:
        start.wait()
        into.extend(pool.take() for _ in range(5_000))

    threads = [threading.Thread(target=take_many, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for into in taken for i in into]
    assert len(everything) == 20_000
    assert len(set(everything)) == 20_000


def test_ids_older_than_the_pool_allows_are_not_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A UUIDv7 carries the time it was made: ids left in the pool over an idle spell would
    stamp new events with an old time (and put their keys far from the index's end)."""
    monkeypatch.setattr(UuidPool, "MAX_AGE", 0.05)
    pool = UuidPool()
    first, second = pool.take(), pool.take()
    assert uuid7_millis(second) == uuid7_millis(first), "the second came from the first's chunk"
    time.sleep(0.1)
    idle_end = time.time_ns() // 1_000_000
    assert uuid7_millis(pool.take()) >= idle_end
