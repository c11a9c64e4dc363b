"""What a pipeline reports: its counters, and dropped events logged without flooding."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Final

logger = logging.getLogger("immutablelog.sdk")

#: At most one "events dropped" log line per this many seconds (each drop is still counted).
DROP_LOG_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """A snapshot of a pipeline's counters (this process only; they restart after a fork).

    ``queued``: events accepted into the in-memory queue. ``sent``: acknowledged by the server
    (``duplicates`` of them were already stored). ``retried``: delivery attempts that failed
    transiently and will be retried. ``spooled``: events moved to the backlog during an outage.
    ``dead_lettered``: permanently rejected, written to the dead-letter file. ``dropped``: lost
    because the queue or the spool was full, or the pipeline was closed (each one logged).
    ``adopted``: events taken over from spool files of dead processes. ``pending`` and
    ``backlog``: currently waiting in memory and in the backlog; ``backlog_bytes``: their
    encoded size (a spool refuses more than ``spool_max_bytes``).

    Apps and clients with the same destination share one pipeline, and so its counters.
    """

    queued: int
    sent: int
    duplicates: int
    retried: int
    spooled: int
    dead_lettered: int
    dropped: int
    adopted: int
    pending: int
    backlog: int
    backlog_bytes: int

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for metrics exporters and JSON)."""
        return asdict(self)


class DropReporter:
    """Counts dropped events and logs them without flooding: first at once, then summaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self._unreported = 0
        self._last_log = 0.0

    def drop(self, count: int, why: str) -> None:
        if count <= 0:
            return
        with self._lock:
            self.total += count
            self._unreported += count
            now = time.monotonic()
            if self._last_log and now - self._last_log < DROP_LOG_INTERVAL:
                return
            unreported, self._unreported, self._last_log = self._unreported, 0, now
        logger.error(
            "ImmutableLog: dropped %d audit event(s): %s (%d dropped in total by this process)",
            unreported,
            why,
            self.total,
        )


class Counters:
    """A pipeline's running totals (changed by the worker under the pipeline's lock)."""

    __slots__ = (
        "adopted",
        "completed_own",
        "dead",
        "duplicates",
        "retried",
        "sent",
        "spooled",
        "taken",
    )

    def __init__(self) -> None:
        self.taken = 0  # captures taken off the queue (built)
        self.sent = 0
        self.duplicates = 0
        self.retried = 0
        self.spooled = 0
        self.dead = 0
        self.adopted = 0
        # This process's own events that reached a final state; flush() waits on it.
        self.completed_own = 0

    def snapshot(
        self, *, waiting: int, pending: int, backlog: int, backlog_bytes: int, dropped: int
    ) -> DeliveryStats:
        return DeliveryStats(
            queued=self.taken + waiting,
            sent=self.sent,
            duplicates=self.duplicates,
            retried=self.retried,
            spooled=self.spooled,
            dead_lettered=self.dead,
            dropped=dropped,
            adopted=self.adopted,
            pending=pending,
            backlog=backlog,
            backlog_bytes=backlog_bytes,
        )
