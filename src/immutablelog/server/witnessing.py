"""Getting each new checkpoint cosigned by the configured witnesses, beside ingest.

One thread per data directory (the holder of ``witnessing.lock``; other worker processes
wait to take over) looks at every tenant's latest checkpoint at most once per ``interval``
and sends it to each witness with a consistency proof from the size that witness holds
(C2SP tlog-witness; a 409 tells that size). Witnesses are asked in turn with a short
timeout, a failing one is retried with exponential backoff, and nothing here holds the
ledger's write lock, so ingest never waits for a witness. Verified cosignatures go to
``cosignatures.db``, which every worker reads to serve cosigned checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client import CollectorRegistry, Gauge

from immutablelog.cosignature import Cosignature
from immutablelog.ledger import Ledger, LedgerError, StorageError, Tenant
from immutablelog.witness.client import (
    SizeConflict,
    WitnessEndpoint,
    WitnessFailed,
    add_checkpoint,
)

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosignatures (
    tenant_id INTEGER NOT NULL,
    size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (tenant_id, size, witness)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS witness_status (
    witness TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
"""


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


class CosignatureStore:
    """``cosignatures.db``: the checked cosignature lines per tenant, size and witness."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def add(self, tenant_id: int, size: int, witness: str, cosignature: Cosignature) -> None:
        self._rows(
            "INSERT OR REPLACE INTO cosignatures VALUES (?, ?, ?, ?, ?)",
            tenant_id,
            size,
            witness,
            cosignature.timestamp,
            cosignature.line,
        )

    def prune(self, tenant_id: int, below: int) -> None:
        """Forget cosignatures of sizes below ``below`` (superseded for serving)."""
        self._rows("DELETE FROM cosignatures WHERE tenant_id = ? AND size < ?", tenant_id, below)

    def lines(self, tenant_id: int, size: int) -> list[str]:
        rows = self._rows(
            "SELECT line FROM cosignatures WHERE tenant_id = ? AND size = ? ORDER BY witness",
            tenant_id,
            size,
        )
        return [str(line) for (line,) in rows]

    def newest(self, tenant_id: int, quorum: int) -> int | None:
        """The largest size cosigned by at least ``quorum`` witnesses."""
        rows = self._rows(
            "SELECT size FROM cosignatures WHERE tenant_id = ? GROUP BY size "
            "HAVING count(*) >= ? ORDER BY size DESC LIMIT 1",
            tenant_id,
            quorum,
        )
        return int(rows[0][0]) if rows else None

    def cosigned_sizes(self, tenant_id: int) -> dict[str, int]:
        """The size each witness last cosigned for the tenant."""
        rows = self._rows(
            "SELECT witness, max(size) FROM cosignatures WHERE tenant_id = ? GROUP BY witness",
            tenant_id,
        )
        return {str(w): int(s) for w, s in rows}

    def record(self, witness: str, error: str | None) -> None:
        if error is None:
            self._rows("INSERT OR REPLACE INTO witness_status VALUES (?, 0, NULL)", witness)
        else:
            self._rows(
                "INSERT INTO witness_status VALUES (?, 1, ?) ON CONFLICT (witness) DO UPDATE "
                "SET failures = failures + 1, last_error = excluded.last_error",
                witness,
                error,
            )

    def failures(self) -> dict[str, int]:
        return {
            str(w): int(n) for w, n in self._rows("SELECT witness, failures FROM witness_status")
        }


@dataclass
class _Peer:
    endpoint: WitnessEndpoint
    #: The size the witness holds per origin, as far as we know (a 409 corrects it).
    sizes: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    next_try: float = 0.0


class Witnessing:
    """The background pusher and the reads the API needs (cosigned notes, lag)."""

    def __init__(self, ledger: Ledger, config: WitnessingConfig, data_dir: Path) -> None:
        self.ledger = ledger
        self.config = config
        self.store = CosignatureStore(data_dir / "cosignatures.db")
        self._lock_path = data_dir / "witnessing.lock"
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
        self.store.close()

    # serving -------------------------------------------------------------------------
    def cosigned_note(self, tenant: Tenant, size: int, note: str) -> str:
        """``note`` (the checkpoint of ``size``) with the cosignatures it has."""
        return note + "".join(self.store.lines(tenant.id, size))

    def served_checkpoint(self, tenant: Tenant) -> tuple[int, str]:
        """Size and note of the newest checkpoint with the serving quorum of cosignatures
        (with them), else of the latest one."""
        size = self.store.newest(tenant.id, self.config.serving_quorum)
        if size is None:
            latest = self.ledger.checkpoint(tenant)
            return latest.size, latest.note
        note = self.ledger.checkpoint_at(tenant, size).note
        return size, self.cosigned_note(tenant, size, note)

    def register_metrics(self, registry: CollectorRegistry) -> Callable[[], None]:
        """Add the witness gauges to ``registry``; the returned function sets them (at
        scrape time, from the shared ``cosignatures.db``, so any worker can answer)."""
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
            counts = self.store.failures()
            for peer in self._peers:
                name = peer.endpoint.verifier.name
                lag.labels(name).set(worst[peer.endpoint.key])
                failures.labels(name).set(counts.get(peer.endpoint.key, 0))

        return observe

    # pushing -------------------------------------------------------------------------
    def _run(self) -> None:
        with self._leadership() as lead:
            if lead is None:
                return
            with httpx.Client(timeout=self.config.timeout) as http:
                while not self._stop.is_set():
                    started = time.monotonic()
                    try:
                        self.round(http)
                    except (StorageError, LedgerError) as exc:
                        logger.warning("witnessing paused: %s", exc)
                    self._stop.wait(max(0.0, self.config.interval - (time.monotonic() - started)))

    @contextlib.contextmanager
    def _leadership(self) -> Iterator[IO[bytes] | None]:
        """Hold ``witnessing.lock`` (one pusher per data directory), waiting for it."""
        with open(self._lock_path, "ab") as lock:
            while not self._stop.is_set():
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._stop.wait(max(self.config.interval, 1.0))
                    continue
                try:
                    yield lock
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
                return
            yield None

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
                self.store.add(tenant.id, size, key, answer)
                served = self.store.newest(tenant.id, self.config.serving_quorum)
                if served is not None:  # what is older than the served checkpoint is not needed
                    self.store.prune(tenant.id, served)
                self.store.record(key, None)
                peer.failures = 0
                peer.next_try = 0.0
                return
            raise WitnessFailed(f"{peer.endpoint.url}: the size it holds kept changing")
        except WitnessFailed as exc:
            peer.failures += 1
            backoff = min(self.config.max_backoff, self.config.interval * 2**peer.failures)
            peer.next_try = time.monotonic() + backoff
            self.store.record(key, str(exc))
            logger.warning("witness unavailable: %s (retry in %.0f s)", exc, backoff)
