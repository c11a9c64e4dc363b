"""The erasure API: ``DELETE /v1/events/{id}``, ``POST /v1/erasures`` and
``GET /v1/erasures``. Erasing needs an admin key; every erasure is first recorded in the
tenant's own log (see ledger/erasing.py)."""

from __future__ import annotations

from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from immutablelog.ledger import Ledger
from immutablelog.ledger.erasing import (
    MAX_ERASE_IDS,
    ErasureOutcome,
    ErasureRefused,
    record_json,
)
from immutablelog.server.auth import require_key
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.ingest import read_json
from immutablelog.server.params import MAX_TEXT_CHARS, single

#: ``POST /v1/erasures`` bodies: up to MAX_ERASE_IDS ids of at most a few dozen characters.
MAX_ERASURE_BODY_BYTES: Final = 1024 * 1024


def _refused(exc: ErasureRefused) -> ApiError:
    return ApiError(exc.status, exc.reason, exc.message)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
        raise ApiError(
            422, "invalid_field", f"{name} must be a string of 1 to {MAX_TEXT_CHARS} characters"
        )
    if "\x00" in value:
        raise ApiError(422, "invalid_field", f"{name} must not contain NUL")
    return value


async def erase_event(request: Request) -> Response:
    """``DELETE /v1/events/{id}?reason=…``: erase one event's values."""
    ledger: Ledger = request.app.state.ledger
    key, tenant = await run_in_threadpool(require_key, ledger, request, "admin")
    reason = single(request, "reason")
    if reason is None:
        raise ApiError(400, "invalid_parameter", "reason is required")
    event_id = request.path_params["event_id"]
    if "\x00" in event_id or len(event_id) > MAX_TEXT_CHARS:
        raise ApiError(404, "not_found", f"no event {event_id[:64]!r}")
    try:
        outcome: ErasureOutcome = await run_in_threadpool(
            ledger.erasures.erase_ids, tenant, [event_id], reason, key.prefix
        )
    except ErasureRefused as exc:
        raise _refused(exc) from None
    return JSONResponse(outcome.as_dict())


async def post_erasure(request: Request) -> Response:
    """``POST /v1/erasures``: ``{"ids": [...], "reason": …}`` or ``{"actor": …, "reason":
    …}`` (every event of one data subject)."""
    ledger: Ledger = request.app.state.ledger
    key, tenant = await run_in_threadpool(require_key, ledger, request, "admin")
    body = await read_json(request, MAX_ERASURE_BODY_BYTES, 3)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = set(body) - {"ids", "actor", "reason"}
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field {min(unknown)!r}")
    if ("ids" in body) == ("actor" in body):
        raise ApiError(422, "invalid_field", "give either ids or actor")
    reason = body.get("reason")
    if not isinstance(reason, str):
        raise ApiError(422, "invalid_field", "reason is required")
    try:
        if "actor" in body:
            actor = _text(body["actor"], "actor")
            outcome = await run_in_threadpool(
                ledger.erasures.erase_actor, tenant, actor, reason, key.prefix
            )
        else:
            ids = body["ids"]
            if not isinstance(ids, list) or not ids:
                raise ApiError(422, "invalid_field", "ids must be a non-empty list of event ids")
            if len(ids) > MAX_ERASE_IDS:
                raise ApiError(
                    413, "too_many_ids", f"at most {MAX_ERASE_IDS} ids per erasure request"
                )
            checked = [_text(i, "ids[]") for i in ids]
            outcome = await run_in_threadpool(
                ledger.erasures.erase_ids, tenant, checked, reason, key.prefix
            )
    except ErasureRefused as exc:
        raise _refused(exc) from None
    return JSONResponse(outcome.as_dict())


def list_erasures(request: Request) -> Response:
    """``GET /v1/erasures``: every erasure the tenant's log records (admin key), which
    ``immutablelog erasures export`` saves to re-apply to a restored backup."""
    ledger: Ledger = request.app.state.ledger
    _, tenant = require_key(ledger, request, "admin")
    records = ledger.erasures.index.records(tenant.id)
    return JSONResponse(
        {"origin": ledger.origin(tenant), "erasures": [record_json(r) for r in records]}
    )
