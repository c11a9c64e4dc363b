"""What is wrong with the storage now, told once per change of state instead of per request.

A database that is down or a disk that is full fails every operation until someone fixes it.
Logging each failure (thousands a minute under load, on the very disk that is full) says
nothing new after the first; :class:`RepeatedFailure` logs the change and counts the rest.

:class:`StorageHealth` is the backend's view of its own faults. While the database is known
to be unreachable it fails operations at once (:meth:`StorageHealth.check`) instead of letting
each wait out a connection timeout, and a background thread probes until it answers again:
a circuit breaker, so an outage costs clients a fast 503 rather than ten seconds each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from immutablelog.ledger.storage import StorageError, StorageFull, StorageUnavailable

logger = logging.getLogger(__name__)

#: Seconds between probes of a database that is down.
PROBE_INTERVAL = 1.0


class Fault(StrEnum):
    """A fault of the whole store (not of one request)."""

    UNAVAILABLE = "unavailable"  # the database cannot be reached
    STORAGE_FULL = "storage_full"  # the disk (or quota) is full: writes fail, reads work


class RepeatedFailure:
    """One log line when a job starts failing (or fails differently), one when it recovers,
    with how many times it failed in between; nothing for the repeats."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0
        self._since = 0.0

    def failed(self, kind: str, detail: str, *, trace: BaseException | None = None) -> None:
        """Record a failure of ``kind``; logged (with the traceback of ``trace``, if given)
        only when the kind differs from the last one."""
        with self._lock:
            if kind == self._kind:
                self._count += 1
                return
            previous, count = self._kind, self._count
            self._kind, self._count, self._since = kind, 1, time.monotonic()
        after = f" (after {count} failures of kind {previous})" if previous else ""
        self._log.error(
            "%s failing: %s%s; repeats are counted, not logged",
            self._what,
            detail,
            after,
            exc_info=trace or False,
        )

    def raised(self, exc: Exception) -> None:
        """Record a failed attempt of a job that is retried. A store-wide fault is logged by
        the store's :class:`StorageHealth` instead; other storage errors are expected in
        operation; anything else is a bug, logged with its traceback."""
        if isinstance(exc, StorageFull | StorageUnavailable):
            return
        self.failed(
            type(exc).__name__, str(exc), trace=None if isinstance(exc, StorageError) else exc
        )

    def succeeded(self) -> None:
        if self._kind is None:  # the common case, without the lock
            return
        with self._lock:
            kind, count, since = self._kind, self._count, self._since
            self._kind, self._count = None, 0
        if kind is not None:
            self._log.warning(
                "%s recovered after %d failures (%s) over %.1f s",
                self._what,
                count,
                kind,
                time.monotonic() - since,
            )


@dataclass(slots=True)
class _Active:
    detail: str
    since: float
    failures: int = 1


class StorageHealth:
    """The store's current faults. Thread-safe.

    With a ``probe`` (a callable that raises unless the database answers), an
    :attr:`Fault.UNAVAILABLE` fault opens the breaker: :meth:`check` then refuses at once,
    and a thread calls ``on_down`` (to drop the connections the outage ended, rather than
    let a pool retry them) and then ``probe`` every :data:`PROBE_INTERVAL` seconds until it
    succeeds, and closes the breaker.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], None] | None = None,
        on_down: Callable[[], None] | None = None,
        *,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._name = name
        self._probe = probe
        self._on_down = on_down
        self._probe_interval = probe_interval
        self._lock = threading.Lock()
        self._active: dict[Fault, _Active] = {}
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()

    def faults(self) -> dict[Fault, str]:
        """The current faults and what the last failure said."""
        with self._lock:
            return {fault: state.detail for fault, state in self._active.items()}

    def active(self, fault: Fault) -> bool:
        """Whether ``fault`` is current (a lock-free read: the answer may be a moment old)."""
        return fault in self._active

    def failed(self, fault: Fault, detail: str) -> None:
        with self._lock:
            state = self._active.get(fault)
            if state is not None:
                state.failures += 1
                state.detail = detail
                return
            self._active[fault] = _Active(detail, time.monotonic())
            start_prober = (
                fault is Fault.UNAVAILABLE and self._probe is not None and self._prober is None
            )
            if start_prober:
                self._prober = threading.Thread(
                    target=self._probe_until_up, name="immutablelog-probe", daemon=True
                )
        logger.error(
            "storage fault %s: %s; %s",
            fault.value,
            detail,
            "operations fail at once while the database is probed every "
            f"{self._probe_interval:g} s; repeats are counted, not logged"
            if start_prober
            else "repeats are counted, not logged",
        )
        if start_prober:
            assert self._prober is not None
            self._prober.start()

    def cleared(self, *faults: Fault) -> None:
        """An operation succeeded that ``faults`` would have failed."""
        if not self._active:  # the common case, without the lock
            return
        with self._lock:
            ended = {f: self._active.pop(f) for f in faults if f in self._active}
        for fault, state in ended.items():
            logger.warning(
                "storage fault %s of %s resolved after %d failed operations over %.1f s",
                fault.value,
                self._name,
                state.failures,
                time.monotonic() - state.since,
            )

    def check(self) -> None:
        """Refuse at once while the database is known to be down (and being probed)."""
        if Fault.UNAVAILABLE not in self._active or self._probe is None:
            return
        with self._lock:
            state = self._active.get(Fault.UNAVAILABLE)
            if state is None:
                return
            state.failures += 1
            detail = state.detail
        raise StorageUnavailable(detail)

    def close(self) -> None:
        """Stop probing (the store is being closed)."""
        self._closed.set()

    def _probe_until_up(self) -> None:
        assert self._probe is not None
        if self._on_down is not None:
            try:
                self._on_down()
            except Exception:
                logger.exception("%s: dropping connections after an outage failed", self._name)
        while not self._closed.wait(self._probe_interval):
            try:
                self._probe()
            except Exception as exc:
                with self._lock:
                    state = self._active.get(Fault.UNAVAILABLE)
                    if state is not None:
                        state.detail = f"{self._name} is unavailable: {exc}"
                continue
            break
        with self._lock:
            self._prober = None
        if not self._closed.is_set():
            self.cleared(Fault.UNAVAILABLE)
