"""The delivery pipeline: capture → bounded queue → one worker thread → server, never blocking.

Path of an event (docs/SDK.md, "Delivery")::

    request thread            worker thread (one per process, started on first use)
    ──────────────            ─────────────────────────────────────────────────────────────
    submit(capture) ──deque──▶ build (JSON, redaction, clamp) ─▶ batch ─▶ transport
                                                                  │ retryable failure
                                                                  ▼
                                 backlog: durable SQLite spool ─▶ replay in order, backoff
                                                                  │ permanent rejection
                                                                  ▼
                                                          dead-letter JSONL file

* The request thread only appends a tuple to a ``collections.deque`` (atomic under the GIL); it
  wakes the worker only when the worker sleeps with nothing queued, and for a full batch. If the
  queue is full the capture is dropped — counted and logged, never waited for: an audit logger
  must not take the application down with it.
* The worker lets captures gather for ``batch_interval`` (unless a full batch is waiting, or
  someone flushes or closes) and then builds and sends them in one go. Every time the worker
  takes the GIL back from a busy request thread, one request waits for it (up to the 5 ms
  switch interval); a few wake-ups per second, rather than one per handful of events, keep
  those waits on well under 1 % of requests and the per-batch HTTP cost negligible.
* Delivery is at-least-once: an event leaves the pipeline only when the server acknowledged it
  (or permanently rejected it, into the dead-letter file). Every event carries its own UUIDv7 as
  idempotency key, so the server stores each one exactly once however often it is resent.
* On a retryable failure (connection error, timeout, 5xx, 429) the batch and everything queued
  behind it move to the backlog, and from then on new events are appended behind them, so replay
  preserves capture order. Retries back off exponentially with jitter and honour ``Retry-After``.
* ``flush(timeout)`` waits until everything queued before the call reached a final state.
  ``close()`` (also run at interpreter exit) flushes with a bounded timeout and then persists
  whatever is still in memory — including a batch stuck in a hanging request — to the spool, to
  be replayed by the next process. A duplicate caused by that is absorbed by idempotency.
* ``fork()`` (gunicorn ``--preload``, multiprocessing): the child starts with an empty queue, no
  worker thread (one is started on its first event), fresh locks and its own spool file. Nothing
  the parent's threads might have been holding at the time of the fork is ever used in the child.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from immutablelog.sdk.deadletter import DeadLetterFile
from immutablelog.sdk.events import UUIDS, WireEvent
from immutablelog.sdk.spool import Backlog, MemoryBacklog, SqliteSpool
from immutablelog.sdk.transport import (
    RejectedBatchError,
    RetryableDeliveryError,
    Transport,
)

logger = logging.getLogger("immutablelog.sdk")

#: Name prefix of the worker threads.
WORKER_THREAD_PREFIX: Final = "immutablelog-delivery"

#: How long an idle worker sleeps before looking for spool files left by crashed siblings.
ORPHAN_SCAN_INTERVAL: Final = 30.0

#: At most one "events dropped" log line per this many seconds (each drop is still counted).
DROP_LOG_INTERVAL: Final = 60.0


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Tunables of the delivery pipeline. The defaults suit a typical web app.

    ``spool_dir=None`` picks a per-user state directory (see :func:`default_spool_dir`);
    ``spool_dir=False`` disables the disk spool (events then survive an outage only in memory,
    up to ``max_queue`` of them). ``dead_letter_path=None`` puts the dead-letter file next to the
    spool files. ``batch_interval``: how long the worker lets events gather into a batch (see
    the module docstring).
    """

    max_queue: int = 10_000
    max_batch_events: int = 500
    max_batch_bytes: int = 1_048_576
    batch_interval: float = 0.2
    spool_dir: str | Literal[False] | None = None
    spool_max_bytes: int = 64 * 1_048_576
    spool_synchronous: str = "FULL"
    dead_letter_path: str | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    shutdown_timeout: float = 5.0
    connect_timeout: float = 3.0
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.max_batch_events < 1 or self.max_batch_bytes < 1:
            raise ValueError("queue and batch bounds must be positive")
        if self.batch_interval < 0:
            raise ValueError("batch_interval must be >= 0")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """A snapshot of the pipeline's counters (this process only; they restart after a fork).

    ``queued``: events accepted into the in-memory queue. ``sent``: acknowledged by the server
    (``duplicates`` of them were already stored). ``retried``: delivery attempts that failed
    transiently and will be retried. ``spooled``: events moved to the backlog during an outage.
    ``dead_lettered``: permanently rejected, written to the dead-letter file. ``dropped``: lost
    because the queue or the spool was full, or the pipeline was closed (each one logged).
    ``adopted``: events taken over from spool files of dead processes. ``pending`` and
    ``backlog``: currently waiting in memory and in the backlog.
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

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for metrics exporters and JSON)."""
        return asdict(self)


def default_spool_dir(service_name: str, url: str, api_key: str) -> str:
    """Where spool files go unless configured: a per-user state dir, one subdir per destination.

    The subdirectory is keyed by the service and a hash of URL and API key, so a process never
    adopts — and sends with its own credentials — events another service spooled for another
    server or tenant.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    digest = hashlib.sha256(f"{url}\n{api_key}".encode()).hexdigest()[:12]
    safe_service = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name)[:64]
    return os.path.join(base, "immutablelog", "spool", f"{safe_service or 'service'}-{digest}")


class _DropReporter:
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


class DeliveryPipeline:
    """Queue, worker thread, backlog and dead-letter file for one destination (see module doc).

    ``build`` turns whatever the integration submits (a capture) into a
    :class:`~immutablelog.sdk.events.WireEvent`; it runs in the worker thread and must not raise.
    ``transport=None`` means there is no destination (no URL and no embedded mode): submitted
    events are dropped, counted and logged once.
    """

    def __init__(
        self,
        build: Callable[[Any], WireEvent],
        transport: Transport | None,
        options: DeliveryOptions | None = None,
        *,
        spool_dir: str | None = None,
    ) -> None:
        self.options = options or DeliveryOptions()
        self._build = build
        self.transport = transport
        self._max_queue = self.options.max_queue
        self._max_batch = self.options.max_batch_events
        self.backlog: Backlog = self._make_backlog(spool_dir)
        directory = spool_dir if isinstance(self.backlog, SqliteSpool) else None
        dead_path = self.options.dead_letter_path or (
            os.path.join(directory, "dead-letter.jsonl")
            if directory
            else os.path.join(os.getcwd(), "immutablelog-dead-letter.jsonl")
        )
        self.dead_letters = DeadLetterFile(dead_path)
        self._init_runtime_state()
        _LIVE_PIPELINES.add(self)
        # Replay events left by a previous run even if this process never records anything.
        if isinstance(self.backlog, SqliteSpool) and transport is not None:
            try:
                if self.backlog.has_orphans():
                    self._ensure_worker()
            except OSError:
                logger.exception("ImmutableLog: could not scan the spool directory")

    def _make_backlog(self, spool_dir: str | None) -> Backlog:
        if spool_dir:
            try:
                os.makedirs(spool_dir, mode=0o700, exist_ok=True)
                if os.access(spool_dir, os.W_OK | os.X_OK):
                    return SqliteSpool(
                        spool_dir,
                        max_bytes=self.options.spool_max_bytes,
                        synchronous=self.options.spool_synchronous,
                    )
            except OSError as exc:
                logger.error(
                    "ImmutableLog: spool directory %s is unusable (%s); events will wait in "
                    "memory only during an outage",
                    spool_dir,
                    exc,
                )
            else:
                logger.error(
                    "ImmutableLog: spool directory %s is not writable; events will wait in "
                    "memory only during an outage",
                    spool_dir,
                )
        return MemoryBacklog(self.options.max_queue)

    def _init_runtime_state(self) -> None:
        """Everything that must be fresh in a new process (also used after ``fork()``)."""
        self._pid = os.getpid()
        self._captures: collections.deque[Any] = collections.deque()
        self._wakeup = threading.Event()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        # Held while events move between places (queue → memory → backlog), so that close() can
        # rescue a stuck worker's events without racing it: each event is placed exactly once.
        self._moving = threading.RLock()
        self._worker: threading.Thread | None = None
        self._ready: collections.deque[WireEvent] = collections.deque()
        self._inflight: list[WireEvent] = []
        self._abandoned = False
        self._closed = False
        self._stop = False
        # Batch gathering: since when captures have been waiting, and how many callers are in
        # flush()/close() (the worker does not let them wait for a batch to fill).
        self._gathering_since: float | None = None
        self._hurry = 0
        # True while the worker sleeps with nothing queued: only then does a capture wake it.
        self._sleeping = False
        # Retry schedule: exponential part (reset by flush) and the server's Retry-After floor.
        self._attempt = 0
        self._next_attempt_at = 0.0
        self._retry_not_before = 0.0
        self._in_outage = False
        self._startup_done = False
        self._adopted_pending = 0
        self._last_orphan_scan = time.monotonic()
        # Counters. _taken and the worker-side ones change only under _lock.
        self._taken = 0
        self._sent = 0
        self._duplicates = 0
        self._retried = 0
        self._spooled = 0
        self._dead = 0
        self._adopted = 0
        self._completed_own = 0
        self._drops = _DropReporter()

    # -- producer side (any thread) ----------------------------------------------------------

    def submit(self, capture: Any) -> bool:
        """Queue ``capture`` for delivery without blocking; False if it had to be dropped."""
        captures = self._captures
        if self._closed or len(captures) >= self._max_queue:
            self._drops.drop(1, "the pipeline is closed" if self._closed else "the queue is full")
            return False
        captures.append(capture)
        if self._worker is None:
            self._ensure_worker()
        # Every wake-up makes a busy request thread hand the GIL over; Event.set() costs ~1 µs.
        # While the worker sleeps every capture sets it (not only the first: with two threads
        # appending at once neither may see a length of 1), until the worker is awake.
        if self._sleeping or len(captures) == self._max_batch:
            self._wakeup.set()
        return True

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is not None:
                return
            worker = threading.Thread(
                target=self._run, name=f"{WORKER_THREAD_PREFIX}-{os.getpid()}", daemon=True
            )
            self._worker = worker
        worker.start()

    def stats(self) -> DeliveryStats:
        """Current counters (consistent with each other at the moment of the call)."""
        with self._lock:
            return DeliveryStats(
                queued=self._taken + len(self._captures),
                sent=self._sent,
                duplicates=self._duplicates,
                retried=self._retried,
                spooled=self._spooled,
                dead_lettered=self._dead,
                dropped=self._drops.total,
                adopted=self._adopted,
                pending=len(self._captures) + len(self._ready) + len(self._inflight),
                backlog=self.backlog.count(),
            )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every event queued before this call is delivered, dead-lettered or dropped.

        A pending retry is brought forward (the exponential backoff restarts; a server's
        ``Retry-After`` is still honoured). Returns False on timeout — events are then still
        queued or spooled, not lost.
        """
        return self._wait_until_done(timeout, accept_durable=False)

    def _wait_until_done(self, timeout: float | None, *, accept_durable: bool) -> bool:
        if self._pid != os.getpid():
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._taken + len(self._captures)
            if self._all_done(target):
                return True
            if not accept_durable:
                self._attempt = 0
                self._next_attempt_at = self._retry_not_before
            self._hurry += 1
        try:
            return self._wait_for(target, deadline, accept_durable=accept_durable)
        finally:
            with self._lock:
                self._hurry -= 1

    def _wait_for(self, target: int, deadline: float | None, *, accept_durable: bool) -> bool:
        if self._worker is None and self.transport is not None:
            self._ensure_worker()
        self._wakeup.set()

        def finished() -> bool:
            if self._all_done(target):
                return True
            if accept_durable and self.backlog.durable and self._in_outage:
                # Exiting during an outage: what is left is on disk; do not wait for the server.
                return not (self._captures or self._ready or self._inflight)
            return self._worker is None or not self._worker.is_alive()

        with self._progress:
            while not finished():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(remaining if remaining is not None else 1.0)
            return self._all_done(target)

    def _all_done(self, target: int) -> bool:
        # Own events are settled in FIFO order, so reaching the count means every event queued
        # before the flush is settled. Adopted events (from dead processes) count too: a fresh
        # process's flush() waits for the previous run's spool to be replayed.
        startup_done = self._startup_done or self._worker is None
        return startup_done and self._completed_own >= target and self._adopted_pending == 0

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded), stop the worker and persist what is left; idempotent.

        Returns True when everything queued was delivered (or reached another final state).
        Events still undelivered after ``timeout`` are left in the durable spool for the next
        process; without a spool they are counted as dropped and logged.
        """
        if self._closed or self._pid != os.getpid():
            return True
        timeout = self.options.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delivered = self._wait_until_done(timeout, accept_durable=True)
        self._closed = True
        self._stop = True
        self._wakeup.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                self._rescue_leftovers()
        left = self.backlog.count()
        try:
            self.backlog.close()
        except Exception:
            logger.exception("ImmutableLog: could not close the spool")
        if (worker is None or not worker.is_alive()) and self.transport is not None:
            self.transport.close()
        if left and self.backlog.durable:
            logger.warning(
                "ImmutableLog: %d undelivered event(s) stay in the spool (%s) and will be sent "
                "by the next process that starts with the same configuration",
                left,
                getattr(self.backlog, "directory", "?"),
            )
        elif left:
            self._drops.drop(left, "the process exited during an outage and no spool is usable")
        _LIVE_PIPELINES.discard(self)
        return delivered and left == 0

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        if self.transport is not None:
            self._adopt_orphans()
        with self._progress:
            self._startup_done = True
            self._progress.notify_all()
        while True:
            try:
                if not self._step():
                    break
            except Exception:
                # The worker must outlive any bug: log it, pause, carry on with the next step.
                logger.exception("ImmutableLog: unexpected error in the delivery worker")
                self._wakeup.wait(1.0)
        self._finish()

    def _step(self) -> bool:
        """One round of work; False once the worker should exit."""
        self._wakeup.clear()
        if self._abandoned:
            return False
        if self.transport is None:
            self._discard_without_transport()
            if self._stop:
                return False
            self._sleep(None)
            return True
        if self._gather():
            return True
        self._build_captures()
        if self._stop:
            return False
        UUIDS.top_up(UUIDS.HIGH_WATER)  # in this run, which holds the GIL anyway: no extra wake-up
        if self.backlog.count():
            now = time.monotonic()
            if now < self._next_attempt_at:
                self._sleep(self._next_attempt_at - now)
                return True
            self._send_from_backlog()
            return True
        if self._ready:
            self._send_ready()
            return True
        with self._progress:
            self._progress.notify_all()
        if not self._captures:
            # Idle: fill the id pool in small steps, stopping as soon as work arrives.
            while UUIDS.needs_top_up() and not self._captures:
                UUIDS.top_up()
            if not self._sleep(ORPHAN_SCAN_INTERVAL):
                UUIDS.forget()  # made before a long idle spell, ids would carry a stale time
                self._maybe_adopt_orphans()
        return True

    def _sleep(self, timeout: float | None) -> bool:
        """Wait until woken (True) or ``timeout``, unless captures are already waiting."""
        self._sleeping = True
        try:
            # Checked after raising the flag: a capture queued before it did not wake us.
            return bool(self._captures) or self._wakeup.wait(timeout)
        finally:
            self._sleeping = False

    def _gather(self) -> bool:
        """Wait while a batch fills up; True if it waited (the caller then starts over)."""
        waiting = len(self._captures)
        if not waiting:
            self._gathering_since = None
            return False
        now = time.monotonic()
        if self._gathering_since is None:
            self._gathering_since = now
        if waiting >= self._max_batch or self._ready or self._hurry or self._stop:
            return False
        remaining = self._gathering_since + self.options.batch_interval - now
        if remaining <= 0:
            return False
        self._wakeup.wait(remaining)
        return True

    def _build_captures(self) -> None:
        """Turn queued captures into wire events (JSON, redaction: all off the request path)."""
        captures = self._captures
        count = min(len(captures), self.options.max_batch_events)
        if not count:
            return
        # Captures stay in the queue until their events are placed, so that every event is
        # always somewhere the counters see (queued = taken + waiting, never in limbo).
        built = [self._build(captures[i]) for i in range(count)]
        self._gathering_since = None  # whatever is still queued starts a new batch

        def consume() -> None:
            for _ in range(count):
                captures.popleft()
            self._taken += count

        with self._moving:
            if self._abandoned:
                return
            if self.backlog.count() > 0:  # in an outage: keep capture order behind the backlog
                self._to_backlog(built, consume)
                return
            with self._lock:
                consume()
                self._ready.extend(built)

    def _take_ready_batch(self) -> list[WireEvent]:
        batch: list[WireEvent] = []
        size = 0
        with self._moving, self._lock:
            ready = self._ready
            while ready and len(batch) < self.options.max_batch_events:
                item_size = len(ready[0].encoded) + 1
                if batch and size + item_size > self.options.max_batch_bytes:
                    break
                size += item_size
                batch.append(ready.popleft())
            self._inflight = batch
        return batch

    def _send_ready(self) -> None:
        batch = self._take_ready_batch()
        try:
            self._deliver(batch, [True] * len(batch))
        except _Interrupted as interrupted:
            with self._lock:
                if self._abandoned:
                    return
                rest = list(self._ready)

            def consume() -> None:
                self._inflight = []
                for _ in rest:
                    self._ready.popleft()

            self._note_retryable(interrupted.cause)
            self._to_backlog(batch[interrupted.settled :] + rest, consume)
        else:
            with self._lock:
                self._inflight = []

    def _send_from_backlog(self) -> None:
        entries = self.backlog.peek(self.options.max_batch_events, self.options.max_batch_bytes)
        if not entries:
            return
        try:
            self._deliver(
                [e.event for e in entries], [e.own for e in entries], [e.seq for e in entries]
            )
        except _Interrupted as interrupted:
            self._note_retryable(interrupted.cause)
            return
        if self.backlog.count() == 0 and self._in_outage:
            self._in_outage = False
            logger.warning("ImmutableLog: the server is reachable again; spooled events replayed")

    def _deliver(
        self, events: list[WireEvent], own: list[bool], seqs: list[int] | None = None
    ) -> None:
        """Send ``events`` and settle each one as sent or dead-lettered.

        ``seqs`` are the events' backlog positions when they are sent from the backlog: settled
        events are removed from it before anyone waiting in :meth:`flush` is told.

        Raises :class:`_Interrupted` on a transient failure, saying how many leading events were
        settled before it (only non-zero after a split). A whole-request 413 splits the batch in
        halves; a single event that is still too large, and any other permanent whole-request
        rejection, is dead-lettered. An unexpected exception from a transport is treated as
        transient: the events are kept and retried, never lost to a bug.
        """
        assert self.transport is not None
        try:
            results = self.transport.send_batch(events)
        except RetryableDeliveryError as exc:
            raise _Interrupted(0, exc) from exc
        except RejectedBatchError as exc:
            if exc.splittable and len(events) > 1:
                half = len(events) // 2
                self._deliver(events[:half], own[:half], seqs[:half] if seqs else None)
                try:
                    self._deliver(events[half:], own[half:], seqs[half:] if seqs else None)
                except _Interrupted as inner:
                    raise _Interrupted(half + inner.settled, inner.cause) from inner
                return
            self.dead_letters.write(events, reason=exc.reason, message=str(exc), status=exc.status)
            if seqs:
                self.backlog.remove(seqs)
            self._settle(dead=len(events), own=own)
            return
        except Exception as exc:
            logger.exception("ImmutableLog: the transport failed unexpectedly; will retry")
            raise _Interrupted(0, RetryableDeliveryError(repr(exc))) from exc
        if len(results) != len(events):
            raise _Interrupted(0, RetryableDeliveryError("transport returned a wrong result count"))
        rejected: dict[tuple[str | None, str | None], list[WireEvent]] = {}
        sent = duplicates = 0
        for event, result in zip(events, results, strict=True):
            if result.accepted:
                sent += 1
                duplicates += result.duplicate
            else:
                rejected.setdefault((result.reason, result.message), []).append(event)
        for (reason, message), group in rejected.items():
            self.dead_letters.write(group, reason=reason, message=message, status=200)
        if seqs:
            self.backlog.remove(seqs)
        self._settle(sent=sent, duplicates=duplicates, dead=len(events) - sent, own=own)
        with self._lock:
            self._attempt = 0
            self._retry_not_before = 0.0

    def _settle(
        self, *, own: list[bool], sent: int = 0, duplicates: int = 0, dead: int = 0
    ) -> None:
        own_count = sum(own)
        with self._progress:
            self._sent += sent
            self._duplicates += duplicates
            self._dead += dead
            self._completed_own += own_count
            self._adopted_pending = max(0, self._adopted_pending - (len(own) - own_count))
            self._progress.notify_all()

    def _note_retryable(self, exc: RetryableDeliveryError) -> None:
        now = time.monotonic()
        with self._progress:
            self._retried += 1
            delay = min(self.options.backoff_max, self.options.backoff_initial * 2**self._attempt)
            # "Equal jitter": at least half the exponential delay, so backoff really grows, plus
            # a random half, so a fleet of workers does not retry in lockstep.
            delay = delay / 2 + random.uniform(0, delay / 2)
            self._attempt = min(self._attempt + 1, 32)
            self._retry_not_before = now + exc.retry_after if exc.retry_after else 0.0
            self._next_attempt_at = max(now + delay, self._retry_not_before)
            self._progress.notify_all()
        if not self._in_outage:
            self._in_outage = True
            logger.warning(
                "ImmutableLog: delivery failed (%s); events are kept in the %s and retried with "
                "backoff",
                exc,
                "spool" if self.backlog.durable else "memory backlog",
            )

    def _to_backlog(
        self, events: Sequence[WireEvent], consume: Callable[[], None] | None = None
    ) -> None:
        """Append ``events`` to the backlog, then (atomically for :meth:`stats`) run ``consume``
        to remove them from where they were, and count them as spooled or dropped."""
        with self._moving:
            if self._abandoned:
                return  # close() rescued these events already
            self._place_in_backlog(events, consume)

    def _place_in_backlog(
        self, events: Sequence[WireEvent], consume: Callable[[], None] | None = None
    ) -> None:
        accepted = self.backlog.append(events) if events else 0
        with self._progress:
            if consume is not None:
                consume()
            self._spooled += accepted
            self._completed_own += len(events) - accepted
            self._progress.notify_all()
        if accepted < len(events):
            self._drops.drop(
                len(events) - accepted,
                "the spool is full (raise spool_max_bytes or fix the server outage)",
            )

    def _adopt_orphans(self) -> None:
        try:
            adopted = self.backlog.adopt_orphans()
        except Exception:
            logger.exception("ImmutableLog: could not adopt orphaned spool files")
            return
        if adopted:
            with self._lock:
                self._adopted += adopted
                self._adopted_pending += adopted

    def _maybe_adopt_orphans(self) -> None:
        now = time.monotonic()
        if now - self._last_orphan_scan >= ORPHAN_SCAN_INTERVAL:
            self._last_orphan_scan = now
            self._adopt_orphans()

    def _discard_without_transport(self) -> None:
        count = 0
        while self._captures:
            self._captures.popleft()
            count += 1
        if not count:
            return
        with self._progress:
            self._taken += count
            self._completed_own += count
            self._progress.notify_all()
        self._drops.drop(count, "no destination is configured (set IMMUTABLELOG_URL / IMTBL_URL)")

    def _finish(self) -> None:
        """On stop: persist what is still in memory so the next process can send it."""
        if self.transport is not None:
            with self._moving:
                if self._abandoned:
                    return
                self._spool_everything_in_memory()
        with self._progress:
            self._progress.notify_all()

    def _rescue_leftovers(self) -> None:
        """The worker is stuck (e.g. a hanging server past the exit timeout): spool its work.

        The in-flight batch may or may not have been stored; spooling it anyway is safe because
        the server deduplicates by idempotency key. Holding ``_moving`` means the worker is not
        half-way through placing events; ``_abandoned`` stops it from placing any more.
        """
        if not self._moving.acquire(timeout=1.0):
            logger.error("ImmutableLog: the delivery worker is stuck; events in memory are lost")
            return
        try:
            self._abandoned = True
            self._spool_everything_in_memory()
        finally:
            self._moving.release()

    def _spool_everything_in_memory(self) -> None:
        with self._lock:
            stranded = list(self._inflight) + list(self._ready)
        built = [self._build(capture) for capture in list(self._captures)]
        count = len(built)

        def consume() -> None:
            self._inflight = []
            self._ready.clear()
            for _ in range(count):
                self._captures.popleft()
            self._taken += count

        self._place_in_backlog(stranded + built, consume)

    # -- fork support -------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self.backlog.suspend_for_fork()

    def _after_fork_in_parent(self) -> None:
        self.backlog.resume_after_fork()

    def _after_fork_in_child(self) -> None:
        if isinstance(self.backlog, SqliteSpool):
            self.backlog.forget_after_fork()
        else:
            self.backlog = MemoryBacklog(self.options.max_queue)
        self.dead_letters = DeadLetterFile(self.dead_letters.path)
        self._init_runtime_state()


class _Interrupted(Exception):
    """A delivery stopped by a transient failure after ``settled`` leading events were settled."""

    def __init__(self, settled: int, cause: RetryableDeliveryError) -> None:
        super().__init__(str(cause))
        self.settled = settled
        self.cause = cause


# Every live pipeline, for the fork hooks and the exit drain. Weak: a pipeline the application
# dropped (and closed) does not linger.
_LIVE_PIPELINES: weakref.WeakSet[DeliveryPipeline] = weakref.WeakSet()


def _before_fork() -> None:
    for pipeline in list(_LIVE_PIPELINES):
        pipeline._before_fork()


def _after_fork_in_parent() -> None:
    for pipeline in list(_LIVE_PIPELINES):
        pipeline._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for pipeline in list(_LIVE_PIPELINES):
        pipeline._after_fork_in_child()


def _close_all_at_exit() -> None:
    pipelines = list(_LIVE_PIPELINES)
    if not pipelines:
        return
    deadline = time.monotonic() + max(p.options.shutdown_timeout for p in pipelines)
    for pipeline in pipelines:
        try:
            pipeline.close(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("ImmutableLog: error while draining events at exit")


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_close_all_at_exit)
