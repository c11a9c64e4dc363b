"""Signed tree heads: C2SP tlog-checkpoint bodies wrapped in C2SP signed-notes (Ed25519).

A checkpoint commits the log to one Merkle root at one tree size. It is the
only thing an auditor has to trust from the server, so every parser here is
strict: anything that is not byte-for-byte what the specs allow is rejected
with :class:`NoteError`, rather than being "repaired" into a different meaning.

Formats (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint)::

    <origin>\\n<tree size>\\n<base64 root hash>\\n[<extension line>\\n ...]
    \\n
    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n  (one or more)

Key strings use the same family as Go's golang.org/x/mod/sumdb/note, so keys
and notes interoperate with the Go ecosystem (tlog tooling, witnesses):

    verifier:  <name>+<8 hex key id>+<base64(0x01 || 32-byte public key)>
    signer:    PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>

The only I/O in this module is reading and writing key files.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import pathlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "Checkpoint",
    "NoteError",
    "Signer",
    "Verifier",
    "load_or_create_signer",
    "open_checkpoint",
    "read_key_file",
    "sign_checkpoint",
    "sign_note",
    "verify_by_any",
    "write_key_file",
]

# Bounds keep a hostile server from making verifiers do unbounded work. The
# signed-note spec requires accepting at least 16 signatures, which may be
# post-quantum ones of ~5 kB each, so the size bound is generous.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
# Go's tlog uses int64 tree sizes, and so does our storage; stay compatible.
MAX_TREE_SIZE = (1 << 63) - 1

ALG_ED25519 = 0x01
HASH_SIZE = 32
_KEY_ID_SIZE = 4
_ED25519_SIG_SIZE = 64
_SIG_PREFIX = "\u2014 "  # EM DASH + space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX_ID = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteError(ValueError):
    """A note, checkpoint or key string is malformed or does not verify."""


# --- shared helpers ---------------------------------------------------------


def _b64decode_canonical(s: str, what: str) -> bytes:
    """Decode standard base64, accepting only the one canonical encoding.

    Python's decoder tolerates non-zero trailing bits, so two different
    strings could decode to the same bytes; re-encoding closes that gap.
    """
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise NoteError(f"{what}: invalid base64") from exc
    if base64.b64encode(raw).decode("ascii") != s:
        raise NoteError(f"{what}: non-canonical base64")
    return raw


def _check_text_chars(text: str, what: str) -> bytes:
    """Return ``text`` as UTF-8 after enforcing the note character rules.

    Notes must be valid UTF-8 with no ASCII control characters except
    newline; lone surrogates in a ``str`` are how invalid UTF-8 shows up here.
    """
    if not isinstance(text, str):
        raise NoteError(f"{what} must be str, not {type(text).__name__}")
    # Characters never outnumber UTF-8 bytes: a cheap early exit before encoding.
    if len(text) > MAX_NOTE_BYTES:
        raise NoteError(f"{what} is larger than {MAX_NOTE_BYTES} bytes")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"{what} is not valid UTF-8") from exc
    if len(raw) > MAX_NOTE_BYTES:
        raise NoteError(f"{what} is larger than {MAX_NOTE_BYTES} bytes")
    bad = _FORBIDDEN_CONTROL.search(text)
    if bad:
        raise NoteError(f"{what} contains control character {bad.group()!r} at {bad.start()}")
    return raw


def _check_key_name(name: str) -> None:
    """Key names appear inside '+'-separated keys and space-separated sig lines."""
    if not isinstance(name, str) or not name:
        raise NoteError("key name must be a non-empty string")
    if "+" in name:
        raise NoteError(f"key name {name!r} must not contain '+'")
    if any(ch.isspace() or ch < "\x20" for ch in name):
        raise NoteError(f"key name {name!r} must not contain spaces or control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError(f"key name {name!r} is not valid UTF-8") from exc


def _key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """C2SP key ID: SHA-256(name || '\\n' || alg || pubkey)[:4] (0x01: a log's Ed25519 key,
    0x04: a witness's Ed25519 cosignature key)."""
    h = hashlib.sha256()
    h.update(name.encode("utf-8"))
    h.update(b"\n")
    h.update(bytes([alg]))
    h.update(public_key)
    return h.digest()[:_KEY_ID_SIZE]


def _parse_key_parts(
    name: str, hex_id: str, b64: str, what: str, alg: int = ALG_ED25519
) -> tuple[bytes, bytes]:
    """Validate the common ``name+hexid+base64(alg || 32 bytes)`` tail of a key string."""
    _check_key_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise NoteError(f"{what}: key id must be 8 lowercase hex digits")
    raw = _b64decode_canonical(b64, what)
    if not raw or raw[0] != alg:
        raise NoteError(f"{what}: unsupported key algorithm (only 0x{alg:02x} here)")
    if len(raw) != 1 + 32:
        raise NoteError(f"{what}: Ed25519 key must be 32 bytes")
    return bytes.fromhex(hex_id), raw[1:]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


# --- checkpoint body --------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log (origin), how many leaves, and the RFC 6962 root.

    Validated on construction so :meth:`to_text` can never emit a body that
    :meth:`from_text` would reject.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise NoteError("checkpoint origin must be a non-empty string")
        if "\n" in self.origin:
            raise NoteError("checkpoint origin must be a single line")
        _check_text_chars(self.origin, "checkpoint origin")
        # bool is an int subclass; a True tree size is surely a bug.
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise NoteError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"checkpoint size {self.size} out of range 0..{MAX_TREE_SIZE}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        # Accept any iterable of lines but store a tuple so the object stays hashable.
        exts = tuple(self.extensions)
        object.__setattr__(self, "extensions", exts)
        for ext in exts:
            if not isinstance(ext, str) or not ext:
                raise NoteError("checkpoint extension lines must be non-empty strings")
            if "\n" in ext:
                raise NoteError("checkpoint extension lines must not contain newlines")
            _check_text_chars(ext, "checkpoint extension line")

    def to_text(self) -> str:
        """The note body, ending in a newline, ready to sign."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the note text, not the signed note)."""
        _check_text_chars(text, "checkpoint")
        if not text.endswith("\n"):
            raise NoteError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint needs origin, size and root hash lines")
        origin, size_s, root_s, *exts = lines
        if not origin:
            raise NoteError("checkpoint origin is empty")
        if any(not ext for ext in exts):
            raise NoteError("checkpoint extension lines must be non-empty")
        # ASCII-only regex: str.isdigit() would accept non-ASCII digits.
        if len(size_s) > 19 or not _DECIMAL.fullmatch(size_s):
            raise NoteError(f"checkpoint size {size_s!r} is not a canonical decimal")
        size = int(size_s)
        if size > MAX_TREE_SIZE:
            raise NoteError(f"checkpoint size {size_s} is too large")
        root = _b64decode_canonical(root_s, "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise NoteError(f"checkpoint root hash must be {HASH_SIZE} bytes, got {len(root)}")
        return cls(origin=origin, size=size, root_hash=root, extensions=tuple(exts))


# --- signing ----------------------------------------------------------------


class Signer:
    """An Ed25519 note signer: a key name bound to a private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise NoteError("private key must be an Ed25519PrivateKey")
        self.name = name
        self._private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id: bytes = _key_id(name, _raw_public(self.public_key))

    def __repr__(self) -> str:
        # Never show key material.
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A fresh random key for ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key_string(cls, s: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``."""
        if not isinstance(s, str) or not s.startswith(_PRIVATE_PREFIX):
            raise NoteError("private key string must start with 'PRIVATE+KEY+'")
        parts = s[len(_PRIVATE_PREFIX) :].split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise NoteError("private key string must be PRIVATE+KEY+<name>+<id>+<key>")
        name, hex_id, b64 = parts
        key_id, seed = _parse_key_parts(name, hex_id, b64, "private key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        # The id is a checksum over name and public key: catches typos and swaps.
        if signer.key_id != key_id:
            raise NoteError("private key string: key id does not match name and key")
        return signer

    def private_key_string(self) -> str:
        """The secret key in Go note format; whoever holds it can sign."""
        seed = bytes([ALG_ED25519]) + self._private_key.private_bytes_raw()
        b64 = base64.b64encode(seed).decode("ascii")
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{b64}"

    def verifier_key(self) -> str:
        """The public verifier key string to hand to auditors."""
        pub = bytes([ALG_ED25519]) + _raw_public(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(pub).decode('ascii')}"

    def sign(self, text: str) -> str:
        """Return the signed note: ``text``, a blank line, and one signature line."""
        return sign_note([self], text)

    def signature_line(self, text: str) -> str:
        """This key's signature line for note text ``text`` (checked by the caller)."""
        sig = self._private_key.sign(text.encode("utf-8"))
        b64 = base64.b64encode(self.key_id + sig).decode("ascii")
        return f"{_SIG_PREFIX}{self.name} {b64}\n"


def sign_note(signers: Sequence[Signer], text: str) -> str:
    """``text``, a blank line, and a signature line of each signer, in order (during a key
    rotation a note carries the outgoing and the incoming key's)."""
    _check_text_chars(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if not signers:
        raise NoteError("a note needs at least one signer")
    return text + "\n" + "".join(signer.signature_line(text) for signer in signers)


# --- verification -----------------------------------------------------------


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and ``(name, key id, signature)`` triples.

    Enforces the syntax only; which signatures matter is the caller's choice.
    """
    _check_text_chars(note, "note")
    # The text ends at the last blank line; signature lines contain none.
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line separating text from signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not sig_block:
        raise NoteError("note has no signature lines")
    if not sig_block.endswith("\n"):
        raise NoteError("note must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signature lines")
    sigs: list[tuple[str, bytes, bytes]] = []
    seen: set[tuple[str, bytes]] = set()
    for n, line in enumerate(lines, 1):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"signature line {n} does not start with '— '")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not b64:
            raise NoteError(f"signature line {n} must be '— <name> <base64>'")
        try:
            _check_key_name(name)
        except NoteError as exc:
            raise NoteError(f"signature line {n}: {exc}") from exc
        raw = _b64decode_canonical(b64, f"signature line {n}")
        if len(raw) < _KEY_ID_SIZE + 1:
            raise NoteError(f"signature line {n}: signature too short")
        key_id, sig = raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:]
        # Two signatures claiming the same key make the note ambiguous.
        if (name, key_id) in seen:
            raise NoteError(f"duplicate signature for key {name}+{key_id.hex()}")
        seen.add((name, key_id))
        sigs.append((name, key_id, sig))
    return text, sigs


class Verifier:
    """Verifies notes signed by one Ed25519 key, given its verifier key string."""

    def __init__(self, verifier_key: str) -> None:
        if not isinstance(verifier_key, str):
            raise NoteError("verifier key must be a string")
        parts = verifier_key.split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise NoteError("verifier key must be <name>+<id>+<key>")
        name, hex_id, b64 = parts
        key_id, pub = _parse_key_parts(name, hex_id, b64, "verifier key")
        if _key_id(name, pub) != key_id:
            raise NoteError("verifier key: key id does not match name and key")
        self.name: str = name
        self.key_id: bytes = key_id
        try:
            self.public_key: Ed25519PublicKey = Ed25519PublicKey.from_public_bytes(pub)
        except ValueError as exc:
            raise NoteError("verifier key: invalid Ed25519 public key") from exc

    def __repr__(self) -> str:
        return f"Verifier(name={self.name!r}, key_id={self.key_id.hex()})"

    def verify(self, note: str) -> str:
        """Return the note text if this key signed it; raise :class:`NoteError` otherwise.

        Signatures by other keys (cosigners, rotated keys) are ignored as the
        spec requires, but a bad signature claiming to be ours rejects the
        whole note: it means tampering, not an unrelated party.
        """
        text, found = self.check(note)
        if not found:
            raise NoteError(f"note has no signature from key {self.name}+{self.key_id.hex()}")
        return text

    def check(self, note: str) -> tuple[str, bool]:
        """The note text, and whether this key signed it (False: no signature of this key;
        a signature claiming this key that does not verify raises :class:`NoteError`)."""
        text, sigs = _split_note(note)
        body = text.encode("utf-8")
        found = False
        for name, key_id, sig in sigs:
            if name != self.name or key_id != self.key_id:
                continue
            if len(sig) != _ED25519_SIG_SIZE:
                raise NoteError(f"invalid signature for key {name}+{key_id.hex()}")
            try:
                self.public_key.verify(sig, body)
            except InvalidSignature as exc:
                raise NoteError(f"invalid signature for key {name}+{key_id.hex()}") from exc
            found = True
        return text, found


def verify_by_any(verifiers: Sequence[Verifier], note: str) -> str:
    """The note text if at least one of ``verifiers`` signed it (a log's keys over its
    rotations); any of them claimed and invalid rejects it, as :meth:`Verifier.verify`."""
    text, signed = "", False
    for verifier in verifiers:
        text, found = verifier.check(note)
        signed = signed or found
    if not signed:
        names = ", ".join(f"{v.name}+{v.key_id.hex()}" for v in verifiers)
        raise NoteError(f"note has no signature from any of the keys {names}")
    return text


# --- checkpoint convenience -------------------------------------------------


def sign_checkpoint(signer: Signer | Sequence[Signer], checkpoint: Checkpoint) -> str:
    """Serialize and sign a checkpoint (by one key, or each of several), returning the note."""
    return sign_note([signer] if isinstance(signer, Signer) else signer, checkpoint.to_text())


def open_checkpoint(
    verifier: Verifier | Sequence[Verifier], note: str, expected_origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body.

    Pass ``expected_origin`` whenever the caller knows which log/tenant it is
    talking to: a validly signed checkpoint for another tenant must not be
    accepted in its place.
    """
    text = (
        verifier.verify(note) if isinstance(verifier, Verifier) else verify_by_any(verifier, note)
    )
    checkpoint = Checkpoint.from_text(text)
    if expected_origin is not None and checkpoint.origin != expected_origin:
        raise NoteError(
            f"checkpoint origin {checkpoint.origin!r} does not match expected {expected_origin!r}"
        )
    return checkpoint


# --- key file ---------------------------------------------------------------


def read_key_file(path: pathlib.Path, name: str) -> Signer:
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"key file {path} is not valid UTF-8") from exc
    signer = Signer.from_private_key_string(content.strip())
    if signer.name != name:
        raise NoteError(
            f"key file {path} holds a key named {signer.name!r}, but {name!r} was expected; "
            "refusing to sign under a different name"
        )
    return signer


def _fsync_dir(directory: pathlib.Path) -> None:
    # Makes the new directory entry durable; not possible on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_or_create_signer(path: pathlib.Path, name: str) -> Signer:
    """Load the signing key at ``path``, creating it (mode 0600) if missing.

    Creation is atomic and race-safe: the key is fully written and fsynced
    under a unique temporary name, then hard-linked into place. ``os.link``
    fails if the target exists, so when several processes start at once
    exactly one key wins and the others load it, instead of each signing
    with its own key. The parent directory must already exist.
    """
    path = pathlib.Path(path)
    _check_key_name(name)
    if path.exists():
        return read_key_file(path, name)

    signer = Signer.generate(name)
    if not write_key_file(path, signer):
        # Lost the race: the winner's file is complete (linked after fsync).
        return read_key_file(path, name)
    return signer


def write_key_file(path: pathlib.Path, signer: Signer) -> bool:
    """Write ``signer``'s private key to ``path`` (mode 0600) unless a file is there already;
    return whether this call wrote it.

    The key is fully written and fsynced under a unique temporary name, then hard-linked into
    place: ``os.link`` fails if the target exists, so a reader never sees half a key and two
    writers never replace each other's.
    """
    data = (signer.private_key_string() + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have narrowed it; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True
