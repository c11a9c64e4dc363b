"""API keys: how they look, how they are stored, how a presented key is checked.

A key is ``iml_live_`` followed by 256 random bits. Because it has that much entropy, a
single SHA-256 is the right storage hash (as for GitHub or Stripe tokens): nothing to
brute-force, and lookups stay one indexed read. Only the hash and a short display prefix
are stored; the key itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

from immutablelog.ledger.storage import SCOPES

KEY_PREFIX: Final = "iml_live_"
_KEY_SHAPE = re.compile(r"iml_live_[A-Za-z0-9_-]{43}\Z")
_DISPLAY_CHARS: Final = 12


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def display_prefix(key: str) -> str:
    """The public handle of a key (shown in listings, used to revoke it)."""
    return key[: len(KEY_PREFIX) + _DISPLAY_CHARS]


def well_formed(key: str) -> bool:
    return _KEY_SHAPE.match(key) is not None


def same_hash(stored: bytes, presented: bytes) -> bool:
    return hmac.compare_digest(stored, presented)


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise ValueError(
            f"scopes must be a comma-separated subset of {', '.join(sorted(SCOPES))}"
            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    return scopes
