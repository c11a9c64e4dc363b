"""Fixtures for the SDK tests: a fake ledger peer, fast delivery options, tidy pipelines."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from immutablelog.flask import ImmutableLogAudit
from immutablelog.sdk import DeliveryOptions, ImmutableLogClient
from immutablelog.sdk.worker import WORKER_THREAD_PREFIX
from tests.sdk.fake_ledger import FakeLedger


@pytest.fixture
def sink() -> Iterator[FakeLedger]:
    """A running fake ledger on a free loopback port, stopped (and un-hung) afterwards."""
    ledger = FakeLedger().start()
    try:
        yield ledger
    finally:
        ledger.stop()


@pytest.fixture
def delivery(tmp_path: Path) -> DeliveryOptions:
    """Delivery options for tests: a private spool dir and millisecond backoff."""
    return DeliveryOptions(
        spool_dir=str(tmp_path / "spool"),
        backoff_initial=0.01,
        backoff_max=0.05,
        shutdown_timeout=5.0,
        connect_timeout=1.0,
        read_timeout=5.0,
    )


@pytest.fixture
def make_client(
    sink: FakeLedger, delivery: DeliveryOptions
) -> Iterator[Callable[..., ImmutableLogClient]]:
    """Build clients pointed at the sink; every one is closed when the test ends."""
    made: list[ImmutableLogClient] = []

    def make(**overrides: Any) -> ImmutableLogClient:
        options = overrides.pop("delivery", delivery)
        client = ImmutableLogClient(
            overrides.pop("api_url", sink.url),
            overrides.pop("api_key", "test-key"),
            delivery=options,
            **overrides,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=2)


@pytest.fixture
def make_app(
    sink: FakeLedger, delivery: DeliveryOptions
) -> Iterator[Callable[..., tuple[Flask, ImmutableLogAudit]]]:
    """A small Flask app instrumented with our extension, pointed at the sink."""
    made: list[ImmutableLogAudit] = []

    def make(**options: Any) -> tuple[Flask, ImmutableLogAudit]:
        app = Flask("sdk-test-app")
        app.config.update(options.pop("config", {}))
        audit = ImmutableLogAudit(
            api_key=options.pop("api_key", "test-key"),
            api_url=options.pop("api_url", sink.url),
            delivery=options.pop("delivery", delivery),
            **options,
        )
        audit.init_app(app)
        made.append(audit)
        return app, audit

    yield make
    for audit in made:
        audit.close(timeout=2)


def worker_threads() -> list[threading.Thread]:
    """The SDK's delivery threads alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith(WORKER_THREAD_PREFIX)]


@pytest.fixture(autouse=True)
def no_leaked_workers() -> Iterator[None]:
    """Every test must close what it opened: no delivery thread may outlive it."""
    before = set(worker_threads())
    yield
    leaked = [t for t in worker_threads() if t not in before]
    for thread in leaked:
        thread.join(5)
    assert not [t for t in leaked if t.is_alive()], "a delivery worker thread was left running"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds; for states that settle asynchronously (not timing)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def spool_keys(spool_dir: Path) -> list[str]:
    """Idempotency keys of every event waiting in the spool files of ``spool_dir``."""
    keys: list[str] = []
    for path in sorted(spool_dir.glob("spool-*.sqlite3")):
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT item FROM spool ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            rows = []
        finally:
            conn.close()
        keys += [json.loads(row[0])["idempotency_key"] for row in rows]
    return keys
