"""The dead-letter file: events the server refused for good.

A permanent rejection (a per-event ``ok: false``, or a 4xx for the whole request that resending
cannot fix) must neither be retried forever nor vanish. Each such event is appended to a JSON
Lines file with the server's reason, so it can be inspected, fixed and replayed (every line
holds the exact batch item, idempotency key included, so a replay cannot create a duplicate).

The first dead-letter of a process is logged at ERROR with the file's path; later ones only at
DEBUG (they are counted in the pipeline's ``dead_lettered`` counter), so a misconfigured API key
does not flood the application's logs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from immutablelog.sdk.events import WireEvent

logger = logging.getLogger("immutablelog.sdk")


class DeadLetterFile:
    """Appends rejected events to ``path`` (created with mode 0600; the events are audit data)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._logged = False

    def write(
        self,
        events: Sequence[WireEvent],
        *,
        reason: str | None,
        message: str | None,
        status: int | None = None,
    ) -> None:
        """Append ``events`` with why they were rejected; durable (fsync) before returning."""
        if not events:
            return
        now = datetime.now(UTC).isoformat()
        lines = "".join(
            json.dumps(
                {
                    "dead_lettered_at": now,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "event": event.item(),
                },
                ensure_ascii=False,
            )
            + "\n"
            for event in events
        )
        with self._lock:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                # O_APPEND: concurrent writers (other processes) never overwrite each other.
                data = lines.encode("utf-8")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            first = not self._logged
            self._logged = True
        log = logger.error if first else logger.debug
        log(
            "ImmutableLog: the server permanently rejected %d event(s) (%s: %s); written to the "
            "dead-letter file %s%s",
            len(events),
            reason or status,
            message,
            self.path,
            " (further rejections are counted, not logged)" if first else "",
        )
