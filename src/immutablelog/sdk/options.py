"""Delivery settings: the tunables of a pipeline, and where its spool lives by default."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Tunables of the delivery pipeline. The defaults suit a typical web app.

    ``spool_dir=None`` picks a per-user state directory (see :func:`default_spool_dir`);
    ``spool_dir=False`` disables the disk spool (events then survive an outage only in memory,
    up to ``max_queue`` of them). ``dead_letter_path=None`` puts the dead-letter file next to the
    spool files. ``batch_interval``: how long the worker lets events gather into a batch (see
    :mod:`immutablelog.sdk.pipeline`).
    """

    max_queue: int = 10_000
    max_batch_events: int = 500
    max_batch_bytes: int = 1_048_576
    batch_interval: float = 0.2
    spool_dir: str | Literal[False] | None = None
    spool_max_bytes: int = 64 * 1_048_576
    spool_synchronous: str = "FULL"
    dead_letter_path: str | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    shutdown_timeout: float = 5.0
    connect_timeout: float = 3.0
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.max_batch_events < 1 or self.max_batch_bytes < 1:
            raise ValueError("queue and batch bounds must be positive")
        if self.batch_interval < 0:
            raise ValueError("batch_interval must be >= 0")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


def default_spool_dir(service_name: str, url: str, api_key: str) -> str:
    """Where spool files go unless configured: a per-user state dir, one subdir per destination.

    The subdirectory is keyed by the service and a hash of URL and API key, so a process never
    adopts — and sends with its own credentials — events another service spooled for another
    server or tenant.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    digest = hashlib.sha256(f"{url}\n{api_key}".encode()).hexdigest()[:12]
    safe_service = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name)[:64]
    return os.path.join(base, "immutablelog", "spool", f"{safe_service or 'service'}-{digest}")
