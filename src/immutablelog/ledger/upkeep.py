"""Upkeep behind the writer, on a thread of its own: the search index, the event counts
(``ledger/rollup.py``), the packed level-0 tiles (``tiles/source.py``), the WAL, and the
physical clean-up after erasures (``Storage.purge_erased``).

Each job is work a commit would otherwise do, moved off the writer's path:

* The search index is derived data: ingest never waits for it, and queries with ``q`` see
  an event within about half a second of its 2xx (it indexes every ``interval``, in one
  transaction per slice, which costs less per entry than indexing each commit on its own).
  Filling it takes no lock the writer needs (SQLite keeps the index in its own file;
  PostgreSQL lets one process at a time fill it).
* The event counts are derived data too, filled the same way; a count adds the few
  entries they do not cover yet from the entries themselves, so it is always exact.
* So are the packed tiles: each full level-0 hash tile copied into one row, so that
  serving it reads that row instead of 256 entry rows. A tile not packed yet is read from
  the entries, with the same bytes.
* SQLite's write-ahead log is copied into the database file here (``reclaim_wal``, a
  passive checkpoint, which never blocks the writer; a backend without the capability,
  PostgreSQL, does its own) instead of by whichever commit crosses SQLite's default
  threshold of 4 MB, which under load was nearly every commit. Pages rewritten by many
  commits (tree nodes, index pages) are copied once per round instead of once per commit.

So on a multi-core machine this runs beside the writer instead of taking turns with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from immutablelog.ledger.health import RepeatedFailure
from immutablelog.ledger.storage import ReclaimsWal, Storage

logger = logging.getLogger(__name__)

#: Entries indexed per transaction: small enough that stopping never waits long (a few
#: seconds), large enough that the entries of a slice share the pages of the lookup
#: indexes with random keys (SQLite), whose cost otherwise grows with the log: at
#: 1,000,000 entries 19.5 µs per entry instead of 40.5 with 10,000-entry slices.
_SLICE = 50_000


class Upkeep:
    """Keeps ``storage``'s search index, event counts and packed tiles up to date and,
    where the backend asks for it (:class:`ReclaimsWal`), its write-ahead log copied.
    Start once, stop once."""

    def __init__(self, storage: Storage, *, interval: float = 0.5) -> None:
        self._storage = storage
        #: The backend's WAL copy, if it needs one done for it (SQLite).
        self._reclaim_wal = storage.reclaim_wal if isinstance(storage, ReclaimsWal) else None
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._reclaim_failures = RepeatedFailure(logger, "WAL copies")
        self._indexing_failures = RepeatedFailure(logger, "search indexing")
        self._purge_failures = RepeatedFailure(logger, "purging erased values")
        self._rollup_failures = RepeatedFailure(logger, "event counting")
        self._packing_failures = RepeatedFailure(logger, "packing tiles")

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="immutablelog-upkeep", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop after the current slice; the backlog is indexed by the next start.

        Returns whether the thread has ended.
        """
        with self._lock:
            self._stopping.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._catch_up()
            self._roll_up()
            self._pack()
            self._reclaim()
            self._guarded(self._storage.purge_erased, self._purge_failures)
            self._stopping.wait(self._interval)

    def _reclaim(self) -> None:
        if self._reclaim_wal is not None:
            self._guarded(self._reclaim_wal, self._reclaim_failures)

    @staticmethod
    def _guarded(job: Callable[[], object], failures: RepeatedFailure) -> None:
        try:
            job()
        except Exception as exc:  # the thread must outlive any failure
            failures.raised(exc)
        else:
            failures.succeeded()

    def _catch_up(self) -> None:
        self._drain(self._storage.index_search, self._indexing_failures)

    def _roll_up(self) -> None:
        self._drain(self._storage.roll_up, self._rollup_failures)

    def _pack(self) -> None:
        self._drain(self._storage.pack_tiles, self._packing_failures)

    def _drain(self, job: Callable[[int], int], failures: RepeatedFailure) -> None:
        """Run ``job`` a slice at a time until it has less than a slice left to do."""

        def drain() -> None:
            while not self._stopping.is_set() and job(_SLICE) >= _SLICE:
                pass

        self._guarded(drain, failures)
