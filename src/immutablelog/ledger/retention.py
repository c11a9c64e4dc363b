"""The retention sweep, on a thread of its own: erases what tenants keep past their policy.

On start it first finishes erasures a crash left pending (values an erasure record covers
but still stored), then sweeps every ``interval`` seconds. A sweep writes one erasure per
tenant with something to erase (reason ``retention: …``); the tree, the clear fields and
every proof stay.

Every process of a deployment (``serve --workers N``, several hosts on one PostgreSQL
database) runs a sweeper, but a round runs only in the process that holds the deployment's
retention lease; the others skip it. Two processes sweeping at once would both find the same
values and log the same erasure twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from immutablelog.ledger.erasing import Eraser
from immutablelog.ledger.health import RepeatedFailure
from immutablelog.ledger.key_history import Job, Lease
from immutablelog.ledger.storage import Tenant

logger = logging.getLogger(__name__)


class RetentionSweeper:
    """Start once, stop once."""

    def __init__(
        self,
        eraser: Eraser,
        tenants: Callable[[], Sequence[Tenant]],
        interval: float,
        lease: Callable[[Job], AbstractContextManager[Lease | None]],
    ) -> None:
        self._eraser = eraser
        self._tenants = tenants
        self._interval = interval
        self._lease = lease
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = RepeatedFailure(logger, "retention sweeps")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="immutablelog-retention", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        pending_done = False
        while not self._stopping.is_set():
            try:
                with self._lease(Job.RETENTION) as lease:
                    if lease is not None:
                        tenants = self._tenants()
                        if not pending_done:
                            self._eraser.apply_pending(tenants)
                            pending_done = True
                        self._eraser.sweep_retention(tenants)
            except Exception as exc:  # the thread must outlive any failure
                self._failures.raised(exc)
            else:
                self._failures.succeeded()
            self._stopping.wait(self._interval)
