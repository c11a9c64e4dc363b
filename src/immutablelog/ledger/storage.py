"""The one narrow interface every storage backend implements.

The sequencer, the Merkle core and the HTTP layer only ever talk to a :class:`Storage`; a
backend (SQLite, PostgreSQL) only stores and fetches rows. All decisions — which index an
event gets, what the tree looks like, what is signed — are made above this line, so a
backend cannot get them wrong and a new backend needs no change anywhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from immutablelog.entry import Erasable
from immutablelog.ledger.key_history import KeyHistoryStorage, LogKeyTransaction
from immutablelog.merkle import NodeID

if TYPE_CHECKING:
    from immutablelog.ledger.health import StorageHealth
    from immutablelog.ledger.rollup import Cancel

#: Entries holding a full-text count's words that it looks at by default, newest first: a
#: common word is in a large part of a log, more than can be counted in the chart's time.
COUNT_MATCHES: Final = 20_000
#: How long one event count may take by default: filters the kept counts cannot hold are
#: selective in practice, and one that is not must not hold a connection for minutes.
COUNT_SECONDS: Final = 5.0

SCOPES = frozenset({"ingest", "read", "admin"})


@dataclass(frozen=True)
class EventCounts:
    """``(time bucket, type, count)`` rows of :meth:`Storage.count_events`. ``complete`` is
    false when only the newest matches of a full-text count were counted: then every
    match with an index of ``from_index`` or more is counted, and none below it."""

    rows: list[tuple[str, str, int]]
    complete: bool = True
    from_index: int | None = None


class StorageError(Exception):
    """The backend could not do what was asked (locked, unreachable, disk full)."""


class AlreadyExists(StorageError):
    """A unique name (tenant) is taken."""


class StorageUnavailable(StorageError):
    """The database cannot be reached; operations fail at once until a probe reaches it."""


class StorageFull(StorageError):
    """The disk (or the database's quota) is full: nothing can be written until space is
    freed, and what was being written was not."""


class LogIntegrityError(StorageError):
    """A tenant's stored entries are not exactly those its latest signed checkpoint covers
    (a row inserted or removed behind the ledger's back): appending to that log would sign
    over them, so it is refused until an operator has looked."""

    def __init__(self, tenant_id: int, size: int, stored_end: int) -> None:
        super().__init__(
            f"tenant {tenant_id}: the latest signed checkpoint covers {size} entries, but "
            f"entries are stored up to index {stored_end - 1}"
        )
        self.tenant_id = tenant_id


class SigningKeyMissing(StorageError):
    """The database says a key must sign, and this host does not hold its private key:
    nothing is signed (never with fewer keys than the log requires)."""


def check_tree_end(tenant_id: int, size: int, stored_end: int) -> int:
    """``size`` if the stored entries end exactly where the signed tree does, else raise
    :class:`LogIntegrityError`; ``stored_end`` is one past the last stored index."""
    if stored_end != size:
        raise LogIntegrityError(tenant_id, size, stored_end)
    return size


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    tenant_id: int
    tenant: str
    prefix: str
    scopes: frozenset[str]
    label: str | None
    created_at: str
    revoked_at: str | None
    last_used_at: str | None
    key_hash: bytes


#: The SELECT list (over ``api_keys k JOIN tenants t``) that :func:`api_key_from_row` reads.
API_KEY_COLUMNS = (
    "k.id, k.tenant_id, t.name, k.prefix, k.scopes, k.label, k.created_at, k.revoked_at, "
    "k.last_used_at, k.key_hash"
)


def stored_scopes(text: object) -> frozenset[str]:
    """The scopes of a key as stored: comma-separated, sorted when written."""
    return frozenset(str(text).split(","))


def api_key_from_row(row: Sequence[Any]) -> ApiKey:
    (kid, tenant_id, tenant, prefix, scopes, label, created, revoked, used, key_hash) = row
    return ApiKey(
        id=int(kid),
        tenant_id=int(tenant_id),
        tenant=str(tenant),
        prefix=str(prefix),
        scopes=stored_scopes(scopes),
        label=None if label is None else str(label),
        created_at=str(created),
        revoked_at=None if revoked is None else str(revoked),
        last_used_at=None if used is None else str(used),
        key_hash=bytes(key_hash),
    )


@dataclass(frozen=True, slots=True)
class ViewerLink:
    """A read-only token bound to a filter of one tenant's events (``ledger/viewer_links.py``);
    ``filters`` is the JSON object of query parameters it was created with."""

    id: int
    tenant_id: int
    tenant: str
    prefix: str
    filters: str
    label: str | None
    created_at: str
    expires_at: str
    revoked_at: str | None
    token_hash: bytes


#: The SELECT list (over ``viewer_links v JOIN tenants t``) that :func:`viewer_link_from_row`
#: reads.
VIEWER_LINK_COLUMNS = (
    "v.id, v.tenant_id, t.name, v.prefix, v.filters, v.label, v.created_at, v.expires_at, "
    "v.revoked_at, v.token_hash"
)


def viewer_link_from_row(row: Sequence[Any]) -> ViewerLink:
    (lid, tenant_id, tenant, prefix, filters, label, created, expires, revoked, token_hash) = row
    return ViewerLink(
        int(lid),
        int(tenant_id),
        str(tenant),
        str(prefix),
        str(filters),
        None if label is None else str(label),
        str(created),
        str(expires),
        None if revoked is None else str(revoked),
        bytes(token_hash),
    )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    index: int
    id: str
    received_at: str
    data: bytes
    #: The erasable part (salt, then values) stored beside a format 2 entry; ``None`` for a
    #: format 1 or clear entry, and once erased.
    erasable: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created_at: str


@dataclass(slots=True)
class NewEntry:
    """An entry row to insert: the bytes plus the columns derived from them.

    Not frozen: the single writer builds one per event, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) cost it six times as much.
    """

    index: int
    id: str
    received_at: str
    data: bytes
    type: str
    event_name: str
    service: str
    env: str | None
    request_id: str | None
    actor: str | None
    idempotency_key: str
    leaf: bytes
    #: The erasable part (salt, then values) of a format 2 entry, stored in a row of its
    #: own so that erasing it deletes it for real.
    erasable: Erasable | None = None

    def row(self, tenant_id: int) -> tuple[object, ...]:
        """The values for :data:`ENTRY_COLUMNS`, in that order."""
        return (
            tenant_id,
            self.index,
            self.id,
            self.received_at,
            self.type,
            self.event_name,
            self.service,
            self.env,
            self.request_id,
            self.actor,
            self.idempotency_key,
            self.data,
            self.leaf,
        )


#: Derived entry columns, each equal to the entry field of the same name.
DERIVED_COLUMNS = (
    "id",
    "received_at",
    "type",
    "event_name",
    "service",
    "env",
    "request_id",
    "actor",
    "idempotency_key",
)


#: The columns of an entry row, in the order of :meth:`NewEntry.row`.
ENTRY_COLUMNS = ("tenant_id", "idx", *DERIVED_COLUMNS, "entry", "leaf")
#: Derived columns that hold erasable values: nulled when the entry's values are erased.
ERASABLE_COLUMNS = ("actor",)


def erasable_values(tenant_id: int, rows: Sequence[NewEntry]) -> list[object]:
    """``(tenant_id, idx, salt, values)`` of each row with an erasable part, one after
    another (the columns of the ``erasables`` table)."""
    values: list[object] = []
    extend = values.extend
    for row in rows:
        part = row.erasable
        if part is not None:
            extend((tenant_id, row.index, part.salt, part.values))
    return values


def joined_part(salt: bytes | None, values: bytes | None) -> bytes | None:
    """The erasable part as read from its two columns (``None`` where there is none)."""
    if salt is None or values is None:
        return None
    return bytes(salt) + bytes(values)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """Everything stored about one entry, for the integrity check to compare."""

    index: int
    id: str
    received_at: str
    data: bytes
    leaf: bytes
    columns: dict[str, str | None]
    erasable: bytes | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for listing a tenant's events; every given field must match.

    ``after_index`` is the keyset cursor: strictly below it when ``descending``, else above.
    ``text`` is a full-text query over payloads (words, all of which must occur).
    """

    service: str | None = None
    env: str | None = None
    type: str | None = None
    event_name: str | None = None
    event_name_prefix: str | None = None
    request_id: str | None = None
    actor: str | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None
    descending: bool = True
    after_index: int | None = None
    limit: int = 100


_MAX_CHAR = "\U0010ffff"


def event_filters(
    tenant_id: int, query: EventQuery, mark: str, table: str = ""
) -> tuple[list[str], list[object]]:
    """The WHERE terms of an event query that every backend shares, with ``mark`` as the
    parameter placeholder and ``table`` (``"e."``, say) qualifying the columns; a backend
    adds its own full-text term, order and limit."""
    where = [f"{table}tenant_id = {mark}"]
    params: list[object] = [tenant_id]
    for column in ("service", "env", "type", "event_name", "request_id", "actor"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{table}{column} = {mark}")
            params.append(value)
    if query.event_name_prefix:
        where.append(f"{table}event_name >= {mark} AND {table}event_name < {mark}")
        params += prefix_range(query.event_name_prefix)
    if query.since is not None:
        where.append(f"{table}received_at >= {mark}")
        params.append(query.since)
    if query.until is not None:
        where.append(f"{table}received_at < {mark}")
        params.append(query.until)
    if query.after_index is not None:
        where.append(f"{table}idx < {mark}" if query.descending else f"{table}idx > {mark}")
        params.append(query.after_index)
    return where, params


def erasable_filters(
    tenant_id: int, mark: str, start: int, end: int | None, received_before: str | None
) -> tuple[list[str], list[object]]:
    """The WHERE terms of :meth:`Storage.erasable_indexes` over entries ``e`` joined with
    their erasable parts ``x``, with ``mark`` as the parameter placeholder."""
    where = [f"x.tenant_id = {mark}", f"x.idx >= {mark}"]
    params: list[object] = [tenant_id, start]
    if end is not None:
        where.append(f"x.idx < {mark}")
        params.append(end)
    if received_before is not None:
        where.append(f"e.received_at < {mark}")
        params.append(received_before)
    return where, params


def prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds of the strings starting with ``prefix``: a range, not LIKE, so that no
    character needs escaping and an index on the column serves it."""
    return prefix, prefix + _MAX_CHAR


class WriteTransaction(LogKeyTransaction, Protocol):
    """One atomic, durable write. Committed when the context exits without an exception."""

    def lock_tenant(self, tenant_id: int) -> int:
        """Serialize writers of this tenant (across processes) and return its tree size,
        after checking (:func:`check_tree_end`) that no entry lies beyond it."""
        ...

    def create_tenant(self, name: str, now: str) -> Tenant: ...

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        """As :meth:`Storage.nodes`, inside the transaction."""
        ...

    def find_by_idempotency_key(
        self, tenant_id: int, keys: Sequence[str], received_since: str
    ) -> dict[str, StoredEntry]:
        """For each key, the newest entry carrying it received at or after ``received_since``."""
        ...

    def live_keys(self, key_ids: Collection[int], scope: str) -> set[int]:
        """Those of ``key_ids`` that are unrevoked and hold ``scope``, as of this transaction."""
        ...

    def insert_entries(self, tenant_id: int, rows: Sequence[NewEntry]) -> None: ...

    def insert_nodes(self, tenant_id: int, nodes: Sequence[tuple[NodeID, bytes]]) -> None:
        """Store interior nodes (level >= 1); leaf hashes arrive with their entries."""
        ...

    def insert_checkpoint(
        self, tenant_id: int, size: int, root: bytes, note: str, now: str
    ) -> None: ...


class Storage(KeyHistoryStorage, Protocol):
    """Rows in, rows out. Safe to call from many threads; one writer at a time."""

    def initialize(self, log_name: str) -> str:
        """Create or migrate the schema; return the log name the store was created with."""
        ...

    #: The store's current faults (full, unreachable), and its fast-fail breaker.
    health: StorageHealth

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise :class:`StorageError` unless the database answers a trivial read."""
        ...

    def log_key(self) -> str | None:
        """The verifier key of the one key allowed to sign this log, once recorded."""
        ...

    def bind_log_key(self, verifier_key: str) -> str:
        """Record ``verifier_key`` as the log's key unless one is recorded already (the
        record never changes); return the recorded one."""
        ...

    def write(self) -> AbstractContextManager[WriteTransaction]: ...

    # tenants and keys
    def get_tenant(self, name: str) -> Tenant | None: ...

    def get_tenant_by_id(self, tenant_id: int) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def create_api_key(
        self,
        tenant_id: int,
        key_hash: bytes,
        prefix: str,
        scopes: frozenset[str],
        label: str | None,
        now: str,
    ) -> ApiKey: ...

    def find_api_key(self, key_hash: bytes) -> ApiKey | None: ...

    def api_keys_version(self) -> int:
        """A number that changes whenever a key is revoked, deleted or altered (not when it
        is merely used), so that callers may cache keys and re-check cheaply."""
        ...

    def list_api_keys(self, tenant_id: int | None = None) -> list[ApiKey]: ...

    def revoke_api_key(self, prefix: str, now: str) -> ApiKey | None: ...

    def touch_api_keys(self, last_used: Mapping[int, str]) -> None: ...

    # viewer links
    def create_viewer_link(
        self,
        tenant_id: int,
        token_hash: bytes,
        prefix: str,
        filters: str,
        label: str | None,
        now: str,
        expires_at: str,
    ) -> ViewerLink: ...

    def find_viewer_link(self, token_hash: bytes) -> ViewerLink | None: ...

    def list_viewer_links(self, tenant_id: int | None = None) -> list[ViewerLink]: ...

    def revoke_viewer_link(self, prefix: str, now: str) -> ViewerLink | None:
        """Revoke the unrevoked link of this prefix; return it as it now is (None: unknown)."""
        ...

    # the log
    def latest_checkpoint(self, tenant_id: int) -> StoredCheckpoint | None: ...

    def checkpoint_at(self, tenant_id: int, size: int) -> StoredCheckpoint | None: ...

    def nodes(self, tenant_id: int, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of perfect subtrees, in the order asked; level 0 is an entry's leaf hash."""
        ...

    def entries(self, tenant_id: int, start: int, end: int) -> Iterator[StoredEntry]: ...

    def entry_bytes(
        self, tenant_id: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        """``(index, entry bytes, erasable part)`` of ``[start, end)`` in index order: what
        bulk readers need, without building a :class:`StoredEntry` per row."""
        ...

    def entry_by_id(self, tenant_id: int, entry_id: str) -> StoredEntry | None: ...

    def query(self, tenant_id: int, query: EventQuery) -> list[StoredEntry]: ...

    def count_events(
        self,
        tenant_id: int,
        query: EventQuery,
        width: int,
        cancel: Cancel | None = None,
        seconds: float = COUNT_SECONDS,
        matches: int = COUNT_MATCHES,
    ) -> EventCounts:
        """``(time bucket, type, count)`` of the events matching ``query`` (its cursor and
        limit aside), a bucket being the first ``width`` characters of ``received_at``;
        with full text, among the newest ``matches`` entries holding its words (``complete``
        says if that was all of them).
        Stopped with ``CountTooSlow`` after ``seconds``, and with ``CountCancelled``
        soon after ``cancel`` is set."""
        ...

    def audit_rows(self, tenant_id: int, start: int, end: int) -> Iterator[AuditRow]: ...

    def checkpoints(self, tenant_id: int, min_size: int, max_size: int) -> list[StoredCheckpoint]:
        """Stored checkpoints with ``min_size <= size <= max_size``, by size."""
        ...

    def count_entries(self, tenant_id: int, start: int) -> int:
        """How many entries are stored at index ``start`` or beyond."""
        ...

    def index_search(self, limit: int) -> int:
        """Add up to ``limit`` not-yet-indexed entries to the full-text index; return how many."""
        ...

    def search_backlog(self) -> int:
        """How many entries, of all tenants, the full-text index does not cover yet."""
        ...

    # erasure
    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        """Delete the erasable parts of ``indexes`` for real (values and salt), null the
        derived columns that held values, and purge them from the search index; return
        how many parts were still there. Idempotent: a crash part-way is finished by
        calling it again. Only after an erasure record covering them was committed."""
        ...

    def purge_erased(self) -> bool:
        """Remove what erasures left behind in free space and old versions (SQLite: the
        search index's merged segments, the write-ahead logs; PostgreSQL: a VACUUM), if an
        erasure happened since the last call; return whether one had. Off the erasure's
        path (the upkeep thread runs it): it rewrites indexes whose size grows with the log.
        """
        ...

    def erasable_indexes(
        self,
        tenant_id: int,
        *,
        actor: str | None = None,
        received_before: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> list[int]:
        """The indexes in ``[start, end)`` whose erasable part is still stored, of entries
        by ``actor`` and/or received before ``received_before`` when given, in order."""
        ...

    def retention_days(self) -> dict[int, int]:
        """The tenants with a retention policy: days their erasable values are kept."""
        ...

    def set_retention_days(self, tenant_id: int, days: int | None) -> None:
        """Set (or with ``None`` remove) a tenant's retention policy."""
        ...

    def roll_up(self, limit: int) -> int:
        """Add up to ``limit`` not-yet-counted entries to the event counts kept ahead of
        time (``ledger/rollup.py``); return how many."""
        ...

    def rollup_backlog(self) -> int:
        """How many entries, of all tenants, the event counts do not cover yet."""
        ...

    def pack_tiles(self, limit: int) -> int:
        """Copy the full level-0 hash tiles that up to ``limit`` not-yet-packed entries
        complete into a row each (``tiles/source.py``); return how many entries were taken
        in (a backend packing whole tiles may take in a few more than ``limit``)."""
        ...

    def packed_tile(self, tenant_id: int, index: int) -> bytes | None:
        """Full level-0 tile ``index`` (256 leaf hashes) as packed, or None if it is not
        packed yet: then it is read from the entries' leaves."""
        ...

    def tile_backlog(self) -> int:
        """How many entries, of all tenants, the packed tiles do not cover yet."""
        ...


@runtime_checkable
class ReclaimsWal(Protocol):
    """A backend whose write-ahead log the ledger itself copies into the database file
    (SQLite); a database server that does its own (PostgreSQL) lacks the capability.
    The upkeep thread asks for it, so that no commit has to."""

    def reclaim_wal(self) -> None:
        """Copy committed changes from the write-ahead log into the database file, without
        blocking the writer; what a reader still needs is left for the next call."""
        ...
