"""Viewer links over HTTP: the admin API that makes them, and who may read what with one.

A link token is accepted only where :func:`require_reader` is called: the event search,
one event, the event counts, entry bytes, the checkpoint and consistency proofs (what the
viewer needs to check what it shows) and the viewer's access records. Every other endpoint
asks for an API key (``require_key``), which refuses a link with 403. Events outside the
link's filter are never served: searches and counts are narrowed to it, one event outside
it is a 404, entry bytes outside it a 403. The tree size and roots (checkpoints, proofs)
are not filtered: the browser needs them to check an event, and they name no event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from immutablelog.ledger import ApiKey, Ledger, Tenant
from immutablelog.ledger import viewer_links as links
from immutablelog.ledger.storage import EventQuery, ViewerLink
from immutablelog.server.auth import bearer_secret, require_key
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.ingest import read_json
from immutablelog.server.params import single

_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="immutablelog"'}
#: A link's use is recorded in the log at its first request in each process, then at
#: most once per this many seconds.
USE_RECORD_INTERVAL: Final = 3600.0
MAX_LINK_BODY_BYTES: Final = 16 * 1024
#: Entries one request of a link may ask for (each is checked against the filter).
MAX_LINK_ENTRIES: Final = 100


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads: a read key (``bound`` None: the whole log) or a viewer link."""

    tenant: Tenant
    key: ApiKey | None
    link: ViewerLink | None
    bound: EventQuery | None

    @property
    def names(self) -> dict[str, str]:
        """How access records name the reader."""
        if self.link is not None:
            return {"viewer_link": self.link.prefix}
        assert self.key is not None
        return {"key": self.key.prefix}

    def narrow(self, asked: EventQuery) -> EventQuery | None:
        """``asked`` within the link's filter (None: nothing can match both)."""
        return asked if self.bound is None else links.narrow(self.bound, asked)


class _Uses:
    """When each link's use was last recorded by this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.recorded: dict[int, float] = {}

    def due(self, link_id: int) -> bool:
        now = time.monotonic()
        with self.lock:
            last = self.recorded.get(link_id)
            if last is not None and now - last < USE_RECORD_INTERVAL:
                return False
            self.recorded[link_id] = now
            return True


_USES_LOCK = threading.Lock()


def _uses(request: Request) -> _Uses:
    state = request.app.state
    with _USES_LOCK:
        found: _Uses | None = getattr(state, "viewer_link_uses", None)
        if found is None:
            found = _Uses()
            state.viewer_link_uses = found
    return found


def require_reader(ledger: Ledger, request: Request) -> Reader:
    """The caller, if it may read: a read key, or a live viewer link (401 if unknown,
    revoked or expired). A link's first use here is recorded in its tenant's log before
    anything is served."""
    presented = bearer_secret(request)
    if not links.is_token(presented):
        key, tenant = require_key(ledger, request, "read")
        return Reader(tenant, key, None, None)
    try:
        link = links.authenticate(ledger, presented)
    except links.LinkError as exc:
        raise ApiError(401, exc.reason, exc.message, headers=_CHALLENGE) from None
    asked = single(request, "tenant") if request.scope.get("query_string") else None
    if asked is not None and asked != link.tenant:
        raise ApiError(403, "wrong_tenant", "this viewer link belongs to another tenant")
    tenant = Tenant(link.tenant_id, link.tenant, "")
    if _uses(request).due(link.id):
        ledger.record_admin_event(tenant, links.EVENT_USED, {"link": link.prefix}).result()
    bound = links.filter_query(links.parse_filters(links.describe(link)["filter"]))
    return Reader(tenant, None, link, bound)


def inside(ledger: Ledger, reader: Reader, start: int, end: int) -> bool:
    """Whether every entry stored at ``[start, end)`` is one the reader may see: the same
    query as the event search, so "inside" means exactly what a search returns."""
    if reader.bound is None:
        return True
    stored = [e.index for e in ledger.entries(reader.tenant, start, end)]
    if not stored:
        return True
    query = replace(reader.bound, after_index=start - 1, descending=False, limit=len(stored))
    found = [e.index for e in ledger.query(reader.tenant, query) if e.index < end]
    return found == stored


# --- the admin API -------------------------------------------------------------------------


async def create_link(request: Request) -> Response:
    """``POST /v1/viewer-links`` (admin): ``{"filter": {...}, "expires_in": seconds,
    "label": ...}``; answers the token once."""
    ledger: Ledger = request.app.state.ledger
    key, tenant = await run_in_threadpool(require_key, ledger, request, "admin")
    body = await read_json(request, MAX_LINK_BODY_BYTES, max_depth=2)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    unknown = set(body) - {"filter", "expires_in", "label"}
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field {sorted(unknown)[0][:40]!r}")
    seconds = body.get("expires_in")
    if type(seconds) is float and seconds.is_integer():  # 60.0 is a JSON integer too
        seconds = int(seconds)
    if type(seconds) is not int or not 1 <= seconds <= links.MAX_LIFETIME.total_seconds():
        raise ApiError(
            422,
            "invalid_field",
            f"expires_in must be whole seconds from 1 to {int(links.MAX_LIFETIME.total_seconds())}",
            field="expires_in",
        )
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        raise ApiError(422, "invalid_field", "label must be a string", field="label")
    try:
        token, record = await run_in_threadpool(
            links.create,
            ledger,
            tenant,
            body.get("filter"),
            timedelta(seconds=seconds),
            label,
            by=key.prefix,
        )
    except links.LinkError as exc:
        raise ApiError(422, exc.reason, exc.message) from None
    return JSONResponse({"ok": True, "token": token, "link": links.describe(record)}, 201)


def list_links(request: Request) -> Response:
    """``GET /v1/viewer-links`` (admin): the tenant's links, never their tokens."""
    ledger: Ledger = request.app.state.ledger
    _, tenant = require_key(ledger, request, "admin")
    return JSONResponse({"links": [links.describe(k) for k in links.links(ledger, tenant)]})


def revoke_link(request: Request) -> Response:
    """``DELETE /v1/viewer-links/{prefix}`` (admin): refused from then on."""
    ledger: Ledger = request.app.state.ledger
    key, tenant = require_key(ledger, request, "admin")
    prefix = request.path_params["prefix"]
    try:
        revoked = links.revoke(ledger, prefix, tenant, by=key.prefix)
    except links.LinkError as exc:
        raise ApiError(404, exc.reason, exc.message) from None
    return JSONResponse({"ok": True, "link": links.describe(revoked)})


def link_summary(reader: Reader) -> dict[str, Any] | None:
    """What the viewer shows of the link it was opened with."""
    if reader.link is None:
        return None
    described = links.describe(reader.link)
    return {"filter": described["filter"], "expires_at": described["expires_at"]}


async def viewer_links(request: Request) -> Response:
    """``/v1/viewer-links`` is one resource (so that a 405 lists both of its methods)."""
    if request.method == "POST":
        return await create_link(request)
    return await run_in_threadpool(list_links, request)


ROUTES: Final = [
    Route("/v1/viewer-links", viewer_links, methods=["GET", "POST"]),
    Route("/v1/viewer-links/{prefix}", revoke_link, methods=["DELETE"]),
]
