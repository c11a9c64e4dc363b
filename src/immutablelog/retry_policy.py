"""When a client of the API tries again: one policy for the SDK's delivery and the verifier.

Which answers are transient (any 5xx, 408, 425, 429, besides no answer at all), how long to
wait (exponential backoff with "equal jitter": at least half the exponential delay, so backoff
really grows, plus a random half, so a fleet of clients does not retry in lockstep), and what
a server's ``Retry-After`` means (delta-seconds or an HTTP date, never sooner, capped so that
a misconfigured server cannot park a client for days).
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Final

#: Client errors that say "not now" rather than "never".
TRANSIENT_CLIENT_ERRORS: Final = frozenset({408, 425, 429})
MAX_RETRY_AFTER_SECONDS: Final = 300.0


def is_transient(status: int) -> bool:
    """Whether an answer with this status may succeed if sent again unchanged."""
    return status >= 500 or status in TRANSIENT_CLIENT_ERRORS


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first)."""
    delay: float = min(maximum, initial * 2.0 ** min(attempt, 32))
    return delay / 2 + random.uniform(0, delay / 2)


def parse_retry_after(
    value: str | None, now: float | None = None, cap: float = MAX_RETRY_AFTER_SECONDS
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), within
    ``[0, cap]``; None when there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)
