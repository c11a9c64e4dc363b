"""Viewer links: read-only tokens bound to a filter of one tenant's events, that expire.

What a SaaS team hands its own customer: "the audit events of actor 42, for a week". A token
is ``iml_view_`` and 256 random bits, stored like an API key (SHA-256 and a display prefix,
shown once). Its filter is a set of the query parameters of ``GET /v1/events`` (no full
text); every read it makes is the conjunction of that filter and whatever it asks for
(:func:`narrow`), so no parameter can widen it. Creating, revoking and using a link are
events of the tenant's own log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from immutablelog.entry import EVENT_TYPES, timestamp
from immutablelog.ledger.storage import EventQuery, Tenant, ViewerLink

if TYPE_CHECKING:
    from immutablelog.ledger.ledger import Ledger

TOKEN_PREFIX: Final = "iml_view_"
_TOKEN_SHAPE: Final = re.compile(r"iml_view_[A-Za-z0-9_-]{43}\Z")
_DISPLAY_CHARS: Final = 12
#: The filters a link may carry: those of ``GET /v1/events`` but full text.
FILTER_FIELDS: Final = (
    "service",
    "env",
    "type",
    "event_name",
    "request_id",
    "actor",
    "since",
    "until",
)
_EXACT: Final = ("service", "env", "type", "request_id", "actor")
MAX_FILTER_CHARS: Final = 1000
MAX_LABEL_CHARS: Final = 200
MAX_LIFETIME: Final = timedelta(days=366)

EVENT_CREATED: Final = "immutablelog.viewer_link.created"
EVENT_REVOKED: Final = "immutablelog.viewer_link.revoked"
EVENT_USED: Final = "immutablelog.viewer_link.used"


class LinkError(ValueError):
    """A link refused at creation (``invalid_filter``, …) or at use (``expired_viewer_link``,
    ``invalid_viewer_link``): ``reason`` is the API's machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_token(presented: str) -> bool:
    """Whether a presented bearer secret is meant as a viewer link (not an API key)."""
    return presented.startswith(TOKEN_PREFIX)


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _time(value: str, name: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return timestamp(moment.astimezone(UTC))
    except (ValueError, OverflowError):
        raise LinkError(
            "invalid_filter", f"{name} must be an RFC 3339 time with its zone, within years 1-9999"
        ) from None


def parse_filters(filters: object) -> dict[str, str]:
    """A link's filter, checked and normalized (times in UTC as ``received_at`` is)."""
    if not isinstance(filters, dict) or not filters:
        raise LinkError("invalid_filter", "a link's filter is an object of at least one filter")
    found: dict[str, str] = {}
    for name, value in filters.items():
        if name not in FILTER_FIELDS:
            raise LinkError(
                "invalid_filter",
                f"unknown filter {str(name)[:40]!r}: use {', '.join(FILTER_FIELDS)}",
            )
        if not isinstance(value, str) or not 0 < len(value) <= MAX_FILTER_CHARS or "\x00" in value:
            raise LinkError(
                "invalid_filter",
                f"{name} must be a string of 1..{MAX_FILTER_CHARS} characters without NUL",
            )
        if name == "type" and value not in EVENT_TYPES:
            raise LinkError(
                "invalid_filter", f"type must be one of {', '.join(sorted(EVENT_TYPES))}"
            )
        if name == "event_name" and value == "*":
            raise LinkError("invalid_filter", "event_name '*' matches every event: name a prefix")
        found[name] = _time(value, name) if name in ("since", "until") else value
    return found


def filter_query(filters: dict[str, str]) -> EventQuery:
    """The events a (checked) filter admits, as a query."""
    fields: dict[str, Any] = {k: v for k, v in filters.items() if k != "event_name"}
    name = filters.get("event_name")
    if name is not None and name.endswith("*"):
        fields["event_name_prefix"] = name[:-1]
    elif name is not None:
        fields["event_name"] = name
    return EventQuery(**fields)


def narrow(bound: EventQuery, asked: EventQuery) -> EventQuery | None:
    """``asked`` restricted to what ``bound`` admits (both must hold), or None if no event
    can satisfy both. Only the filters change: order, cursor, limit and text are asked's."""
    merged: dict[str, Any] = {}
    for name in _EXACT:
        mine, theirs = getattr(bound, name), getattr(asked, name)
        if mine is not None and theirs is not None and mine != theirs:
            return None
        merged[name] = mine if mine is not None else theirs
    # An exact name and a prefix may both apply (both are SQL conditions); two prefixes
    # combine into the longer one, if one extends the other.
    exact = {n for n in (bound.event_name, asked.event_name) if n is not None}
    if len(exact) > 1:
        return None
    merged["event_name"] = next(iter(exact), None)
    prefixes = sorted((p for p in (bound.event_name_prefix, asked.event_name_prefix) if p), key=len)
    if len(prefixes) == 2 and not prefixes[1].startswith(prefixes[0]):
        return None
    merged["event_name_prefix"] = prefixes[-1] if prefixes else None
    since = [t for t in (bound.since, asked.since) if t is not None]
    until = [t for t in (bound.until, asked.until) if t is not None]
    merged["since"] = max(since) if since else None
    merged["until"] = min(until) if until else None
    return replace(asked, **merged)


def describe(link: ViewerLink) -> dict[str, Any]:
    """A link as listings show it (never its token)."""
    return {
        "prefix": link.prefix,
        "tenant": link.tenant,
        "filter": json.loads(link.filters),
        "label": link.label,
        "created_at": link.created_at,
        "expires_at": link.expires_at,
        "revoked_at": link.revoked_at,
    }


def create(
    ledger: Ledger,
    tenant: Tenant,
    filters: object,
    lifetime: timedelta,
    label: str | None = None,
    *,
    by: str | None = None,
) -> tuple[str, ViewerLink]:
    """A new link (its token, shown once, and its record), recorded in the tenant's log.
    ``by`` names the admin key that asked, if any."""
    checked = parse_filters(filters)
    if not timedelta(seconds=1) <= lifetime <= MAX_LIFETIME:
        raise LinkError("invalid_lifetime", f"a link lives 1 s to {MAX_LIFETIME.days} days")
    if label is not None and (len(label) > MAX_LABEL_CHARS or "\x00" in label):
        raise LinkError("invalid_label", f"a label is at most {MAX_LABEL_CHARS} characters")
    now = datetime.now(UTC)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ledger.storage.create_viewer_link(
        tenant.id,
        _hash(token),
        token[: len(TOKEN_PREFIX) + _DISPLAY_CHARS],
        json.dumps(checked, sort_keys=True),
        label,
        timestamp(now),
        timestamp(now + lifetime),
    )
    details = {
        "link": record.prefix,
        "filter": checked,
        "expires_at": record.expires_at,
        "label": label,
        "key": by,
    }
    ledger.record_admin_event(tenant, EVENT_CREATED, details).result()
    return token, record


def links(ledger: Ledger, tenant: Tenant | None = None) -> list[ViewerLink]:
    return ledger.storage.list_viewer_links(None if tenant is None else tenant.id)


def revoke(
    ledger: Ledger, prefix: str, tenant: Tenant | None = None, *, by: str | None = None
) -> ViewerLink:
    """Revoke a link (of ``tenant`` only, if given), recorded in its tenant's log."""
    found = [
        link
        for link in ledger.storage.list_viewer_links(None if tenant is None else tenant.id)
        if link.prefix == prefix
    ]
    if not found:
        raise LinkError("unknown_viewer_link", f"no viewer link with prefix {prefix[:40]!r}")
    revoked = ledger.storage.revoke_viewer_link(prefix, timestamp())
    assert revoked is not None
    owner = Tenant(revoked.tenant_id, revoked.tenant, "")
    ledger.record_admin_event(owner, EVENT_REVOKED, {"link": prefix, "key": by}).result()
    return revoked


def authenticate(ledger: Ledger, presented: str) -> ViewerLink:
    """The live link behind a presented token; :class:`LinkError` if it is unknown,
    revoked or expired. Read from the database each time: revocation is immediate."""
    if _TOKEN_SHAPE.match(presented) is None:
        raise LinkError("invalid_viewer_link", "the viewer link is unknown or revoked")
    digest = _hash(presented)
    link = ledger.storage.find_viewer_link(digest)
    if (
        link is None
        or link.revoked_at is not None
        or not hmac.compare_digest(link.token_hash, digest)
    ):
        raise LinkError("invalid_viewer_link", "the viewer link is unknown or revoked")
    if link.expires_at <= timestamp():
        raise LinkError("expired_viewer_link", f"the viewer link expired at {link.expires_at}")
    return link
