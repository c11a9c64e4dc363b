"""Prometheus metrics, one registry per app (no globals).

With several worker processes, ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and each scrape
aggregates every process's values (prometheus_client's multiprocess mode).

Tenant names are customer names, so series labelled by tenant (``immutablelog_tenant_*``)
are shown only to a scraper that presents the metrics token; everyone else sees the
aggregate series.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from immutablelog.ledger.health import Fault
from immutablelog.ledger.sequencer import CommitStats

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: serve's ``--metrics-token``, handed to its worker processes.
METRICS_TOKEN_ENV = "IMMUTABLELOG_METRICS_TOKEN"
_TENANT_PREFIX = "immutablelog_tenant_"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "immutablelog_events_ingested",
            "Events durably appended to any log",
            registry=self.registry,
        )
        self.tenant_events = Counter(
            _TENANT_PREFIX + "events_ingested",
            "Events durably appended to the tenant's log",
            ["tenant"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "immutablelog_duplicate_events",
            "Submissions answered from an earlier commit (same Idempotency-Key)",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "immutablelog_commit_batch_events",
            "Events per group commit",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "immutablelog_commit_seconds",
            "Time to append, sign and durably commit one group",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tree_size = Gauge(
            _TENANT_PREFIX + "tree_size",
            "Entries in the tenant's log after the latest commit of this process",
            ["tenant"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.search_backlog = Gauge(
            "immutablelog_search_backlog_entries",
            "Committed entries the full-text index does not cover yet (all tenants)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.tile_backlog = Gauge(
            "immutablelog_tile_backlog_entries",
            "Committed entries the packed level-0 hash tiles do not cover yet (all tenants)",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.storage_fault = Gauge(
            "immutablelog_storage_fault",
            "1 while the storage has this fault (unavailable: the database cannot be "
            "reached; storage_full: the disk is full, writes fail)",
            ["fault"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.broken_logs = Gauge(
            "immutablelog_log_integrity_failures",
            "Tenants whose appends are refused because their stored entries no longer match "
            "their signed checkpoint (reason log_integrity)",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.rejected = Counter(
            "immutablelog_rejected_requests",
            "Requests answered with an error, by reason",
            ["reason"],
            registry=self.registry,
        )

    def observe_health(self, faults: Collection[Fault], broken_logs: int) -> None:
        """Set at scrape time from the storage's and the writer's own state."""
        for fault in Fault:
            self.storage_fault.labels(fault.value).set(fault in faults)
        self.broken_logs.set(broken_logs)

    def committed(self, stats: CommitStats) -> None:
        self.batch_size.observe(stats.events + stats.duplicates)
        self.commit_seconds.observe(stats.seconds)
        if stats.duplicates:
            self.duplicates.inc(stats.duplicates)
        for tenant, size in stats.tree_sizes.items():
            self.tree_size.labels(tenant).set(size)
        for tenant, count in stats.new_events.items():
            self.events.inc(count)
            self.tenant_events.labels(tenant).inc(count)

    def exposition(self, *, per_tenant: bool) -> bytes:
        """The text exposition; the ``immutablelog_tenant_*`` families only if ``per_tenant``."""
        source: Any = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)  # type: ignore[no-untyped-call]
        return generate_latest(source if per_tenant else _WithoutTenants(source))


class _WithoutTenants:
    """A collector view of another that leaves out the per-tenant families."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        for family in self._source.collect():
            if not family.name.startswith(_TENANT_PREFIX):
                yield family


def token_matches(presented: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries the metrics token (compared in constant
    time); always false when no token is configured."""
    if not token or not presented:
        return False
    method, _, value = presented.partition(" ")
    return method.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )
