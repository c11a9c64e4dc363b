"""Every error the API gives is ``{"ok": false, "reason": ..., "message": ...}``.

Handlers raise :class:`ApiError`; the app turns it (and Starlette's own 404/405, and any
unexpected exception) into that body, so no caller ever sees HTML or a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

from immutablelog.ledger.storage import (
    LogIntegrityError,
    SigningKeyMissing,
    StorageError,
    StorageFull,
)

logger = logging.getLogger("immutablelog.server")

_REASONS_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class JSONResponse(_StarletteJSON):
    """Starlette's JSON response, rendered by orjson (several times faster)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers
        self.extra = extra


def error_body(reason: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "reason": reason, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.reason, error.message, **error.extra),
        status_code=error.status,
        headers=error.headers,
    )


def _count_rejection(request: Request, reason: str) -> None:
    """Every error answer passes through one of these handlers: count it here by reason
    (rather than in a middleware wrapping every request's send)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejected.labels(reason).inc()


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    _count_rejection(request, exc.reason)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = _REASONS_BY_STATUS.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else reason
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    _count_rejection(request, reason)
    return JSONResponse(
        error_body(reason, message), status_code=exc.status_code, headers=exc.headers
    )


def storage_failure(exc: StorageError) -> ApiError:
    """The answer when storage fails: always 503 (the request was fine, nothing of it was
    written, retry later), with a reason that says what an operator must fix.

    Not logged here: the storage logs each fault once per change of state, where a line per
    request would flood the log (on a full disk, the log is what fills it).
    """
    if isinstance(exc, StorageFull):
        return ApiError(
            503,
            "storage_full",
            "the ledger's storage is full; nothing was written; retry later",
            headers={"Retry-After": "30"},
        )
    if isinstance(exc, SigningKeyMissing):
        return ApiError(
            503,
            "signing_key_missing",
            "this server lacks a key the log must now be signed with (see its log); nothing "
            "was written; retry, another server may have it",
            headers={"Retry-After": "30"},
        )
    if isinstance(exc, LogIntegrityError):
        return ApiError(
            503,
            "log_integrity",
            "this tenant's stored log no longer matches its signed checkpoint, so appends "
            "are refused until an operator repairs it; nothing was written",
            headers={"Retry-After": "300"},
        )
    return ApiError(
        503,
        "ledger_unavailable",
        "the ledger's database is unavailable; retry",
        headers={"Retry-After": "2"},
    )


async def handle_storage_error(request: Request, exc: Exception) -> Response:
    """The database cannot be reached or cannot commit: the client should retry, not give up."""
    assert isinstance(exc, StorageError)
    error = storage_failure(exc)
    _count_rejection(request, error.reason)
    return error_response(error)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """A client that goes away mid-request is ordinary traffic: one line, no traceback.
    (The answer is never delivered; Starlette needs one.)"""
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    _count_rejection(request, "client_disconnected")
    return JSONResponse(error_body("client_disconnected", "the client went away"), status_code=400)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    _count_rejection(request, "internal_error")
    # The server's state for this connection is unknown after a failure: close it, so the
    # client's next request starts on a fresh one instead of meeting a reset.
    return JSONResponse(
        error_body("internal_error", "the server failed to handle this request"),
        status_code=500,
        headers={"Connection": "close"},
    )
