"""``POST /v1/events`` and ``POST /v1/events/batch``: validate, sequence, answer once durable.

A batch is answered with one result per item, or, to a client that sends
``Prefer: return=minimal`` (RFC 7240), with a summary that still settles every item: which
were already stored (duplicates) and which were refused, by position. A busy client parses a
few bytes per batch instead of about 350 per event.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from starlette.requests import Request

from immutablelog import strict_json
from immutablelog._uuid import uuid7
from immutablelog.entry import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAYLOAD_DEPTH,
    EntryError,
    PayloadTooLarge,
    Submission,
    validate_submission,
)
from immutablelog.ledger import (
    Accepted,
    AppendResult,
    KeyRevoked,
    Ledger,
    LedgerClosed,
    Rejected,
    StorageError,
)
from immutablelog.server.auth import invalid_api_key, require_key
from immutablelog.server.errors import ApiError, JSONResponse, error_body, storage_failure
from immutablelog.server.params import parse_int

MAX_EVENT_BODY_BYTES: Final = 128 * 1024
MAX_BATCH_BODY_BYTES: Final = 8 * 1024 * 1024
MAX_BATCH_EVENTS: Final = 1000
_MAX_HEADER_CHARS: Final = 255
_RETRY_AFTER = {"Retry-After": "1"}
#: An event body wraps its payload (an object's payload starts at its second level).
_MAX_BODY_DEPTH: Final = MAX_PAYLOAD_DEPTH + 1


async def read_json(request: Request, limit: int, max_depth: int) -> Any:
    """The request's JSON body (I-JSON, nested at most ``max_depth`` levels), refusing more
    than ``limit`` bytes before reading them."""
    declared = request.headers.get("content-length")
    if declared is not None:
        parse_int_header(declared, "Content-Length")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    try:
        return strict_json.loads(b"".join(chunks), max_depth)
    except strict_json.JSONRejected as exc:
        raise ApiError(400, exc.reason, f"the body: {exc.message}") from None


def parse_int_header(value: str, name: str, minimum: int = 0, maximum: int = 2**62) -> int:
    try:
        return parse_int(value.strip(), name, minimum, maximum)
    except ApiError:
        raise ApiError(
            400, "invalid_header", f"{name} must be an integer from {minimum} to {maximum}"
        ) from None


def _header(request: Request, name: str, max_chars: int = _MAX_HEADER_CHARS) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value:
        raise ApiError(400, "invalid_header", f"{name.title()} is empty: send a value or none")
    if len(value) > max_chars:
        raise ApiError(
            400, "invalid_header", f"{name.title()} is longer than {max_chars} characters"
        )
    return value


def client_fields(request: Request) -> dict[str, Any]:
    """The client-clock headers, kept in the entry as ``client_tz`` / ``client_offset_minutes``."""
    fields: dict[str, Any] = {}
    tz = _header(request, "x-client-tz", 64)
    if tz:
        fields["client_tz"] = tz
    offset = _header(request, "x-client-offset-minutes", 6)
    if offset:
        fields["client_offset_minutes"] = parse_int_header(
            offset, "X-Client-Offset-Minutes", -1440, 1440
        )
    return fields


def _validate(item: Any, key: Any, extra: dict[str, Any], request_id: str | None) -> Submission:
    if not isinstance(item, dict):
        raise EntryError("invalid_field", "each event must be a JSON object")
    for required in ("payload", "meta"):
        if required not in item:
            raise EntryError("missing_field", f"{required} is required", required)
    meta = item["meta"]
    if request_id and isinstance(meta, dict) and meta.get("request_id") is None:
        meta = {**meta, "request_id": request_id}
    # Without a key the event is simply not deduplicated: it gets a fresh one.
    return validate_submission(item["payload"], meta, key or uuid7(), extra)


def accepted_body(result: Accepted) -> dict[str, Any]:
    return {
        "ok": True,
        "status": "accepted",
        "tx_id": result.entry_id,
        "payload_hash": result.payload_hash,
        "duplicate": result.duplicate,
        "request_id": result.request_id,
        "index": result.index,
        "leaf_hash": result.leaf_hash.hex(),
        "received_at": result.received_at,
    }


def _result_body(result: AppendResult) -> dict[str, Any]:
    if isinstance(result, Accepted):
        return accepted_body(result)
    return error_body(result.reason, result.message)


async def _commit(
    ledger: Ledger, request: Request, submissions: list[Submission]
) -> list[AppendResult]:
    key, tenant = request.state.auth
    try:
        future = ledger.submit(tenant, submissions, key)
        return await asyncio.wrap_future(future)
    except KeyRevoked:
        raise invalid_api_key() from None
    except LedgerClosed:
        raise ApiError(
            503, "shutting_down", "the server is shutting down; retry", headers=_RETRY_AFTER
        ) from None
    except StorageError as exc:
        raise storage_failure(exc) from None
    except Exception:
        raise ApiError(
            503, "ledger_unavailable", "the ledger could not commit; retry", headers=_RETRY_AFTER
        ) from None


async def post_event(request: Request) -> JSONResponse:
    ledger: Ledger = request.app.state.ledger
    request.state.auth = require_key(ledger, request, "ingest")
    key = _header(request, "idempotency-key", MAX_IDEMPOTENCY_KEY_CHARS)
    request_id = _header(request, "request-id")
    extra = client_fields(request)
    body = await read_json(request, MAX_EVENT_BODY_BYTES, _MAX_BODY_DEPTH)
    try:
        submission = _validate(body, key, extra, request_id)
    except PayloadTooLarge as exc:
        raise ApiError(413, exc.reason, exc.message, field=exc.field) from None
    except EntryError as exc:
        raise ApiError(422, exc.reason, exc.message, field=exc.field) from None
    (result,) = await _commit(ledger, request, [submission])
    if isinstance(result, Rejected):
        raise ApiError(422, result.reason, result.message)
    return JSONResponse(accepted_body(result), status_code=202)


async def post_batch(request: Request) -> JSONResponse:
    ledger: Ledger = request.app.state.ledger
    request.state.auth = require_key(ledger, request, "ingest")
    extra = client_fields(request)
    body = await read_json(request, MAX_BATCH_BODY_BYTES, _MAX_BODY_DEPTH + 2)
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ApiError(422, "invalid_field", 'the body must be {"events": [...]}', field="events")
    items: list[Any] = body["events"]
    if not items:
        raise ApiError(422, "invalid_field", "events must not be empty", field="events")
    if len(items) > MAX_BATCH_EVENTS:
        raise ApiError(
            413,
            "too_many_events",
            f"a batch holds at most {MAX_BATCH_EVENTS} events",
            field="events",
        )
    slots: list[dict[str, Any] | None] = []
    submissions: list[Submission] = []
    for position, item in enumerate(items):
        try:
            key = item.get("idempotency_key") if isinstance(item, dict) else None
            if key is not None and not isinstance(key, str):
                raise EntryError(
                    "invalid_field", "idempotency_key must be a string", "idempotency_key"
                )
            submissions.append(_validate(item, key, extra, None))
            slots.append(None)
        except EntryError as exc:
            field = f"events[{position}]" + (f".{exc.field}" if exc.field else "")
            slots.append(error_body(exc.reason, exc.message, field=field))
    results = await _commit(ledger, request, submissions) if submissions else []
    if prefers_minimal(request.headers.getlist("prefer")):
        return JSONResponse(
            minimal_batch_body(slots, results), headers={"Preference-Applied": "return=minimal"}
        )
    committed = iter(results)
    answers = [slot if slot is not None else _result_body(next(committed)) for slot in slots]
    accepted = sum(1 for answer in answers if answer["ok"])
    return JSONResponse(
        {"ok": True, "accepted": accepted, "rejected": len(answers) - accepted, "results": answers}
    )


def prefers_minimal(prefer: list[str]) -> bool:
    """Whether the ``Prefer`` headers (RFC 7240) ask for ``return=minimal``: names and the
    value compared without case, the value possibly quoted, parameters after ``;`` ignored."""
    for header in prefer:
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
                return True
    return False


def minimal_batch_body(
    slots: list[dict[str, Any] | None], results: list[AppendResult]
) -> dict[str, Any]:
    """The ``return=minimal`` answer to a batch: the counts, the positions of the items that
    were already stored (``duplicates``), and the error body of each refused item with its
    position (``errors``); every other item was stored now."""
    committed = iter(results)
    duplicates: list[int] = []
    errors: list[dict[str, Any]] = []
    for position, slot in enumerate(slots):
        if slot is None:
            result = next(committed)
            if isinstance(result, Accepted):
                if result.duplicate:
                    duplicates.append(position)
                continue
            slot = error_body(result.reason, result.message)
        errors.append({"index": position, **slot})
    return {
        "ok": True,
        "accepted": len(slots) - len(errors),
        "rejected": len(errors),
        "duplicates": duplicates,
        "errors": errors,
    }
