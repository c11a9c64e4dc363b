"""Per-entry checks over a whole page of entries: the verifier's hot path.

Everything here is a pure function of its arguments and returns plain picklable values, so a
page can be checked in a worker process: hashing and JSON parsing hold the GIL, and spreading
pages over processes is the only way Python gets more than one core's worth of it.

Each entry is hashed (RFC 6962 leaf), and its bytes must be exactly what
``immutablelog.entry.decode_entry`` accepts — the canonical (RFC 8785) encoding of a valid
entry — with its ``index`` equal to its position and its ``tenant`` equal to the log's.
Checking that one entry at a time through ``decode_entry`` costs about four times the leaf hash,
so the common case takes a fast path, slice by slice of the page: parse each entry, check
the required fields column by column and every value's type at once, and compare the
canonical encoding of the parsed slice against the slice's own bytes in a single
``orjson.dumps``. Only a page that fails the fast path is re-checked entry by entry through
``decode_entry``, which is also what names the culprit. The fast path accepts exactly what the
slow path accepts; tests/verify/test_checks.py holds it to that.

A format 2 entry commits to its erasable part (salt and values) through ``erasable_hash``:
each part the source sent is hashed and checked the same way, slice by slice; an entry
without its part is listed (``unrevealed``) for the rebuild to match against the erasure
records, which may come later in the log.

Why one comparison of the joined slice is enough: each entry was parsed on its own, so each is
a complete JSON object; if ``"[" + ",".join(canonical(e_i)) + "]"`` equals
``"[" + ",".join(bytes_i) + "]"`` and some ``bytes_i`` differed from its canonical form, one of
the two would be a proper prefix of the other followed by a comma — impossible for complete
objects. So the slice matches iff every entry does. (Parsing the joined bytes as one array
instead would not do: entries can be crafted whose bytes regroup into other elements.)
"""

from __future__ import annotations

import gc
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from immutablelog.entry import (
    COMMITTED_FIELDS,
    ENTRY_RECORD,
    ENTRY_VERSIONS,
    REQUIRED_META,
    SALT_BYTES,
    EntryError,
    decode_entry,
    is_committed,
    part_hash,
)
from immutablelog.erasure import ERASURE_EVENT, ErasureRecord, Range, read_erasure, to_ranges
from immutablelog.verify.tree import leaf_hashes, subtree_roots

#: Fields every entry holds as a string; ``tenant`` first, ``id`` second (read by position).
_TEXT_FIELDS: tuple[str, ...] = ("tenant", "id", "received_at", "idempotency_key")
_TEXT_FIELDS += tuple(name for name in REQUIRED_META if name not in _TEXT_FIELDS)
_GET_TEXTS = tuple(operator.itemgetter(name) for name in _TEXT_FIELDS)
_get_v = operator.itemgetter("v")
_get_index = operator.itemgetter("index")
_get_payload = operator.itemgetter("payload")
_INT = frozenset({int})
_STR = frozenset({str})
_HEX_DIGITS = frozenset("0123456789abcdef")
#: What decode_entry lets an entry's values be.
_VALUE_TYPES = frozenset({str, int, bool, type(None)})
#: Entries checked together on the fast path: small enough to stay in the CPU cache.
_SLICE = 1024


class MalformedAnswer(Exception):
    """The server's answer does not have the documented shape (exit code 2, not 1)."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something wrong with one entry, or with a range of positions (``[position, end)``)."""

    kind: str
    position: int
    message: str
    entry_id: str | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True)
class IndexRun:
    """Consecutive entries whose ``index`` field is off from their position by ``shift``.

    One cause (an entry deleted or inserted, then the rest renumbered) shifts every later
    entry; a run keeps that a single finding instead of a million.
    """

    position: int
    length: int
    shift: int
    first_id: str | None
    previous_id: str | None


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What checking one page (or one block of bundle lines) found.

    ``contiguous`` leading entries sit at positions ``start, start + 1, …`` and can be added
    to the tree: ``leaves`` holds their hashes and ``subtrees`` the roots of the aligned
    perfect subtrees covering them. ``covered_to`` is one past the last position this chunk
    accounted for (present or reported missing).
    """

    start: int
    received: int
    contiguous: int
    covered_to: int
    leaves: bytes
    subtrees: tuple[tuple[int, bytes], ...]
    anomalies: tuple[Anomaly, ...]
    index_runs: tuple[IndexRun, ...]
    last_id: str | None
    #: Positions of entries that commit to an erasable part the source did not send.
    unrevealed: tuple[Range, ...] = ()
    #: The erasure records among the entries.
    erasures: tuple[ErasureRecord, ...] = ()


#: An entries page split up: claimed indexes, entry bytes, erasable parts (salt || values).
Page = tuple[list[int], list[bytes | None], list[bytes | None]]


def check_page(raw: bytes, start: int, end: int, tenant: str, content: bool = True) -> ChunkResult:
    """Check a binary ``GET /v1/entries?start=&end=`` answer body (see :func:`parse_page`).

    ``content=False`` hashes without checking what the entries say: for entries a previous run
    already checked, whose bytes the rebuilt root will prove unchanged. Their erasable parts
    are still checked: the root does not cover them, and values can be changed or erased at
    any time after a run.
    """
    positions, datas, parts = parse_page(raw)
    return check_entries(positions, datas, start, end, tenant, content, parts)


def parse_page(raw: bytes) -> Page:
    """Split a page into the indexes the server claims, the entry bytes and erasable parts.

    Records are ``ENTRY_RECORD`` (index, entry length, part length) then the entry bytes and
    the part's. A page whose framing does not add up cannot be attributed to positions at
    all: it is a malformed answer.
    """
    positions: list[int] = []
    datas: list[bytes | None] = []
    parts: list[bytes | None] = []
    add_position, add_data, add_part = positions.append, datas.append, parts.append
    unpack = ENTRY_RECORD.unpack_from
    head = ENTRY_RECORD.size
    last_header = len(raw) - head
    offset = 0
    length = 0
    while offset <= last_header:
        index, length, part_length = unpack(raw, offset)
        offset += head
        add_position(index)
        add_data(raw[offset : offset + length])
        offset += length
        add_part(raw[offset : offset + part_length] if part_length else None)
        offset += part_length
        length += part_length
    if offset != len(raw):
        if offset < len(raw):
            raise MalformedAnswer(f"the entries page ends inside a record header at byte {offset}")
        raise MalformedAnswer(
            f"the record for index {positions[-1]} claims {length} bytes, but the page ends first"
        )
    return positions, datas, parts


def check_lines(block: bytes, start: int, tenant: str) -> ChunkResult:
    """Check a block of bundle lines, one a line: ``{"index": i, "entry": "<entry text>"}``,
    with ``"erasable": {"salt": "<hex>", "values": "<text>"}`` for a format 2 entry whose
    erasable part the bundle carries.

    A line that is not such an object is an anomaly at its position, not an error: a bundle
    is evidence, and a damaged one is reported as such.
    """
    fast = _lines_as_array(block)
    if fast is not None:
        positions_fast, texts_fast, parts_fast = fast
        first = positions_fast[0] if positions_fast else start
        return check_entries(
            positions_fast, _utf8(texts_fast), first, None, tenant, parts=parts_fast
        )
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    positions: list[int] = []
    texts: list[str | None] = []
    parts: list[bytes | None] = []
    bad: list[Anomaly] = []
    for offset, line in enumerate(lines):
        position = start + offset
        try:
            item = orjson.loads(line)
            index, text = item["index"], item["entry"]
            part = _bundle_part(item.get("erasable"))
            if set(item) - {"index", "entry", "erasable"}:
                raise KeyError("unknown member")
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
            index, text, part = None, None, None
        if type(index) is not int or type(text) is not str:
            bad.append(
                Anomaly(
                    "malformed_bundle",
                    position,
                    f"bundle line for position {position} is not "
                    '{"index": <int>, "entry": <string>[, "erasable": {"salt", "values"}]}',
                )
            )
            positions.append(position)
            texts.append(None)
            parts.append(None)
            continue
        positions.append(index)
        texts.append(text)
        parts.append(part)
    # A bundle's lines are its positions, but a deleted line shifts every later line number:
    # start from the index the block's first line claims, so the gap is found once, here.
    if texts and texts[0] is not None:
        start = positions[0]
    result = check_entries(positions, _utf8(texts), start, None, tenant, parts=parts)
    if not bad:
        return result
    return ChunkResult(
        result.start,
        result.received,
        result.contiguous,
        result.covered_to,
        result.leaves,
        result.subtrees,
        tuple(sorted((*bad, *result.anomalies), key=lambda a: a.position)),
        result.index_runs,
        result.last_id,
        result.unrevealed,
        result.erasures,
    )


def _bundle_part(erasable: Any) -> bytes | None:
    """The erasable part a bundle line carries (salt || values), ``None`` if it has none."""
    if erasable is None:
        return None
    salt, values = erasable["salt"], erasable["values"]
    if (
        len(erasable) != 2
        or type(salt) is not str
        or type(values) is not str
        or len(salt) != 2 * SALT_BYTES
        or not _HEX_DIGITS.issuperset(salt)
    ):
        raise ValueError("not an erasable part")
    return bytes.fromhex(salt) + values.encode("utf-8")


def _bundle_parts(erasables: list[Any]) -> list[bytes | None] | None:
    """:func:`_bundle_part` for a whole block at once, ``None`` if one is malformed."""
    given = [e for e in erasables if e is not None]
    if not given:
        return [None] * len(erasables)
    if set(map(type, given)) != {dict} or set(map(len, given)) != {2}:
        return None
    salts = [e["salt"] for e in given]
    values = [e["values"] for e in given]
    if set(map(type, salts)) != _STR or set(map(type, values)) != _STR:
        return None
    if set(map(len, salts)) != {2 * SALT_BYTES} or not _HEX_DIGITS.issuperset("".join(salts)):
        return None
    made = iter(
        [
            bytes.fromhex(salt) + text.encode("utf-8")
            for salt, text in zip(salts, values, strict=True)
        ]
    )
    return [None if e is None else next(made) for e in erasables]


def _lines_as_array(
    block: bytes,
) -> tuple[list[int], list[str | None], list[bytes | None]] | None:
    """Parse a block of well-formed lines with one ``orjson.loads``, or ``None`` to go slowly.

    Joining the lines with commas into one array is only safe if every element comes from
    exactly one line: so each line must start with ``{`` and end with ``}`` (raw newlines
    cannot occur inside JSON, so the newlines are exactly the line breaks), the element count
    must equal the line count, and every element must be exactly ``{"index": int, "entry":
    str}``, or that with ``"erasable": {"salt": str, "values": str}``: its only structural
    braces are its own first and last byte and those of that inner object, which is never
    followed by a line break and ``{`` (the element's own ``}`` comes first), so no element
    can span two lines.
    """
    body = block[:-1] if block.endswith(b"\n") else block
    if not body:
        return [], [], []
    lines = body.count(b"\n") + 1
    if not (body[:1] == b"{" and body[-1:] == b"}" and body.count(b"}\n{") == lines - 1):
        return None
    try:
        items = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
        positions = [item["index"] for item in items]
        texts: list[str | None] = [item["entry"] for item in items]
        parts = _bundle_parts([item.get("erasable") for item in items])
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
        return None
    if parts is None:
        return None
    if len(items) != lines or not {2, 3}.issuperset(map(len, items)):
        return None
    if sum(map(len, items)) != 2 * len(items) + sum(part is not None for part in parts):
        return None  # a third member that is not "erasable"
    if set(map(type, positions)) != _INT or set(map(type, texts)) != _STR:
        return None
    return positions, texts, parts


def _utf8(texts: Sequence[str | None]) -> list[bytes | None]:
    try:
        return [text.encode("utf-8") if text is not None else None for text in texts]
    except UnicodeEncodeError:
        raise MalformedAnswer("an entry is not valid Unicode text") from None


def check_entries(
    positions: Sequence[int],
    datas: Sequence[bytes | None],
    start: int,
    end: int | None,
    tenant: str,
    content: bool = True,
    parts: Sequence[bytes | None] | None = None,
) -> ChunkResult:
    """Check entries claimed to sit at ``positions``; the chunk was asked for ``[start, end)``.

    ``datas[i]`` is ``None`` for an item that could not be read at all; ``parts[i]`` is the
    erasable part (salt || values) sent with it, if any.
    """
    count = len(datas)
    contiguous = count
    if list(positions) != list(range(start, start + count)) or None in datas:
        contiguous = next(
            i
            for i, (p, d) in enumerate(zip(positions, datas, strict=True))
            if p != start + i or d is None
        )
    in_order: list[bytes] = datas[:contiguous]  # type: ignore[assignment]  # no None before
    leaves = leaf_hashes(in_order)
    subtrees = tuple(subtree_roots(start, leaves))

    anomalies: list[Anomaly] = []
    covered_to = start + contiguous
    expected = covered_to
    for i in range(contiguous, count):
        position = positions[i]
        if datas[i] is None:
            expected = max(expected, position + 1)
            continue
        if position < start or (end is not None and position >= end):
            anomalies.append(
                Anomaly(
                    "extra_entry",
                    position,
                    f"the server answered index {position} when asked for [{start}, {end})",
                )
            )
        elif position > expected:
            anomalies.append(
                Anomaly(
                    "missing_entry",
                    expected,
                    f"no entry at index {expected}"
                    + (f"..{position - 1}" if position - 1 > expected else ""),
                    end=position,
                )
            )
            expected = position + 1
        elif position < expected:
            anomalies.append(
                Anomaly(
                    "extra_entry",
                    position,
                    f"a second entry claims index {position} (or entries are out of order)",
                )
            )
        else:
            expected += 1
    covered_to = max(covered_to, expected)

    present_at = list(positions)
    present: list[bytes] = datas  # type: ignore[assignment]  # unless a None is filtered out
    present_parts: Sequence[bytes | None] = parts if parts is not None else [None] * count
    if None in datas:
        kept = [i for i, d in enumerate(datas) if d is not None]
        present_at = [positions[i] for i in kept]
        present = [datas[i] for i in kept]  # type: ignore[misc]  # None filtered out
        present_parts = [present_parts[i] for i in kept]
    index_runs: tuple[IndexRun, ...] = ()
    unrevealed: tuple[Range, ...] = ()
    erasures: tuple[ErasureRecord, ...] = ()
    last_id: str | None = None
    with _gc_paused():  # once for both checks: re-enabling it may start a collection
        if content:
            facts = _fast_content_check(present_at, present, tenant)
            if facts is None:
                slow_anomalies, runs, facts = _slow_content_check(
                    list(zip(present_at, present, strict=True)), tenant
                )
                anomalies.extend(slow_anomalies)
                index_runs = tuple(runs)
            last_id = facts.last_id
        else:
            facts = _checked_facts(present)
        part_anomalies, unrevealed, erasures = _check_parts(present_at, present_parts, facts)
    anomalies.extend(part_anomalies)
    anomalies.sort(key=lambda a: a.position)
    return ChunkResult(
        start=start,
        received=count,
        contiguous=contiguous,
        covered_to=covered_to,
        leaves=b"".join(leaves),
        subtrees=subtrees,
        anomalies=tuple(anomalies),
        index_runs=index_runs,
        last_id=last_id,
        unrevealed=unrevealed,
        erasures=erasures,
    )


@dataclass(slots=True)
class _Facts:
    """What the content check learned for the erasable-part check: which entries (by their
    place in the list checked) commit to which hash, and which are erasure records."""

    last_id: str | None = None
    commitments: list[tuple[int, str, str]] = field(default_factory=list)  # place, hash, id
    erasures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _checked_facts(datas: list[bytes]) -> _Facts:
    """The facts of entries a previous run content-checked (valid and canonical, so their
    bytes can be searched rather than parsed): sorted keys put ``v`` last, and in canonical
    JSON these field names cannot occur inside a string, whose quotes are escaped."""
    facts = _Facts()
    record = b'"event_name":"' + ERASURE_EVENT.encode() + b'"'
    for place, data in enumerate(datas):
        if not data.endswith(b'"v":2}'):
            continue
        at = data.find(b'"erasable_hash":"')
        if at >= 0:
            digest = data[at + 17 : at + 81].decode("ascii", "replace")
            facts.commitments.append((place, digest, _id_of_checked(data)))
        elif record in data:
            facts.erasures.append((place, orjson.loads(data)))
    return facts


def _id_of_checked(data: bytes) -> str:
    at = data.find(b'"id":"') + 6
    return data[at : data.find(b'"', at)].decode("utf-8", "replace")


def _fast_content_check(positions: list[int], datas: list[bytes], tenant: str) -> _Facts | None:
    """Whole-page check; the facts if every entry passes, else ``None``.

    Done in slices: a slice's parsed dicts stay in the CPU cache, and the cyclic garbage
    collector, which would otherwise walk every dict of a big page many times over, is paused
    (parsed JSON holds no cycles).
    """
    facts = _Facts()
    with _gc_paused():
        for first in range(0, len(datas), _SLICE):
            end = first + _SLICE
            if not _fast_slice(positions[first:end], datas[first:end], tenant, first, facts):
                return None
    return facts


def _fast_slice(
    positions: list[int], datas: list[bytes], tenant: str, offset: int, facts: _Facts
) -> bool:
    """Whether every entry of ``datas`` passes; if so, adds what it learned to ``facts``."""
    try:
        dicts = list(map(orjson.loads, datas))
        versions = list(map(_get_v, dicts))
        indexes = list(map(_get_index, dicts))
        texts = [list(map(get, dicts)) for get in _GET_TEXTS]
    except (orjson.JSONDecodeError, KeyError, TypeError):  # TypeError: not an object
        return False
    count = len(dicts)
    # Types first: True == 1, so an equality alone would let "v": true through.
    if set(map(type, versions)) != _INT or not ENTRY_VERSIONS.issuperset(versions):
        return False
    if set(map(type, indexes)) != _INT or indexes != positions:
        return False
    if any(set(map(type, column)) != _STR for column in texts):
        return False
    if texts[0].count(tenant) != count:
        return False
    if not _VALUE_TYPES.issuperset(map(type, chain.from_iterable(map(dict.values, dicts)))):
        return False
    commitments: list[tuple[int, str, str]] = []
    clear: list[dict[str, Any]] = dicts
    hashes = [d.get("erasable_hash") for d in dicts]
    if hashes.count(None) != count:
        # Checked a slice at a time, not entry by entry: the per-entry calls would cost more
        # than the rest of the check. (A format 1 entry may hold the name as meta: the
        # version check sends it to decode_entry, which decides.)
        places = [i for i, digest in enumerate(hashes) if digest is not None]
        clear = [d for d, digest in zip(dicts, hashes, strict=True) if digest is None]
        digests = [hashes[i] for i in places]
        if {versions[i] for i in places} != {2} or set(map(type, digests)) != _STR:
            return False
        if set(map(len, digests)) != {64} or not _HEX_DIGITS.issuperset("".join(digests)):
            return False
        if not COMMITTED_FIELDS.issuperset(set().union(*(dicts[i] for i in places))):
            return False
        ids = texts[1]
        commitments = [
            (offset + i, digest, ids[i]) for i, digest in zip(places, digests, strict=True)
        ]
    try:
        if set(map(type, map(_get_payload, clear))) - _STR:
            return False
    except KeyError:
        return False
    if orjson.dumps(dicts, option=orjson.OPT_SORT_KEYS) != b"[" + b",".join(datas) + b"]":
        return False
    facts.commitments.extend(commitments)
    if any(d["event_name"] == ERASURE_EVENT for d in clear):
        facts.erasures.extend(
            (offset + i, d) for i, d in enumerate(dicts) if d["event_name"] == ERASURE_EVENT
        )
    facts.last_id = texts[1][-1]
    return True


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _slow_content_check(
    entries: list[tuple[int, bytes]], tenant: str
) -> tuple[list[Anomaly], list[IndexRun], _Facts]:
    """Entry-by-entry check through ``decode_entry``, naming each culprit."""
    anomalies: list[Anomaly] = []
    runs: list[IndexRun] = []
    run: list[Any] | None = None  # [position, length, shift, first_id, previous_id]
    previous_id: str | None = None
    facts = _Facts()
    for place, (position, data) in enumerate(entries):
        entry_id = _best_effort_id(data)
        problem = _entry_problem(data)
        if problem is not None:
            anomalies.append(Anomaly("non_canonical_entry", position, problem, entry_id))
        else:
            entry = orjson.loads(data)
            if is_committed(entry):
                facts.commitments.append((place, entry["erasable_hash"], entry["id"]))
            elif entry["event_name"] == ERASURE_EVENT:
                facts.erasures.append((place, entry))
            if entry["tenant"] != tenant:
                anomalies.append(
                    Anomaly(
                        "wrong_tenant",
                        position,
                        f"entry belongs to tenant {entry['tenant']!r}, not {tenant!r}",
                        entry_id,
                    )
                )
            shift = entry["index"] - position
            if run is not None and (shift != run[2] or position != run[0] + run[1]):
                runs.append(IndexRun(*run))
                run = None
            if shift:
                if run is None:
                    run = [position, 0, shift, entry_id, previous_id]
                run[1] += 1
        previous_id = entry_id
    if run is not None:
        runs.append(IndexRun(*run))
    facts.last_id = previous_id
    return anomalies, runs, facts


def _check_parts(
    positions: list[int], parts: Sequence[bytes | None], facts: _Facts
) -> tuple[list[Anomaly], tuple[Range, ...], tuple[ErasureRecord, ...]]:
    """Check each erasable part sent against its entry's commitment, list the entries sent
    without one, and read the erasure records."""
    anomalies: list[Anomaly] = []
    missing: list[int] = []
    revealed: list[tuple[int, str, bytes, str]] = []
    for place, digest, entry_id in facts.commitments:
        part = parts[place]
        if part is None:
            missing.append(positions[place])
        else:
            revealed.append((positions[place], digest, part, entry_id))
    if revealed:
        anomalies.extend(_check_revealed(revealed))
    erasures: list[ErasureRecord] = []
    for place, entry in facts.erasures:
        try:
            record = read_erasure(entry)
        except EntryError as exc:
            anomalies.append(
                Anomaly("invalid_erasure", positions[place], exc.message, entry.get("id"))
            )
            continue
        if record is not None:
            erasures.append(record)
    return anomalies, tuple(to_ranges(missing)), tuple(erasures)


def _check_revealed(revealed: list[tuple[int, str, bytes, str]]) -> list[Anomaly]:
    """Each part must hash to its entry's commitment. That binds the values to the signed
    tree byte for byte; their JSON form is checked where they are shown (``prove``, the
    server's reads, ``decode_erasable``), not here, where it would double the cost of a
    run for nothing a changed byte could hide behind."""
    computed = [part_hash(part) for _, _, part, _ in revealed]
    if (
        computed == [digest for _, digest, _, _ in revealed]
        and min(len(part) for _, _, part, _ in revealed) > SALT_BYTES
    ):
        return []
    return [
        Anomaly(
            "altered_values",
            position,
            "the erasable part does not hash to the entry's erasable_hash "
            "(its salt or values were changed)",
            entry_id,
        )
        for (position, digest, part, entry_id), mine in zip(revealed, computed, strict=True)
        if mine != digest or len(part) <= SALT_BYTES
    ]


def _entry_problem(data: bytes) -> str | None:
    """Why ``data`` is not a valid canonical entry, or ``None``."""
    try:
        entry = decode_entry(data)
    except EntryError as exc:
        return exc.message
    # decode_entry compares with ==, so true/1.0 would pass for 1; an entry never holds them.
    if type(entry["v"]) is not int:
        return f"entry field v is {entry['v']!r}, not an integer"
    if type(entry["index"]) is not int:
        return f"entry field index is {entry['index']!r}, not an integer"
    return None


def _best_effort_id(data: bytes) -> str | None:
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    found = entry.get("id") if isinstance(entry, dict) else None
    return found if isinstance(found, str) else None
