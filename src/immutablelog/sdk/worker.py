"""The one delivery thread of a process, shared by every pipeline.

However many apps, clients and configurations a process has, their events leave it through a
single daemon thread: each pipeline is a state machine (:meth:`DeliveryPipeline.service
<immutablelog.sdk.pipeline.DeliveryPipeline.service>`) that the thread steps in turn, one batch
at a time, sleeping until the earliest moment any of them needs it (a batch to send, a retry,
an orphan scan) or until it is woken. A pipeline is attached on first use and detached when it
is closed or retired; with nothing attached the thread ends, and the next use starts a new one.

One thread rather than one per pipeline: threads are not free (an app factory in a test suite
made one per app, forever), and every thread that wakes takes the GIL from the application's
request threads. The price is that a destination that hangs delays the others by up to its
``read_timeout`` per attempt.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

logger = logging.getLogger("immutablelog.sdk")

#: Name prefix of the worker thread (the full name ends in the process id).
WORKER_THREAD_PREFIX: Final = "immutablelog-delivery"


class Serviced(Protocol):
    """What the worker steps: a delivery pipeline."""

    #: Set by the worker while it sleeps and this pipeline has nothing queued: only then must a
    #: new capture wake it (every wake-up takes the GIL from a request thread).
    sleeping: bool

    def service(self) -> float | None:
        """One round of work; when to be called again (a monotonic time, already past for at
        once), or None to wait until woken."""
        ...

    def has_captures(self) -> bool: ...

    def gathering(self) -> bool:
        """Whether its captures are gathering into a batch, due at the time service() gave."""
        ...


class Doorbell:
    """How the worker is woken. ``ring`` is safe anywhere, a garbage collector callback included:
    ``queue.SimpleQueue.put`` is reentrant, ``threading.Event.set`` is not."""

    __slots__ = ("_queue", "ring")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()
        #: Wake the worker (about 0.1 µs: a C call, no Python frame).
        self.ring: Callable[[], None] = functools.partial(self._queue.put, None)

    def wait(self, timeout: float | None) -> bool:
        """Sleep until rung (True) or ``timeout`` seconds passed; forget earlier rings."""
        try:
            self._queue.get(timeout=None if timeout is None else max(0.0, timeout))
        except queue.Empty:
            return False
        while not self._queue.empty():
            self._queue.get_nowait()
        return True


class DeliveryWorker:
    """The process's delivery thread and the pipelines it serves (see the module docstring)."""

    def __init__(self) -> None:
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """Fresh state: all a forked child keeps of its parent's worker (whose thread is gone)."""
        self.doorbell = Doorbell()
        self._lock = threading.Lock()
        self._pipelines: dict[Serviced, None] = {}  # insertion-ordered set: round-robin order
        self._calls: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._previous: threading.Thread | None = None  # the last one started
        self._starting = 0  # attach() calls starting a thread right now

    # -- any thread ---------------------------------------------------------------------------

    def attach(self, pipeline: Serviced) -> None:
        """Serve ``pipeline`` from now on (starting the thread if none runs)."""
        with self._lock:
            self._pipelines[pipeline] = None
            starting = self._thread is None
            previous = self._previous
            # Until the new thread runs, a flush in another thread must not take the worker
            # for gone (and its events for undeliverable).
            self._starting += starting
        try:
            if starting and previous is not None and previous is not threading.current_thread():
                # A thread that found nothing to serve has left its loop; let it finish, so
                # that there is never more than one.
                previous.join(1.0)
            with self._lock:
                if self._thread is None and pipeline in self._pipelines:
                    self._thread = self._previous = threading.Thread(
                        target=self._run,
                        name=f"{WORKER_THREAD_PREFIX}-{os.getpid()}",
                        daemon=True,
                    )
                    self._thread.start()
        finally:
            with self._lock:
                self._starting -= starting
        self.doorbell.ring()

    def detach(self, pipeline: Serviced) -> None:
        """Stop serving ``pipeline``; the thread ends once it serves none."""
        with self._lock:
            self._pipelines.pop(pipeline, None)
        self.doorbell.ring()

    def call_soon(self, call: Callable[[], object]) -> None:
        """Run ``call`` on a normal thread soon: for work a garbage collector callback must not do
        itself (it may run inside any code, holding any lock). Safe to call from such a callback.
        """
        self._calls.put(call)
        self.doorbell.ring()

    def run_pending_calls(self) -> None:
        """Run what :meth:`call_soon` queued (the worker does; so does whoever needs it done)."""
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                call()
            except Exception:
                logger.exception("ImmutableLog: error in a deferred delivery task")

    def alive(self) -> bool:
        """Whether a thread serves the pipelines (or is being started to)."""
        thread = self._thread
        return self._starting > 0 or (thread is not None and thread.is_alive())

    def is_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def thread(self) -> threading.Thread | None:
        return self._thread

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.run_pending_calls()
            with self._lock:
                pipelines = list(self._pipelines)
                if not pipelines and self._calls.empty():
                    self._thread = None
                    return
            wake_at: float | None = None
            for pipeline in pipelines:
                try:
                    due = pipeline.service()
                except Exception:
                    # The worker must outlive any bug: log it, and come back to it in a second.
                    logger.exception("ImmutableLog: unexpected error in the delivery worker")
                    due = time.monotonic() + 1.0
                if due is not None and (wake_at is None or due < wake_at):
                    wake_at = due
            if wake_at is None or wake_at > time.monotonic():
                self._sleep(pipelines, wake_at)

    def _sleep(self, pipelines: list[Serviced], wake_at: float | None) -> None:
        """Sleep until ``wake_at`` (None: for ever) or a ring."""
        # Pipelines whose captures are gathering are due at wake_at at the latest; any other
        # must be woken by its next capture.
        quiet = [p for p in pipelines if not p.gathering()]
        for pipeline in quiet:
            pipeline.sleeping = True
        try:
            # Checked after raising the flags: a capture queued before them did not ring.
            if not any(p.has_captures() for p in quiet):
                self.doorbell.wait(None if wake_at is None else wake_at - time.monotonic())
        finally:
            for pipeline in quiet:
                pipeline.sleeping = False


#: The worker of this process.
WORKER: Final = DeliveryWorker()
