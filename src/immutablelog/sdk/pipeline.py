"""A delivery pipeline: the queue, backlog and dead-letter file of one destination.

Path of an event::

    request thread            the process's worker thread (:mod:`~immutablelog.sdk.worker`)
    ──────────────            ─────────────────────────────────────────────────────────────
    submit(capture) ──deque──▶ build (JSON, redaction, clamp) ─▶ batch ─▶ transport
                                                                  │ retryable failure
                                                                  ▼
                                 backlog: durable SQLite spool ─▶ replay in order, backoff
                                                                  │ permanent rejection
                                                                  ▼
                                                          dead-letter file (delivery.py)

* The request thread only appends a pair (builder, capture) to a ``collections.deque`` (atomic
  under the GIL), or a finished event with :func:`already_built` (the middlewares build theirs
  on the request's thread); it wakes the worker only when the worker sleeps with nothing
  queued here, and for a full batch. If the queue is full the capture is dropped — counted
  and logged, never waited for: an audit logger must not take the application down with it.
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
  preserves capture order. Retries follow :class:`~immutablelog.sdk.retry.RetrySchedule`.
* ``flush(timeout)`` waits until everything queued before the call reached a final state.
  ``close()`` (also run at interpreter exit) flushes with a bounded timeout and then persists
  whatever is still in memory — including a batch stuck in a hanging request — to the spool, to
  be replayed by the next process. A duplicate caused by that is absorbed by idempotency.
  ``retire()`` does the same without waiting, for a pipeline nobody uses any more.
"""

from __future__ import annotations

import collections
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from immutablelog.sdk import lifecycle
from immutablelog.sdk.deadletter import DeadLetterFile
from immutablelog.sdk.delivery import Interrupted, deliver
from immutablelog.sdk.events import WireEvent
from immutablelog.sdk.options import DeliveryOptions
from immutablelog.sdk.retry import RetrySchedule
from immutablelog.sdk.spool import Backlog, MemoryBacklog, SqliteSpool, open_backlog
from immutablelog.sdk.stats import Counters, DeliveryStats, DropReporter
from immutablelog.sdk.transport import RetryableDeliveryError, Transport
from immutablelog.sdk.worker import WORKER

_encoded: Final = operator.attrgetter("encoded")  # an event's batch item bytes

logger = logging.getLogger("immutablelog.sdk")

#: How often an idle pipeline looks for spool files left by crashed siblings.
ORPHAN_SCAN_INTERVAL: Final = 30.0

#: Turns a capture into a wire event, in the worker thread; must not raise.
Build = Callable[[Any], WireEvent]


def already_built(event: WireEvent) -> WireEvent:
    """The :data:`Build` of a capture that is its event already: an integration that built it
    on the request's own thread or event loop (the Django, WSGI and ASGI middlewares)."""
    return event


class DeliveryPipeline:
    """Queue, backlog and dead-letter file for one destination (see the module docstring).

    ``build`` turns whatever the integration submits (a capture) into a
    :class:`~immutablelog.sdk.events.WireEvent`, unless :meth:`submit` is given another one (apps
    sharing a destination each bring their own). ``transport=None`` means there is no
    destination (no URL and no embedded mode): submitted events are dropped, counted and logged.
    """

    def __init__(
        self,
        build: Build,
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
        self.backlog: Backlog = open_backlog(
            spool_dir,
            max_bytes=self.options.spool_max_bytes,
            synchronous=self.options.spool_synchronous,
            max_events=self.options.max_queue,
        )
        directory = spool_dir if isinstance(self.backlog, SqliteSpool) else None
        dead_path = self.options.dead_letter_path or (
            os.path.join(directory, "dead-letter.jsonl")
            if directory
            else os.path.join(os.getcwd(), "immutablelog-dead-letter.jsonl")
        )
        self.dead_letters = DeadLetterFile(dead_path)
        self._init_runtime_state()
        lifecycle.track(self)
        # Replay events left by a previous run even if this process never records anything.
        if isinstance(self.backlog, SqliteSpool) and transport is not None:
            try:
                if self.backlog.has_orphans():
                    self._attach()
            except OSError:
                logger.exception("ImmutableLog: could not scan the spool directory")

    def _init_runtime_state(self) -> None:
        """Everything that must be fresh in a new process (also used after ``fork()``)."""
        self._pid = os.getpid()
        self._captures: collections.deque[tuple[Build, Any]] = collections.deque()
        self._ring = WORKER.doorbell.ring
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        # Held while events move between places (queue → memory → backlog), so that close() can
        # rescue a stuck worker's events without racing it: each event is placed exactly once.
        self._moving = threading.RLock()
        self._ready: collections.deque[WireEvent] = collections.deque()
        self._inflight: list[WireEvent] = []
        #: Set by the worker while it sleeps and nothing is queued here (see Serviced).
        self.sleeping = False
        self._attached = False  # the worker serves this pipeline
        self._closed = False  # submissions are refused
        self._closing = False  # close() has run
        self._stop = False  # the worker persists what is left and lets go
        self._retiring = False  # nobody uses it: deliver what is queued, then let go
        self._abandoned = False  # close() rescued the events of a stuck worker
        self._finished = False  # the worker let go
        self._left = 0  # events still in the backlog when it was closed
        # Batch gathering: since when captures have been waiting, and how many callers are in
        # flush()/close() (the worker does not let them wait for a batch to fill).
        self._gathering_since: float | None = None
        self._hurry = 0
        self._retry = RetrySchedule(self.options.backoff_initial, self.options.backoff_max)
        self._in_outage = False
        self._startup_done = False
        self._adopted_pending = 0
        self._last_orphan_scan = time.monotonic()
        self._counts = Counters()
        self._drops = DropReporter()

    # -- producer side (any thread) ----------------------------------------------------------

    def submit(self, capture: Any, build: Build | None = None) -> bool:
        """Queue ``capture`` for delivery without blocking; False if it had to be dropped."""
        captures = self._captures
        if self._closed or len(captures) >= self._max_queue:
            self._drops.drop(1, "the pipeline is closed" if self._closed else "the queue is full")
            return False
        captures.append((build or self._build, capture))
        if not self._attached:
            self._attach()
        # Every wake-up makes a busy request thread hand the GIL over. While the worker sleeps
        # every capture rings (not only the first: with two threads appending at once neither
        # may see a length of 1), until the worker is awake.
        if self.sleeping or len(captures) == self._max_batch:
            self._ring()
        return True

    def _attach(self) -> None:
        with self._lock:
            if self._attached or self._finished:
                return
            self._attached = True
        WORKER.attach(self)

    @property
    def closed(self) -> bool:
        """True once closed or retired: submissions are dropped."""
        return self._closed

    def has_captures(self) -> bool:
        return bool(self._captures)

    def gathering(self) -> bool:
        return self._gathering_since is not None

    def stats(self) -> DeliveryStats:
        """Current counters (consistent with each other at the moment of the call)."""
        with self._lock:
            return self._counts.snapshot(
                waiting=len(self._captures),
                pending=len(self._captures) + len(self._ready) + len(self._inflight),
                backlog=self.backlog.count(),
                backlog_bytes=self.backlog.bytes_used(),
                dropped=self._drops.total,
            )

    def shutdown_timeout(self) -> float:
        return self.options.shutdown_timeout

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
            target = self._counts.taken + len(self._captures)
            if self._all_done(target):
                return True
            if not accept_durable:
                self._retry.hurry()
            self._hurry += 1
        try:
            return self._wait_for(target, deadline, accept_durable=accept_durable)
        finally:
            with self._lock:
                self._hurry -= 1

    def _wait_for(self, target: int, deadline: float | None, *, accept_durable: bool) -> bool:
        if self.transport is not None:
            self._attach()
        self._ring()

        def finished() -> bool:
            if self._all_done(target):
                return True
            if accept_durable and self.backlog.durable and self._in_outage:
                # Exiting during an outage: what is left is on disk; do not wait for the server.
                return not (self._captures or self._ready or self._inflight)
            return self._finished or not WORKER.alive()

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
        startup_done = self._startup_done or not self._attached
        return startup_done and self._counts.completed_own >= target and self._adopted_pending == 0

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded), stop and persist what is left; idempotent.

        Returns True when everything queued was delivered (or reached another final state).
        Events still undelivered after ``timeout`` are left in the durable spool for the next
        process; without a spool they are counted as dropped and logged.
        """
        if self._closing or self._pid != os.getpid():
            return True
        self._closing = True
        timeout = self.options.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delivered = self._wait_until_done(timeout, accept_durable=True)
        with self._progress:
            self._closed = self._stop = True
            served = self._attached and not self._finished
        if served and not WORKER.is_current_thread():
            self._ring()
            with self._progress:
                while not self._finished and WORKER.alive():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._progress.wait(remaining)
        if not self._finished:
            if served and WORKER.alive() and not WORKER.is_current_thread():
                self._rescue_leftovers()  # the worker is stuck (a hanging server, say)
            else:
                self._complete()
        return delivered and self._left == 0

    def retire(self) -> None:
        """Nobody will submit any more: deliver what is queued, then let go — in the background.

        During an outage with a durable spool, whatever is left stays in the spool, where a
        pipeline of the same destination (in this process or the next) adopts it.
        """
        with self._progress:
            if self._closed or self._pid != os.getpid():
                return
            self._closed = self._retiring = True
            served = self._attached
        if served:
            self._ring()
        else:
            self._complete()

    # -- the worker's side ---------------------------------------------------------------------

    def service(self) -> float | None:
        """One round of work, run by the worker thread: at most one batch sent.

        Returns when to be called again (a monotonic time; one already past means at once), or
        None to wait for a capture, a flush or a close.
        """
        if self._abandoned:
            self._let_go()
            return None
        if not self._startup_done:
            if self.transport is not None:
                self._adopt_orphans()
            with self._progress:
                self._startup_done = True
                self._progress.notify_all()
        if self.transport is None:
            self._discard_without_transport()
            if self._stop or self._retiring:
                self._complete()
            return None
        gathering_until = self._gather()
        if gathering_until is not None:
            return gathering_until
        self._build_captures()
        if self._stop:
            self._complete()
            return None
        if self.backlog.count():
            if time.monotonic() < self._retry.next_attempt_at:
                if self._retiring and self.backlog.durable:
                    self._complete()  # what is left is on disk, for whoever adopts it
                    return None
                return self._retry.next_attempt_at
            self._send_from_backlog()
            return 0.0
        if self._ready:
            self._send_ready()
            return 0.0
        with self._progress:
            self._progress.notify_all()
        if self._captures:
            return 0.0
        if self._retiring:
            self._complete()
            return None
        return self._scan_for_orphans()

    def _gather(self) -> float | None:
        """While a batch fills up: until when it may; else None (build and send now)."""
        waiting = len(self._captures)
        if not waiting:
            self._gathering_since = None
            return None
        now = time.monotonic()
        if self._gathering_since is None:
            self._gathering_since = now
        if waiting >= self._max_batch or self._ready or self._hurry or self._stop:
            return None
        if self._retiring:
            return None
        until = self._gathering_since + self.options.batch_interval
        return until if until > now else None

    def _build_captures(self) -> None:
        """Turn queued captures into wire events (JSON, redaction: all off the request path)."""
        captures = self._captures
        count = min(len(captures), self._max_batch)
        if not count:
            return
        # Captures stay in the queue until their events are placed, so that every event is
        # always somewhere the counters see (queued = taken + waiting, never in limbo). Read by
        # index: request threads append meanwhile, which would end an iteration over the deque.
        built = [build(capture) for build, capture in map(captures.__getitem__, range(count))]
        self._gathering_since = None  # whatever is still queued starts a new batch

        def consume() -> None:
            for _ in range(count):
                captures.popleft()
            self._counts.taken += count

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
            if len(ready) <= self._max_batch and (
                len(ready) == 1
                or sum(map(len, map(_encoded, ready))) + len(ready) <= self.options.max_batch_bytes
            ):  # all of it, as the loop below would take it (without a step per event)
                batch = list(ready)
                ready.clear()
                self._inflight = batch
                return batch
            while ready and len(batch) < self._max_batch:
                item_size = len(ready[0].encoded) + 1
                if batch and size + item_size > self.options.max_batch_bytes:
                    break
                size += item_size
                batch.append(ready.popleft())
            self._inflight = batch
        return batch

    def _send_ready(self) -> None:
        batch = self._take_ready_batch()

        def settle(start: int, stop: int, sent: int, duplicates: int) -> None:
            self._settle(stop - start, stop - start, sent, duplicates)

        assert self.transport is not None
        try:
            deliver(self.transport, self.dead_letters, batch, settle)
        except Interrupted as interrupted:
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
                self._retry.succeeded()

    def _send_from_backlog(self) -> None:
        entries = self.backlog.peek(self._max_batch, self.options.max_batch_bytes)
        if not entries:
            return
        seqs = [entry.seq for entry in entries]
        own = [entry.own for entry in entries]

        def settle(start: int, stop: int, sent: int, duplicates: int) -> None:
            # Removed from the backlog before anyone waiting in flush() is told.
            self.backlog.remove(seqs[start:stop])
            self._settle(stop - start, sum(own[start:stop]), sent, duplicates)

        assert self.transport is not None
        try:
            deliver(self.transport, self.dead_letters, [e.event for e in entries], settle)
        except Interrupted as interrupted:
            self._note_retryable(interrupted.cause)
            return
        with self._lock:
            self._retry.succeeded()
        if self.backlog.count() == 0 and self._in_outage:
            self._in_outage = False
            logger.warning("ImmutableLog: the server is reachable again; spooled events replayed")

    def _settle(self, count: int, own: int, sent: int, duplicates: int) -> None:
        """``count`` events reached a final state: ``sent`` stored, the rest dead-lettered."""
        with self._progress:
            counts = self._counts
            counts.sent += sent
            counts.duplicates += duplicates
            counts.dead += count - sent
            counts.completed_own += own
            self._adopted_pending = max(0, self._adopted_pending - (count - own))
            self._progress.notify_all()

    def _note_retryable(self, exc: RetryableDeliveryError) -> None:
        with self._progress:
            self._counts.retried += 1
            self._retry.failed(time.monotonic(), exc.retry_after)
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
            self._counts.spooled += accepted
            self._counts.completed_own += len(events) - accepted
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
                self._counts.adopted += adopted
                self._adopted_pending += adopted

    def _scan_for_orphans(self) -> float:
        """Idle: adopt what crashed siblings left, every ORPHAN_SCAN_INTERVAL; when next."""
        now = time.monotonic()
        if now - self._last_orphan_scan >= ORPHAN_SCAN_INTERVAL:
            self._last_orphan_scan = now
            self._adopt_orphans()
            if self.backlog.count():
                return 0.0
        return self._last_orphan_scan + ORPHAN_SCAN_INTERVAL

    def _discard_without_transport(self) -> None:
        count = 0
        while self._captures:
            self._captures.popleft()
            count += 1
        if not count:
            return
        with self._progress:
            self._counts.taken += count
            self._counts.completed_own += count
            self._progress.notify_all()
        self._drops.drop(count, "no destination is configured (set IMMUTABLELOG_URL / IMTBL_URL)")

    # -- letting go ----------------------------------------------------------------------------

    def _complete(self) -> None:
        """Stop for good: persist what is still in memory for the next process, release the
        spool and the connection. Run by the worker, or by close()/retire() when no worker
        serves this pipeline."""
        with self._moving:
            if not self._abandoned:
                if self.transport is not None:
                    self._spool_everything_in_memory()
                self._close_backlog()
        self._let_go()

    def _let_go(self) -> None:
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:
                logger.exception("ImmutableLog: could not close the transport")
        WORKER.detach(self)
        lifecycle.forget(self)
        with self._progress:
            self._finished = True
            self._progress.notify_all()

    def _rescue_leftovers(self) -> None:
        """The worker is stuck (e.g. a hanging server past the exit timeout): spool its work.

        The in-flight batch may or may not have been stored; spooling it anyway is safe because
        the server deduplicates by idempotency key. Holding ``_moving`` means the worker is not
        half-way through placing events; ``_abandoned`` stops it from placing any more, and
        makes it let go of the pipeline when it comes back.
        """
        if not self._moving.acquire(timeout=1.0):
            logger.error("ImmutableLog: the delivery worker is stuck; events in memory are lost")
            return
        try:
            self._abandoned = True
            self._spool_everything_in_memory()
            self._close_backlog()
        finally:
            self._moving.release()

    def _spool_everything_in_memory(self) -> None:
        with self._lock:
            stranded = list(self._inflight) + list(self._ready)
        built = [build(capture) for build, capture in list(self._captures)]
        count = len(built)

        def consume() -> None:
            self._inflight = []
            self._ready.clear()
            for _ in range(count):
                self._captures.popleft()
            self._counts.taken += count

        self._place_in_backlog(stranded + built, consume)

    def _close_backlog(self) -> None:
        self._left = left = self.backlog.count()
        try:
            self.backlog.close()
        except Exception:
            logger.exception("ImmutableLog: could not close the spool")
        if left and self.backlog.durable:
            logger.warning(
                "ImmutableLog: %d undelivered event(s) stay in the spool (%s) and will be sent "
                "by the next process that starts with the same configuration",
                left,
                getattr(self.backlog, "directory", "?"),
            )
        elif left:
            self._drops.drop(left, "the process exited during an outage and no spool is usable")

    # -- fork support (see lifecycle.py) ------------------------------------------------------

    def before_fork(self) -> None:
        self.backlog.suspend_for_fork()

    def after_fork_in_parent(self) -> None:
        self.backlog.resume_after_fork()

    def after_fork_in_child(self) -> None:
        if isinstance(self.backlog, SqliteSpool):
            self.backlog.forget_after_fork()
        else:
            self.backlog = MemoryBacklog(self.options.max_queue)
        self.dead_letters = DeadLetterFile(self.dead_letters.path)
        retired = self._closed  # retiring or closing: nobody in the child uses it
        self._init_runtime_state()
        if retired:
            self._closed = self._closing = self._finished = True
            lifecycle.forget(self)
