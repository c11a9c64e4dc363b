"""The log entry: what a submitted event becomes, and the exact bytes that get hashed.

The entry bytes are the RFC 8785 (JCS) serialization of a flat JSON object. They are stored
as the truth; every indexed column is derived from them. The server, the SDK's embedded mode
and the independent verifier all use this module, so they agree on one encoding.

Format 2 keeps personal data out of the hashed bytes: a client's event commits to its payload
and extra meta (the *erasable part*) only through a salted hash, so the values can be erased
later while every proof stays valid. docs/PROTOCOL.md §2 is the reference.

We only ever put strings, integers within ±2**53, booleans and null into an entry, with
ASCII keys. For that subset, orjson with sorted keys produces the JCS bytes exactly (same key
order, same string escapes, no whitespace), ten times faster than the standard library and
far faster than a general JCS encoder; the test suite checks the equality against the
reference encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from immutablelog import strict_json
from immutablelog._uuid import uuid7_batch

#: The format the server writes; format 1 entries stay readable and verifiable.
ENTRY_VERSION: Final = 2
ENTRY_VERSIONS: Final = frozenset({1, 2})
#: Bytes of random salt per erasable part: enough that a short value (an e-mail address, an
#: IP address) cannot be found by hashing guesses.
SALT_BYTES: Final = 16
#: The service of the log's own records (tenants, keys, exports, erasures).
ADMIN_SERVICE: Final = "immutablelog"
MAX_PAYLOAD_BYTES: Final = 12 * 1024
#: How deeply objects and arrays may nest in a payload (``json_too_deep`` beyond).
MAX_PAYLOAD_DEPTH: Final = 64
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255
MAX_FIELD_CHARS: Final = 255
MAX_EXTRA_VALUE_CHARS: Final = 1024
MAX_EXTRA_META_FIELDS: Final = 32
MAX_SAFE_INT: Final = 2**53 - 1
EVENT_TYPES: Final = frozenset({"success", "info", "warning", "error"})

#: ``GET /v1/entries`` answers this media type, when asked for it, with one record per entry:
#: the entry's index (8 bytes), its byte length and its erasable part's byte length (4 bytes
#: each), big-endian, then the entry bytes, then the erasable part (salt, then values; none
#: for a format 1 or clear entry, or once erased). Server and verifier read the framing from
#: here so they cannot drift apart.
ENTRIES_MEDIA_TYPE: Final = "application/octet-stream"
ENTRY_RECORD: Final = struct.Struct(">QII")

#: Meta fields every entry carries, in addition to the server-assigned ones.
REQUIRED_META: Final = ("type", "event_name", "service")
OPTIONAL_META: Final = ("request_id", "env")
#: The meta a format 2 entry holds in clear: what an event is, never who it is about.
CLEAR_META: Final = (*REQUIRED_META, *OPTIONAL_META)
#: Keys the server sets itself; a client cannot supply them through ``meta``.
SERVER_FIELDS: Final = frozenset(
    {
        "v",
        "tenant",
        "index",
        "id",
        "received_at",
        "idempotency_key",
        "payload",
        "erasable_hash",
        "erased",
    }
)
#: Every field of a format 2 entry that commits to an erasable part.
COMMITTED_FIELDS: Final = frozenset(
    {"v", "tenant", "index", "id", "received_at", "idempotency_key", "erasable_hash", *CLEAR_META}
)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_EXTRA_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


class EntryError(ValueError):
    """A submission that cannot become an entry. ``reason`` is a machine code, ``field`` the
    offending field (dotted), so that the HTTP layer can answer 422 naming it."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


class PayloadTooLarge(EntryError):
    """The payload exceeds :data:`MAX_PAYLOAD_BYTES` (answered with 413, not 422)."""


class _SaltPool(threading.local):
    """Salts cut from one ``os.urandom`` call per 256 entries and thread: a call per salt
    costs more than sealing the values. A child process after ``fork`` draws afresh, so
    parent and child never hand out the same salt."""

    _generation = 0  # bumped in every forked child

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0
        self.generation = -1

    def take(self) -> bytes:
        if self.offset >= len(self.buffer) or self.generation != _SaltPool._generation:
            self.buffer = os.urandom(SALT_BYTES * 256)
            self.offset = 0
            self.generation = _SaltPool._generation
        start = self.offset
        self.offset = start + SALT_BYTES
        return self.buffer[start : self.offset]


def _forked() -> None:
    _SaltPool._generation += 1


os.register_at_fork(after_in_child=_forked)
_SALTS = _SaltPool()


@dataclass(frozen=True, slots=True)
class Erasable:
    """The erasable part of a format 2 entry: a random salt and the JCS bytes of the values
    (``payload`` and every extra meta field). The entry holds only ``commitment``."""

    salt: bytes
    values: bytes
    commitment: str

    @classmethod
    def seal(cls, values: bytes, salt: bytes | None = None) -> Erasable:
        salt = _SALTS.take() if salt is None else salt
        return cls(salt, values, erasable_hash(salt, values))

    def to_bytes(self) -> bytes:
        """Salt then values, as the binary entries record and the stores hold it."""
        return self.salt + self.values

    @classmethod
    def from_bytes(cls, data: bytes) -> Erasable:
        if len(data) <= SALT_BYTES:
            raise EntryError("invalid_erasable", "an erasable part holds no values after its salt")
        return cls.seal(data[SALT_BYTES:], data[:SALT_BYTES])


def erasable_hash(salt: bytes, values: bytes) -> str:
    """Hex ``SHA-256(0x02 || salt || values)``: the prefix keeps it apart from RFC 6962's
    leaf (0x00) and node (0x01) hashes."""
    if len(salt) != SALT_BYTES:
        raise EntryError("invalid_erasable", f"the salt must be {SALT_BYTES} bytes")
    return part_hash(salt + values)


def part_hash(part: bytes) -> str:
    """:func:`erasable_hash` of an erasable part as stored and sent (salt, then values), its
    length unchecked: for a verifier that hashes a page of parts at once."""
    return hashlib.sha256(b"\x02" + part).hexdigest()


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated event as a client submitted it, before the ledger assigns its place."""

    payload: str
    meta: Mapping[str, Any]
    idempotency_key: str
    fingerprint: bytes
    #: Hex SHA-256 of the payload's UTF-8 bytes, computed with the validation (off the
    #: single writer's thread).
    payload_hash: str
    #: The salted values the entry commits to; ``None`` for the log's own records, whose
    #: payload is public and stays in the entry.
    erasable: Erasable | None


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """JCS bytes of an object holding only str / safe int / bool / None values and ASCII keys."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _check_text(value: Any, field: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise EntryError("invalid_field", f"{field} must be a string", field)
    if not value and not allow_empty:
        raise EntryError("invalid_field", f"{field} must not be empty", field)
    if len(value) > max_chars:
        raise EntryError("invalid_field", f"{field} is longer than {max_chars} characters", field)
    if "\x00" in value:  # the derived columns are database text, which cannot hold NUL
        raise EntryError("invalid_field", f"{field} must not contain NUL", field)
    if not value.isascii():
        _utf8(value, field)
    return value


def _utf8(value: str, field: str) -> bytes:
    # A lone surrogate (possible via a JSON "\ud800" escape) has no UTF-8 form: refuse it
    # rather than store something no other implementation could hash identically.
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise EntryError("invalid_field", f"{field} is not valid Unicode", field) from None


def _check_extra(key: Any, value: Any) -> None:
    field = f"meta.{key}"
    if not isinstance(key, str) or not _EXTRA_KEY.match(key):
        raise EntryError(
            "invalid_field", f"{field}: meta keys must match [a-z][a-z0-9_]{{0,63}}", field
        )
    if key in SERVER_FIELDS:
        raise EntryError("invalid_field", f"{field} is set by the server", field)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise EntryError("invalid_field", f"{field} is outside ±2^53", field)
        return
    if isinstance(value, str):
        _check_text(value, field, MAX_EXTRA_VALUE_CHARS, allow_empty=True)
        return
    raise EntryError(
        "invalid_field", f"{field} must be a string, an integer, a boolean or null", field
    )


def _check_payload_size(size: int) -> None:
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            "payload_too_large",
            f"payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (UTF-8)",
            "payload",
        )


def validate_submission(
    payload: Any,
    meta: Any,
    idempotency_key: Any,
    client_fields: Mapping[str, Any] | None = None,
    *,
    clear: bool = False,
    salt: bytes | None = None,
) -> Submission:
    """Check one submitted event and normalize it.

    ``payload`` is the JSON document as a string (stored byte for byte) or as an object
    (stored as its compact serialization). ``client_fields`` are extra meta taken from
    request headers (client time zone), validated like any other meta. The erasable part is
    sealed here, with a fresh salt unless ``salt`` is given, off the single writer's thread;
    ``clear`` is for the log's own records only, never for what a client sent.
    """
    try:
        if isinstance(payload, dict):
            # A body's objects were parsed strictly; one built in Python may still hold NaN.
            strict_json.check_depth(payload, MAX_PAYLOAD_DEPTH)
            payload = json.dumps(
                payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        elif isinstance(payload, str):
            if len(payload) > MAX_PAYLOAD_BYTES:  # at least as many bytes: refuse unparsed
                _check_payload_size(len(payload))
            strict_json.loads(payload, MAX_PAYLOAD_DEPTH)
        else:
            raise EntryError("invalid_field", "payload must be a JSON string or object", "payload")
    except EntryError:
        raise
    except strict_json.JSONRejected as exc:
        # Plain syntax errors keep their long-standing reason; the stricter checks name theirs.
        reason = "invalid_field" if exc.reason == "malformed_json" else exc.reason
        raise EntryError(reason, f"payload: {exc.message}", "payload") from None
    except (ValueError, TypeError):  # from json.dumps: NaN, or no JSON form at all
        raise EntryError(
            "invalid_field", "payload is not serializable as JSON", "payload"
        ) from None
    encoded = _utf8(payload, "payload")
    _check_payload_size(len(encoded))
    if not isinstance(meta, dict):
        raise EntryError("invalid_field", "meta must be an object", "meta")

    normalized: dict[str, Any] = {}
    for name in REQUIRED_META:
        if name not in meta or meta[name] is None:
            raise EntryError("missing_field", f"meta.{name} is required", f"meta.{name}")
        normalized[name] = _check_text(meta[name], f"meta.{name}", MAX_FIELD_CHARS)
    if normalized["type"] not in EVENT_TYPES:
        raise EntryError(
            "invalid_type",
            f"meta.type must be one of {', '.join(sorted(EVENT_TYPES))}",
            "meta.type",
        )
    for name in OPTIONAL_META:
        value = meta.get(name)
        normalized[name] = (
            None
            if value is None
            else _check_text(value, f"meta.{name}", MAX_FIELD_CHARS, allow_empty=True)
        )
    extras = {k: v for k, v in meta.items() if k not in normalized}
    if client_fields:
        extras.update({k: v for k, v in client_fields.items() if k not in extras})
    if len(extras) > MAX_EXTRA_META_FIELDS:
        raise EntryError(
            "invalid_field", f"meta has more than {MAX_EXTRA_META_FIELDS} extra fields", "meta"
        )
    for key, value in extras.items():
        _check_extra(key, value)
    normalized.update(extras)

    key = _check_text(idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS)
    digest = hashlib.sha256(encoded)
    erasable = None
    if not clear:
        extras["payload"] = payload
        erasable = Erasable.seal(canonical_json(extras), salt)
    return Submission(
        payload,
        normalized,
        key,
        _fingerprint(digest.digest(), normalized),
        digest.hexdigest(),
        erasable,
    )


def _fingerprint(payload_digest: bytes, meta: Mapping[str, Any]) -> bytes:
    # Over the payload's digest, not the payload: it is hashed anyway for payload_hash,
    # and re-escaping a 12 KiB string inside JSON would cost more than the meta.
    return hashlib.sha256(payload_digest + canonical_json(meta)).digest()


def fingerprint_of(entry: Mapping[str, Any]) -> bytes:
    """The fingerprint of the submission an entry was made from (a revealed entry, see
    :func:`reveal`): a replay with the same Idempotency-Key is a duplicate only if its
    fingerprint is this one. Never stored, so its definition may change between releases."""
    meta = {k: v for k, v in entry.items() if k not in SERVER_FIELDS}
    return _fingerprint(hashlib.sha256(str(entry["payload"]).encode("utf-8")).digest(), meta)


def build_entry(
    submission: Submission, *, tenant: str, index: int, entry_id: str, received_at: str
) -> dict[str, Any]:
    """The format 2 entry object for a submission placed at ``index`` of ``tenant``'s log:
    the clear meta and the commitment to its erasable part, or, for the log's own records,
    every field in clear."""
    meta = submission.meta
    sealed = submission.erasable
    if sealed is None:
        entry: dict[str, Any] = dict(meta)
        entry["payload"] = submission.payload
    else:
        entry = {name: meta[name] for name in CLEAR_META}
        entry["erasable_hash"] = sealed.commitment
    entry.update(
        v=ENTRY_VERSION,
        tenant=tenant,
        index=index,
        id=entry_id,
        received_at=received_at,
        idempotency_key=submission.idempotency_key,
    )
    return entry


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """The entry bytes that are stored and hashed."""
    return canonical_json(entry)


def decode_entry(data: bytes) -> dict[str, Any]:
    """Parse entry bytes, refusing anything that is not the canonical encoding of an entry.

    The round-trip check means two different byte strings can never decode to the same entry,
    so a verifier that checks ``leaf_hash(data)`` also checks what it shows to a reader.
    """
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EntryError("invalid_entry", f"entry bytes are not JSON: {exc}") from None
    if not isinstance(entry, dict):
        raise EntryError("invalid_entry", "entry bytes are not a JSON object")
    version = entry.get("v")
    if type(version) is not int or version not in ENTRY_VERSIONS:
        raise EntryError("invalid_entry", f"unsupported entry version {version!r}")
    committed = is_committed(entry)
    if committed:
        if "payload" in entry:
            raise EntryError("invalid_entry", "an entry holds either a payload or its hash")
        if not isinstance(entry["erasable_hash"], str) or not _HEX_SHA256.match(
            entry["erasable_hash"]
        ):
            raise EntryError("invalid_entry", "entry field erasable_hash is not a SHA-256")
        stray = entry.keys() - COMMITTED_FIELDS
        if stray:
            raise EntryError("invalid_entry", f"entry holds {min(stray)} outside its erasable part")
    required = ("tenant", "id", "received_at", "idempotency_key", *REQUIRED_META)
    for name in required if committed else (*required, "payload"):
        if not isinstance(entry.get(name), str):
            raise EntryError("invalid_entry", f"entry field {name} is missing or not a string")
    index = entry.get("index")
    if type(index) is not int or index < 0:
        raise EntryError("invalid_entry", "entry field index is missing or negative")
    if any(isinstance(value, float | list | dict) for value in entry.values()):
        # Entries hold only strings, integers, booleans and null (see canonical_json).
        raise EntryError(
            "invalid_entry", "entry values must be strings, integers, booleans or null"
        )
    if canonical_json(entry) != data:
        raise EntryError("invalid_entry", "entry bytes are not in canonical (RFC 8785) form")
    return entry


def decode_erasable(entry: Mapping[str, Any], data: bytes) -> dict[str, Any]:
    """The values of a committed entry's erasable part (salt, then values), refusing a part
    whose salted hash is not the entry's ``erasable_hash`` or whose values are not the
    canonical encoding of a payload and extra meta."""
    part = Erasable.from_bytes(data)
    if part.commitment != entry.get("erasable_hash"):
        raise EntryError("erasable_mismatch", "the erasable part does not match erasable_hash")
    try:
        values = orjson.loads(part.values)
    except orjson.JSONDecodeError as exc:
        raise EntryError("invalid_erasable", f"erasable values are not JSON: {exc}") from None
    if not isinstance(values, dict) or not isinstance(values.get("payload"), str):
        raise EntryError("invalid_erasable", "erasable values hold no payload string")
    for key, value in values.items():
        if key == "payload":
            continue
        if key in CLEAR_META:
            raise EntryError("invalid_erasable", f"erasable values hold the clear field {key}")
        try:
            _check_extra(key, value)
        except EntryError as exc:
            raise EntryError("invalid_erasable", exc.message, exc.field) from None
    if canonical_json(values) != part.values:
        raise EntryError("invalid_erasable", "erasable values are not in canonical form")
    return values


def reveal(entry: Mapping[str, Any], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The event a reader sees: the entry with its erasable values put back. ``values`` is
    ``None`` for an entry without an erasable part (format 1, the log's own records)."""
    if values is None:
        return dict(entry)
    return {**entry, **values}


def is_committed(entry: Mapping[str, Any]) -> bool:
    """Whether an entry keeps its payload and extra meta in an erasable part (format 2 only:
    a format 1 entry may hold ``erasable_hash`` as a client's meta field)."""
    return entry.get("v") == 2 and "erasable_hash" in entry


def payload_hash(entry: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the payload bytes exactly as the client sent them (of a revealed
    entry: the payload is not in a committed entry's bytes)."""
    return hashlib.sha256(str(entry["payload"]).encode("utf-8")).hexdigest()


def new_entry_ids(count: int) -> list[str]:
    """``count`` entry ids made in one go: UUIDv7s (RFC 9562) of the current millisecond,
    random but ordered by time, so the id index grows at its end."""
    return uuid7_batch(count)


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds, the form of ``received_at``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    # isoformat, unlike strftime's %Y, always writes four-digit years, so that these strings
    # sort as the times do (the index compares them as text).
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
