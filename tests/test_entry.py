"""Entry encoding is RFC 8785 (checked against the reference encoder) and validation is strict."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from immutablelog.entry import (
    MAX_PAYLOAD_BYTES,
    EntryError,
    PayloadTooLarge,
    build_entry,
    canonical_json,
    decode_entry,
    encode_entry,
    validate_submission,
)

META = {"type": "info", "event_name": "e", "service": "s"}
# Any Unicode scalar value (no lone surrogates, which have no UTF-8 form).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
safe_int = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
value = st.one_of(st.none(), st.booleans(), safe_int, text)
# Meta text never holds NUL (refused: database text columns cannot store it).
meta_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
meta_value = st.one_of(st.none(), st.booleans(), safe_int, meta_text)
key = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=400)
@given(st.dictionaries(key, value, max_size=12), text)
def test_canonical_json_equals_the_rfc8785_reference(obj: dict[str, Any], s: str) -> None:
    obj["payload"] = s
    assert canonical_json(obj) == rfc8785.dumps(obj)


@settings(max_examples=200)
@given(st.dictionaries(key, meta_value, max_size=8), text)
def test_entries_round_trip_and_only_canonical_bytes_decode(
    extra: dict[str, Any], payload_text: str
) -> None:
    extra = {
        k: v
        for k, v in extra.items()
        if k
        not in {"v", "tenant", "index", "id", "received_at", "idempotency_key", "payload", *META}
    }
    sub = validate_submission(json.dumps(payload_text), {**META, **extra}, "k")
    entry = build_entry(sub, tenant="t", index=3, entry_id="id", received_at="now")
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    spaced = json.dumps(entry, ensure_ascii=False).encode()
    if spaced != data:
        with pytest.raises(EntryError):
            decode_entry(spaced)


def test_nul_in_any_meta_text_is_refused() -> None:
    for meta in ({**META, "service": "a\x00"}, {**META, "actor": "\x00"}):
        with pytest.raises(EntryError, match="NUL"):
            validate_submission("{}", meta, "k")
    with pytest.raises(EntryError, match="NUL"):
        validate_submission("{}", META, "k\x00")
    assert validate_submission('"a\\u0000b"', META, "k").payload == '"a\\u0000b"'


def test_control_characters_and_non_ascii_escape_like_jcs() -> None:
    obj = {"payload": '\u0000\u001f\u007f\u2028é😀"\\/\b\f\n\r\t'}
    assert canonical_json(obj) == rfc8785.dumps(obj)


def test_payload_is_kept_byte_for_byte() -> None:
    payload = '{ "b":1,   "a": 1.50 }'
    assert validate_submission(payload, META, "k").payload == payload


@pytest.mark.parametrize(
    ("payload", "meta", "field"),
    [
        ("{}", {**META, "type": "nope"}, "meta.type"),
        ("{}", {"type": "info", "service": "s"}, "meta.event_name"),
        ("{}", {**META, "event_name": ""}, "meta.event_name"),
        ("{}", {**META, "x": 1.5}, "meta.x"),
        ("{}", {**META, "x": 2**60}, "meta.x"),
        ("{}", {**META, "index": 1}, "meta.index"),
        ("{}", {**META, "X": "up"}, "meta.X"),
        ("{}", {**META, "env": "\ud800"}, "meta.env"),
        ('"\ud800"', META, "payload"),
        ("[1,", META, "payload"),
        (None, META, "payload"),
        ("{}", "not an object", "meta"),
    ],
)
def test_invalid_submissions_name_the_field(payload: Any, meta: Any, field: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_submission(payload, meta, "k")
    assert caught.value.field == field


def test_payload_limit_counts_utf8_bytes() -> None:
    ok = json.dumps("é" * ((MAX_PAYLOAD_BYTES - 2) // 2), ensure_ascii=False)
    validate_submission(ok, META, "k")
    with pytest.raises(PayloadTooLarge):
        validate_submission(
            json.dumps("é" * (MAX_PAYLOAD_BYTES // 2), ensure_ascii=False), META, "k"
        )


def test_fingerprint_tells_bodies_apart_but_not_keys() -> None:
    a = validate_submission("{}", META, "k1")
    assert a.fingerprint == validate_submission("{}", META, "k2").fingerprint
    assert a.fingerprint != validate_submission("{ }", META, "k1").fingerprint
    assert a.fingerprint != validate_submission("{}", {**META, "env": "x"}, "k1").fingerprint


@pytest.mark.parametrize("payload", ["{}", '{"name": "Zoë", "n": 1}', '"text"'])
def test_a_stored_entry_gives_back_its_submissions_fingerprint(payload: str) -> None:
    from immutablelog.entry import (
        build_entry,
        decode_entry,
        decode_erasable,
        encode_entry,
        fingerprint_of,
        reveal,
    )

    sub = validate_submission(payload, {**META, "actor": "a", "flag": True}, "key")
    assert sub.erasable is not None
    entry = decode_entry(
        encode_entry(build_entry(sub, tenant="t", index=3, entry_id="id", received_at="now"))
    )
    event = reveal(entry, decode_erasable(entry, sub.erasable.to_bytes()))
    assert fingerprint_of(event) == sub.fingerprint
    other = validate_submission(payload + " ", {**META, "actor": "a", "flag": True}, "key")
    assert fingerprint_of(event) != other.fingerprint


def test_format_2_keeps_personal_values_out_of_the_hashed_bytes() -> None:
    from immutablelog.entry import SALT_BYTES, build_entry, encode_entry, erasable_hash

    meta = {**META, "actor": "alice@example.com", "ip": "203.0.113.9", "request_id": "r-1"}
    first = validate_submission('{"card": "4111"}', meta, "key")
    second = validate_submission('{"card": "4111"}', meta, "key")
    data = encode_entry(build_entry(first, tenant="t", index=0, entry_id="i", received_at="r"))
    for secret in (b"alice", b"203.0.113.9", b"4111", b"card"):
        assert secret not in data
    assert b'"request_id":"r-1"' in data and b'"event_name"' in data
    assert first.erasable is not None and second.erasable is not None
    # A fresh salt each time: the same values never give the same commitment.
    assert len(first.erasable.salt) == SALT_BYTES
    assert first.erasable.salt != second.erasable.salt
    assert first.erasable.commitment != second.erasable.commitment
    assert first.erasable.commitment == erasable_hash(first.erasable.salt, first.erasable.values)
    assert first.fingerprint == second.fingerprint  # a replay is still recognised


@pytest.mark.parametrize(
    "damage",
    [
        lambda part: bytes([part[0] ^ 1]) + part[1:],  # salt
        lambda part: part.replace(b"alice", b"alicf"),  # a value
        lambda part: part[:16],  # no values
        lambda part: part[:10],  # not even a salt
    ],
)
def test_an_erasable_part_that_does_not_match_is_refused(damage: Any) -> None:
    from immutablelog.entry import build_entry, decode_erasable

    sub = validate_submission("{}", {**META, "actor": "alice"}, "key")
    assert sub.erasable is not None
    entry = build_entry(sub, tenant="t", index=0, entry_id="i", received_at="r")
    with pytest.raises(EntryError):
        decode_erasable(entry, damage(sub.erasable.to_bytes()))


@pytest.mark.parametrize(
    "values",
    [
        b'{"actor":"a"}',  # no payload
        b'{"payload":7}',
        b'{"payload":"{}","type":"info"}',  # a clear field
        b'{"payload":"{}","v":1}',  # a server field
        b'{"payload":"{}", "actor":"a"}',  # not canonical
        b'{"payload":"{}","x":1.5}',
        b"[1]",
        b"not json",
    ],
)
def test_erasable_values_must_be_a_canonical_payload_and_meta(values: bytes) -> None:
    from immutablelog.entry import decode_erasable, erasable_hash

    salt = bytes(16)
    with pytest.raises(EntryError):
        decode_erasable({"erasable_hash": erasable_hash(salt, values)}, salt + values)


def test_the_logs_own_records_stay_clear_and_clients_cannot_name_the_commitment() -> None:
    from immutablelog.entry import build_entry, is_committed

    sub = validate_submission('{"message": "x"}', META, "key", clear=True)
    entry = build_entry(sub, tenant="t", index=0, entry_id="i", received_at="r")
    assert sub.erasable is None and not is_committed(entry) and entry["payload"]
    for reserved in ("erasable_hash", "erased"):
        with pytest.raises(EntryError):
            validate_submission("{}", {**META, reserved: "x"}, "key")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"v":2}',
        b'{"v":3}',
        b'{"v":1,"tenant":"t"}',
        b'{"event_name":"e","id":"i","idempotency_key":"k","index":-1,"payload":"{}",'
        b'"received_at":"r","service":"s","tenant":"t","type":"info","v":1}',
    ],
)
def test_decode_refuses_what_is_not_an_entry(data: bytes) -> None:
    with pytest.raises(EntryError):
        decode_entry(data)


def test_entry_ids_are_uuid7_ordered_by_time() -> None:
    import time
    import uuid

    from immutablelog.entry import new_entry_ids

    (first,) = new_entry_ids(1)
    time.sleep(0.002)
    (second,) = new_entry_ids(1)
    for value in (first, second):
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert first < second


def test_a_batch_of_entry_ids_is_distinct_uuid7_of_one_millisecond() -> None:
    import uuid

    from immutablelog.entry import new_entry_ids

    ids = new_entry_ids(500)
    assert len(set(ids)) == 500
    parsed = [uuid.UUID(value) for value in ids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert len({p.int >> 80 for p in parsed}) == 1  # one timestamp
    assert {value[19] for value in ids} == set("89ab")  # variant 10, then two random bits
    assert new_entry_ids(0) == []


def test_a_forked_child_never_reuses_its_parents_salts() -> None:
    """Salts are cut from a per-thread pool; a child after fork must draw its own."""
    import os

    validate_submission("{}", META, "key")  # the pool now holds salts the child inherits
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        sub = validate_submission("{}", META, "key")
        os.write(write_end, sub.erasable.salt if sub.erasable else b"")
        os._exit(0)
    os.close(write_end)
    child_salt = os.read(read_end, 64)
    os.waitpid(pid, 0)
    parent = validate_submission("{}", META, "key")
    assert parent.erasable is not None and len(child_salt) == 16
    assert child_salt != parent.erasable.salt
