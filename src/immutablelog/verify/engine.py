"""Rebuilding the tree from checked pages, shared by online and bundle verification.

Pages are checked out of order (in threads and worker processes) and applied here in order:
their subtree roots grow the frontier, their anomalies become findings, and the leaf hashes go
to a temporary file so that, if the rebuilt root disagrees with the signed one, the culprit
can be found afterwards without keeping a million hashes in memory.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

from immutablelog.erasure import Coverage, Range
from immutablelog.merkle import CompactRange, node_hash
from immutablelog.verify.checks import Anomaly, ChunkResult, IndexRun
from immutablelog.verify.report import CouldNotCheck, Finding, FindingKind, Report
from immutablelog.verify.tree import range_root

T = TypeVar("T")

#: Spans of findings kept for telling explained differences from new ones; past this many,
#: the report is long enough and memory matters more.
_MAX_EXPLAINED = 10_000

#: Erasure records listed in a report (all of them are counted and matched).
MAX_ERASURES_LISTED = 200

#: Below this many entries, starting worker processes costs more than it saves.
PARALLEL_MIN_ENTRIES = 50_000


def finding_of(anomaly: Anomaly) -> Finding:
    """The report's finding for an anomaly a page check found."""
    return Finding(
        FindingKind(anomaly.kind), anomaly.message, anomaly.position, anomaly.end, anomaly.entry_id
    )


class Progress(Protocol):
    """Where a long run reports how far it got (the CLI draws a progress bar)."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def stop(self) -> None:
        pass


def auto_workers(entries: int, requested: int | None) -> int:
    """How many processes to check ``entries`` with: ``requested``, or one per core."""
    if requested is not None and requested > 0:
        return requested
    if entries < PARALLEL_MIN_ENTRIES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


class ChunkRunner:
    """Runs page checks in worker processes when there is more than one, else inline.

    Workers are started with ``spawn``: the verifier has fetch threads running, and forking a
    process with live threads can deadlock it.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            try:
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(workers, mp_context=context)
            except (OSError, NotImplementedError, ValueError):
                self._pool = None  # no processes here: check inline, just slower

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._pool is not None:
            try:
                return self._pool.submit(fn, *args)
            except BrokenProcessPool as exc:
                raise _workers_died(exc) from None
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return result_of(self.submit(fn, *args))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChunkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def result_of(future: Future[T]) -> T:
    """A checked chunk, or why it could not be checked (a worker process died)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise _workers_died(exc) from None


def _workers_died(exc: BaseException) -> CouldNotCheck:
    return CouldNotCheck(
        "workers", f"a checking process died ({exc}); run again, or with --workers 1"
    )


class UnknownSubtree(Exception):
    """A subtree hash the verifier cannot compute (it lies in a prefix it did not refetch)."""


class Rebuild:
    """The tree being rebuilt, from ``frontier`` (empty, or the saved state's) to ``limit``.

    ``prefix`` is an earlier verified tree head ``(size, root, frontier hashes)`` to compare
    against when the rebuild passes that size (``--full`` and bundles): a history rewritten
    below it shows up there, pinpointed to the first frontier subtree that changed.
    """

    def __init__(
        self,
        report: Report,
        frontier: CompactRange,
        limit: int,
        prefix: tuple[int, bytes, tuple[bytes, ...]] | None = None,
        *,
        withheld: bool = False,
    ) -> None:
        self.report = report
        self.withheld = withheld  # the source sends no erasable parts at all, by design
        self.frontier = frontier
        self.limit = limit
        self.first_leaf = frontier.size
        self.next_position = frontier.size
        self.broken_at: int | None = None
        self.prefix = prefix if prefix is not None and prefix[0] > frontier.size else None
        self.explained: list[tuple[int, int]] = []
        # Closed by close(); it outlives any one method, so no with-block.
        self._leaves = tempfile.TemporaryFile()  # noqa: SIM115
        self._memo: dict[tuple[int, int], bytes] = {
            (start, end): h for start, end, h in frontier.ranges()
        }
        self._run: IndexRun | None = None
        self._last_id: str | None = None
        self._extra_reported = False
        self._coverage = Coverage()
        self._unrevealed: list[Range] = []

    def close(self) -> None:
        self._leaves.close()

    # --- applying checked chunks, in order -----------------------------------------------

    def apply(self, result: ChunkResult) -> None:
        if result.start > self.next_position:
            self.missing(self.next_position, result.start)
        elif result.start < self.next_position:
            self._add(
                Finding(
                    FindingKind.EXTRA_ENTRY,
                    f"entries for index {result.start} on appear a second time",
                    result.start,
                )
            )
            self.broken_at = self.broken_at if self.broken_at is not None else result.start
        if self.frontier.size != result.start and self.broken_at is None:
            self.broken_at = result.start
        self.report.entries_checked += result.received
        for anomaly in result.anomalies:
            self._add(finding_of(anomaly))
        for run in result.index_runs:
            self._merge_run(run)
        self._unrevealed.extend(result.unrevealed)
        for record in result.erasures:
            self._coverage.add(record)
            if len(self.report.erasures) < MAX_ERASURES_LISTED:
                self.report.erasures.append(
                    {
                        "index": record.index,
                        "at": record.received_at,
                        "by": record.by,
                        "reason": record.reason,
                        "count": sum(end - start for start, end in record.ranges),
                    }
                )
        usable = max(0, min(result.contiguous, self.limit - result.start))
        if usable < result.contiguous and not self._extra_reported:
            self._extra_reported = True
            self._add(
                Finding(
                    FindingKind.EXTRA_ENTRY,
                    f"entries beyond the signed tree of size {self.limit}",
                    self.limit,
                )
            )
        if self.broken_at is None and usable:
            self._grow(result, usable)
        if self.broken_at is None and usable < result.received:
            self.broken_at = result.start + usable
        self.next_position = max(
            self.next_position, result.covered_to, result.start + result.contiguous
        )
        if result.last_id is not None:
            self._last_id = result.last_id

    def missing(self, start: int, end: int) -> None:
        """Positions ``[start, end)`` the source had nothing for."""
        if start >= end:
            return
        self._add(
            Finding(
                FindingKind.MISSING_ENTRY,
                f"no entry at index {start}" + (f"..{end - 1}" if end - start > 1 else ""),
                start,
                end,
            )
        )
        if self.broken_at is None:
            self.broken_at = start
        self.next_position = max(self.next_position, end)

    def finish(self) -> None:
        """Account for the end of the tree, flush the pending index run, order the findings."""
        if self.next_position < self.limit:
            self.missing(self.next_position, self.limit)
        elif self.next_position > self.limit and not self._extra_reported:
            self._extra_reported = True
            self._add(
                Finding(
                    FindingKind.EXTRA_ENTRY,
                    f"entries beyond the signed tree of size {self.limit}",
                    self.limit,
                    self.next_position,
                )
            )
        if self._run is not None:
            self._emit_run(self._run)
            self._run = None
        self._match_erasures()
        self.report.findings.sort(key=lambda f: -1 if f.index is None else f.index)

    def _match_erasures(self) -> None:
        """Entries sent without their erasable part are erased if an erasure record in the
        log covers them, withheld if the source sends no parts, and tampered with otherwise.
        (A record comes after what it erases, so this waits for the end.)"""
        for start, end in self._unrevealed:
            for first, stop, record in self._coverage.split(start, end):
                if record is not None:
                    self.report.erased_entries += stop - first
                    continue
                if self.withheld:
                    self.report.withheld_entries += stop - first
                    continue
                which = f"entry {first}" if stop - first == 1 else f"entries {first}..{stop - 1}"
                self._add(
                    Finding(
                        FindingKind.MISSING_VALUES,
                        f"the payload and meta of {which} are gone, and no erasure record "
                        "in the log covers them",
                        first,
                        stop,
                    )
                )

    def _grow(self, result: ChunkResult, usable: int) -> None:
        leaves = result.leaves[: usable * 32]
        offset = (result.start - self.first_leaf) * 32
        if self._leaves.tell() != offset:  # seeking flushes the buffer: only when needed
            self._leaves.seek(offset)
        self._leaves.write(leaves)
        start = result.start
        prefix = self.prefix
        straddles = prefix is not None and start < prefix[0] < start + usable
        if usable == result.contiguous and not straddles:
            position = start
            for level, root in result.subtrees:
                self._memo[(position, position + (1 << level))] = root
                self.frontier.append_subtree(level, root)
                position += 1 << level
            if prefix is not None and self.frontier.size == prefix[0]:
                self._compare_prefix(prefix)
            return
        for offset in range(usable):  # rare: a chunk that straddles a checkpoint or the limit
            self.frontier.append_subtree(0, leaves[offset * 32 : offset * 32 + 32])
            if prefix is not None and self.frontier.size == prefix[0]:
                self._compare_prefix(prefix)

    def _compare_prefix(self, prefix: tuple[int, bytes, tuple[bytes, ...]]) -> None:
        size, root, saved = prefix
        self.prefix = None
        if self.frontier.root() == root:
            return
        ours = CompactRange(size, saved).ranges()
        now = self.frontier.ranges()
        first, end = 0, size
        for (start, stop, saved_hash), (_, _, new_hash) in zip(ours, now, strict=True):
            if saved_hash != new_hash:
                first, end = start, stop
                break
        self._add(
            Finding(
                FindingKind.INCONSISTENT_HISTORY,
                f"the first {size} entries no longer hash to the root verified before "
                f"({root.hex()}): entries {first}..{end - 1} were rewritten",
                first,
                end,
            )
        )

    def _add(self, finding: Finding) -> None:
        self.report.add(finding)
        if finding.index is not None:
            self._explain(finding.index, finding.end or finding.index + 1)

    def _explain(self, start: int, end: int) -> None:
        if len(self.explained) < _MAX_EXPLAINED:
            self.explained.append((start, end))

    def _merge_run(self, run: IndexRun) -> None:
        if run.previous_id is None and run.position == self.next_position:
            run = IndexRun(run.position, run.length, run.shift, run.first_id, self._last_id)
        pending = self._run
        if (
            pending is not None
            and pending.shift == run.shift
            and pending.position + pending.length == run.position
        ):
            self._run = IndexRun(
                pending.position,
                pending.length + run.length,
                pending.shift,
                pending.first_id,
                pending.previous_id,
            )
            return
        if pending is not None:
            self._emit_run(pending)
        self._run = run

    def _emit_run(self, run: IndexRun) -> None:
        position, length, shift = run.position, run.length, run.shift
        self._explain(position, position + length)
        if length == 1:
            self._add(
                Finding(
                    FindingKind.WRONG_INDEX,
                    f"the entry at position {position} says it is index {position + shift}",
                    position,
                    entry_id=run.first_id,
                )
            )
        elif shift > 0:
            self._add(
                Finding(
                    FindingKind.MISSING_ENTRY,
                    f"entries with index {position}..{position + shift - 1} are gone: from "
                    f"position {position} on, {length} entries carry an index {shift} higher "
                    "than their place (removed, then renumbered)",
                    position,
                    position + shift,
                )
            )
        else:
            extra = -shift
            self._add(
                Finding(
                    FindingKind.EXTRA_ENTRY,
                    f"{extra} entr{'y' if extra == 1 else 'ies'} inserted before position "
                    f"{position}: from there on, {length} entries carry an index {extra} "
                    "lower than their place",
                    position - extra,
                    position,
                    run.previous_id if extra == 1 else None,
                )
            )

    # --- our own subtree hashes, for pinpointing ----------------------------------------

    def is_explained(self, position: int) -> bool:
        return self.overlaps_explained(position, position + 1)

    def overlaps_explained(self, start: int, end: int) -> bool:
        """Whether a finding already covers part of ``[start, end)``."""
        return any(s < end and start < e for s, e in self.explained)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Our hash of leaves ``[start, end)``, from memoized subtrees and the leaves file."""
        found = self._memo.get((start, end))
        if found is not None:
            return found
        if start >= self.first_leaf and end - start <= 4096:
            self._leaves.flush()
            self._leaves.seek((start - self.first_leaf) * 32)
            raw = self._leaves.read((end - start) * 32)
            self._leaves.seek(0, os.SEEK_END)
            if len(raw) != (end - start) * 32:
                raise UnknownSubtree(f"leaves {start}..{end - 1} were not rebuilt")
            h = range_root([raw[i : i + 32] for i in range(0, len(raw), 32)])
        elif end - start <= 1:
            raise UnknownSubtree(f"leaf {start} lies in the prefix verified earlier")
        else:
            split = 1 << ((end - start - 1).bit_length() - 1)
            h = node_hash(
                self.subtree_hash(start, start + split), self.subtree_hash(start + split, end)
            )
        self._memo[(start, end)] = h
        return h
