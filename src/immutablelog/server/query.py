"""Reading events: search with an opaque cursor, one event with its proof, the server-side
integrity check, and streamed exports."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
from collections.abc import Iterator
from typing import Any, Final

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from immutablelog.entry import EVENT_TYPES, timestamp
from immutablelog.ledger import Ledger, LedgerError, Tenant
from immutablelog.ledger.storage import DERIVED_COLUMNS, EventQuery, StoredEntry
from immutablelog.merkle import leaf_hash
from immutablelog.server.auth import require_key
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.links import inside, require_reader
from immutablelog.server.params import (
    MAX_TEXT_CHARS,
    choice_param,
    int_param,
    position,
    single,
    text_param,
    time_param,
)
from immutablelog.server.read import entry_item, ledger_error
from immutablelog.server.witnessing import Witnessing

MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100
EXPORT_PAGE: Final = 1000
BUNDLE_FORMAT: Final = "immutablelog-bundle/2"
CSV_COLUMNS: Final = ("index", *DERIVED_COLUMNS, "payload", "leaf_hash")
_TEXT_FILTERS: Final = ("service", "env", "type", "event_name", "request_id", "actor", "q")
_FILTERS: Final = (*_TEXT_FILTERS, "since", "until")


def _filters_digest(request: Request, descending: bool) -> str:
    """Ties a cursor to the filters it was made for, so it cannot silently skip events."""
    parts = [f"{name}={request.query_params.get(name, '')}" for name in _FILTERS]
    parts.append("desc" if descending else "asc")
    return hashlib.sha256("&".join(parts).encode()).hexdigest()[:16]


def _encode_cursor(index: int, digest: str) -> str:
    raw = orjson.dumps({"i": index, "f": digest})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, digest: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        index, made_for = position(data["i"]), data["f"]
    except (ValueError, TypeError, KeyError):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this server made") from None
    if index is None:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this server made")
    if made_for != digest:
        raise ApiError(
            400,
            "invalid_cursor",
            "the cursor belongs to another query: repeat the same filters and order",
        )
    return index


def event_body(ledger: Ledger, tenant: Tenant, stored: StoredEntry) -> dict[str, Any]:
    """An event as readers see it: the decoded entry (the truth) with its erasable values
    put back, or what erased them (:func:`~immutablelog.ledger.erasing.event_view`), plus
    its leaf hash."""
    body = ledger.event_view(tenant, stored)
    body["leaf_hash"] = leaf_hash(stored.data).hex()
    return body


def event_query(request: Request) -> tuple[EventQuery, str]:
    order = choice_param(request, "order", ("desc", "asc"))
    descending = order == "desc"
    limit = int_param(request, "limit", DEFAULT_PAGE, maximum=MAX_PAGE)
    if limit < 1:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {MAX_PAGE}")
    text = {name: text_param(request, name) for name in _TEXT_FILTERS}
    kind = text["type"]
    if kind is not None and kind not in EVENT_TYPES:
        raise ApiError(
            400, "invalid_parameter", f"type must be one of {', '.join(sorted(EVENT_TYPES))}"
        )
    since, until = time_param(request, "since"), time_param(request, "until")
    digest = _filters_digest(request, descending)
    after: int | None = None
    cursor = single(request, "cursor")
    if cursor is not None:
        after = _decode_cursor(cursor, digest)
    elif "after" in request.query_params:  # tailing: everything after a known index
        after = int_param(request, "after")
        if descending:
            raise ApiError(400, "invalid_parameter", "after goes with order=asc")
    event_name = text["event_name"]
    prefix = None
    if event_name is not None and event_name.endswith("*"):
        prefix, event_name = event_name[:-1], None
    return (
        EventQuery(
            service=text["service"],
            env=text["env"],
            type=kind,
            event_name=event_name,
            event_name_prefix=prefix,
            request_id=text["request_id"],
            actor=text["actor"],
            since=None if since is None else timestamp(since),
            until=None if until is None else timestamp(until),
            text=text["q"],
            descending=descending,
            after_index=after,
            limit=limit,
        ),
        digest,
    )


def list_events(request: Request) -> Response:
    """``GET /v1/events``: filtered, newest (or oldest) first, keyset-paginated."""
    ledger: Ledger = request.app.state.ledger
    reader = require_reader(ledger, request)
    asked, digest = event_query(request)
    query = reader.narrow(asked)
    if query is None:  # outside a viewer link's filter
        return JSONResponse({"events": [], "next_cursor": None})
    found = ledger.query(reader.tenant, query)
    cursor = _encode_cursor(found[-1].index, digest) if len(found) == query.limit else None
    events = [event_body(ledger, reader.tenant, e) for e in found]
    return JSONResponse({"events": events, "next_cursor": cursor})


def get_event(request: Request) -> Response:
    """``GET /v1/events/{id}``: the event, its leaf hash and an inclusion proof."""
    ledger: Ledger = request.app.state.ledger
    reader = require_reader(ledger, request)
    tenant = reader.tenant
    event_id = request.path_params["event_id"]
    if "\x00" in event_id or len(event_id) > MAX_TEXT_CHARS:
        raise ApiError(404, "not_found", f"no event {event_id[:64]!r}")
    try:
        stored = ledger.entry(tenant, event_id)
        if not inside(ledger, reader, stored.index, stored.index + 1):
            # As if unknown: a link learns nothing of events outside its filter.
            raise ApiError(404, "not_found", f"no event {event_id[:64]!r}")
        if "size" in request.query_params:
            checkpoint = ledger.checkpoint_at(tenant, int_param(request, "size"))
        else:
            checkpoint = ledger.checkpoint(tenant)
        if stored.index >= checkpoint.size:
            raise LedgerError(
                "index_out_of_range", f"event {stored.index} is not in a tree of {checkpoint.size}"
            )
        proof = ledger.inclusion_proof(tenant, stored.index, checkpoint.size)
    except LedgerError as exc:
        raise ledger_error(exc) from None
    return JSONResponse(
        {
            "event": event_body(ledger, tenant, stored),
            "index": stored.index,
            "leaf_hash": leaf_hash(stored.data).hex(),
            "tree_size": checkpoint.size,
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
            "checkpoint": checkpoint.note,
        }
    )


def verify_log(request: Request) -> Response:
    """``GET /v1/verify``: the server re-checks its own log (see ledger/integrity.py)."""
    ledger: Ledger = request.app.state.ledger
    _, tenant = require_key(ledger, request, "read")
    start = int_param(request, "from", 0)
    end = int_param(request, "to") if "to" in request.query_params else None
    report = ledger.check_integrity(tenant, start, end)
    return JSONResponse(report.as_dict())


def _bundle_lines(
    ledger: Ledger, tenant: Tenant, note: str, size: int, with_parts: bool
) -> Iterator[bytes]:
    header = {
        "format": BUNDLE_FORMAT,
        "origin": ledger.origin(tenant),
        "log_key": ledger.key_that_signed(note),
        "checkpoint": note,
        "tree_size": size,
    }
    yield orjson.dumps(header) + b"\n"
    for start in range(0, size, EXPORT_PAGE):
        chunk = list(ledger.entry_bytes(tenant, start, min(size, start + EXPORT_PAGE)))
        yield b"".join(
            orjson.dumps(entry_item(index, data, part if with_parts else None)) + b"\n"
            for index, data, part in chunk
        )


def _csv_lines(ledger: Ledger, tenant: Tenant, size: int) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for start in range(0, size, EXPORT_PAGE):
        for stored in ledger.entries(tenant, start, min(size, start + EXPORT_PAGE)):
            event = event_body(ledger, tenant, stored)
            writer.writerow(["" if event.get(c) is None else event.get(c) for c in CSV_COLUMNS])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


async def export(request: Request) -> Response:
    """``GET /v1/export?format=jsonl|csv``: the whole signed log, streamed in constant memory.

    JSONL is a self-contained bundle (signed checkpoint, verifier key, every entry with its
    erasable part, or without with ``erasable=0``) that ``immutablelog verify --bundle``
    checks offline. The export is itself recorded.
    """
    ledger: Ledger = request.app.state.ledger
    key, tenant = await run_in_threadpool(require_key, ledger, request, "read")
    kind = choice_param(request, "format", ("jsonl", "csv"))
    with_parts = choice_param(request, "erasable", ("1", "0")) == "1"
    witnessing: Witnessing | None = request.app.state.witnessing
    if witnessing is not None:
        # A bundle carries the newest checkpoint the witnesses cosigned, with them.
        size, note = await run_in_threadpool(witnessing.served_checkpoint, tenant)
    else:
        latest = await run_in_threadpool(ledger.checkpoint, tenant)
        size, note = latest.size, latest.note
    await asyncio.wrap_future(
        ledger.record_admin_event(
            tenant,
            "immutablelog.log.exported",
            {"format": kind, "tree_size": size, "key": key.prefix},
        )
    )
    name = f"{tenant.name}-{size}.{kind}"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Tree-Size": str(size),
    }
    if kind == "csv":
        return StreamingResponse(
            _csv_lines(ledger, tenant, size),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    return StreamingResponse(
        _bundle_lines(ledger, tenant, note, size, with_parts),
        media_type="application/x-ndjson",
        headers=headers,
    )
