"""Erasure records: how the log says which entries' erasable parts were erased, and why.

An erasure is itself an entry of the log it erases from, one of the log's own records (clear,
service ``immutablelog``, event ``immutablelog.erasure``), so the signed log proves that it was
authorised and when. Its payload names indexes as ranges and never the erased values. Only
the server writes clear entries (a client's event always commits to an erasable part), so a
client cannot forge one. Server and verifier share this module; docs/PROTOCOL.md §2.3 is the
reference.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from immutablelog.entry import ADMIN_SERVICE, MAX_PAYLOAD_BYTES, EntryError, is_committed

ERASURE_EVENT: Final = "immutablelog.erasure"
MAX_REASON_CHARS: Final = 1024
#: Ranges per record: a record stays well under the payload limit (each range is at most
#: 2 x 19 digits and 4 characters of JSON), whatever the reason's length.
MAX_RANGES_PER_RECORD: Final = 200

Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """One erasure as the log holds it: at ``index``, for ``reason``, by ``by`` (the key's
    prefix, or the sweep that did it), covering the half-open ``ranges`` of indexes."""

    index: int
    received_at: str
    reason: str
    by: str
    ranges: tuple[Range, ...]


def to_ranges(indexes: Iterable[int]) -> list[Range]:
    """Sorted, merged half-open ranges covering exactly ``indexes``."""
    ranges: list[Range] = []
    for index in sorted(set(indexes)):
        if ranges and ranges[-1][1] == index:
            ranges[-1] = (ranges[-1][0], index + 1)
        else:
            ranges.append((index, index + 1))
    return ranges


def check_reason(reason: Any) -> str:
    """A reason is required, one line of text: it is kept in the log for good, so it must
    say why, not whom (docs: never put the subject's data in it)."""
    if not isinstance(reason, str) or not reason.strip():
        raise EntryError("invalid_field", "reason is required", "reason")
    if len(reason) > MAX_REASON_CHARS:
        raise EntryError(
            "invalid_field", f"reason is longer than {MAX_REASON_CHARS} characters", "reason"
        )
    if any(ch < " " or ch == "\x7f" for ch in reason):
        raise EntryError("invalid_field", "reason must be one line without control characters")
    return reason


def erasure_payloads(indexes: Iterable[int], reason: str, by: str) -> list[str]:
    """The payloads of the records that log an erasure of ``indexes``: one per
    :data:`MAX_RANGES_PER_RECORD` ranges, so that none passes the payload limit."""
    check_reason(reason)
    ranges = to_ranges(indexes)
    payloads = []
    for start in range(0, len(ranges), MAX_RANGES_PER_RECORD):
        chunk = ranges[start : start + MAX_RANGES_PER_RECORD]
        payload = json.dumps(
            {
                "message": ERASURE_EVENT,
                "reason": reason,
                "by": by,
                "count": sum(end - begin for begin, end in chunk),
                "ranges": [list(r) for r in chunk],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:  # unreachable with the limits
            raise EntryError("invalid_field", "erasure record too large", "reason")
        payloads.append(payload)
    return payloads


def read_erasure(entry: Mapping[str, Any]) -> ErasureRecord | None:
    """The erasure an entry records, ``None`` if it records none. Raises :class:`EntryError`
    for a record that claims to be an erasure and is malformed: a verifier must not let a
    broken record cover anything. Ranges must be sorted, disjoint and before the record."""
    if (
        entry.get("event_name") != ERASURE_EVENT
        or entry.get("service") != ADMIN_SERVICE
        or is_committed(entry)
        or entry.get("v") != 2
    ):
        return None
    index = entry["index"]
    try:
        body = json.loads(entry["payload"])
        reason = check_reason(body["reason"])
        by = body["by"]
        raw = body["ranges"]
        if not isinstance(by, str) or not isinstance(raw, list):
            raise TypeError
        ranges = tuple(map(_range, raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise EntryError("invalid_erasure", f"erasure record {index} is malformed") from exc
    previous_end = 0
    for start, end in ranges:
        if not previous_end <= start < end <= index:
            raise EntryError(
                "invalid_erasure",
                f"erasure record {index}: ranges must be sorted, disjoint and before it",
            )
        previous_end = end
    return ErasureRecord(index, entry["received_at"], reason, by, ranges)


def _range(value: Any) -> Range:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError("not a range")
    start, end = value
    if type(start) is not int or type(end) is not int or start < 0:
        raise TypeError("not a range of indexes")
    return start, end


class Coverage:
    """The indexes the erasure records seen so far cover: what a verifier asks about an
    entry whose erasable part is missing (its record comes later in the log, so the
    questions are asked once every record is in)."""

    def __init__(self) -> None:
        self._added: list[tuple[int, int, ErasureRecord]] = []
        self._starts: list[int] = []
        self._spans: list[tuple[int, int, ErasureRecord]] = []  # disjoint, sorted
        self._indexed = 0  # how many of _added the spans hold

    def add(self, record: ErasureRecord) -> None:
        self._added.extend((start, end, record) for start, end in record.ranges)

    def record_for(self, index: int) -> ErasureRecord | None:
        """A record covering ``index``, if any."""
        ((_, _, record),) = self.split(index, index + 1)
        return record

    def split(self, start: int, end: int) -> list[tuple[int, int, ErasureRecord | None]]:
        """``[start, end)`` cut into pieces, each with a record covering it or ``None``."""
        if len(self._added) != self._indexed:
            self._build()
        pieces: list[tuple[int, int, ErasureRecord | None]] = []
        at = max(0, bisect.bisect_right(self._starts, start) - 1)
        position = start
        while position < end:
            if at < len(self._spans) and self._spans[at][1] <= position:
                at += 1
                continue
            if at >= len(self._spans) or self._spans[at][0] >= end:
                pieces.append((position, end, None))
                break
            span_start, span_end, record = self._spans[at]
            if span_start > position:
                pieces.append((position, span_start, None))
                position = span_start
            stop = min(span_end, end)
            pieces.append((position, stop, record))
            position = stop
            at += 1
        return pieces

    def _build(self) -> None:
        # A sweep in order of start: where ranges overlap (an index erased twice), the
        # range that starts first keeps the overlap.
        spans: list[tuple[int, int, ErasureRecord]] = []
        for start, end, record in sorted(self._added, key=lambda s: (s[0], s[2].index)):
            if spans and start < spans[-1][1]:
                start = spans[-1][1]
                if start >= end:
                    continue
            spans.append((start, end, record))
        self._spans = spans
        self._starts = [span[0] for span in spans]
        self._indexed = len(self._added)
