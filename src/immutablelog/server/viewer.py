"""The web viewer: a few static files shipped in the package, served at ``/``.

Nothing is built at run time and nothing comes from another origin: the page, its ES modules
and its style sheet are read from ``static/`` once, at import. Every URL the page uses is
relative, so the viewer also works under a path prefix behind a reverse proxy.

The browser checks what it shows itself (``static/verify.js``); these headers keep anything
else from running in the page: scripts from this origin only, no inline script or style, no
framing, no sniffing, no referrer that could carry a filter to another site.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from importlib.resources import files
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from immutablelog.entry import EntryError
from immutablelog.ledger import Ledger
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.ingest import read_json
from immutablelog.server.links import link_summary, require_reader
from immutablelog.server.stats import event_counts

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load, so an upgraded server never runs with yesterday's checks.
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


class _Asset:
    __slots__ = ("body", "etag", "media_type")

    def __init__(self, body: bytes, media_type: str) -> None:
        self.body = body
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def _load_assets() -> dict[str, _Asset]:
    """Every file of ``static/`` by name; only these names are ever served."""
    assets: dict[str, _Asset] = {}
    for item in files("immutablelog.server").joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _MEDIA_TYPES:
            assets[item.name] = _Asset(item.read_bytes(), _MEDIA_TYPES[suffix])
    return assets


_ASSETS: Final = _load_assets()


async def page(request: Request) -> Response:
    """``GET /``: the viewer's one page; filters and the open event live in its query."""
    return _ASSETS["index.html"].response(request)


async def asset(request: Request) -> Response:
    """``GET /assets/{name}``: a module, the style sheet or the icon."""
    found = _ASSETS.get(request.path_params["name"])
    if found is None or found is _ASSETS["index.html"]:
        raise ApiError(404, "not_found", "no such viewer asset")
    return found.response(request)


#: What the viewer records of its use, as admin events in the tenant's own log: access to an
#: audit log is itself audited (PCI DSS 10.2.1.3).
ACCESS_EVENTS: Final = {
    "sign_in": "immutablelog.viewer.signed_in",
    "export": "immutablelog.viewer.exported",
}
EXPORT_FORMATS: Final = frozenset({"csv", "jsonl"})
MAX_ACCESS_BODY_BYTES: Final = 16 * 1024
MAX_FILTERS: Final = 16
MAX_FILTER_CHARS: Final = 1000
_FILTER_NAME = re.compile(r"[a-z_]{1,32}\Z")


def _export_details(body: dict[str, Any]) -> dict[str, Any]:
    kind = body.get("format")
    if not isinstance(kind, str) or kind not in EXPORT_FORMATS:
        raise ApiError(422, "invalid_field", "format must be csv or jsonl", field="format")
    filters = body.get("filters", {})
    if not isinstance(filters, dict) or len(filters) > MAX_FILTERS:
        raise ApiError(
            422,
            "invalid_field",
            f"filters must be an object of at most {MAX_FILTERS} filters",
            field="filters",
        )
    for name, value in filters.items():
        if not _FILTER_NAME.match(name):
            raise ApiError(
                422, "invalid_field", "filter names are lowercase letters and _", field="filters"
            )
        # A filter is a query parameter, and those never hold NUL.
        if not isinstance(value, str) or not 0 < len(value) <= MAX_FILTER_CHARS or "\x00" in value:
            raise ApiError(
                422,
                "invalid_field",
                f"filters.{name} must be a string of 1..{MAX_FILTER_CHARS} characters without NUL",
                field=f"filters.{name}",
            )
    return {"format": kind, "filters": filters}


async def record_access(request: Request) -> Response:
    """``POST /v1/viewer/access``: the viewer records a sign-in or an export before it
    proceeds; the event is durably in the log when this answers."""
    ledger: Ledger = request.app.state.ledger
    reader = await run_in_threadpool(require_reader, ledger, request)
    # An object of objects: {"filters": {...}} is as deep as a record goes.
    body = await read_json(request, MAX_ACCESS_BODY_BYTES, max_depth=2)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unknown = set(body) - {"action", "format", "filters"}
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field {sorted(unknown)[0]!r}")
    action = body.get("action")
    if not isinstance(action, str) or action not in ACCESS_EVENTS:
        raise ApiError(
            422,
            "invalid_field",
            f"action must be one of {', '.join(ACCESS_EVENTS)}",
            field="action",
        )
    details: dict[str, Any] = dict(reader.names)
    if action == "export":
        details.update(_export_details(body))
    elif set(body) != {"action"}:
        raise ApiError(422, "invalid_field", "a sign-in carries no other field")
    try:
        recorded = ledger.record_admin_event(reader.tenant, ACCESS_EVENTS[action], details)
    except EntryError as exc:  # e.g. filters too long to fit an event's payload
        raise ApiError(422, "invalid_field", exc.message, field="filters") from None
    await asyncio.wrap_future(recorded)
    answer: dict[str, Any] = {"ok": True, "recorded": ACCESS_EVENTS[action]}
    link = link_summary(reader)
    if link is not None:
        answer["viewer_link"] = link
    return JSONResponse(answer, status_code=201)


ROUTES: Final = [
    Route("/", page, methods=["GET", "HEAD"]),
    Route("/assets/{name}", asset, methods=["GET", "HEAD"]),
    Route("/v1/viewer/access", record_access, methods=["POST"]),
    Route("/v1/event-counts", event_counts, methods=["GET"]),
]
