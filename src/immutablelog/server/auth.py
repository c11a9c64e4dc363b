"""Bearer-key authentication and scope checks for the API."""

from __future__ import annotations

from starlette.requests import Request

from immutablelog.ledger import ApiKey, Ledger, Tenant
from immutablelog.ledger.viewer_links import is_token
from immutablelog.server.errors import ApiError
from immutablelog.server.params import single

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="immutablelog"'}


def invalid_api_key() -> ApiError:
    """The answer to a key that is unknown or revoked, found so here or at commit."""
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers=_CHALLENGE)


def bearer_secret(request: Request) -> str:
    """The secret of ``Authorization: Bearer <secret>``; 401 if there is none."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401, "unauthorized", "missing Authorization: Bearer <api key>", headers=_CHALLENGE
        )
    method, _, presented = header.partition(" ")
    if method.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401, "unauthorized", "Authorization must be 'Bearer <api key>'", headers=_CHALLENGE
        )
    return presented.strip()


def require_key(ledger: Ledger, request: Request, scope: str) -> tuple[ApiKey, Tenant]:
    """The caller's key and tenant, if it may use ``scope``; else 401 / 403."""
    presented = bearer_secret(request)
    if is_token(presented):
        # Viewer links are accepted only where server/links.require_reader is asked.
        raise ApiError(403, "viewer_link_not_allowed", "a viewer link may not use this endpoint")
    # Ingest keys are re-checked exactly when their events commit (Ledger.submit), so
    # their authentication may come from the cache alone, with no database read.
    key = ledger.authenticate(presented, checked_at_commit=scope == "ingest")
    if key is None:
        raise invalid_api_key()
    if scope not in key.scopes:
        raise ApiError(403, "insufficient_scope", f"this API key lacks the '{scope}' scope")
    asked = single(request, "tenant") if request.scope.get("query_string") else None
    if asked is not None and asked != key.tenant:
        raise ApiError(403, "wrong_tenant", "this API key belongs to another tenant")
    return key, Tenant(key.tenant_id, key.tenant, "")
