"""When one destination tries again after a transient delivery failure (the project's one
retry policy, :mod:`immutablelog.retry_policy`, kept per destination)."""

from __future__ import annotations

from immutablelog.retry_policy import backoff


class RetrySchedule:
    """The retry clock of one destination (monotonic seconds).

    Each failure doubles the delay from ``initial`` up to ``maximum`` (with jitter, see
    :func:`~immutablelog.retry_policy.backoff`). A success resets it; a flush brings the next
    attempt forward but still honours the server's ``Retry-After``.
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
        delay = backoff(self._attempt, self._initial, self._maximum)
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
