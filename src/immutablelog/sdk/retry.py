"""When to try again after a transient delivery failure: exponential backoff with jitter, never
sooner than the server's ``Retry-After``."""

from __future__ import annotations

import random


class RetrySchedule:
    """The retry clock of one destination (monotonic seconds).

    Each failure doubles the delay from ``initial`` up to ``maximum``, drawn with "equal
    jitter" — at least half the exponential delay, so backoff really grows, plus a random half,
    so a fleet of processes does not retry in lockstep. A success resets it; a flush brings the
    next attempt forward but still honours the server's ``Retry-After``.
    """

    __slots__ = ("_attempt", "_initial", "_maximum", "next_attempt_at", "not_before")

    def __init__(self, initial: float, maximum: float) -> None:
        self._initial = initial
        self._maximum = maximum
        self._attempt = 0
        #: No attempt before this time (the backoff, or the server's Retry-After if later).
        self.next_attempt_at = 0.0
        #: The server's Retry-After floor, which even a flush does not bring forward.
        self.not_before = 0.0

    def failed(self, now: float, retry_after: float | None) -> float:
        """Record a failure at ``now``; returns the time of the next attempt."""
        delay = min(self._maximum, self._initial * 2**self._attempt)
        delay = delay / 2 + random.uniform(0, delay / 2)
        self._attempt = min(self._attempt + 1, 32)
        self.not_before = now + retry_after if retry_after else 0.0
        self.next_attempt_at = max(now + delay, self.not_before)
        return self.next_attempt_at

    def succeeded(self) -> None:
        self._attempt = 0
        self.not_before = 0.0

    def hurry(self) -> None:
        """Restart the backoff and attempt as soon as the server allows (a flush is waiting)."""
        self._attempt = 0
        self.next_attempt_at = self.not_before
