"""The log's side of C2SP tlog-witness: ask a witness to cosign a checkpoint."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from immutablelog.checkpoint import NoteError
from immutablelog.cosignature import Cosignature, CosignatureVerifier

MAX_ANSWER_BYTES: Final = 64 * 1024


class WitnessFailed(Exception):
    """The witness could not be reached or refused the checkpoint (not a size conflict)."""


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness the log asks: where it answers and the key its cosignatures must verify with."""

    url: str
    verifier: CosignatureVerifier

    @classmethod
    def parse(cls, url: str, key: str) -> WitnessEndpoint:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"witness URL {url!r} must be http:// or https://")
        return cls(url.rstrip("/"), CosignatureVerifier(key))

    @property
    def key(self) -> str:
        return self.verifier.verifier_key


@dataclass(frozen=True)
class SizeConflict:
    """The witness holds another size for this log (409): ask again from that one."""

    size: int


def request_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode("utf-8")


def add_checkpoint(
    http: httpx.Client,
    witness: WitnessEndpoint,
    old_size: int,
    proof: Sequence[bytes],
    note: str,
) -> Cosignature | SizeConflict:
    """Submit ``note`` with the proof from ``old_size``; the witness's checked cosignature."""
    try:
        answer = http.post(
            f"{witness.url}/add-checkpoint", content=request_body(old_size, proof, note)
        )
    except httpx.HTTPError as exc:
        raise WitnessFailed(f"{witness.url}: {exc}") from None
    body = answer.content[:MAX_ANSWER_BYTES]
    if answer.status_code == 409:
        text = body.decode("ascii", "replace")
        if text.endswith("\n") and text[:-1].isascii() and text[:-1].isdigit():
            return SizeConflict(int(text[:-1]))
        raise WitnessFailed(f"{witness.url}: 409 without a size (root mismatch?): {text[:200]}")
    if answer.status_code != 200:
        snippet = body[:200].decode("utf-8", "replace")
        raise WitnessFailed(f"{witness.url}: HTTP {answer.status_code}: {snippet}")
    try:
        found = witness.verifier.find(note + body.decode("utf-8"))
    except (NoteError, UnicodeDecodeError) as exc:
        raise WitnessFailed(f"{witness.url}: bad cosignature: {exc}") from None
    if found is None:
        raise WitnessFailed(f"{witness.url}: no cosignature by {witness.verifier.name}")
    return found
