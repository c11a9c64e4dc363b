"""What the fast RFC 9562 UUID formatters share: the SDK's UUID4 event ids
(``sdk.events``) and the ledger's UUIDv7 entry ids (``entry``) are built from random hex
text, with the variant bits set on one of its digits."""

from __future__ import annotations

from typing import Final

#: A random hex digit with its two high bits set to the RFC 9562 variant ``10``.
VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
