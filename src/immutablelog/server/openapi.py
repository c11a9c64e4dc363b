"""The OpenAPI 3.1 description of the v1 API, served at ``/openapi.json``.

Written by hand (the handlers validate by hand too, for speed); schemathesis runs against
the live server in CI to keep this document and the handlers in agreement.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from immutablelog import __version__
from immutablelog.entry import EVENT_TYPES, MAX_IDEMPOTENCY_KEY_CHARS
from immutablelog.erasure import MAX_REASON_CHARS
from immutablelog.ledger.erasing import MAX_ERASE_IDS
from immutablelog.ledger.viewer_links import FILTER_FIELDS, MAX_LABEL_CHARS, MAX_LIFETIME
from immutablelog.ledger.viewer_links import MAX_FILTER_CHARS as MAX_LINK_FILTER_CHARS
from immutablelog.server.params import MAX_POSITION, MAX_TEXT_CHARS
from immutablelog.server.stats import AUTO_BUCKETS, INTERVALS
from immutablelog.server.viewer import (
    ACCESS_EVENTS,
    EXPORT_FORMATS,
    MAX_FILTER_CHARS,
    MAX_FILTERS,
)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "Malformed request",
        401: "Missing, unknown or revoked API key",
        403: "The key lacks the scope or belongs to another tenant",
        404: "Not found",
        413: "Too large",
        422: "Invalid event",
        503: "The ledger cannot commit now; retry after Retry-After seconds",
    }
    return {str(s): _json(_ERROR, names[s]) for s in statuses}


def _int_query(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
    }


def _str_query(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": MAX_TEXT_CHARS, "pattern": _NO_NUL},
    }


#: Text parameters never hold NUL (it reaches no database).
_NO_NUL = "^[^\\u0000]*$"
_OFFSET_MINUTES = "^[+-]?0*([0-9]{1,3}|1[0-3][0-9]{2}|14[0-3][0-9]|1440)$"
_CURSOR_QUERY: dict[str, Any] = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "description": "next_cursor of the previous page, with the same filters and order",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,400}$"},
}


_TENANT_QUERY: dict[str, Any] = {
    "name": "tenant",
    "in": "query",
    "required": False,
    "description": "Must name the key's own tenant if given",
    "schema": {"type": "string", "pattern": _NO_NUL},
}
_READ: dict[str, Any] = {"security": [{"bearer": []}]}


def _event_filters() -> list[dict[str, Any]]:
    """The filters of ``GET /v1/events``, shared by the operations that take them."""
    return [
        *[
            _str_query(name)
            for name in ("service", "env", "event_name", "request_id", "actor", "q")
        ],
        {
            "name": "type",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": sorted(EVENT_TYPES)},
        },
        *[
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "date-time"},
            }
            for name in ("since", "until")
        ],
    ]


#: ``<L>/<N>[.p/<W>]`` or ``entries/<N>[.p/<W>]``: L 0-63, N in x-prefixed 3-digit elements
#: without a leading x000, W 1-255 (tiles/layout.py parses it).
_TILE_PATH = (
    r"^(entries|[0-9]|[1-5][0-9]|6[0-3])/((x00[1-9]|x0[1-9][0-9]|x[1-9][0-9]{2})(/x[0-9]{3}){0,5}/)?"
    r"[0-9]{3}(\.p/([1-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$"
)
_TENANT_PATH: dict[str, Any] = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _link_filter() -> dict[str, Any]:
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_LINK_FILTER_CHARS,
        "pattern": _NO_NUL,
    }
    properties: dict[str, Any] = {name: text for name in FILTER_FIELDS}
    properties["type"] = {"type": "string", "enum": sorted(EVENT_TYPES)}
    properties["event_name"] = {**text, "description": "A trailing * makes it a prefix"}
    for name in ("since", "until"):
        properties[name] = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": properties,
    }


@cache
def openapi_document() -> dict[str, Any]:
    event_headers = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
        },
        {
            "name": "Request-Id",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {
            "name": "X-Client-TZ",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        {
            "name": "X-Client-Offset-Minutes",
            "in": "header",
            "required": False,
            # A header is text: minutes from -1440 to 1440, in ASCII digits.
            "schema": {"type": "string", "maxLength": 6, "pattern": _OFFSET_MINUTES},
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ImmutableLog",
            "version": __version__,
            "description": "Tamper-evident audit log: ingest, signed checkpoints, proofs.",
        },
        "paths": {
            "/v1/events": {
                "get": {
                    "summary": "Search events, newest first, with an opaque cursor",
                    **_READ,
                    "parameters": [
                        *_event_filters(),
                        _CURSOR_QUERY,
                        {
                            "name": "order",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["desc", "asc"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/EventPage"}, "Events"),
                        **_errors(400, 401, 403),
                    },
                },
                "post": {
                    "summary": "Append one event; answered once it is durably committed",
                    "security": [{"bearer": []}],
                    "parameters": event_headers,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Event"}}
                        },
                    },
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/Accepted"}, "Committed"),
                        **_errors(400, 401, 403, 413, 422, 503),
                    },
                },
            },
            "/v1/events/{event_id}": {
                "get": {
                    "summary": "One event with its leaf hash and an inclusion proof",
                    **_READ,
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _int_query("size", "Prove against this tree size (default: latest)"),
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/EventWithProof"}, "Event"),
                        **_errors(400, 401, 403, 404),
                    },
                },
                "delete": {
                    "summary": "Erase the event's values (payload, actor, extra meta); admin "
                    "key. Recorded in the log first; every proof stays valid",
                    **_READ,
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "reason",
                            "in": "query",
                            "required": True,
                            "description": "Why (kept in the log for good: say why, not whom)",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_REASON_CHARS,
                                "pattern": _NO_NUL,
                            },
                        },
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Erasure"}, "Erased"),
                        **_errors(400, 401, 403, 404, 422, 503),
                    },
                },
            },
            "/v1/erasures": {
                "get": {
                    "summary": "Every erasure the log records (indexes, when, why, by whom); "
                    "admin key",
                    **_READ,
                    "parameters": [_TENANT_QUERY],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/ErasureList"}, "Erasures"),
                        **_errors(400, 401, 403),
                    },
                },
                "post": {
                    "summary": f"Erase the values of up to {MAX_ERASE_IDS} events by id, or of "
                    "every event of one actor; admin key",
                    **_READ,
                    "parameters": [_TENANT_QUERY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErasureRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Erasure"}, "Erased"),
                        **_errors(400, 401, 403, 404, 413, 422, 503),
                    },
                },
            },
            "/v1/event-counts": {
                "get": {
                    "summary": "How many events of each type fall in each stretch of time, "
                    "for the filters of GET /v1/events (non-empty buckets, oldest first)",
                    **_READ,
                    "parameters": [
                        *_event_filters(),
                        {
                            "name": "interval",
                            "in": "query",
                            "required": False,
                            "description": "auto: the shortest that splits the range into "
                            f"at most {AUTO_BUCKETS} buckets",
                            "schema": {"type": "string", "enum": ["auto", *INTERVALS]},
                        },
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/EventCounts"}, "Counts"),
                        # 422: a count the kept counts cannot answer ran past its time.
                        **_errors(400, 401, 403, 422),
                    },
                }
            },
            "/v1/viewer/access": {
                "post": {
                    "summary": "Record a sign-in or an export of the viewer in the log "
                    "(answered once the event is committed)",
                    **_READ,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ViewerAccess"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json({"$ref": "#/components/schemas/AccessRecorded"}, "Recorded"),
                        **_errors(400, 401, 403, 413, 422, 503),
                    },
                }
            },
            "/v1/viewer-links": {
                "post": {
                    "summary": "Create a viewer link: a read-only token bound to a filter, "
                    "that expires (admin scope); the token is answered once",
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/NewViewerLink"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json({"$ref": "#/components/schemas/ViewerLinkCreated"}, "Made"),
                        **_errors(400, 401, 403, 413, 422),
                    },
                },
                "get": {
                    "summary": "The tenant's viewer links, never their tokens (admin scope)",
                    "security": [{"bearer": []}],
                    "parameters": [_TENANT_QUERY],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["links"],
                                "properties": {
                                    "links": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/ViewerLink"},
                                    }
                                },
                            },
                            "Links",
                        ),
                        **_errors(400, 401, 403),
                    },
                },
            },
            "/v1/viewer-links/{prefix}": {
                "delete": {
                    "summary": "Revoke a viewer link by its prefix (admin scope)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {
                            "name": "prefix",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["ok", "link"],
                                "properties": {
                                    "ok": {"const": True},
                                    "link": {"$ref": "#/components/schemas/ViewerLink"},
                                },
                            },
                            "Revoked",
                        ),
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/v1/verify": {
                "get": {
                    "summary": "The server re-checks its own log (entries, columns, roots, "
                    "signatures)",
                    **_READ,
                    "parameters": [
                        _int_query("from", "First index"),
                        _int_query("to", "One past the last index"),
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/IntegrityReport"}, "Report"),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/export": {
                "get": {
                    "summary": "The whole signed log: a JSONL bundle or CSV, streamed",
                    **_READ,
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["jsonl", "csv"]},
                        },
                        {
                            "name": "erasable",
                            "in": "query",
                            "required": False,
                            "description": "0: a bundle without the entries' erasable parts",
                            "schema": {"type": "string", "enum": ["1", "0"]},
                        },
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": {
                            "description": "Export",
                            "content": {
                                "application/x-ndjson": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/events/batch": {
                "post": {
                    "summary": "Append up to 1000 events; each is accepted or rejected on its own",
                    "security": [{"bearer": []}],
                    "parameters": [
                        *event_headers[2:],
                        {
                            "name": "Prefer",
                            "in": "header",
                            "required": False,
                            "description": "return=minimal (RFC 7240): answer with a "
                            "BatchSummary instead of one result per item",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events"],
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 1000,
                                            # Each item is checked on its own and
                                            # answered in results, so one bad event
                                            # never holds back the others.
                                            "items": {
                                                "description": "A BatchEvent (see "
                                                "components); refused items are answered "
                                                "in results, not with the request's status"
                                            },
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/BatchResult"},
                                    {"$ref": "#/components/schemas/BatchSummary"},
                                ]
                            },
                            "Per item; a BatchSummary (with Preference-Applied: return=minimal) "
                            "when the request preferred return=minimal",
                        ),
                        **_errors(400, 401, 403, 413, 422, 503),
                    },
                }
            },
            "/v1/checkpoint": {
                "get": {
                    "summary": "The latest signed checkpoint (C2SP signed note)",
                    **_READ,
                    "parameters": [_int_query("size", "An older checkpoint"), _TENANT_QUERY],
                    "responses": {"200": _text("Signed note"), **_errors(400, 401, 403, 404)},
                }
            },
            "/v1/entries": {
                "get": {
                    "summary": "Raw entry bytes by index range",
                    "description": (
                        "At most 1000 entries as JSON. With `Accept: application/octet-stream`, "
                        "at most 16384 entries (fewer past 16 MiB) as records: index (8 bytes) "
                        "and length (4 bytes), big-endian, then the entry bytes."
                    ),
                    **_READ,
                    "parameters": [
                        _int_query("start", "First index"),
                        _int_query("end", "One past the last index"),
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": {
                            "description": "Entries",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Entries"}
                                },
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                            },
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/proofs/inclusion": {
                "get": {
                    "summary": "RFC 9162 inclusion proof",
                    **_READ,
                    "parameters": [
                        _int_query("index", "Leaf index", required=True),
                        _int_query("size", "Tree size (default: latest)"),
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Proof"}, "Proof"),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/v1/proofs/consistency": {
                "get": {
                    "summary": "RFC 9162 consistency proof",
                    **_READ,
                    "parameters": [
                        _int_query("first", "Older tree size", required=True),
                        _int_query("second", "Newer tree size (default: latest)"),
                        _TENANT_QUERY,
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Proof"}, "Proof"),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/v1/log-key": {
                "get": {
                    "summary": "The log's verifier key (signed-note verifier key form); "
                    "during a rotation, the incoming one",
                    "responses": {"200": _text("Verifier key")},
                }
            },
            "/v1/log-keys": {
                "get": {
                    "summary": "The log's keys over its rotations, and the tenant's handover "
                    "checkpoints (signed by the outgoing and the incoming key)",
                    **_READ,
                    "parameters": [_TENANT_QUERY],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/LogKeys"}, "Key history"),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/tlog/{tenant}/checkpoint": {
                "get": {
                    "summary": "C2SP tlog-tiles: the tenant's checkpoint (with cosignatures)",
                    "description": "Public without a key for tenants served with --public-tiles.",
                    **_READ,
                    "parameters": [_TENANT_PATH],
                    "responses": {"200": _text("Signed note"), **_errors(401, 403, 404)},
                }
            },
            "/tlog/{tenant}/tile/{path}": {
                "get": {
                    "summary": "C2SP tlog-tiles: a hash tile <L>/<N>[.p/<W>] or entry bundle "
                    "entries/<N>[.p/<W>]",
                    "description": "Immutable once the tree contains it; 404 until then.",
                    **_READ,
                    "parameters": [
                        _TENANT_PATH,
                        {
                            "name": "path",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": _TILE_PATH},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Tile bytes",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                }
                            },
                        },
                        **_errors(400, 401, 403, 404, 422),
                    },
                }
            },
            "/livez": {
                "get": {
                    "summary": "Liveness: the process answers (never depends on the database)",
                    "responses": {"200": _json({"type": "object"}, "Alive")},
                }
            },
            **{
                path: {
                    "get": {
                        "summary": summary,
                        "responses": {
                            "200": _json({"type": "object"}, "Ready, with each check"),
                            **_errors(503),
                        },
                    }
                }
                for path, summary in (
                    ("/readyz", "Readiness: which dependency is down, within about a second"),
                    ("/healthz", "Readiness (the same answer as /readyz)"),
                )
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": _text("Metrics")}}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    meta = {
        "type": "object",
        "required": ["type", "event_name", "service"],
        "properties": {
            "type": {"type": "string", "enum": sorted(EVENT_TYPES)},
            "event_name": {"type": "string", "minLength": 1, "maxLength": 255},
            "service": {"type": "string", "minLength": 1, "maxLength": 255},
            "request_id": {"type": ["string", "null"], "maxLength": 255},
            "env": {"type": ["string", "null"], "maxLength": 255},
        },
    }
    payload = {
        "description": "A JSON document serialized as a string (stored byte for byte), "
        "or a JSON object; at most 12 KiB UTF-8",
        "oneOf": [{"type": "string"}, {"type": "object"}],
    }
    return {
        "Error": {
            "type": "object",
            "required": ["ok", "reason", "message"],
            "properties": {
                "ok": {"const": False},
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        },
        "Event": {
            "type": "object",
            "required": ["payload", "meta"],
            "properties": {"payload": payload, "meta": meta},
        },
        "BatchEvent": {
            "type": "object",
            "required": ["payload", "meta"],
            "properties": {
                "payload": payload,
                "meta": meta,
                "idempotency_key": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
            },
        },
        "Accepted": {
            "type": "object",
            "required": [
                "ok",
                "status",
                "tx_id",
                "payload_hash",
                "duplicate",
                "index",
                "leaf_hash",
                "received_at",
            ],
            "properties": {
                "ok": {"const": True},
                "status": {"const": "accepted"},
                "tx_id": {"type": "string", "format": "uuid"},
                "payload_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "duplicate": {"type": "boolean"},
                "request_id": {"type": ["string", "null"]},
                "index": {"type": "integer", "minimum": 0},
                "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "received_at": {"type": "string", "format": "date-time"},
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["ok", "accepted", "rejected", "results"],
            "properties": {
                "ok": {"const": True},
                "accepted": {"type": "integer"},
                "rejected": {"type": "integer"},
                "results": {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/Accepted"},
                            {"$ref": "#/components/schemas/Error"},
                        ]
                    },
                },
            },
        },
        "BatchSummary": {
            "type": "object",
            "required": ["ok", "accepted", "rejected", "duplicates", "errors"],
            "additionalProperties": False,
            "properties": {
                "ok": {"const": True},
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "integer", "minimum": 0},
                "duplicates": {
                    "description": "Positions of accepted items that were already stored",
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                },
                "errors": {
                    "description": "The refused items: error body and position",
                    "type": "array",
                    "items": {
                        "allOf": [
                            {"$ref": "#/components/schemas/Error"},
                            {
                                "type": "object",
                                "required": ["index"],
                                "properties": {"index": {"type": "integer", "minimum": 0}},
                            },
                        ]
                    },
                },
            },
        },
        "Entries": {
            "type": "object",
            "required": ["start", "entries"],
            "properties": {
                "start": {"type": "integer"},
                "entries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "entry"],
                        "properties": {
                            "index": {"type": "integer"},
                            "entry": {"type": "string", "description": "RFC 8785 entry bytes"},
                            "erasable": {
                                "type": "object",
                                "description": "The entry's erasable part, while stored",
                                "required": ["salt", "values"],
                                "properties": {
                                    "salt": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                    "values": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        "EventPage": {
            "type": "object",
            "required": ["events", "next_cursor"],
            "properties": {
                "events": {"type": "array", "items": {"type": "object"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "EventWithProof": {
            "type": "object",
            "required": [
                "event",
                "index",
                "leaf_hash",
                "tree_size",
                "inclusion_proof",
                "checkpoint",
            ],
            "properties": {
                "event": {"type": "object"},
                "index": {"type": "integer"},
                "leaf_hash": {"type": "string"},
                "tree_size": {"type": "integer"},
                "inclusion_proof": {"type": "array", "items": {"type": "string"}},
                "checkpoint": {"type": "string"},
            },
        },
        "Erasure": {
            "type": "object",
            "required": ["records", "ranges", "erased"],
            "properties": {
                "records": {
                    "type": "array",
                    "description": "Indexes of the erasure records that log it",
                    "items": {"type": "integer"},
                },
                "ranges": {
                    "type": "array",
                    "description": "The erased indexes, as half-open [start, end) ranges",
                    "items": {"type": "array", "items": {"type": "integer"}},
                },
                "erased": {"type": "integer", "description": "Values deleted now"},
            },
        },
        "ErasureRequest": {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ERASE_IDS,
                    "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                },
                "actor": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                "reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS},
            },
        },
        "ErasureList": {
            "type": "object",
            "required": ["origin", "erasures"],
            "properties": {
                "origin": {"type": "string"},
                "erasures": {"type": "array", "items": {"type": "object"}},
            },
        },
        "EventCounts": {
            "type": "object",
            "required": ["interval", "buckets", "complete"],
            "properties": {
                "interval": {"type": "string", "enum": list(INTERVALS)},
                "complete": {
                    "type": "boolean",
                    "description": "false when a full-text count looked only at the newest "
                    "entries holding the words (serve --count-matches): every matching event "
                    "with an index of from_index or more is counted, none below",
                },
                "from_index": {"type": "integer", "minimum": 1},
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["start", "end", "total", "counts"],
                        "properties": {
                            "start": {"type": "string", "format": "date-time"},
                            "end": {"type": "string", "format": "date-time"},
                            "total": {"type": "integer", "minimum": 1},
                            "counts": {
                                "type": "object",
                                "required": sorted(EVENT_TYPES),
                                "properties": {
                                    kind: {"type": "integer", "minimum": 0}
                                    for kind in sorted(EVENT_TYPES)
                                },
                            },
                        },
                    },
                },
            },
        },
        "ViewerAccess": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["action"],
                    "properties": {"action": {"const": "sign_in"}},
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "required": ["action", "format"],
                    "properties": {
                        "action": {"const": "export"},
                        "format": {"type": "string", "enum": sorted(EXPORT_FORMATS)},
                        "filters": {
                            "type": "object",
                            "maxProperties": MAX_FILTERS,
                            "propertyNames": {"pattern": "^[a-z_]{1,32}$"},
                            "additionalProperties": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_FILTER_CHARS,
                                "pattern": _NO_NUL,
                            },
                        },
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "AccessRecorded": {
            "type": "object",
            "required": ["ok", "recorded"],
            "properties": {
                "ok": {"const": True},
                "recorded": {"type": "string", "enum": sorted(ACCESS_EVENTS.values())},
            },
        },
        "NewViewerLink": {
            "type": "object",
            "required": ["filter", "expires_in"],
            "additionalProperties": False,
            "properties": {
                "filter": _link_filter(),
                "expires_in": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": int(MAX_LIFETIME.total_seconds()),
                    "description": "Seconds from now",
                },
                "label": {
                    "type": ["string", "null"],
                    "maxLength": MAX_LABEL_CHARS,
                    "pattern": _NO_NUL,
                },
            },
        },
        "ViewerLink": {
            "type": "object",
            "required": ["prefix", "tenant", "filter", "created_at", "expires_at", "revoked_at"],
            "properties": {
                "prefix": {"type": "string"},
                "tenant": {"type": "string"},
                "filter": {"type": "object"},
                "label": {"type": ["string", "null"]},
                "created_at": {"type": "string", "format": "date-time"},
                "expires_at": {"type": "string", "format": "date-time"},
                "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "ViewerLinkCreated": {
            "type": "object",
            "required": ["ok", "token", "link"],
            "properties": {
                "ok": {"const": True},
                "token": {"type": "string", "pattern": "^iml_view_[A-Za-z0-9_-]{43}$"},
                "link": {"$ref": "#/components/schemas/ViewerLink"},
            },
        },
        "IntegrityReport": {
            "type": "object",
            "required": ["valid", "tree_size", "events_checked", "checkpoints_checked", "breaks"],
            "properties": {
                "valid": {"type": "boolean"},
                "tree_size": {"type": "integer"},
                "events_checked": {"type": "integer"},
                "checkpoints_checked": {"type": "integer"},
                "breaks": {"type": "array", "items": {"type": "object"}},
            },
        },
        "LogKeys": {
            "type": "object",
            "required": ["keys", "handovers"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["key", "added_at", "retired_at"],
                        "properties": {
                            "key": {"type": "string"},
                            "added_at": {"type": "string"},
                            "retired_at": {"type": ["string", "null"]},
                        },
                    },
                },
                "handovers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["old_key", "new_key", "size", "checkpoint"],
                        "properties": {
                            "old_key": {"type": "string"},
                            "new_key": {"type": "string"},
                            "size": {"type": "integer"},
                            "checkpoint": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Proof": {
            "type": "object",
            "required": ["hashes"],
            "properties": {
                "index": {"type": "integer"},
                "tree_size": {"type": "integer"},
                "first": {"type": "integer"},
                "second": {"type": "integer"},
                "hashes": {
                    "type": "array",
                    "items": {"type": "string", "contentEncoding": "base64"},
                },
            },
        },
    }
