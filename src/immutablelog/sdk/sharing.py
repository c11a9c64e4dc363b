"""Pipelines shared by destination, and released when nobody uses them any more.

Apps and clients that send to the same place — same URL and API key (or the same transport
object, or the same embedded ledger), same spool directory and delivery options — share one
pipeline: one queue, one spool file, one connection, and batches that mix their events (each
event keeps its own service, environment and redaction, from the builder it was submitted
with). Each user holds a :class:`PipelineLease`. The last one to let go retires the pipeline:
the worker delivers what is queued and releases its files and connection.

A lease is given back explicitly (``close()``) or when its owner — the Flask app, the client — is
garbage-collected. The latter is what makes an app factory safe: a test suite that builds an app
per test keeps one pipeline and one thread, not one per app, forever.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable
from functools import partial

from immutablelog.sdk.pipeline import DeliveryPipeline
from immutablelog.sdk.worker import WORKER


class PipelineLease:
    """One user's share of a shared pipeline."""

    __slots__ = ("_finalizer", "_key", "_registry", "pipeline")

    def __init__(
        self, registry: SharedPipelines, key: Hashable, pipeline: DeliveryPipeline, owner: object
    ) -> None:
        self.pipeline = pipeline
        self._registry = registry
        self._key = key
        # A garbage collector callback may run inside any code, holding any lock: it only
        # queues the release, which the worker (or the next lease) carries out.
        self._finalizer = weakref.finalize(
            owner, WORKER.call_soon, partial(registry.retire, key, pipeline)
        )
        self._finalizer.atexit = False  # the exit drain closes every pipeline anyway

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def close(self, timeout: float | None = None) -> bool:
        """Give the lease back now: flush (bounded by ``timeout``, default the pipeline's
        ``shutdown_timeout``); the last user closes the pipeline. True if all was delivered."""
        if self._finalizer.detach() is None:
            return True  # given back already
        if self._registry.release(self._key, self.pipeline):
            return self.pipeline.close(timeout)
        return self.pipeline.flush(
            self.pipeline.options.shutdown_timeout if timeout is None else timeout
        )

    def retire(self) -> None:
        """Give the lease back without waiting; the last user's pipeline drains in the background
        (on the worker)."""
        if self._finalizer.detach() is not None:
            self._registry.retire(self._key, self.pipeline)


class SharedPipelines:
    """The process's pipelines by destination key, with how many leases each has."""

    def __init__(self) -> None:
        self.reset_after_fork()
        os.register_at_fork(after_in_child=self.reset_after_fork)

    def reset_after_fork(self) -> None:
        # Another thread may have held the lock when the process forked; the entries stay (the
        # child's apps still hold their leases).
        self._lock = threading.Lock()
        if not hasattr(self, "_entries"):
            self._entries: dict[Hashable, tuple[DeliveryPipeline, int]] = {}

    def lease(
        self, key: Hashable, make: Callable[[], DeliveryPipeline], owner: object
    ) -> PipelineLease:
        """A lease on the pipeline for ``key``, made by ``make`` if there is none."""
        WORKER.run_pending_calls()  # releases queued by the garbage collector, if no worker runs
        with self._lock:
            pipeline, holders = self._entries.get(key) or (None, 0)
            if pipeline is None or pipeline.closed:  # closed directly (pipeline().close())
                pipeline, holders = make(), 0
            self._entries[key] = (pipeline, holders + 1)
        return PipelineLease(self, key, pipeline, owner)

    def release(self, key: Hashable, pipeline: DeliveryPipeline) -> bool:
        """Count one lease of ``pipeline`` as given back; True if it was the last one."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] is not pipeline:
                return False
            if entry[1] > 1:
                self._entries[key] = (pipeline, entry[1] - 1)
                return False
            del self._entries[key]
            return True

    def retire(self, key: Hashable, pipeline: DeliveryPipeline) -> None:
        if self.release(key, pipeline):
            pipeline.retire()

    def __len__(self) -> int:
        return len(self._entries)


#: The shared pipelines of this process.
PIPELINES = SharedPipelines()
