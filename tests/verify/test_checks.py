"""Page checks: the fast path accepts exactly what decode_entry accepts, and names culprits."""

from __future__ import annotations

import orjson
import pytest

from immutablelog.entry import ENTRY_RECORD, build_entry, encode_entry, validate_submission
from immutablelog.merkle import leaf_hash
from immutablelog.verify.checks import (
    MalformedAnswer,
    _entry_problem,
    check_entries,
    check_lines,
    check_page,
)
from tests.verify.helpers import encode_records

TENANT = "default"


def entry(index: int, tenant: str = TENANT, **meta: object) -> bytes:
    submission = validate_submission(
        f'{{"n": {index}}}',
        {"type": "info", "event_name": "e", "service": "s", **meta},
        f"key-{index}",
    )
    return encode_entry(
        build_entry(
            submission,
            tenant=tenant,
            index=index,
            entry_id=f"id-{index}",
            received_at="2026-01-01T00:00:00.000000Z",
        )
    )


def page(datas: list[bytes], start: int = 0) -> bytes:
    return encode_records([(start + i, d) for i, d in enumerate(datas)])


def mutate(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


GOOD = [entry(i) for i in range(8)]

# Each is entry 3 changed in a way decode_entry (or our stricter index/v rule) refuses.
BAD_ENTRY_3 = {
    "whitespace": mutate(GOOD[3], b'"index":3', b'"index": 3'),
    "unsorted": b'{"v":2,' + GOOD[3][1:].replace(b',"v":2}', b"}"),
    "bool version": mutate(GOOD[3], b'"v":2', b'"v":true'),
    "float version": mutate(GOOD[3], b'"v":2', b'"v":2.0'),
    "unknown version": mutate(GOOD[3], b'"v":2', b'"v":3'),
    "missing service": mutate(GOOD[3], b'"service":"s",', b""),
    "escaped slash": mutate(GOOD[3], b'"type":"info"', b'"type":"in\\/fo"'),
    "not json": b"{not json",
    "array": b"[1,2,3]",
    "duplicate key": mutate(GOOD[3], b'"v":2', b'"v":2,"v":2'),
    "payload beside its hash": mutate(GOOD[3], b'"env":null', b'"env":null,"payload":"{}"'),
    "extra meta beside the hash": mutate(GOOD[3], b'"env":null', b'"actor":"a","env":null'),
    "hash in capitals": GOOD[3].replace(
        GOOD[3][GOOD[3].index(b'"erasable_hash":"') + 17 :][:64],
        GOOD[3][GOOD[3].index(b'"erasable_hash":"') + 17 :][:64].upper(),
    ),
    "short hash": mutate(GOOD[3], b'"erasable_hash":"', b'"erasable_hash":"0'),
    "hash of a format 1 entry": mutate(GOOD[3], b'"v":2', b'"v":1'),
    "float extra": mutate(GOOD[3], b'"service":"s"', b'"score":1.5,"service":"s"'),
    "list extra": mutate(GOOD[3], b'"service":"s"', b'"service":"s","tags":[1]'),
    "object extra": mutate(GOOD[3], b'"service":"s"', b'"service":"s","tags":{"a":1}'),
    "index as bool": mutate(GOOD[3], b'"index":3', b'"index":true'),
    "tenant as number": mutate(GOOD[3], b'"tenant":"default"', b'"tenant":7'),
}


def entry_v1(index: int, **meta: object) -> bytes:
    """An entry as an earlier release wrote it: format 1, the payload inside."""
    return encode_entry(
        {
            "v": 1,
            "tenant": TENANT,
            "index": index,
            "id": f"id-{index}",
            "received_at": "2026-01-01T00:00:00.000000Z",
            "idempotency_key": f"key-{index}",
            "type": "info",
            "event_name": "e",
            "service": "s",
            "request_id": None,
            "env": None,
            "payload": f'{{"n": {index}}}',
            **meta,
        }
    )


def test_format_1_entries_and_mixed_pages_pass() -> None:
    mixed = [entry_v1(0), entry_v1(1, actor="a"), *GOOD[2:]]
    result = check_page(page(mixed), 0, 8, TENANT)
    assert result.anomalies == () and result.unrevealed == ((2, 8),)
    bad = mutate(mixed[1], b'"payload":"{\\"n\\": 1}"', b'"payload":7')
    assert _entry_problem(bad) is not None
    result = check_page(page([mixed[0], bad, *mixed[2:]]), 0, 8, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [("non_canonical_entry", 1)]


def test_clean_page_passes_with_leaves_and_subtrees() -> None:
    result = check_page(page(GOOD), 0, 8, TENANT)
    assert result.anomalies == () and result.index_runs == ()
    assert result.contiguous == result.received == result.covered_to == 8
    assert result.leaves == b"".join(leaf_hash(d) for d in GOOD)
    assert [level for level, _ in result.subtrees] == [3]
    assert result.last_id == "id-7"


@pytest.mark.parametrize("name", sorted(BAD_ENTRY_3))
def test_each_non_canonical_entry_is_named(name: str) -> None:
    datas = [*GOOD[:3], BAD_ENTRY_3[name], *GOOD[4:]]
    assert _entry_problem(BAD_ENTRY_3[name]) is not None
    result = check_page(page(datas), 0, 8, TENANT)
    kinds = [(a.kind, a.position) for a in result.anomalies]
    assert kinds == [("non_canonical_entry", 3)]
    assert result.contiguous == 8  # still hashed: the root decides whether it was signed so


def test_page_of_several_fast_path_slices() -> None:
    many = [entry(i) for i in range(2500)]
    clean = check_page(page(many), 0, 2500, TENANT)
    assert clean.anomalies == () and clean.last_id == "id-2499"
    many[2222] = mutate(many[2222], b'"index":2222', b'"index": 2222')
    result = check_page(page(many), 0, 2500, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [("non_canonical_entry", 2222)]
    assert result.leaves[2222 * 32 : 2223 * 32] == leaf_hash(many[2222])


def test_fast_path_agrees_with_decode_entry_on_valid_extras() -> None:
    datas = [entry(0, env="prod", request_id="r", trace_id="t", actor=None, retries=3)]
    assert _entry_problem(datas[0]) is None
    assert check_page(page(datas), 0, 1, TENANT).anomalies == ()


def test_wrong_tenant_and_wrong_index_are_named() -> None:
    datas = [*GOOD[:2], entry(2, tenant="other"), GOOD[5], *GOOD[4:5]]
    result = check_page(page(datas), 0, 5, TENANT)
    assert [(a.kind, a.position, a.entry_id) for a in result.anomalies] == [
        ("wrong_tenant", 2, "id-2")
    ]
    assert [(r.position, r.length, r.shift) for r in result.index_runs] == [(3, 1, 2)]


def test_gaps_and_duplicates_in_positions() -> None:
    datas: list[bytes | None] = list(GOOD)
    positions = [0, 1, 2, 4, 5, 5, 6, 7]
    result = check_entries(positions, datas, 0, 8, TENANT)
    assert result.contiguous == 3
    assert [(a.kind, a.position, a.end) for a in result.anomalies if a.kind != "wrong_index"][
        :2
    ] == [("missing_entry", 3, 4), ("extra_entry", 5, None)]


def test_short_page_is_a_prefix_not_a_gap() -> None:
    result = check_page(page(GOOD[:4]), 0, 8, TENANT)
    assert result.anomalies == () and result.covered_to == 4


RECORD_0 = page(GOOD[:1])


@pytest.mark.parametrize(
    "body",
    [
        b"nope",  # shorter than a record header
        RECORD_0[:-1],  # truncated inside the entry
        RECORD_0 + RECORD_0[:5],  # truncated inside the next header
        ENTRY_RECORD.pack(0, len(GOOD[0]) + 1, 0) + GOOD[0],  # length past the end
        ENTRY_RECORD.pack(0, 2**32 - 1, 0) + GOOD[0],
        ENTRY_RECORD.pack(0, len(GOOD[0]), 20) + GOOD[0] + b"x" * 19,  # part past the end
    ],
)
def test_malformed_pages_are_errors_not_findings(body: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        check_page(body, 0, 1, TENANT)


def test_empty_page_is_no_entries() -> None:
    result = check_page(b"", 0, 8, TENANT)
    assert result.received == 0 and result.covered_to == 0 and result.anomalies == ()


def test_short_length_prefix_leaves_a_non_canonical_entry() -> None:
    # The length says one byte less, and the next header takes up the stray byte and more:
    # the framing breaks there, so the page is refused as a whole.
    body = ENTRY_RECORD.pack(0, len(GOOD[0]) - 1, 0) + GOOD[0] + page(GOOD[1:3], 1)
    with pytest.raises(MalformedAnswer):
        check_page(body, 0, 3, TENANT)
    # A length that still frames the page (two entries fused into one record) is evidence.
    fused = ENTRY_RECORD.pack(0, len(GOOD[0]) + len(GOOD[1]), 0) + GOOD[0] + GOOD[1]
    result = check_page(fused + page(GOOD[2:4], 2), 0, 4, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [
        ("non_canonical_entry", 0),
        ("missing_entry", 1),
    ]


def test_non_utf8_entry_bytes_are_non_canonical() -> None:
    bad = GOOD[3].replace(b'"service":"s"', b'"service":"' + bytes([0xFF]) + b'"')
    result = check_page(page([*GOOD[:3], bad, *GOOD[4:]]), 0, 8, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [("non_canonical_entry", 3)]


def test_server_lying_about_indexes() -> None:
    # Records claiming other positions than asked for: outside the range, repeated, skipped.
    items = [(0, GOOD[0]), (1, GOOD[1]), (1, GOOD[1]), (3, GOOD[3]), (9, GOOD[4])]
    result = check_page(encode_records(items), 0, 5, TENANT)
    assert result.contiguous == 2
    assert [(a.kind, a.position) for a in result.anomalies] == [
        ("extra_entry", 1),
        ("missing_entry", 2),
        ("extra_entry", 9),
    ]
    # A page answered from another start than asked: every record is out of place.
    shifted = check_page(page(GOOD[2:4], 2), 0, 2, TENANT)
    assert shifted.contiguous == 0
    assert [a.kind for a in shifted.anomalies] == ["extra_entry", "extra_entry"]


def test_bundle_lines_with_a_damaged_and_a_missing_line() -> None:
    lines = [orjson.dumps({"index": i, "entry": d.decode()}) for i, d in enumerate(GOOD)]
    lines[2] = b"garbage"
    del lines[5]
    result = check_lines(b"\n".join(lines) + b"\n", 0, TENANT)
    assert [(a.kind, a.position) for a in result.anomalies] == [
        ("malformed_bundle", 2),
        ("missing_entry", 5),
    ]
    assert result.contiguous == 2


def test_lines_that_only_parse_together_are_not_taken_for_entries() -> None:
    # Joined with commas, these three lines are three valid array elements; as lines, none
    # of the first two is valid, and the third holds two entries. A bundle is read by lines.
    e0, e1 = GOOD[0].decode(), GOOD[1].decode()
    lines = [
        orjson.dumps({"index": 0, "entry": e0})[:-1] + b',"pad":[{"a":1}',
        b'{"b":2}]}',
        orjson.dumps({"index": 1, "entry": e1}) + b"," + orjson.dumps({"index": 2, "entry": e1}),
    ]
    result = check_lines(b"\n".join(lines) + b"\n", 0, TENANT)
    assert [a.kind for a in result.anomalies][:3] == ["malformed_bundle"] * 3
    assert result.contiguous == 0


def test_clean_bundle_block_takes_the_fast_path_and_matches_pages() -> None:
    lines = [orjson.dumps({"index": i, "entry": d.decode()}) for i, d in enumerate(GOOD)]
    from_lines = check_lines(b"\n".join(lines) + b"\n", 0, TENANT)
    assert from_lines == check_page(page(GOOD), 0, None, TENANT)  # type: ignore[arg-type]


def test_a_format_1_entry_may_hold_erasable_hash_as_meta() -> None:
    """Before format 2 the name was free for a client's meta: such an entry is read as format
    1, with its payload inside, not as one committing to an erasable part."""
    from immutablelog.entry import decode_entry, is_committed

    old = entry_v1(0, erasable_hash="a client's own field")
    assert not is_committed(decode_entry(old))
    result = check_page(page([old]), 0, 1, TENANT)
    assert result.anomalies == () and result.unrevealed == ()
