"""The event as it travels on the wire, and the seed-compatible rules that shape it.

Everything here is pure and framework-neutral. The functions that decide an event's kind,
severity, message and size limit reproduce the seed extension's behaviour exactly, because
existing ImmutableLog dashboards and queries rely on those values.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _escape
from typing import Any, Final, Literal

from immutablelog._uuid import uuid7_batch

#: The event kinds the server accepts in ``meta.type``.
EventKind = Literal["success", "info", "warning", "error"]
EVENT_KINDS: Final[frozenset[str]] = frozenset({"success", "info", "warning", "error"})

#: The seed's per-event payload limit: 12 KB of UTF-8 (the server enforces it too).
MAX_PAYLOAD_BYTES: Final = 12_000

#: The seed keeps a failed request's body text only when it is shorter than this.
SEED_BODY_TEXT_LIMIT: Final = 2_000

#: HTTP statuses the seed marks as ``retryable`` in an error event.
RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({408, 429, 500, 502, 503, 504})


#: The ledger's limit on a meta text field (``event_name``, ``request_id``, …), in characters.
MAX_META_CHARS: Final = 255


def meta_text(value: str) -> str:
    """``value`` as the ledger accepts it in a meta text field: NUL (which a database's text
    cannot hold) as U+FFFD, and at most :data:`MAX_META_CHARS` characters, the last an
    ellipsis when cut. A name made from a request's path (``http.GET./…``) can break either
    rule, and an event the ledger refuses would be lost."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if len(value) > MAX_META_CHARS:
        value = value[: MAX_META_CHARS - 1] + "\u2026"
    return value


def severity_from(status_code: int | None, exc_type: str | None) -> EventKind:
    """Map an HTTP outcome to an event kind, as the seed does.

    Any exception makes an ``error``; otherwise 4xx/5xx are errors, 3xx ``info``, 2xx ``success``.
    """
    if exc_type is not None:
        return "error"
    if status_code is None:
        return "info"
    if status_code >= 400:
        return "error"
    if status_code >= 300:
        return "info"
    if status_code >= 200:
        return "success"
    return "info"


def severity_level(kind: str) -> str:
    """The seed's ``severity`` field: errors are high, warnings medium, everything else low."""
    if kind == "error":
        return "high"
    if kind == "warning":
        return "medium"
    return "low"


def http_message(method: str, path: str, status_code: int | None, exc_type: str | None) -> str:
    """The seed's human-readable message for a request event (kept verbatim for dashboards)."""
    if exc_type is not None:
        return f"{method} {path} failed with exception: {exc_type}"
    kind = severity_from(status_code, None)
    if kind == "error":
        return f"{method} {path} returned error {status_code}"
    if kind == "success":
        return f"{method} {path} completed successfully"
    return f"{method} {path} processed"


# One encoder for every payload (``json.dumps`` with options builds a new one per call), writing
# the compact form the ledger itself writes of a payload sent as a document.
# ``default=str`` keeps a custom event whose data holds a datetime or Decimal deliverable instead
# of failing in the worker thread, far away from the code that recorded it.
_PAYLOAD_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float as its text (``"nan"``, ``"inf"``): JSON has
    no such numbers, and the ledger refuses a document that holds them."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def _dumps(payload: dict[str, Any]) -> str:
    try:
        text = _PAYLOAD_ENCODER.encode(payload)
    except ValueError:  # a NaN or an infinity somewhere (rare: only then is it walked)
        text = _PAYLOAD_ENCODER.encode(finite(payload))
    if not text.isascii():
        # Lone surrogates (from undecodable bytes) cannot be sent as UTF-8: replace them, so the
        # string we keep is exactly the text the server receives, stores and hashes.
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def clamp_payload(payload: dict[str, Any]) -> str:
    """Serialize ``payload`` within :data:`MAX_PAYLOAD_BYTES`, shedding detail as the seed does.

    First the full document; if too large, without the bulky optional blocks (``error``, which
    carries the request body, and a custom event's ``data``); if still too large, only the
    identifying fields with the message cut to 500 characters. The result is the exact string
    the server stores and hashes, so it is produced once and never re-serialized.
    """
    text = _dumps(payload)
    if len(text) * 4 <= MAX_PAYLOAD_BYTES or len(text.encode("utf-8")) <= MAX_PAYLOAD_BYTES:
        return text
    slimmer = dict(payload)
    for bulky in ("error", "request_body", "data"):
        slimmer.pop(bulky, None)
    text = _dumps(slimmer)
    if len(text.encode("utf-8")) <= MAX_PAYLOAD_BYTES:
        return text
    return _dumps(
        {
            "id": payload.get("id"),
            "kind": payload.get("kind"),
            "message": (payload.get("message") or "event")[:500],
            "timestamp": payload.get("timestamp"),
        }
    )


class UuidPool:
    """Ready-made UUIDv7 strings, so that taking an id is usually a ``deque.pop()``.

    Formatting one UUID costs about a microsecond, sixteen made at once about a third of that
    each (:func:`~immutablelog._uuid.uuid7_batch`). Whoever takes the last id makes the next
    :attr:`CHUNK`, on its own thread: a few µs now and then. (A second thread that kept a large
    pool full held the GIL for a millisecond at a time, and a request that arrived meanwhile
    waited for it: on an ASGI server that was the p99.) A UUIDv7 carries the time it was made,
    so ids older than :attr:`MAX_AGE` are not handed out; a forked child empties its copy at
    once, as ids made in the parent could be handed out by both processes.
    """

    CHUNK: Final = 16
    MAX_AGE: Final = 0.25  # seconds

    def __init__(self) -> None:
        self._ids: collections.deque[str] = collections.deque()
        self._stale_at = 0.0

    def take(self) -> str:
        """A UUIDv7 no one else has been or will be given."""
        ids = self._ids
        if ids and time.monotonic() < self._stale_at:
            try:
                return ids.pop()
            except IndexError:  # another thread took the last one meanwhile
                pass
        fresh = uuid7_batch(self.CHUNK)
        taken = fresh.pop()
        # The ids first, their deadline second: a thread in between sees new ids with the old
        # deadline and makes its own, rather than old ids with the new deadline.
        self._ids = collections.deque(fresh)
        self._stale_at = time.monotonic() + self.MAX_AGE
        return taken

    def forget(self) -> None:
        """Drop every pre-made id (after ``fork()``, in the child)."""
        self._ids = collections.deque()


#: The process-wide pool used by the integrations.
UUIDS: Final = UuidPool()
os.register_at_fork(after_in_child=UUIDS.forget)


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One event ready for ``POST /v1/events/batch``: exactly the bytes that will be stored.

    ``idempotency_key`` is the event's own UUIDv7 (also the payload's ``id``), so a redelivery
    after a timeout, a retry or a replay from the spool is recognised by the server as the same
    event, while two different events can never share a key. ``encoded`` is the batch item as
    compact JSON, computed once: it is what the transport concatenates into a request body and
    what the spool stores. It holds the payload as a string, or (a request event's fast path)
    as the document itself: then ``payload`` is exactly the compact serialization the ledger
    stores of it (docs/PROTOCOL.md §1), so the stored bytes are the same either way.
    """

    idempotency_key: str
    payload: str
    meta: dict[str, str]
    encoded: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.encoded:
            object.__setattr__(self, "encoded", _encode_item(self))

    def item(self) -> dict[str, Any]:
        """The batch item object (docs/PROTOCOL.md §1)."""
        return {"payload": self.payload, "meta": self.meta, "idempotency_key": self.idempotency_key}

    @classmethod
    def decode(cls, data: bytes) -> WireEvent:
        """Rebuild an event from its ``encoded`` bytes (spool replay, dead-letter tooling)."""
        item = json.loads(data)
        payload = item["payload"]
        if not isinstance(payload, str):  # a document: the text the ledger will store of it
            payload = _PAYLOAD_ENCODER.encode(payload)
        return cls(
            idempotency_key=str(item["idempotency_key"]),
            payload=payload,
            meta={str(k): str(v) for k, v in dict(item["meta"]).items()},
        )


_new_event = object.__new__
_set_key = vars(WireEvent)["idempotency_key"].__set__  # the slots' own descriptors
_set_payload = vars(WireEvent)["payload"].__set__
_set_meta = vars(WireEvent)["meta"].__set__
_set_encoded = vars(WireEvent)["encoded"].__set__


def prebuilt_event(
    idempotency_key: str, payload: str, meta: dict[str, str], encoded: bytes
) -> WireEvent:
    """A :class:`WireEvent` whose ``encoded`` bytes the caller wrote itself (the builder's
    common case), made without the frozen dataclass's ``__init__``: its four
    ``object.__setattr__`` calls and ``__post_init__`` cost a microsecond per event, a third
    of the rest of building it. ``encoded`` must be what :func:`_encode_item` would make."""
    event: WireEvent = _new_event(WireEvent)
    _set_key(event, idempotency_key)
    _set_payload(event, payload)
    _set_meta(event, meta)
    _set_encoded(event, encoded)
    return event


def _encode_item(event: WireEvent) -> bytes:
    """Compact JSON of the batch item, assembled from C-escaped strings.

    About five times cheaper than ``json.dumps`` of the item dict, which matters because this
    runs once per event in the worker; the result is the same document.
    """
    try:
        fields = ",".join([f"{_escape(k)}:{_escape(v)}" for k, v in event.meta.items()])
        text = (
            f'{{"payload":{_escape(event.payload)},"meta":{{{fields}}},'
            f'"idempotency_key":{_escape(event.idempotency_key)}}}'
        )
    except TypeError:  # a non-string meta value: let the general encoder cope
        text = json.dumps(event.item(), ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", errors="replace")
