"""Read endpoints that serve what a verifier needs: checkpoints, raw entries, proofs.

Endpoints that read the database are plain functions, which Starlette runs on its thread
pool: a slow database then holds up those reads, never the event loop (ingest, health).
"""

from __future__ import annotations

import base64
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from immutablelog.entry import ENTRIES_MEDIA_TYPE, ENTRY_RECORD, SALT_BYTES
from immutablelog.ledger import Ledger, LedgerError, Tenant
from immutablelog.server.auth import require_key
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.server.links import MAX_LINK_ENTRIES, inside, require_reader
from immutablelog.server.params import int_param
from immutablelog.server.witnessing import Witnessing

MAX_ENTRIES_PER_PAGE: Final = 1000
#: Binary pages need no per-entry JSON on either side, so they can be much larger; the byte
#: cap bounds memory when entries are big (a short page tells the client to ask again).
MAX_BINARY_ENTRIES_PER_PAGE: Final = 16384
MAX_BINARY_PAGE_BYTES: Final = 16 * 1024 * 1024
_NOTE_TYPE = "text/plain; charset=utf-8"


def _size_param(request: Request, name: str, ledger: Ledger, tenant: Tenant) -> int:
    """A tree size from the query, else the latest (read only when it is not given)."""
    if name in request.query_params:
        return int_param(request, name)
    return ledger.checkpoint(tenant).size


def erasable_json(part: bytes | None) -> dict[str, str] | None:
    """An erasable part as JSON carries it: the salt in hex, the values as text."""
    if part is None:
        return None
    return {"salt": part[:SALT_BYTES].hex(), "values": part[SALT_BYTES:].decode("utf-8")}


def entry_item(index: int, data: bytes, part: bytes | None) -> dict[str, Any]:
    """One entry of ``/v1/entries`` and of a bundle: its bytes as text, and its erasable
    part when stored (and wanted)."""
    item: dict[str, Any] = {"index": index, "entry": data.decode("utf-8")}
    if part is not None:
        item["erasable"] = erasable_json(part)
    return item


def ledger_error(exc: LedgerError) -> ApiError:
    status = 404 if exc.reason == "not_found" else 400
    return ApiError(status, exc.reason, exc.message)


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


async def get_log_key(request: Request) -> Response:
    ledger: Ledger = request.app.state.ledger
    return PlainTextResponse(ledger.verifier_key() + "\n", media_type=_NOTE_TYPE)


def get_log_keys(request: Request) -> Response:
    """The log's keys over its rotations, and the read key's tenant's handovers: checkpoints
    signed by an outgoing and an incoming key, which a verifier that trusts the old key
    checks itself before it trusts the new one."""
    ledger: Ledger = request.app.state.ledger
    _, tenant = require_key(ledger, request, "read")
    keys = [
        {"key": k.key, "added_at": k.added_at, "retired_at": k.retired_at}
        for k in ledger.log_keys()
    ]
    handovers = [
        {"old_key": h.old_key, "new_key": h.new_key, "size": h.size, "checkpoint": h.note}
        for h in ledger.handovers(tenant)
    ]
    return JSONResponse(
        {"keys": keys, "handovers": handovers}, headers={"Cache-Control": "no-store"}
    )


def get_checkpoint(request: Request) -> Response:
    """The latest signed checkpoint (C2SP signed note), or the one at ``?size=``."""
    ledger: Ledger = request.app.state.ledger
    tenant = require_reader(ledger, request).tenant
    try:
        if "size" in request.query_params:
            stored = ledger.checkpoint_at(tenant, int_param(request, "size"))
        else:
            stored = ledger.checkpoint(tenant)
    except LedgerError as exc:
        raise ledger_error(exc) from None
    note = stored.note
    witnessing: Witnessing | None = request.app.state.witnessing
    if witnessing is not None:
        note = witnessing.cosigned_note(tenant, stored.size, note)
    return Response(note, media_type=_NOTE_TYPE, headers={"Cache-Control": "no-store"})


def get_inclusion_proof(request: Request) -> Response:
    ledger: Ledger = request.app.state.ledger
    _, tenant = require_key(ledger, request, "read")
    index = int_param(request, "index")
    size = _size_param(request, "size", ledger, tenant)
    try:
        proof = ledger.inclusion_proof(tenant, index, size)
    except LedgerError as exc:
        raise ledger_error(exc) from None
    return JSONResponse({"index": index, "tree_size": size, "hashes": _b64(proof)})


def get_consistency_proof(request: Request) -> Response:
    ledger: Ledger = request.app.state.ledger
    tenant = require_reader(ledger, request).tenant
    first = int_param(request, "first")
    second = _size_param(request, "second", ledger, tenant)
    try:
        proof = ledger.consistency_proof(tenant, first, second)
    except LedgerError as exc:
        raise ledger_error(exc) from None
    return JSONResponse({"first": first, "second": second, "hashes": _b64(proof)})


def get_entries(request: Request) -> Response:
    """Raw entry bytes for ``start <= index < end``: JSON items, or length-prefixed records
    when the client accepts ``application/octet-stream``."""
    ledger: Ledger = request.app.state.ledger
    reader = require_reader(ledger, request)
    tenant = reader.tenant
    binary = accepts_binary(request.headers.get("accept", ""))
    cap = MAX_BINARY_ENTRIES_PER_PAGE if binary else MAX_ENTRIES_PER_PAGE
    if reader.link is not None:
        cap = MAX_LINK_ENTRIES
    start = int_param(request, "start", 0)
    end = int_param(request, "end", start + cap)
    if end < start:
        raise ApiError(400, "invalid_parameter", "end must not be before start")
    end = min(end, start + cap)
    if not inside(ledger, reader, start, end):
        raise ApiError(
            403, "outside_viewer_link", "these entries are not all within the viewer link's filter"
        )
    if binary:
        return Response(
            _entry_records(ledger, tenant, start, end),
            media_type=ENTRIES_MEDIA_TYPE,
            headers={"Vary": "Accept"},
        )
    entries = [entry_item(*row) for row in ledger.entry_bytes(tenant, start, end)]
    return JSONResponse({"start": start, "entries": entries}, headers={"Vary": "Accept"})


def accepts_binary(accept: str) -> bool:
    """Whether an ``Accept`` header names the binary entries type with a non-zero quality."""
    for item in accept.split(","):
        media, _, params = item.partition(";")
        if media.strip().lower() != ENTRIES_MEDIA_TYPE:
            continue
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _entry_records(ledger: Ledger, tenant: Tenant, start: int, end: int) -> bytes:
    """Records of ``ENTRY_RECORD`` header + entry bytes + erasable part, stopping once past
    the byte cap."""
    parts: list[bytes] = []
    pack = ENTRY_RECORD.pack
    size = 0
    for index, data, part in ledger.entry_bytes(tenant, start, end):
        part = part or b""
        parts.append(pack(index, len(data), len(part)))
        parts.append(data)
        parts.append(part)
        size += len(data) + len(part)
        if size >= MAX_BINARY_PAGE_BYTES:
            break
    return b"".join(parts)
