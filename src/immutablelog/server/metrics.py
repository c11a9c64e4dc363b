"""Prometheus metrics, one registry per app (no globals).

With several worker processes, ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and each scrape
aggregates every process's values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from immutablelog.ledger.sequencer import CommitStats

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "immutablelog_events_ingested",
            "Events durably appended to a log",
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
            "immutablelog_tree_size",
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
        self.rejected = Counter(
            "immutablelog_rejected_requests",
            "Requests answered with an error, by reason",
            ["reason"],
            registry=self.registry,
        )

    def committed(self, stats: CommitStats) -> None:
        self.batch_size.observe(stats.events + stats.duplicates)
        self.commit_seconds.observe(stats.seconds)
        if stats.duplicates:
            self.duplicates.inc(stats.duplicates)
        for tenant, size in stats.tree_sizes.items():
            self.tree_size.labels(tenant).set(size)
        for tenant, count in stats.new_events.items():
            self.events.labels(tenant).inc(count)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
