"""The ledger: one object that the server, the CLI and the SDK's embedded mode all use.

It ties a storage backend, the log's signing key and the sequencer together and answers in
terms of the log (tenants, keys, checkpoints, proofs); HTTP and the command line are thin
layers over it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from immutablelog._uuid import uuid7
from immutablelog.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    load_or_create_signer,
    open_checkpoint,
    sign_checkpoint,
)
from immutablelog.entry import ADMIN_SERVICE, Submission, timestamp, validate_submission
from immutablelog.ledger import keys
from immutablelog.ledger.erasing import Eraser, event_view
from immutablelog.ledger.integrity import IntegrityReport, check_log
from immutablelog.ledger.key_history import Handover, LogKey, signing_keys
from immutablelog.ledger.keyring import KeyRing
from immutablelog.ledger.retention import RetentionSweeper
from immutablelog.ledger.rollup import Cancel
from immutablelog.ledger.sequencer import Accepted, AppendResult, CommitStats, Sequencer
from immutablelog.ledger.storage import (
    COUNT_MATCHES,
    COUNT_SECONDS,
    AlreadyExists,
    ApiKey,
    EventCounts,
    EventQuery,
    SigningKeyMissing,
    Storage,
    StorageError,
    StoredCheckpoint,
    StoredEntry,
    Tenant,
    WriteTransaction,
)
from immutablelog.ledger.upkeep import Upkeep
from immutablelog.merkle import EMPTY_ROOT, consistency_nodes, inclusion_nodes

logger = logging.getLogger(__name__)

DEFAULT_LOG_NAME = "immutablelog"
DEFAULT_TENANT = "default"
#: The ``service`` of events the log records about itself.
#: Authenticated keys kept in memory per ledger (the cache is simply emptied when full).
_LIVE_KEYS_CACHED = 10_000
_TENANT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")

CommitListener = Callable[[CommitStats], None]

#: Where a host's processes and commands find the log's signing key file (``--signing-key``).
SIGNING_KEY_ENV = "IMMUTABLELOG_SIGNING_KEY_FILE"
#: ``LedgerConfig.count_seconds`` for a server's worker processes (``serve --count-timeout``).
COUNT_TIMEOUT_ENV = "IMMUTABLELOG_COUNT_TIMEOUT"
#: ``LedgerConfig.count_matches`` for a server's worker processes (``serve --count-matches``).
COUNT_MATCHES_ENV = "IMMUTABLELOG_COUNT_MATCHES"
_PROVIDE_KEY = (
    "Start this host with the log's own key file, copied from a host that serves this log: "
    f"--signing-key FILE or the environment variable {SIGNING_KEY_ENV}"
)


#: The shortest rotation: long enough that witnesses and verifiers can see both signatures.
MIN_TRANSITION = timedelta(minutes=1)


@dataclass(frozen=True)
class Rotation:
    """A rotation of the log key: the outgoing key retires at ``old_key_retires_at``."""

    old_key: str
    new_key: str
    old_key_retires_at: str


class LedgerError(ValueError):
    """A request the ledger refuses: ``reason`` is a machine code for the API's error body."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LedgerConfig:
    """Where the ledger lives and how it behaves. Every field has a working default."""

    data_dir: Path = field(default_factory=lambda: Path("immutablelog-data"))
    log_name: str = DEFAULT_LOG_NAME
    signing_key_file: Path | None = None
    database_url: str | None = None
    idempotency_retention: timedelta = timedelta(hours=24)
    max_batch_events: int = 10_000
    #: Seconds between retention sweeps of a started ledger (a server).
    retention_interval: float = 3600.0
    #: Seconds one event count may take before it is stopped (``count_too_broad``).
    count_seconds: float = COUNT_SECONDS
    #: Entries holding the words that one full-text event count looks at, newest first.
    count_matches: int = COUNT_MATCHES

    @property
    def key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "log-signing.key"


def _rotation_in_progress(current: list[LogKey]) -> LedgerError:
    return LedgerError(
        "rotation_in_progress",
        f"a rotation is under way until {current[0].retired_at}: wait for it to end or end it "
        "with `immutablelog log-key finish`",
    )


def check_tenant_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _TENANT_NAME_CHARS:
        raise LedgerError(
            "invalid_tenant",
            "tenant names are 1-64 characters of a-z, 0-9, '-', '_' and '.'",
        )
    return name


def open_storage(config: LedgerConfig) -> Storage:
    """The backend the configuration names: PostgreSQL for a URL, else the SQLite file."""
    if config.database_url:
        from immutablelog.ledger.postgres import PostgresStorage

        storage: Storage = PostgresStorage(config.database_url)
        return storage
    from immutablelog.ledger.sqlite import SQLiteStorage

    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SQLiteStorage(config.data_dir / "ledger.db")


class Ledger:
    """Tenants, keys and one append-only, signed Merkle log per tenant."""

    def __init__(
        self, storage: Storage, keyring: KeyRing, config: LedgerConfig | None = None
    ) -> None:
        self.config = config or LedgerConfig()
        self.storage = storage
        self.keyring = keyring
        self.log_name = storage.initialize(self.config.log_name)
        if keyring.log_name != self.log_name:
            raise LedgerError(
                "key_mismatch",
                f"the signing keys are named {keyring.log_name!r} but this log is "
                f"{self.log_name!r}",
            )
        self._bind_signing_key()
        self._commit_listeners: list[CommitListener] = []
        self._upkeep = Upkeep(storage)
        self.erasures = Eraser(storage, self._append_records)
        self._sweeper = RetentionSweeper(
            self.erasures, self.tenants, self.config.retention_interval, storage.lease
        )
        self._live_keys: dict[bytes, ApiKey] = {}
        self._keys_version = -1
        self._sequencer = Sequencer(
            storage,
            self._signers,
            self.log_name,
            max_batch_events=self.config.max_batch_events,
            idempotency_retention=self.config.idempotency_retention,
            on_commit=self._committed,
            on_key_refused=self._forget_key,
        )

    @classmethod
    def open(cls, config: LedgerConfig | None = None) -> Ledger:
        config = config or LedgerConfig()
        storage = open_storage(config)
        try:
            # The stored log name wins over the configured one: a log never changes its name.
            log_name = storage.initialize(config.log_name)
            if not storage.log_keys():
                # A new log (or one from before keys were recorded): this host's key file,
                # made now if there is none, is checked and recorded by the constructor.
                config.key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                load_or_create_signer(config.key_path, log_name)
            return cls(storage, KeyRing(config.key_path, log_name), config)
        except BaseException:
            storage.close()
            raise

    def _bind_signing_key(self) -> None:
        """Sign only a log whose database names this host's keys, recording the first key.

        A log without a recorded key (new, or from before keys were recorded) adopts this
        host's key only if it signed the latest checkpoint of every tenant: whoever holds
        another key is told which key to bring instead of signing checkpoints no verifier
        accepts. A log with a key history needs the keys that sign now (a host without them
        refuses to start), and a host whose own key file is not in that history is refused.
        """
        primary = self.keyring.primary()
        history = self.storage.log_keys()
        if not history:
            if primary is None:
                raise LedgerError("key_missing", f"there is no key file at {self.keyring.key_path}")
            ours = primary.verifier_key()
            verifier = Verifier(ours)
            for tenant in self.storage.list_tenants():
                latest = self.storage.latest_checkpoint(tenant.id)
                if latest is None:
                    continue
                try:
                    open_checkpoint(verifier, latest.note, self.origin(tenant))
                except NoteError:
                    raise LedgerError(
                        "key_mismatch",
                        f"the latest checkpoint of tenant {tenant.name!r} is not signed by this "
                        f"host's key {ours}. {_PROVIDE_KEY}",
                    ) from None
            self.storage.bind_log_key(ours)
            history = self.storage.log_keys()
        signing = signing_keys(history, timestamp())
        if primary is not None and primary.verifier_key() not in {k.key for k in history}:
            raise LedgerError(
                "key_mismatch",
                f"this log is signed by the key {signing[-1].key}, but this host's key "
                f"({self.keyring.key_path}) is {primary.verifier_key()}. {_PROVIDE_KEY}",
            )
        try:
            self.keyring.signers(signing)
        except SigningKeyMissing as exc:
            raise LedgerError("key_missing", f"{exc}. {_PROVIDE_KEY}") from None

    def _signers(self, tx: WriteTransaction, now: str) -> list[Signer]:
        """The keys that sign a checkpoint made in ``tx`` at ``now``, as its database says."""
        return self.keyring.signers(signing_keys(tx.log_keys(), now))

    def start(self) -> None:
        """Start the writer and the upkeep thread now (a server does, so that the search
        index catches up before the first write)."""
        self._sequencer.start()
        self._upkeep.start()
        self._sweeper.start()

    def close(self) -> None:
        self._sweeper.stop()
        stopped = self._sequencer.stop()
        if self._upkeep.stop() and stopped:
            with contextlib.suppress(StorageError):  # the next start purges it instead
                self.storage.purge_erased()  # what an erasure just now left behind
            self.storage.close()
        else:
            # Closing connections under a live writer would crash it mid-commit; the process
            # is exiting anyway, and the transaction either commits or rolls back on its own.
            logger.warning("the ledger writer is still busy; leaving its connections open")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._commit_listeners.append(listener)

    def _committed(self, stats: CommitStats) -> None:
        if stats.events:
            # Not woken per commit: indexing half a second of commits at once costs less
            # per entry than indexing each small commit on its own.
            self._upkeep.start()  # a no-op once started
        for listener in self._commit_listeners:
            listener(stats)

    def _forget_key(self, key_id: int) -> None:
        """A commit found this cached key revoked: its next use reads the database again."""
        self._live_keys = {d: k for d, k in self._live_keys.items() if k.id != key_id}

    # tenants ---------------------------------------------------------------------------
    def origin(self, tenant: Tenant) -> str:
        return f"{self.log_name}/{tenant.name}"

    def tenant(self, name: str) -> Tenant:
        found = self.storage.get_tenant(name)
        if found is None:
            raise LedgerError("unknown_tenant", f"no tenant named {name!r}")
        return found

    def tenants(self) -> list[Tenant]:
        return self.storage.list_tenants()

    def create_tenant(self, name: str) -> Tenant:
        """Create a tenant whose log starts with a signed checkpoint of the empty tree."""
        check_tenant_name(name)
        now = timestamp()
        try:
            with self.storage.write() as tx:
                tenant = tx.create_tenant(name, now)
                empty = Checkpoint(self.origin(tenant), 0, EMPTY_ROOT)
                note = sign_checkpoint(self._signers(tx, now), empty)
                tx.insert_checkpoint(tenant.id, 0, EMPTY_ROOT, note, now)
        except AlreadyExists as exc:
            raise LedgerError("tenant_exists", str(exc)) from None
        self.record_admin_event(tenant, "immutablelog.tenant.created", {"tenant": name}).result()
        return tenant

    # keys ------------------------------------------------------------------------------
    def create_api_key(
        self, tenant_name: str, scopes: frozenset[str], label: str | None = None
    ) -> tuple[str, ApiKey]:
        """Returns the secret (shown once, never stored) and the stored record."""
        tenant = self.tenant(tenant_name)
        secret = keys.new_api_key()
        record = self.storage.create_api_key(
            tenant.id,
            keys.hash_api_key(secret),
            keys.display_prefix(secret),
            scopes,
            label,
            timestamp(),
        )
        details = {"key": record.prefix, "scopes": sorted(scopes), "label": label}
        self.record_admin_event(tenant, "immutablelog.key.created", details).result()
        return secret, record

    def api_keys(self, tenant_name: str | None = None) -> list[ApiKey]:
        tenant_id = None if tenant_name is None else self.tenant(tenant_name).id
        return self.storage.list_api_keys(tenant_id)

    def revoke_api_key(self, prefix: str) -> ApiKey:
        revoked = self.storage.revoke_api_key(prefix, timestamp())
        if revoked is None:
            raise LedgerError("unknown_key", f"no API key with prefix {prefix!r}")
        tenant = Tenant(revoked.tenant_id, revoked.tenant, "")
        self.record_admin_event(tenant, "immutablelog.key.revoked", {"key": prefix}).result()
        return revoked

    def authenticate(self, presented: str, *, checked_at_commit: bool = False) -> ApiKey | None:
        """The live key behind a presented secret, or None (unknown, malformed or revoked).

        Live keys are cached. The cache is dropped whenever the stored keys version moves
        (every revocation bumps it, by trigger), which costs one small read per call; with
        ``checked_at_commit`` even that is skipped, because the caller passes the key to
        :meth:`submit`, whose commit re-checks it exactly.
        """
        if not keys.well_formed(presented):
            return None
        digest = keys.hash_api_key(presented)
        if not checked_at_commit:
            # Read the version first: a key revoked after that read is then cached under a
            # version that is already stale.
            version = self.storage.api_keys_version()
            if version != self._keys_version:
                self._live_keys = {}
                self._keys_version = version
        record = self._live_keys.get(digest)
        if record is None:
            record = self.storage.find_api_key(digest)
            if record is None or record.revoked_at is not None:
                return None
            if not keys.same_hash(record.key_hash, digest):
                return None
            if len(self._live_keys) >= _LIVE_KEYS_CACHED:
                self._live_keys = {}
            self._live_keys[digest] = record
        self._sequencer.record_key_use(record.id)
        return record

    # writing ---------------------------------------------------------------------------
    def submit(
        self, tenant: Tenant, submissions: Sequence[Submission], key: ApiKey | None = None
    ) -> Future[list[AppendResult]]:
        """Queue submissions for the next group commit; the future resolves once durable.

        With ``key``, the commit refuses them (:class:`KeyRevoked`) if that key can no longer
        ingest by then.
        """
        return self._sequencer.submit(tenant, submissions, None if key is None else key.id)

    def append(
        self, tenant: Tenant, submissions: Sequence[Submission], timeout: float | None = 60.0
    ) -> list[AppendResult]:
        return self.submit(tenant, submissions).result(timeout)

    # reading ---------------------------------------------------------------------------
    def checkpoint(self, tenant: Tenant) -> StoredCheckpoint:
        found = self.storage.latest_checkpoint(tenant.id)
        if found is None:  # a tenant always has at least the empty checkpoint
            raise LedgerError("not_found", f"tenant {tenant.name!r} has no checkpoint")
        return found

    def checkpoint_at(self, tenant: Tenant, size: int) -> StoredCheckpoint:
        found = self.storage.checkpoint_at(tenant.id, size)
        if found is None:
            raise LedgerError("not_found", f"no checkpoint of tree size {size}")
        return found

    def _check_size(self, tenant: Tenant, size: int) -> None:
        current = self.checkpoint(tenant).size
        if size > current:
            raise LedgerError(
                "size_out_of_range", f"tree size {size} is beyond the current size {current}"
            )

    def inclusion_proof(self, tenant: Tenant, index: int, size: int) -> list[bytes]:
        """Audit path for leaf ``index`` in the tree of ``size``: O(log n) stored nodes."""
        if not 0 <= index < size:
            raise LedgerError("index_out_of_range", f"index {index} is not in a tree of {size}")
        self._check_size(tenant, size)
        plan = inclusion_nodes(index, size)
        return plan.rehash(self.storage.nodes(tenant.id, plan.ids))

    def consistency_proof(self, tenant: Tenant, size1: int, size2: int) -> list[bytes]:
        if not 0 <= size1 <= size2:
            raise LedgerError("size_out_of_range", "need 0 <= first <= second")
        self._check_size(tenant, size2)
        plan = consistency_nodes(size1, size2)
        return plan.rehash(self.storage.nodes(tenant.id, plan.ids))

    def entries(self, tenant: Tenant, start: int, end: int) -> Iterator[StoredEntry]:
        return self.storage.entries(tenant.id, start, end)

    def entry_bytes(
        self, tenant: Tenant, start: int, end: int
    ) -> Iterator[tuple[int, bytes, bytes | None]]:
        return self.storage.entry_bytes(tenant.id, start, end)

    def event_view(self, tenant: Tenant, stored: StoredEntry) -> dict[str, Any]:
        """The event a reader sees (see :func:`erasing.event_view`)."""
        return event_view(stored, lambda index: self.erasures.index.record_for(tenant.id, index))

    def entry(self, tenant: Tenant, entry_id: str) -> StoredEntry:
        found = self.storage.entry_by_id(tenant.id, entry_id)
        if found is None:
            raise LedgerError("not_found", f"no event {entry_id!r}")
        return found

    def query(self, tenant: Tenant, query: EventQuery) -> list[StoredEntry]:
        return self.storage.query(tenant.id, query)

    def broken_logs(self) -> dict[str, str]:
        """Tenants whose appends are refused because their stored entries no longer match
        their signed checkpoint (seen by this process's writer), and why."""
        return self._sequencer.broken_logs()

    def count_events(
        self, tenant: Tenant, query: EventQuery, width: int, cancel: Cancel | None = None
    ) -> EventCounts:
        return self.storage.count_events(
            tenant.id, query, width, cancel, self.config.count_seconds, self.config.count_matches
        )

    def time_bounds(self, tenant: Tenant) -> tuple[str, str] | None:
        """When the tenant's first and latest committed events were received."""
        size = self.checkpoint(tenant).size
        if size == 0:
            return None
        first = next(self.storage.entries(tenant.id, 0, 1))
        last = next(self.storage.entries(tenant.id, size - 1, size))
        return first.received_at, last.received_at

    def search_backlog(self) -> int:
        """Entries not yet searchable with ``q`` (the index is filled behind the writer)."""
        return self.storage.search_backlog()

    def tile_backlog(self) -> int:
        """Entries whose full level-0 tiles are not packed yet (they are then read from the
        entries: the same bytes, more reads)."""
        return self.storage.tile_backlog()

    def check_integrity(
        self, tenant: Tenant, start: int = 0, end: int | None = None
    ) -> IntegrityReport:
        return check_log(
            self.storage,
            tenant,
            self.origin(tenant),
            self.verifiers(),
            start,
            end,
            lambda index: self.erasures.index.record_for(tenant.id, index),
        )

    # the log's keys ------------------------------------------------------------------------
    def log_keys(self) -> list[LogKey]:
        """The log's keys over its rotations, oldest first."""
        return self.storage.log_keys()

    def missing_signing_keys(self) -> list[str]:
        """The keys that sign now of which this host holds no private key (it cannot commit
        until their files are in its key directory)."""
        now = signing_keys(self.storage.log_keys(), timestamp())
        return [key.key for key in now if self.keyring.signer(key.key) is None]

    def verifiers(self) -> list[Verifier]:
        """Verifiers of every key the log has had: a checkpoint of this log carries a valid
        signature of at least one (the one that signed when it was made)."""
        return [Verifier(key.key) for key in self.storage.log_keys()]

    def key_that_signed(self, note: str) -> str:
        """The newest of the log's keys with a valid signature on ``note`` (what a bundle
        names: a checkpoint from before a rotation carries only the old key's)."""
        for key in reversed(self.storage.log_keys()):
            try:
                if Verifier(key.key).check(note)[1]:
                    return key.key
            except NoteError:
                continue
        return self.verifier_key()

    def handovers(self, tenant: Tenant) -> list[Handover]:
        """The tenant's checkpoints signed by an outgoing and an incoming key."""
        return self.storage.handovers(tenant.id)

    def rotate_log_key(self, new_key: str, transition: timedelta) -> Rotation:
        """Start signing with ``new_key`` (held by this host) beside the current key, which
        retires after ``transition``.

        In one transaction: the new key joins the history, the old one gets its retirement
        time, and each tenant's latest checkpoint is signed again by both (the handover a
        verifier that trusts the old key follows). Every host's next commit reads the new
        history, so from then on every checkpoint carries both signatures until the old key
        retires. Then each tenant's log records the rotation.
        """
        if transition < MIN_TRANSITION:
            raise LedgerError(
                "bad_transition",
                f"the transition must last at least {int(MIN_TRANSITION.total_seconds())} "
                "seconds, so that verifiers and witnesses see checkpoints signed by both keys",
            )
        current = signing_keys(self.storage.log_keys(), timestamp())
        if len(current) != 1:
            raise _rotation_in_progress(current)
        incoming = self.keyring.signer(new_key)
        if incoming is None:
            raise LedgerError(
                "key_missing",
                f"this host holds no private key for {new_key} in {self.keyring.directory}: "
                "make one with `immutablelog log-key generate` and copy its file to every host",
            )
        started = datetime.now(UTC)
        now, ends = timestamp(started), timestamp(started + transition)
        with self.storage.write() as tx:
            history = tx.log_keys()
            if any(key.key == new_key for key in history):
                raise LedgerError("key_exists", f"{new_key} is already one of the log's keys")
            current = signing_keys(history, now)
            if len(current) != 1:
                raise _rotation_in_progress(current)
            (outgoing,) = self.keyring.signers(current)
            tx.add_log_key(new_key, now)
            tx.retire_log_keys(new_key, ends)
            tenants = self.storage.list_tenants()
            for tenant in tenants:
                latest = self.checkpoint(tenant)
                body = Checkpoint(self.origin(tenant), latest.size, latest.root)
                note = sign_checkpoint([outgoing, incoming], body)
                tx.insert_handover(tenant.id, Handover(current[0].key, new_key, latest.size, note))
        details = {"old_key": current[0].key, "new_key": new_key, "old_key_retires_at": ends}
        for tenant in tenants:
            self.record_admin_event(tenant, "immutablelog.log_key.rotated", details).result()
        return Rotation(current[0].key, new_key, ends)

    def finish_rotation(self) -> Rotation:
        """End the rotation under way now: only the newest key signs from the next commit."""
        now = timestamp()
        with self.storage.write() as tx:
            current = signing_keys(tx.log_keys(), now)
            if len(current) < 2:
                raise LedgerError("no_rotation", "no rotation of the log key is under way")
            tx.retire_log_keys(current[-1].key, now)
        details = {"old_key": current[0].key, "new_key": current[-1].key, "old_key_retired_at": now}
        for tenant in self.storage.list_tenants():
            event = "immutablelog.log_key.rotation_finished"
            self.record_admin_event(tenant, event, details).result()
        return Rotation(current[0].key, current[-1].key, now)

    # the log's own audit trail ---------------------------------------------------------
    def record_admin_event(
        self, tenant: Tenant, event_name: str, details: dict[str, Any]
    ) -> Future[list[AppendResult]]:
        """Append an event about the log itself (keys, tenants, exports) to its own log."""
        payload = json.dumps({"message": event_name, **details}, separators=(",", ":"))
        return self._submit_records(tenant, event_name, [payload])

    def _submit_records(
        self, tenant: Tenant, event_name: str, payloads: Sequence[str]
    ) -> Future[list[AppendResult]]:
        """The log's own records (clear entries: nothing in them is erasable), in one
        commit."""
        meta = {"type": "info", "event_name": event_name, "service": ADMIN_SERVICE}
        return self.submit(
            tenant, [validate_submission(p, meta, uuid7(), clear=True) for p in payloads]
        )

    def _append_records(
        self, tenant: Tenant, event_name: str, payloads: Sequence[str]
    ) -> list[int]:
        results = self._submit_records(tenant, event_name, payloads).result(60.0)
        indexes = []
        for result in results:
            if not isinstance(result, Accepted):
                raise LedgerError(result.reason, result.message)
            indexes.append(result.index)
        return indexes

    def set_retention(self, tenant: Tenant, days: int | None) -> None:
        """Keep ``tenant``'s erasable values ``days`` days (``None``: for good); the sweep
        erases older ones. Recorded in the log."""
        if days is not None and not 1 <= days <= 36_500:
            raise LedgerError("invalid_field", "retention is 1 to 36500 days")
        self.storage.set_retention_days(tenant.id, days)
        self.record_admin_event(
            tenant, "immutablelog.retention.set", {"tenant": tenant.name, "days": days}
        ).result()

    def verifier_key(self) -> str:
        """The log's newest key: the one that signs once a rotation under way has ended."""
        return self.storage.log_keys()[-1].key
