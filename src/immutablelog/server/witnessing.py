"""Getting each new checkpoint cosigned by the configured witnesses, beside ingest.

One thread per deployment (the holder of the ledger's witnessing lease: a file lock beside
the SQLite file, an advisory lock on PostgreSQL; every other process, on any host, waits to
take over) looks at every tenant's latest checkpoint at most once per ``interval`` and sends
it to each witness with a consistency proof from the size that witness holds (C2SP
tlog-witness; a 409 tells that size). Witnesses are asked in turn with a short timeout, a
failing one is retried with exponential backoff, and nothing here holds the ledger's write
lock for longer than storing one cosignature, so ingest never waits for a witness. Verified
cosignatures go to the ledger's database, which every process of every host reads to serve
the same cosigned checkpoints.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry, Gauge

from immutablelog.ledger import Ledger, LedgerError, StorageError, Tenant
from immutablelog.ledger.key_history import Job, Lease
from immutablelog.witness.client import (
    SizeConflict,
    WitnessEndpoint,
    WitnessFailed,
    add_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WitnessingConfig:
    """The witnesses to ask, how often, and how many a served checkpoint needs."""

    witnesses: tuple[WitnessEndpoint, ...]
    interval: float = 2.0
    #: The tiles ``checkpoint`` is the newest one cosigned by at least this many witnesses
    #: (default: all of them).
    quorum: int | None = None
    timeout: float = 5.0
    max_backoff: float = 60.0

    @property
    def serving_quorum(self) -> int:
        return len(self.witnesses) if self.quorum is None else self.quorum

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WitnessingConfig | None:
        """``IMMUTABLELOG_WITNESSES`` (JSON ``[[url, key], ...]``) and its interval/quorum."""
        raw = environ.get("IMMUTABLELOG_WITNESSES")
        if not raw:
            return None
        pairs = json.loads(raw)
        witnesses = tuple(WitnessEndpoint.parse(url, key) for url, key in pairs)
        interval = float(environ.get("IMMUTABLELOG_WITNESS_INTERVAL") or cls.interval)
        quorum = environ.get("IMMUTABLELOG_WITNESS_QUORUM")
        return cls(witnesses, interval, int(quorum) if quorum else None)


@dataclass
class _Peer:
    endpoint: WitnessEndpoint
    #: The size the witness holds per origin, as far as we know (a 409 corrects it).
    sizes: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    next_try: float = 0.0
    #: Whether this process has recorded the witness as answering (a write per change only).
    answered: bool = False


class Witnessing:
    """The background pusher and the reads the API needs (cosigned notes, lag)."""

    def __init__(self, ledger: Ledger, config: WitnessingConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.store = ledger.storage
        self._peers = [_Peer(w) for w in config.witnesses]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self._peers:
            self._thread = threading.Thread(target=self._run, name="witnessing", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.timeout + 1)

    # serving -------------------------------------------------------------------------
    def cosigned_note(self, tenant: Tenant, size: int, note: str) -> str:
        """``note`` (the checkpoint of ``size``) with the cosignatures it has."""
        return note + "".join(self.store.cosignature_lines(tenant.id, size))

    def served_checkpoint(self, tenant: Tenant) -> tuple[int, str]:
        """Size and note of the newest checkpoint with the serving quorum of cosignatures
        (with them), else of the latest one."""
        size = self.store.newest_cosigned(tenant.id, self.config.serving_quorum)
        if size is None:
            latest = self.ledger.checkpoint(tenant)
            return latest.size, latest.note
        note = self.ledger.checkpoint_at(tenant, size).note
        return size, self.cosigned_note(tenant, size, note)

    def register_metrics(self, registry: CollectorRegistry) -> Callable[[], None]:
        """Add the witness gauges to ``registry``; the returned function sets them (at
        scrape time, from the ledger's database, so any worker of any host can answer)."""
        lag = Gauge(
            "immutablelog_witness_lag_entries",
            "Entries not yet cosigned by the witness, for the tenant furthest behind",
            ["witness"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        tenant_lag = Gauge(
            "immutablelog_tenant_witness_lag_entries",
            "Entries of the tenant's latest checkpoint the witness has not cosigned yet",
            ["tenant", "witness"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        failures = Gauge(
            "immutablelog_witness_failures",
            "Consecutive failed requests to the witness (0 once it answers again)",
            ["witness"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )

        def observe() -> None:
            worst = dict.fromkeys((peer.endpoint.key for peer in self._peers), 0)
            for tenant in self.ledger.tenants():
                size = self.ledger.checkpoint(tenant).size
                cosigned = self.store.cosigned_sizes(tenant.id)
                for peer in self._peers:
                    behind = size - cosigned.get(peer.endpoint.key, 0)
                    tenant_lag.labels(tenant.name, peer.endpoint.verifier.name).set(behind)
                    worst[peer.endpoint.key] = max(worst[peer.endpoint.key], behind)
            counts = self.store.witness_failures()
            for peer in self._peers:
                name = peer.endpoint.verifier.name
                lag.labels(name).set(worst[peer.endpoint.key])
                failures.labels(name).set(counts.get(peer.endpoint.key, 0))

        return observe

    # pushing -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.store.lease(Job.WITNESSING) as lease:
                    if lease is not None:
                        self._lead(lease)
            except StorageError as exc:
                logger.warning("witnessing paused: %s", exc)
            self._stop.wait(max(self.config.interval, 1.0))

    def _lead(self, lease: Lease) -> None:
        """Push rounds while this process holds the deployment's witnessing lease."""
        with httpx.Client(timeout=self.config.timeout) as http:
            while not self._stop.is_set() and lease.alive():
                started = time.monotonic()
                try:
                    self.round(http)
                except (StorageError, LedgerError) as exc:
                    logger.warning("witnessing paused: %s", exc)
                self._stop.wait(max(0.0, self.config.interval - (time.monotonic() - started)))

    def round(self, http: httpx.Client) -> None:
        """Send every tenant's latest checkpoint to each witness that lacks it."""
        for tenant in self.ledger.tenants():
            latest = self.ledger.checkpoint(tenant)
            cosigned = self.store.cosigned_sizes(tenant.id)
            for peer in self._peers:
                if cosigned.get(peer.endpoint.key, -1) >= latest.size:
                    continue
                if time.monotonic() < peer.next_try:
                    continue
                self._push(http, peer, tenant, latest.size, latest.note)

    def _push(self, http: httpx.Client, peer: _Peer, tenant: Tenant, size: int, note: str) -> None:
        origin = self.ledger.origin(tenant)
        key = peer.endpoint.key
        try:
            for _ in range(2):  # a 409 tells the witness's size; then once more from it
                old = peer.sizes.get(origin, 0)
                if old > size:
                    raise WitnessFailed(
                        f"{peer.endpoint.url} holds size {old}, beyond this log's {size}"
                    )
                proof = self.ledger.consistency_proof(tenant, old, size) if old else []
                answer = add_checkpoint(http, peer.endpoint, old, proof, note)
                if isinstance(answer, SizeConflict):
                    peer.sizes[origin] = answer.size
                    continue
                peer.sizes[origin] = size
                # One write: the cosignature, and what is older than the served checkpoint gone.
                self.store.add_cosignature(
                    tenant.id,
                    size,
                    key,
                    answer.timestamp,
                    answer.line,
                    self.config.serving_quorum,
                )
                if peer.failures or not peer.answered:
                    self.store.record_witness(key, None)
                    peer.answered = True
                peer.failures = 0
                peer.next_try = 0.0
                return
            raise WitnessFailed(f"{peer.endpoint.url}: the size it holds kept changing")
        except WitnessFailed as exc:
            peer.failures += 1
            backoff = min(self.config.max_backoff, self.config.interval * 2**peer.failures)
            peer.next_try = time.monotonic() + backoff
            self.store.record_witness(key, str(exc))
            logger.warning("witness unavailable: %s (retry in %.0f s)", exc, backoff)
