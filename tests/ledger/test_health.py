"""The storage's fault state on its own: the breaker, its probe thread, logging per change."""

from __future__ import annotations

import logging
import threading

import pytest

from immutablelog.ledger.health import Fault, RepeatedFailure, StorageHealth
from immutablelog.ledger.storage import StorageError, StorageFull, StorageUnavailable


class _Database:
    """A probe target that is down until told otherwise."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.probes = 0
        self.dropped = 0

    def probe(self) -> None:
        self.probes += 1
        if not self.up.is_set():
            raise OSError("connection refused")

    def drop_connections(self) -> None:
        self.dropped += 1


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if condition():  # type: ignore[operator]
                return
            done.wait(0.01)
        raise AssertionError("condition not met in time")
    finally:
        deadline.cancel()


def test_the_breaker_fails_at_once_until_a_probe_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    database = _Database()
    health = StorageHealth("db", database.probe, database.drop_connections, probe_interval=0.01)
    health.check()  # closed: nothing raised
    with caplog.at_level(logging.WARNING, "immutablelog"):
        health.failed(Fault.UNAVAILABLE, "db is unavailable: refused")
        health.failed(Fault.UNAVAILABLE, "db is unavailable: refused again")
        for _ in range(5):
            with pytest.raises(StorageUnavailable, match="unavailable"):
                health.check()
        _wait_until(lambda: database.probes >= 3)
        assert Fault.UNAVAILABLE in health.faults()
        assert database.dropped == 1  # the connections the outage ended, once
        database.up.set()
        _wait_until(lambda: any("resolved" in r.getMessage() for r in caplog.records))
    assert health.faults() == {}
    health.check()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one when it began, one when it ended
    assert "storage fault unavailable" in messages[0] and "probed every" in messages[0]
    assert "resolved after 7 failed operations" in messages[1]  # 2 failures + 5 refusals
    health.close()


def test_a_full_disk_is_not_a_breaker_and_clears_only_itself() -> None:
    database = _Database()
    health = StorageHealth("db", database.probe)
    health.failed(Fault.STORAGE_FULL, "disk full")
    health.check()  # reads and writes are still tried: only a write can show space is back
    assert health.faults() == {Fault.STORAGE_FULL: "disk full"}
    health.cleared(Fault.UNAVAILABLE)
    assert Fault.STORAGE_FULL in health.faults()
    health.cleared(Fault.STORAGE_FULL)
    assert health.faults() == {} and database.probes == 0


def test_repeated_failures_are_logged_once_per_change_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("immutablelog.test")
    failures = RepeatedFailure(log, "indexing")
    with caplog.at_level(logging.WARNING, "immutablelog"):
        for _ in range(1000):
            failures.raised(StorageError("database is locked"))
        failures.raised(StorageFull("disk full"))  # the store's health logs those itself
        failures.raised(ValueError("a bug"))
        failures.succeeded()
        failures.succeeded()
    records = caplog.records
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR, logging.WARNING]
    assert "database is locked" in records[0].getMessage() and not records[0].exc_info
    assert "after 1000 failures of kind StorageError" in records[1].getMessage()
    assert records[1].exc_info and isinstance(records[1].exc_info[1], ValueError)  # a trace
    assert "recovered after 1 failures (ValueError)" in records[2].getMessage()
