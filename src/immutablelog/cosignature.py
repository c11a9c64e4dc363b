"""C2SP tlog-cosignature (v1, Ed25519): a witness's timestamped statement about a checkpoint.

A cosignature is one more signed-note signature line on a checkpoint. Its signed message is

    cosignature/v1\\n
    time <POSIX seconds>\\n
    <the checkpoint's note text>

and its signature bytes are ``key id (4) || timestamp (u64, big-endian) || Ed25519 (64)``,
with the key id ``SHA-256(name || "\\n" || 0x04 || public key)[:4]`` (the 0x04 keeps a
cosigner key from ever being taken for a log key, whose id uses 0x01). Verifier keys are
``<name>+<hex id>+<base64(0x04 || public key)>``. See https://c2sp.org/tlog-cosignature.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from immutablelog.checkpoint import (
    NoteError,
    Signer,
    _check_key_name,
    _check_text_chars,
    _key_id,
    _parse_key_parts,
    _split_note,
)

__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "cosigned_message",
]

ALG_COSIGNATURE_V1 = 0x04
#: The spec bounds timestamps to int64.
MAX_TIMESTAMP = (1 << 63) - 1
_TIMESTAMP = struct.Struct(">Q")
_SIGNATURE_BYTES = _TIMESTAMP.size + 64


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: header, time line, then the whole checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} out of range")
    raw = _check_text_chars(text, "checkpoint")
    if not text.endswith("\n"):
        raise NoteError("checkpoint text must end with a newline")
    return b"cosignature/v1\ntime %d\n" % timestamp + raw


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who signed, and when they say they did."""

    name: str
    key_id: bytes
    timestamp: int
    line: str


class Cosigner:
    """A witness's Ed25519 cosigning key, bound to its name."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._private_key = private_key
        public = private_key.public_key().public_bytes_raw()
        self._public = public
        self.key_id = _key_id(name, public, ALG_COSIGNATURE_V1)

    def __repr__(self) -> str:
        return f"Cosigner(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        """A fresh random key for ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_signer(cls, signer: Signer) -> Cosigner:
        """The cosigner of the same name and Ed25519 key as ``signer`` (a key file's)."""
        return cls(signer.name, signer._private_key)

    def verifier_key(self) -> str:
        """``<name>+<hex id>+<base64(0x04 || public key)>``, for the logs' verifiers."""
        b64 = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self._public).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def cosign(self, text: str, timestamp: int) -> str:
        """The signature line (ending in a newline) cosigning checkpoint ``text``."""
        signature = self._private_key.sign(cosigned_message(text, timestamp))
        blob = self.key_id + _TIMESTAMP.pack(timestamp) + signature
        return f"\u2014 {self.name} {base64.b64encode(blob).decode('ascii')}\n"


class CosignatureVerifier:
    """Checks the cosignatures of one witness, given its verifier key string."""

    def __init__(self, verifier_key: str) -> None:
        if not isinstance(verifier_key, str):
            raise NoteError("witness key must be a string")
        parts = verifier_key.split("+", 2)
        if len(parts) != 3:
            raise NoteError("witness key must be <name>+<id>+<key>")
        name, hex_id, b64 = parts
        key_id, public = _parse_key_parts(name, hex_id, b64, "witness key", ALG_COSIGNATURE_V1)
        if _key_id(name, public, ALG_COSIGNATURE_V1) != key_id:
            raise NoteError("witness key: key id does not match name and key")
        self.name = name
        self.key_id = key_id
        self.verifier_key = verifier_key
        try:
            self._public_key = Ed25519PublicKey.from_public_bytes(public)
        except ValueError as exc:
            raise NoteError("witness key: invalid Ed25519 public key") from exc

    def __repr__(self) -> str:
        return f"CosignatureVerifier(name={self.name!r}, key_id={self.key_id.hex()})"

    def find(self, note: str) -> Cosignature | None:
        """This witness's cosignature on ``note``, or None if it has none.

        A line that claims to be this witness's but does not verify rejects the note
        (:class:`NoteError`): that is forgery, not an unrelated signer.
        """
        text, signatures = _split_note(note)
        for name, key_id, signature in signatures:
            if name == self.name and key_id == self.key_id:
                return self._check(text, name, key_id, signature)
        return None

    def _check(self, text: str, name: str, key_id: bytes, signature: bytes) -> Cosignature:
        where = f"cosignature of {name}+{key_id.hex()}"
        if len(signature) != _SIGNATURE_BYTES:
            raise NoteError(f"{where} is not a timestamp and an Ed25519 signature")
        (timestamp,) = _TIMESTAMP.unpack_from(signature)
        if timestamp > MAX_TIMESTAMP:
            raise NoteError(f"{where} has a timestamp beyond 2^63 - 1")
        try:
            self._public_key.verify(signature[_TIMESTAMP.size :], cosigned_message(text, timestamp))
        except InvalidSignature:
            raise NoteError(f"{where} does not verify") from None
        blob = base64.b64encode(key_id + signature).decode("ascii")
        return Cosignature(name, key_id, timestamp, f"\u2014 {name} {blob}\n")
