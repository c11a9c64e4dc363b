"""The web viewer: a few static files shipped in the package, served at ``/``.

Nothing is built at run time and nothing comes from another origin: the page, its ES modules
and its style sheet are read from ``static/`` once, at import. Every URL the page uses is
relative, so the viewer also works under a path prefix behind a reverse proxy.

The browser checks what it shows itself (``static/verify.js``); these headers keep anything
else from running in the page: scripts from this origin only, no inline script or style, no
framing, no sniffing, no referrer that could carry a filter to another site.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from immutablelog.server.errors import ApiError

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


ROUTES: Final = [
    Route("/", page, methods=["GET", "HEAD"]),
    Route("/assets/{name}", asset, methods=["GET", "HEAD"]),
]
