"""Embedded mode: deliver events straight into a local ledger file, no server needed.

The same ledger code as the server does the work (validation, sequencing, hashing, signing),
so ``immutablelog serve --data-dir`` on the same directory later serves exactly this log, and
``immutablelog verify`` checks it. Used when no API URL is configured.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import immutablelog.ledger.sqlite  # noqa: F401  (imported here, never in the worker thread)
from immutablelog.entry import EntryError, Submission, validate_submission
from immutablelog.ledger import (
    DEFAULT_TENANT,
    Accepted,
    Ledger,
    LedgerConfig,
    LedgerError,
    Tenant,
)
from immutablelog.sdk.events import WireEvent
from immutablelog.sdk.transport import ItemResult, RetryableDeliveryError


class LedgerTransport:
    """A :class:`~immutablelog.sdk.transport.Transport` that appends to a local ledger.

    The ledger is opened on first use (in the delivery worker), and the tenant created if the
    data directory is new, so configuring a path is all it takes.
    """

    def __init__(self, data_dir: Path | str, tenant: str = DEFAULT_TENANT) -> None:
        self._config = LedgerConfig(data_dir=Path(data_dir))
        self._tenant_name = tenant
        self._ledger: Ledger | None = None
        self._tenant: Tenant | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _open(self) -> tuple[Ledger, Tenant]:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child (gunicorn --preload) must not touch the parent's SQLite
                # connections or writer thread: forget them (not close) and open its own.
                self._ledger = self._tenant = None
                self._pid = os.getpid()
            if self._ledger is None or self._tenant is None:
                ledger = Ledger.open(self._config)
                try:
                    tenant = ledger.tenant(self._tenant_name)
                except LedgerError:
                    tenant = ledger.create_tenant(self._tenant_name)
                self._ledger, self._tenant = ledger, tenant
            return self._ledger, self._tenant

    def send_batch(self, events: Sequence[WireEvent]) -> list[ItemResult]:
        results: list[ItemResult | None] = []
        valid: list[Submission] = []
        for event in events:
            try:
                valid.append(validate_submission(event.payload, event.meta, event.idempotency_key))
                results.append(None)
            except EntryError as exc:
                results.append(ItemResult(False, reason=exc.reason, message=exc.message))
        if valid:
            try:
                ledger, tenant = self._open()
                committed = iter(ledger.append(tenant, valid))
            except Exception as exc:  # the file is locked, the disk full: keep and retry
                raise RetryableDeliveryError(f"local ledger unavailable: {exc}") from exc
            for position, slot in enumerate(results):
                if slot is None:
                    outcome = next(committed)
                    results[position] = (
                        ItemResult(True, duplicate=outcome.duplicate)
                        if isinstance(outcome, Accepted)
                        else ItemResult(False, reason=outcome.reason, message=outcome.message)
                    )
        return [r for r in results if r is not None]

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
            self._ledger = self._tenant = None
