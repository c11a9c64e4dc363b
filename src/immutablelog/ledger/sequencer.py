"""Group commit: the single writer that gives events their place in the log.

Requests hand their validated submissions to :meth:`Sequencer.submit` and wait on a future.
One thread takes everything queued so far, appends it in one transaction (one fsync for the
whole group), ends each touched tenant's batch with a signed checkpoint, commits, and only
then resolves the futures. While a commit is in progress new requests queue up, so the group
grows with load instead of throughput collapsing into one fsync per event.

Across processes, :meth:`WriteTransaction.lock_tenant` serializes writers (SQLite's write
lock; a row lock on PostgreSQL) and the tree size is re-read inside the lock, so the tree
never forks however many API processes share one database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from immutablelog.checkpoint import Checkpoint, Signer, sign_checkpoint
from immutablelog.entry import (
    EntryError,
    Submission,
    build_entry,
    decode_entry,
    decode_erasable,
    encode_entry,
    fingerprint_of,
    is_committed,
    new_entry_ids,
    payload_hash,
    reveal,
    timestamp,
)
from immutablelog.ledger.health import RepeatedFailure
from immutablelog.ledger.storage import (
    LogIntegrityError,
    NewEntry,
    Storage,
    StoredEntry,
    Tenant,
    WriteTransaction,
)
from immutablelog.merkle import CompactRange, frontier_ids, leaf_hash

logger = logging.getLogger(__name__)

#: The keys that sign a checkpoint made in a write transaction at a time (a timestamp).
SignersFor = Callable[[WriteTransaction, str], Sequence[Signer]]


class LedgerClosed(RuntimeError):
    """The sequencer is stopping or stopped; nothing more is accepted."""


class KeyRevoked(RuntimeError):
    """The API key a request was authenticated with was revoked (or lost its ``ingest``
    scope) before the request could be committed; nothing of it was written."""


@dataclass(frozen=True, slots=True)
class Accepted:
    index: int
    entry_id: str
    received_at: str
    leaf_hash: bytes
    payload_hash: str
    request_id: str | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    message: str


AppendResult = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What one group commit did, for metrics."""

    events: int
    duplicates: int
    seconds: float
    tree_sizes: dict[str, int]
    new_events: dict[str, int]


@dataclass
class _Request:
    tenant: Tenant
    submissions: Sequence[Submission]
    key_id: int | None = None  # the ingest key it came with, re-checked at commit
    future: Future[list[AppendResult]] = field(default_factory=Future)


_STOP = object()


#: A key already taken: the fingerprint of the submission that took it, and its answer.
_Prior = tuple[bytes, Accepted]

#: The answer to a replay with a different body (frozen, so one instance serves all).
_KEY_REUSED = Rejected(
    "idempotency_key_reused", "this Idempotency-Key was already used for a different event"
)


def _replayable(stored: StoredEntry) -> _Prior:
    """The fingerprint of a stored entry's submission, and the answer it was given.

    An entry whose erasable part was erased has no fingerprint left (``b""``): a replay
    of its key is answered as the original, a duplicate, whatever its body, since what it
    could be compared with is gone (and must not be rebuilt from the replay)."""
    entry = decode_entry(stored.data)
    fingerprint, digest = b"", ""
    if not is_committed(entry):
        fingerprint, digest = fingerprint_of(entry), payload_hash(entry)
    elif stored.erasable is not None:
        try:
            revealed = reveal(entry, decode_erasable(entry, stored.erasable))
        except EntryError:  # altered behind the ledger: nothing to compare with either
            revealed = None
        if revealed is not None:
            fingerprint, digest = fingerprint_of(revealed), payload_hash(revealed)
    return fingerprint, Accepted(
        index=stored.index,
        entry_id=stored.id,
        received_at=stored.received_at,
        leaf_hash=leaf_hash(stored.data),
        payload_hash=digest,
        request_id=entry.get("request_id"),
        duplicate=True,
    )


def _replay(prior: _Prior, sub: Submission) -> AppendResult:
    """The answer to a submission whose key is taken: the original answer, marked as a
    duplicate, if it is the same event (or the original was erased); else a rejection."""
    fingerprint, accepted = prior
    if not fingerprint:  # erased: the replay's own payload hash stands in for the lost one
        return replace(accepted, payload_hash=sub.payload_hash, duplicate=True)
    if fingerprint != sub.fingerprint:
        return _KEY_REUSED
    return accepted if accepted.duplicate else replace(accepted, duplicate=True)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class Sequencer:
    """Owns the write path of one process. Thread-safe; start once, stop once."""

    def __init__(
        self,
        storage: Storage,
        signers: SignersFor,
        log_name: str,
        *,
        max_batch_events: int = 10_000,
        idempotency_retention: timedelta = timedelta(hours=24),
        on_commit: Callable[[CommitStats], None] | None = None,
        on_key_refused: Callable[[int], None] | None = None,
        maintenance_interval: float = 1.0,
    ) -> None:
        self._storage = storage
        #: The keys that sign a checkpoint made in a transaction at a time (read from the
        #: database in that transaction, so every host switches keys at the same commit).
        self._signers = signers
        self._log_name = log_name
        self._max_batch = max_batch_events
        self._retention = idempotency_retention
        self._on_commit = on_commit
        self._on_key_refused = on_key_refused
        self._maintenance_interval = maintenance_interval
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._frontiers: dict[int, CompactRange] = {}
        self._key_uses: dict[int, float] = {}  # key id -> time.time() of its last use
        self._key_uses_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._commit_failures = RepeatedFailure(logger, "group commits")
        self._key_use_failures = RepeatedFailure(logger, "recording API key use")
        #: Tenants whose stored log does not match their signed tree: why, by name.
        self._broken: dict[str, str] = {}

    def origin(self, tenant: Tenant) -> str:
        return f"{self._log_name}/{tenant.name}"

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._state_lock:
            if self._thread is None and not self._closed:
                self._start_locked()

    def _start_locked(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="immutablelog-sequencer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Commit everything already submitted, then stop. Later submissions are refused.

        Returns whether the writer thread has ended (it may still be inside a commit).
        """
        with self._state_lock:
            thread = self._thread
            already = self._closed
            self._closed = True
        if not already:
            self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False  # still committing; it will reach the stop marker itself
        self._fail_pending(LedgerClosed("the ledger is shutting down"))
        return True

    def submit(
        self, tenant: Tenant, submissions: Sequence[Submission], key_id: int | None = None
    ) -> Future[list[AppendResult]]:
        """Queue for the next group commit. With ``key_id``, the commit first checks that
        this key may still ingest (else the future fails with :class:`KeyRevoked`)."""
        request = _Request(tenant, submissions, key_id)
        with self._state_lock:
            if self._closed:
                raise LedgerClosed("the ledger is shutting down")
            if self._thread is None:
                self._start_locked()
            self._queue.put(request)
        return request.future

    def broken_logs(self) -> dict[str, str]:
        """The tenants whose appends are refused because their stored entries do not
        match their signed checkpoint (:class:`LogIntegrityError`), and why."""
        return dict(self._broken)

    def record_key_use(self, key_id: int) -> None:
        """Remember that a key was used; formatted and written in the background, not per
        request."""
        with self._key_uses_lock:
            self._key_uses[key_id] = time.time()

    # the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        next_maintenance = time.monotonic() + self._maintenance_interval
        stopping = False
        while not stopping:
            timeout = max(0.0, next_maintenance - time.monotonic())
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = None
            group: list[_Request] = []
            if first is _STOP:
                stopping = True
            elif isinstance(first, _Request):
                group.append(first)
                count = len(first.submissions)
                while count < self._max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stopping = True
                        break
                    assert isinstance(more, _Request)
                    group.append(more)
                    count += len(more.submissions)
            if group:
                self._commit_group(group)
            if stopping or time.monotonic() >= next_maintenance:
                self._maintain()
                next_maintenance = time.monotonic() + self._maintenance_interval

    def _fail_pending(self, error: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request) and not item.future.done():
                item.future.set_exception(error)

    def _maintain(self) -> None:
        with self._key_uses_lock:
            uses, self._key_uses = self._key_uses, {}
        try:
            self._storage.touch_api_keys(
                {
                    key_id: timestamp(datetime.fromtimestamp(when, UTC))
                    for key_id, when in uses.items()
                }
            )
        except Exception as exc:  # the writer thread must outlive any failure
            self._key_use_failures.raised(exc)
            with self._key_uses_lock:
                self._key_uses = {**uses, **self._key_uses}
        else:
            self._key_use_failures.succeeded()

    def _commit_group(self, group: list[_Request]) -> None:
        started = time.perf_counter()
        by_tenant: dict[int, list[_Request]] = {}
        for request in group:
            by_tenant.setdefault(request.tenant.id, []).append(request)
        outcomes: dict[int, list[AppendResult]] = {}
        frontiers: dict[int, CompactRange] = {}
        new_events: dict[str, int] = {}
        duplicates = 0
        refused: list[_Request] = []
        broken: dict[int, LogIntegrityError] = {}
        try:
            with self._storage.write() as tx:
                refused = self._refuse_revoked_keys(tx, group, by_tenant)
                signers = self._signers(tx, timestamp()) if by_tenant else []
                for tenant_id, requests in by_tenant.items():
                    try:
                        rng, n_new, n_dup = self._append_tenant(tx, requests, outcomes, signers)
                    except LogIntegrityError as exc:
                        # Refused before anything of this tenant was written: the other
                        # tenants of the group still commit.
                        broken[tenant_id] = exc
                        continue
                    frontiers[tenant_id] = rng
                    new_events[requests[0].tenant.name] = n_new
                    duplicates += n_dup
        except Exception as exc:
            self._commit_failures.raised(exc)
            for tenant_id in by_tenant:
                self._frontiers.pop(tenant_id, None)
            for request in group:
                request.future.set_exception(exc)
            return
        self._commit_failures.succeeded()
        self._note_broken(by_tenant, broken)
        for request in refused:
            request.future.set_exception(KeyRevoked("the API key was revoked"))
        for tenant_id, error in broken.items():
            for request in by_tenant.pop(tenant_id):
                request.future.set_exception(error)
        self._frontiers.update(frontiers)
        if self._on_commit is not None:
            # Before the answers: whoever sees a 2xx also sees it counted.
            sizes = {reqs[0].tenant.name: frontiers[tid].size for tid, reqs in by_tenant.items()}
            stats = CommitStats(
                sum(new_events.values()),
                duplicates,
                time.perf_counter() - started,
                sizes,
                new_events,
            )
            try:
                self._on_commit(stats)
            except Exception:  # a listener's bug must not withhold committed answers
                logger.exception("a commit listener failed")
        for request in group:
            if id(request) in outcomes:
                request.future.set_result(outcomes[id(request)])

    def _note_broken(
        self, by_tenant: dict[int, list[_Request]], broken: dict[int, LogIntegrityError]
    ) -> None:
        """Log a tenant's log breaking, or appending again, once per change."""
        for tenant_id, requests in by_tenant.items():
            name = requests[0].tenant.name
            error = broken.get(tenant_id)
            if error is not None and name not in self._broken:
                self._broken[name] = str(error)
                logger.error(
                    "the log of tenant %r no longer matches its signed checkpoint: %s. "
                    "Appends to it are refused (reason log_integrity) until an operator "
                    "removes what was written behind the ledger; see the README",
                    name,
                    error,
                )
            elif error is None and self._broken.pop(name, None) is not None:
                logger.warning("the log of tenant %r accepts appends again", name)

    def _refuse_revoked_keys(
        self,
        tx: WriteTransaction,
        group: list[_Request],
        by_tenant: dict[int, list[_Request]],
    ) -> list[_Request]:
        """Take out of this commit the requests whose key was revoked since it was
        authenticated (the server authenticates from a cache; this is the exact check, one
        indexed read per commit inside its transaction)."""
        key_ids = {r.key_id for r in group if r.key_id is not None}
        if not key_ids:
            return []
        live = tx.live_keys(key_ids, "ingest")
        refused = [r for r in group if r.key_id is not None and r.key_id not in live]
        for request in refused:
            by_tenant[request.tenant.id].remove(request)
            if not by_tenant[request.tenant.id]:
                del by_tenant[request.tenant.id]
        if refused and self._on_key_refused is not None:
            for key_id in key_ids - live:
                self._on_key_refused(key_id)
        return refused

    def _frontier(self, tx: WriteTransaction, tenant_id: int, size: int) -> CompactRange:
        cached = self._frontiers.get(tenant_id)
        if cached is not None and cached.size == size:
            return cached.copy()
        # Another process appended since we last wrote (or first write): reload O(log n) nodes.
        return CompactRange(size, tx.nodes(tenant_id, frontier_ids(size)))

    def _append_tenant(
        self,
        tx: WriteTransaction,
        requests: list[_Request],
        outcomes: dict[int, list[AppendResult]],
        signers: Sequence[Signer],
    ) -> tuple[CompactRange, int, int]:
        tenant = requests[0].tenant
        size = tx.lock_tenant(tenant.id)
        rng = self._frontier(tx, tenant.id, size)
        now = datetime.now(UTC)
        seen = self._replays(tx, tenant.id, requests, now)
        received_at = timestamp(now)
        rows, n_dup = _place(requests, seen, outcomes, tenant.name, size, received_at)
        if rows:
            nodes = rng.extend([row.leaf for row in rows])
            tx.insert_entries(tenant.id, rows)
            tx.insert_nodes(tenant.id, nodes)
            root = rng.root()
            note = sign_checkpoint(signers, Checkpoint(self.origin(tenant), rng.size, root))
            tx.insert_checkpoint(tenant.id, rng.size, root, note, received_at)
        return rng, len(rows), n_dup

    def _replays(
        self, tx: WriteTransaction, tenant_id: int, requests: list[_Request], now: datetime
    ) -> dict[str, _Prior]:
        """The stored entries, within the retention window, whose Idempotency-Keys these
        requests carry: one lookup for the whole group."""
        keys = list({s.idempotency_key for r in requests for s in r.submissions})
        known = tx.find_by_idempotency_key(tenant_id, keys, timestamp(now - self._retention))
        return {key: _replayable(stored) for key, stored in known.items()}


def _place(
    requests: list[_Request],
    seen: dict[str, _Prior],
    outcomes: dict[int, list[AppendResult]],
    tenant: str,
    size: int,
    received_at: str,
) -> tuple[list[NewEntry], int]:
    """Give each new submission the next index of the tenant's log (from ``size`` on) and
    build its row; answer each replay from ``seen``, which gains the new keys, so that a key
    repeated within the group is a replay too. Fills ``outcomes`` (per request) and returns
    the rows and the number of duplicates.

    The one loop over every event on the single writer's thread: what does not depend on
    the place (validation, hashes, fingerprints) was done by the request before it queued.
    """
    fresh_ids = iter(new_entry_ids(sum(len(r.submissions) for r in requests)))
    rows: list[NewEntry] = []
    add_row = rows.append
    index = size
    n_dup = 0
    for request in requests:
        results: list[AppendResult] = []
        answer = results.append
        for sub in request.submissions:
            key = sub.idempotency_key
            prior = seen.get(key)
            if prior is not None:
                result = _replay(prior, sub)
                n_dup += isinstance(result, Accepted)
                answer(result)
                continue
            entry_id = next(fresh_ids)
            data = encode_entry(
                build_entry(
                    sub, tenant=tenant, index=index, entry_id=entry_id, received_at=received_at
                )
            )
            leaf = leaf_hash(data)
            meta = sub.meta
            request_id = meta.get("request_id")
            add_row(
                NewEntry(
                    index=index,
                    id=entry_id,
                    received_at=received_at,
                    data=data,
                    type=meta["type"],
                    event_name=meta["event_name"],
                    service=meta["service"],
                    env=meta.get("env"),
                    request_id=request_id,
                    actor=_text_or_none(meta.get("actor")),
                    idempotency_key=key,
                    leaf=leaf,
                    erasable=sub.erasable,
                )
            )
            accepted = Accepted(
                index=index,
                entry_id=entry_id,
                received_at=received_at,
                leaf_hash=leaf,
                payload_hash=sub.payload_hash,
                request_id=request_id,
                duplicate=False,
            )
            seen[key] = (sub.fingerprint, accepted)
            answer(accepted)
            index += 1
        outcomes[id(request)] = results
    return rows, n_dup
