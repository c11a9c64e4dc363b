"""The witness's HTTP API: C2SP tlog-witness ``POST /add-checkpoint``.

The request is ``old <size>``, up to 63 consistency-proof hashes (base64, one a line), an
empty line, and the signed checkpoint. The answers are the spec's: 404 for a log the
witness is not configured for, 403 when no trusted key signed the checkpoint, 400 for an
old size past the checkpoint (or a malformed body), 409 with the witness's size (``text/
x.tlog.size``) when the old size is not the one it holds or the root differs at equal size,
422 when the proof does not verify, and 200 with its cosignature line once the new
checkpoint is durably recorded. Other errors carry the project's JSON error body.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from immutablelog.checkpoint import (
    Checkpoint,
    NoteError,
    Verifier,
    _b64decode_canonical,
    _split_note,
    load_or_create_signer,
)
from immutablelog.cosignature import Cosigner
from immutablelog.merkle import ProofError, verify_consistency
from immutablelog.server import errors
from immutablelog.server.errors import ApiError, JSONResponse
from immutablelog.witness.state import SizeConflict, Witnessed, WitnessState

#: A checkpoint with a few dozen signatures and a full proof fits many times over.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_PROOF_LINES: Final = 63
SIZE_TYPE: Final = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class WitnessConfig:
    """Who the witness is and which logs it cosigns (origin -> the log's verifier keys)."""

    data_dir: Path
    name: str
    logs: Mapping[str, Sequence[str]]
    #: Requests per second each client address may make, and the burst it may save up.
    rate: float = 20.0
    burst: int = 100
    key_file: Path | None = None

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "witness.key"


def load_cosigner(config: WitnessConfig) -> Cosigner:
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Cosigner.from_signer(load_or_create_signer(config.key_path, config.name))


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per client address (kept in memory; a restart refills them)."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 100_000:  # bounded memory under a spray of addresses
                self._buckets.clear()
            bucket = self._buckets.setdefault(client, _Bucket(float(self.burst), now))
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    note: str


def parse_request(body: bytes) -> AddCheckpoint:
    """The parts of an add-checkpoint body; :class:`ApiError` 400 for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8") from None
    head, sep, note = text.partition("\n")
    if not sep or not head.startswith("old "):
        raise _bad("the body must start with an 'old <size>' line")
    size_text = head[len("old ") :]
    if not _DECIMAL.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
        raise _bad("the old size must be a decimal from 0 to 2^63 - 1, without leading zeros")
    proof: list[bytes] = []
    while True:
        line, sep, note = note.partition("\n")
        if not sep:
            raise _bad("the proof must end with an empty line before the checkpoint")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise _bad(f"more than {MAX_PROOF_LINES} consistency proof lines")
        try:
            digest = _b64decode_canonical(line, "proof line")
        except NoteError as exc:
            raise _bad(str(exc)) from None
        if len(digest) != 32:
            raise _bad("a proof line must be a 32-byte hash in base64")
        proof.append(digest)
    return AddCheckpoint(int(size_text), proof, note)


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


class Witness:
    """Checks and cosigns checkpoints of the configured logs."""

    def __init__(self, config: WitnessConfig) -> None:
        self.config = config
        self.cosigner = load_cosigner(config)
        self.state = WitnessState(config.data_dir / "witness.db")
        self.limiter = RateLimiter(config.rate, config.burst)
        self._logs: dict[str, list[Verifier]] = {
            origin: [Verifier(key) for key in keys] for origin, keys in config.logs.items()
        }

    def add_checkpoint(self, request: AddCheckpoint) -> str:
        """The cosignature line for the request's checkpoint, once recorded."""
        try:
            text, _ = _split_note(request.note)
            checkpoint = Checkpoint.from_text(text)
        except NoteError as exc:
            raise _bad(f"not a signed checkpoint: {exc}") from None
        verifiers = self._logs.get(checkpoint.origin)
        if verifiers is None:
            raise ApiError(404, "unknown_log", "this witness does not witness that log")
        if not any(_signed_by(verifier, request.note) for verifier in verifiers):
            raise ApiError(403, "bad_signature", "no trusted key of that log signed it")
        if request.old_size > checkpoint.size:
            raise _bad("the old size is larger than the checkpoint's")
        if request.old_size == 0 and request.proof:
            raise _bad("the proof must be empty when the old size is 0")

        def check(stored: Witnessed) -> None:
            try:
                verify_consistency(
                    stored.size, checkpoint.size, request.proof, stored.root, checkpoint.root_hash
                )
            except ProofError as exc:
                raise ApiError(422, "inconsistent", f"consistency proof: {exc}") from None

        new = Witnessed(checkpoint.size, checkpoint.root_hash)
        self.state.advance(checkpoint.origin, request.old_size, new, request.note, check)
        return self.cosigner.cosign(text, int(time.time()))


def _signed_by(verifier: Verifier, note: str) -> bool:
    try:
        verifier.verify(note)
    except NoteError:
        return False
    return True


async def add_checkpoint(request: Request) -> Response:
    witness: Witness = request.app.state.witness
    client = request.client.host if request.client else "unknown"
    if not witness.limiter.allow(client):
        raise ApiError(429, "rate_limited", "too many requests", headers={"Retry-After": "1"})
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit()):
        raise _bad("invalid Content-Length")
    if declared is not None and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    parsed = parse_request(bytes(body))
    try:
        line = witness.add_checkpoint(parsed)
    except SizeConflict as conflict:
        return Response(f"{conflict.size}\n", status_code=409, headers={"Content-Type": SIZE_TYPE})
    return Response(line, media_type="text/plain; charset=utf-8")


async def healthz(request: Request) -> Response:
    witness: Witness = request.app.state.witness
    return JSONResponse({"ok": True, "witness": witness.cosigner.verifier_key()})


def create_witness_app(config: WitnessConfig) -> Starlette:
    witness = Witness(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        witness.state.close()

    app = Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: errors.handle_api_error,
            HTTPException: errors.handle_http_exception,
            Exception: errors.handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.witness = witness
    return app
