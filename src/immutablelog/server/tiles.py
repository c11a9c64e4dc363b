"""The C2SP tlog-tiles read API of each tenant's log, under ``/tlog/<tenant>/``.

``checkpoint`` is the latest signed checkpoint; ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]`` are the hash tiles and entry bundles, read from the stored
tree (``tiles.source``). A tile's bytes never change once the tree contains it, so every
tile is served as immutable; a tile the tree does not contain yet is a 404.

A read key of the tenant is required, unless the tenant is listed as public: then its
checkpoint and hash tiles are open to anyone (they reveal hashes only) and its entry
bundles still need the key.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Collection
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from immutablelog.ledger import Ledger, LedgerError, Tenant
from immutablelog.ledger.ledger import check_tenant_name
from immutablelog.server.auth import require_key
from immutablelog.server.errors import ApiError
from immutablelog.server.witnessing import Witnessing
from immutablelog.tiles.layout import (
    ENTRIES_LEVEL,
    TileBeyondTrees,
    TileError,
    TileRef,
    available,
    parse_tile_path,
)
from immutablelog.tiles.source import EntryTooLarge, tile_bytes

_IMMUTABLE: Final = "max-age=31536000, immutable"
_NOTE_TYPE: Final = "text/plain; charset=utf-8"
_TILE_TYPE: Final = "application/octet-stream"


class TileAccess:
    """Which tenants publish their checkpoint and hash tiles without a key."""

    def __init__(self, public_tenants: Collection[str] = ()) -> None:
        self.public_tenants = frozenset(public_tenants)
        self._tenants: dict[str, Tenant] = {}

    def tenant(
        self, ledger: Ledger, request: Request, *, entries: Callable[[], bool]
    ) -> tuple[Tenant, bool]:
        """The tenant named in the path and whether the answer may be cached publicly.

        ``entries()`` says whether entry bundles are asked for; it is called (and may raise
        on a malformed path) only after the key check, so that a request without a key is
        told so first.
        """
        name = request.path_params["tenant"]
        try:
            check_tenant_name(name)
        except LedgerError:
            raise ApiError(404, "unknown_tenant", "no such tenant") from None
        if name in self.public_tenants and not entries():
            return self._public_tenant(ledger, name), True
        _, tenant = require_key(ledger, request, "read")
        if tenant.name != name:
            raise ApiError(403, "wrong_tenant", "this API key belongs to another tenant")
        entries()
        return tenant, False

    def _public_tenant(self, ledger: Ledger, name: str) -> Tenant:
        found = self._tenants.get(name)
        if found is None:
            try:
                found = ledger.tenant(name)
            except LedgerError:
                raise ApiError(404, "unknown_tenant", "no such tenant") from None
            self._tenants[name] = found  # tenants are never renamed or deleted
        return found


def _access(request: Request) -> tuple[Ledger, TileAccess]:
    return request.app.state.ledger, request.app.state.tile_access


def get_checkpoint(request: Request) -> Response:
    ledger, access = _access(request)
    tenant, public = access.tenant(ledger, request, entries=lambda: False)
    witnessing: Witnessing | None = request.app.state.witnessing
    if witnessing is None:
        note = ledger.checkpoint(tenant).note
    else:  # the newest checkpoint with the cosignatures clients are told to expect
        _, note = witnessing.served_checkpoint(tenant)
    # Mutable: caches may keep it a moment, no longer (the spec asks for a few seconds).
    cache = ("public" if public else "private") + ", max-age=2"
    return Response(note, media_type=_NOTE_TYPE, headers={"Cache-Control": cache})


def get_tile(request: Request) -> Response:
    ledger, access = _access(request)
    tenant, public = access.tenant(
        ledger, request, entries=lambda: _tile(request).level == ENTRIES_LEVEL
    )
    tile = _tile(request)
    size = ledger.checkpoint(tenant).size
    if not available(tile, size):
        raise ApiError(404, "not_found", f"the log (size {size}) has no {tile.path()} yet")
    try:
        body = tile_bytes(ledger, tenant, tile)
    except EntryTooLarge as exc:
        raise ApiError(422, "entry_too_large", str(exc)) from None
    headers = {"Cache-Control": ("public, " if public else "private, ") + _IMMUTABLE}
    if tile.level == ENTRIES_LEVEL:
        # The spec asks for compressed bundles; hashes do not compress.
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=_TILE_TYPE, headers=headers)


def _tile(request: Request) -> TileRef:
    path = request.path_params["path"]
    # The route's pattern stops at a trailing newline ("$" matches before one): take the
    # path only if it is all of what was asked.
    if not request.scope["path"].endswith("/tile/" + path):
        raise ApiError(400, "invalid_tile_path", "the tile path has characters after its end")
    try:
        return parse_tile_path(path)
    except TileBeyondTrees as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except TileError as exc:
        raise ApiError(400, "invalid_tile_path", str(exc)) from None


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
