"""Erasing the values of format 2 entries, provably, and showing what was erased.

An erasure first appends its record(s) to the tenant's own log (clear admin entries naming
the indexes, see :mod:`immutablelog.erasure`), then deletes the values: a crash between the
two leaves values that a record already covers ("erasure pending"), which
:meth:`Eraser.apply_pending` deletes at the next start; never values deleted without a
record. The entry bytes, the tree and every proof are untouched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from immutablelog.entry import (
    ADMIN_SERVICE,
    EntryError,
    decode_entry,
    decode_erasable,
    is_committed,
    reveal,
    timestamp,
)
from immutablelog.erasure import (
    ERASURE_EVENT,
    Coverage,
    ErasureRecord,
    check_reason,
    erasure_payloads,
    read_erasure,
    to_ranges,
)
from immutablelog.ledger.storage import EventQuery, Storage, StoredEntry, Tenant

logger = logging.getLogger(__name__)

#: Most event ids one erasure request may name (``POST /v1/erasures``); more is a 413.
MAX_ERASE_IDS: Final = 10_000
#: Records read per page when loading a tenant's erasures.
_RECORDS_PAGE = 1000

#: Appends clear admin records: ``(tenant, event name, payloads)`` -> their indexes.
AppendRecords = Callable[[Tenant, str, Sequence[str]], list[int]]


class ErasureRefused(Exception):
    """An erasure the ledger refuses: ``reason`` is the API's machine code."""

    def __init__(self, reason: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ErasureOutcome:
    """What one erasure did: the records that log it, the indexes they name, and how many
    erasable parts were deleted now (fewer if some were erased before)."""

    records: list[int]
    ranges: list[tuple[int, int]]
    erased: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "ranges": [list(r) for r in self.ranges],
            "erased": self.erased,
        }


def record_json(record: ErasureRecord) -> dict[str, Any]:
    """An erasure record as ``GET /v1/erasures`` and ``erasures export`` list it."""
    return {
        "index": record.index,
        "at": record.received_at,
        "reason": record.reason,
        "by": record.by,
        "ranges": [list(span) for span in record.ranges],
    }


class ErasureIndex:
    """Which erasure record covers an index, per tenant: read from the log's own records
    on demand and cached (records are only ever appended, so the cache only grows)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._loaded: dict[int, tuple[int, Coverage, list[ErasureRecord]]] = {}

    def records(self, tenant_id: int) -> list[ErasureRecord]:
        """Every erasure record of the tenant's log, in log order."""
        return list(self._refresh(tenant_id)[2])

    def record_for(self, tenant_id: int, index: int) -> ErasureRecord | None:
        with self._lock:
            cached = self._loaded.get(tenant_id)
        if cached is not None:
            found = cached[1].record_for(index)
            if found is not None:
                return found
        return self._refresh(tenant_id)[1].record_for(index)

    def _refresh(self, tenant_id: int) -> tuple[int, Coverage, list[ErasureRecord]]:
        with self._lock:
            after, coverage, records = self._loaded.get(tenant_id, (-1, Coverage(), []))
            while True:
                page = self._storage.query(
                    tenant_id,
                    EventQuery(
                        event_name=ERASURE_EVENT,
                        service=ADMIN_SERVICE,
                        descending=False,
                        after_index=None if after < 0 else after,
                        limit=_RECORDS_PAGE,
                    ),
                )
                for stored in page:
                    after = stored.index
                    try:
                        record = read_erasure(decode_entry(stored.data))
                    except EntryError as exc:
                        logger.warning("ignoring erasure record %d: %s", stored.index, exc)
                        continue
                    if record is not None:
                        coverage.add(record)
                        records.append(record)
                if len(page) < _RECORDS_PAGE:
                    break
            self._loaded[tenant_id] = (after, coverage, records)
            return after, coverage, records


def event_view(
    stored: StoredEntry, record_for: Callable[[int], ErasureRecord | None]
) -> dict[str, Any]:
    """An event as readers see it: the entry with its erasable values put back. Once
    erased, ``payload`` is null and ``erased`` says by which record, when, why and by
    whom; values missing or altered without a covering record give ``tampered``."""
    entry = decode_entry(stored.data)
    if not is_committed(entry):
        return entry
    if stored.erasable is not None:
        try:
            return reveal(entry, decode_erasable(entry, stored.erasable))
        except EntryError as exc:
            return {**entry, "payload": None, "tampered": exc.message}
    record = record_for(stored.index)
    if record is None:
        message = "the erasable part is missing and no erasure record covers it"
        return {**entry, "payload": None, "tampered": message}
    erased = {"index": record.index, "at": record.received_at, "reason": record.reason}
    return {**entry, "payload": None, "erased": {**erased, "by": record.by}}


class Eraser:
    """Erasures of one ledger: by index, event id or actor, the retention sweep, and
    finishing erasures a crash left pending."""

    def __init__(self, storage: Storage, append_records: AppendRecords) -> None:
        self._storage = storage
        self._append = append_records
        self.index = ErasureIndex(storage)
        # One erasure at a time per process: records and deletions stay in step.
        self._lock = threading.Lock()

    def erase(
        self,
        tenant: Tenant,
        indexes: Iterable[int],
        reason: str,
        by: str,
        *,
        present: bool = False,
    ) -> ErasureOutcome:
        """Log then erase the erasable parts at ``indexes`` (committed entries only), of
        which only those still stored count (all of them if the caller knows them to be,
        ``present``)."""
        try:
            check_reason(reason)
        except EntryError as exc:
            raise ErasureRefused("invalid_field", exc.message, 400) from None
        wanted = sorted(set(indexes))
        with self._lock:
            if not present:
                wanted = _present(self._storage, tenant.id, wanted)
            if not wanted:
                return ErasureOutcome([], [], 0)
            records = self._append(tenant, ERASURE_EVENT, erasure_payloads(wanted, reason, by))
            erased = self._storage.erase(tenant.id, wanted)
        logger.info(
            "erased %d values of tenant %r (records %s): %s", erased, tenant.name, records, reason
        )
        return ErasureOutcome(records, to_ranges(wanted), erased)

    def erase_ids(self, tenant: Tenant, ids: Sequence[str], reason: str, by: str) -> ErasureOutcome:
        """Erase the events with these ids: every one must exist (else ``not_found``) and
        commit to an erasable part (else ``not_erasable``: a format 1 entry or one of the
        log's own records, whose values are in its hashed bytes)."""
        indexes = []
        for event_id in dict.fromkeys(ids):
            stored = self._storage.entry_by_id(tenant.id, event_id)
            if stored is None:
                raise ErasureRefused("not_found", f"no event {event_id[:64]!r}", 404)
            if not is_committed(decode_entry(stored.data)):
                raise ErasureRefused(
                    "not_erasable",
                    f"event {event_id!r} keeps its values in its hashed bytes (a format 1 "
                    "entry, or one of the log's own records): it cannot be erased",
                )
            if stored.erasable is not None:  # else erased already
                indexes.append(stored.index)
        return self.erase(tenant, indexes, reason, by, present=True)

    def erase_actor(self, tenant: Tenant, actor: str, reason: str, by: str) -> ErasureOutcome:
        """Erase every event of one data subject (``actor``) still holding values."""
        found = self._storage.erasable_indexes(tenant.id, actor=actor)
        return self.erase(tenant, found, reason, by, present=True)

    def sweep_retention(self, tenants: Sequence[Tenant], now: datetime | None = None) -> int:
        """Erase what each tenant with a retention policy keeps past it: one erasure per
        tenant and sweep. Returns how many values were erased."""
        policies = self._storage.retention_days()
        now = now or datetime.now(UTC)
        total = 0
        for tenant in tenants:
            days = policies.get(tenant.id)
            if days is None:
                continue
            cutoff = timestamp(now - timedelta(days=days))
            old = self._storage.erasable_indexes(tenant.id, received_before=cutoff)
            if old:
                reason = f"retention: values kept {days} days (received before {cutoff})"
                total += self.erase(tenant, old, reason, "retention", present=True).erased
        return total

    def apply_pending(self, tenants: Sequence[Tenant]) -> int:
        """Delete values that an erasure record covers but that are still stored (a crash
        between the record and the deletion, or a backup restored under newer records)."""
        total = 0
        for tenant in tenants:
            for record in self.index.records(tenant.id):
                for start, end in record.ranges:
                    left = self._storage.erasable_indexes(tenant.id, start=start, end=end)
                    if left:
                        with self._lock:
                            total += self._storage.erase(tenant.id, left)
        if total:
            logger.warning("finished %d erasures left pending", total)
        return total


def _present(storage: Storage, tenant_id: int, wanted: Sequence[int]) -> list[int]:
    """Those of ``wanted`` (sorted) whose erasable part is still stored."""
    if not wanted:
        return []
    found = set(storage.erasable_indexes(tenant_id, start=wanted[0], end=wanted[-1] + 1))
    return [index for index in wanted if index in found]
