"""The server's own integrity check (``GET /v1/verify``).

It recomputes every leaf from the stored entry bytes, rebuilds the roots, compares them with
every signed checkpoint in range, checks each signature and each derived column, each
erasable part against its entry's commitment (a missing one must be covered by an erasure
record), and each packed level-0 tile (``tiles/source.py``) against the leaves it copies.
It finds accidents and clumsy tampering; it cannot find a history rewritten together with
all of its hashes and signatures — only a verifier that kept an earlier checkpoint can
(``verify/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from immutablelog.checkpoint import NoteError, Verifier, open_checkpoint
from immutablelog.entry import EntryError, decode_entry, decode_erasable, is_committed, reveal
from immutablelog.erasure import ErasureRecord
from immutablelog.ledger.storage import (
    ERASABLE_COLUMNS,
    AuditRow,
    Storage,
    StoredCheckpoint,
    Tenant,
)
from immutablelog.merkle import CompactRange, frontier_ids, leaf_hash
from immutablelog.tiles.layout import TILE_WIDTH

MAX_BREAKS = 100


@dataclass(frozen=True, slots=True)
class Break:
    """One finding: ``kind`` is altered_entry, altered_column, altered_erasable,
    missing_erasable, missing_entry, extra_entry, root_mismatch, bad_signature or
    altered_tile."""

    kind: str
    message: str
    index: int | None = None
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "event_id": self.event_id,
            "message": self.message,
        }


@dataclass
class IntegrityReport:
    tree_size: int
    start: int
    end: int
    events_checked: int = 0
    #: Entries whose erasable part is gone, each covered by an erasure record.
    events_erased: int = 0
    checkpoints_checked: int = 0
    breaks: list[Break] = field(default_factory=list)
    truncated: bool = False

    @property
    def valid(self) -> bool:
        return not self.breaks

    def add(self, finding: Break) -> None:
        if len(self.breaks) < MAX_BREAKS:
            self.breaks.append(finding)
        else:
            self.truncated = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "tree_size": self.tree_size,
            "from": self.start,
            "to": self.end,
            "events_checked": self.events_checked,
            "events_erased": self.events_erased,
            "checkpoints_checked": self.checkpoints_checked,
            "breaks": [b.as_dict() for b in self.breaks],
            "truncated": self.truncated,
        }


#: The erasure record covering an index, if any.
RecordFor = Callable[[int], ErasureRecord | None]


def _revealed(
    row: AuditRow, entry: dict[str, Any], record_for: RecordFor, report: IntegrityReport
) -> dict[str, Any] | None:
    """The entry with its erasable values (as its derived columns were made from), after
    checking them against its commitment; missing values must be covered by a record.
    ``None`` where values are missing or altered without one (already a break)."""
    if not is_committed(entry):
        return entry
    if row.erasable is None:
        if record_for(row.index) is None:
            report.add(
                Break(
                    "missing_erasable",
                    "the erasable part is missing and no erasure record covers it",
                    row.index,
                    row.id,
                )
            )
            return None
        report.events_erased += 1
        return entry
    try:
        return reveal(entry, decode_erasable(entry, row.erasable))
    except EntryError as exc:
        report.add(Break("altered_erasable", exc.message, row.index, row.id))
        return None


def _check_row(
    row: AuditRow, expected: int, tenant: Tenant, report: IntegrityReport, record_for: RecordFor
) -> None:
    try:
        entry = decode_entry(row.data)
    except EntryError as exc:
        report.add(Break("altered_entry", f"entry bytes are invalid: {exc}", row.index, row.id))
        return
    revealed = _revealed(row, entry, record_for, report)
    if entry["index"] != expected or entry["tenant"] != tenant.name:
        report.add(
            Break("altered_entry", "the entry names another index or tenant", row.index, row.id)
        )
    if leaf_hash(row.data) != row.leaf:
        report.add(
            Break(
                "altered_entry",
                "the entry bytes no longer match the committed leaf hash",
                row.index,
                row.id,
            )
        )
    for column, stored in row.columns.items():
        if revealed is None and column in ERASABLE_COLUMNS:
            continue  # what it was derived from is gone (a break already says so)
        value = (revealed or entry).get(column)
        if stored != (value if isinstance(value, str) else None):
            report.add(
                Break(
                    "altered_column",
                    f"column {column} is {stored!r}, the entry says {value!r}",
                    row.index,
                    row.id,
                )
            )


class _PackedTiles:
    """Compares each full level-0 tile the check walks through, gap-free, with its packed
    copy: served in place of the entries' leaves, it must be exactly those."""

    def __init__(self, storage: Storage, tenant: Tenant, report: IntegrityReport) -> None:
        self._storage, self._tenant, self._report = storage, tenant, report
        self._leaves: list[bytes] | None = None  # None: the current tile cannot be compared
        self._next = -1

    def add(self, row: AuditRow) -> None:
        if row.index % TILE_WIDTH == 0:
            self._leaves = []
        elif row.index != self._next:
            self._leaves = None
        self._next = row.index + 1
        if self._leaves is None:
            return
        self._leaves.append(row.leaf)
        if len(self._leaves) == TILE_WIDTH:
            self._compare(row.index // TILE_WIDTH, b"".join(self._leaves))

    def _compare(self, tile: int, leaves: bytes) -> None:
        packed = self._storage.packed_tile(self._tenant.id, tile)
        if packed is not None and packed != leaves:
            first = tile * TILE_WIDTH
            self._report.add(
                Break(
                    "altered_tile",
                    f"the packed copy of level-0 tile {tile} differs from the leaf hashes of "
                    f"entries {first}..{first + TILE_WIDTH - 1}",
                    first,
                )
            )


def _check_checkpoint(
    stored: StoredCheckpoint,
    root: bytes,
    verifier: Verifier | Sequence[Verifier],
    origin: str,
    report: IntegrityReport,
) -> None:
    report.checkpoints_checked += 1
    try:
        signed = open_checkpoint(verifier, stored.note, expected_origin=origin)
    except NoteError as exc:
        report.add(Break("bad_signature", f"checkpoint of size {stored.size}: {exc}"))
        return
    if signed.size != stored.size or signed.root_hash != stored.root:
        report.add(
            Break(
                "bad_signature", f"checkpoint of size {stored.size}: the signed note says otherwise"
            )
        )
    if root != signed.root_hash:
        index = stored.size - 1 if stored.size else None
        report.add(
            Break(
                "root_mismatch",
                f"the entries do not hash to the signed root of size {stored.size}",
                index,
            )
        )


def check_log(
    storage: Storage,
    tenant: Tenant,
    origin: str,
    verifier: Verifier | Sequence[Verifier],
    start: int = 0,
    end: int | None = None,
    record_for: RecordFor = lambda index: None,
) -> IntegrityReport:
    """Check entries ``[start, end)`` (default: the whole signed log) and their checkpoints.

    From ``start > 0`` the stored frontier nodes at ``start`` are taken as given.
    """
    latest = storage.latest_checkpoint(tenant.id)
    tree_size = latest.size if latest else 0
    end = tree_size if end is None else min(end, tree_size)
    start = min(start, end)
    report = IntegrityReport(tree_size, start, end)
    rng = CompactRange(start, storage.nodes(tenant.id, frontier_ids(start)) if start else ())
    pending = iter(storage.checkpoints(tenant.id, start + 1 if start else 0, end))
    upcoming = next(pending, None)
    if upcoming is not None and upcoming.size == rng.size:
        _check_checkpoint(upcoming, rng.root(), verifier, origin, report)
        upcoming = next(pending, None)
    tiles = _PackedTiles(storage, tenant, report)
    for row in storage.audit_rows(tenant.id, start, end):
        while rng.size < row.index:  # a gap: entries are missing
            report.add(Break("missing_entry", f"no entry at index {rng.size}", rng.size))
            rng.append(bytes(32))
        _check_row(row, rng.size, tenant, report, record_for)
        tiles.add(row)
        rng.append(leaf_hash(row.data))
        report.events_checked += 1
        while upcoming is not None and upcoming.size <= rng.size:
            if upcoming.size == rng.size:
                _check_checkpoint(upcoming, rng.root(), verifier, origin, report)
            upcoming = next(pending, None)
    if rng.size < end:
        report.add(Break("missing_entry", f"entries {rng.size}..{end - 1} are missing", rng.size))
    extra = storage.count_entries(tenant.id, tree_size)
    if extra and end == tree_size:
        report.add(
            Break(
                "extra_entry",
                f"{extra} entries are stored beyond the signed tree size {tree_size}",
                tree_size,
            )
        )
    return report
