"""Storage faults as clients, probes and operators see them over HTTP.

The full disk is real: SQLite's ``max_page_count`` stops the ledger file from growing, so
SQLite itself answers SQLITE_FULL exactly as on a full disk. The limit is per connection,
hence the app runs in-process here, where the test can lower and raise it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from immutablelog.ledger import DEFAULT_TENANT, Ledger, LedgerConfig
from immutablelog.ledger.sqlite import SQLiteStorage
from immutablelog.ledger.sqlite.connection import Connections
from immutablelog.server.app import create_app

with warnings.catch_warnings():  # it would rather use another HTTP client; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

META = {"type": "info", "event_name": "fault.test", "service": "tests"}
# 8 KB per event: every commit needs new pages.
PAYLOAD = json.dumps({"blob": "x" * 8000})
_NO_LIMIT = 4_294_967_294


class _Server:
    def __init__(self, ledger: Ledger, client: TestClient, connections: list[sqlite3.Connection]):
        self.ledger = ledger
        self.client = client
        self.connections = connections
        self.ingest_key, _ = ledger.create_api_key(DEFAULT_TENANT, frozenset({"ingest", "read"}))

    def post(self, n: int) -> tuple[int, dict[str, object]]:
        response = self.client.post(
            "/v1/events",
            json={"payload": PAYLOAD, "meta": META},
            headers={"Authorization": f"Bearer {self.ingest_key}", "Idempotency-Key": f"e{n}"},
        )
        return response.status_code, {**response.json(), **response.headers}

    def fill_disk(self) -> None:
        """The ledger file may grow no more (per connection, so on every one of them)."""
        for conn in self.connections:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {pages}")

    def free_disk(self) -> None:
        for conn in self.connections:
            conn.execute(f"PRAGMA max_page_count = {_NO_LIMIT}")

    def metric(self, line_start: str) -> float:
        text = self.client.get("/metrics").text
        (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
        return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    connections: list[sqlite3.Connection] = []
    connect = Connections._connect

    def remembered(self: Connections) -> sqlite3.Connection:
        conn = connect(self)
        connections.append(conn)
        return conn

    monkeypatch.setattr(Connections, "_connect", remembered)
    with Ledger.open(LedgerConfig(data_dir=tmp_path / "data")) as ledger:
        ledger.create_tenant(DEFAULT_TENANT)
        with TestClient(create_app(ledger)) as client:
            yield _Server(ledger, client, connections)


def test_a_full_disk_is_storage_full_logged_once_and_recovers_by_itself(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    acknowledged = {}
    for n in range(3):
        status, body = server.post(n)
        assert status == 202
        acknowledged[body["index"]] = body["tx_id"]

    with caplog.at_level(logging.WARNING, "immutablelog"):
        server.fill_disk()
        for n in range(3, 23):
            status, body = server.post(n)
            assert status == 503, body
            assert body["reason"] == "storage_full" and body["retry-after"]
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "not_ready"
        assert ready.json()["checks"]["storage"] == "full"
        assert server.client.get("/healthz").json()["checks"]["storage"] == "full"
        assert server.client.get("/livez").status_code == 200
        assert server.metric('immutablelog_storage_fault{fault="storage_full"}') == 1
        assert server.metric('immutablelog_rejected_requests_total{reason="storage_full"}') == 20
        # Reads still work: the log is all there.
        checkpoint = server.client.get(
            "/v1/checkpoint", headers={"Authorization": f"Bearer {server.ingest_key}"}
        )
        assert checkpoint.status_code == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "storage_full" in errors[0].getMessage(), errors

        server.free_disk()
        status, body = server.post(99)
        assert status == 202, body
        acknowledged[body["index"]] = body["tx_id"]
    resolved = [r for r in caplog.records if "resolved after" in r.getMessage()]
    assert len(resolved) == 1 and "storage_full" in resolved[0].getMessage()
    assert server.client.get("/readyz").json()["checks"]["storage"] == "ok"
    assert server.metric('immutablelog_storage_fault{fault="storage_full"}') == 0

    # Every acknowledged event is stored where its answer said; nothing refused was.
    tenant = server.ledger.tenant(DEFAULT_TENANT)
    stored = {e.index: e.id for e in server.ledger.entries(tenant, 0, 10_000)}
    assert all(stored[index] == tx_id for index, tx_id in acknowledged.items())
    payloads = [
        e for e in server.ledger.entries(tenant, 0, 10_000) if b"blob" in (e.erasable or b"")
    ]
    assert len(payloads) == len(acknowledged)
    assert server.ledger.check_integrity(tenant).valid


def test_an_entry_behind_the_tree_is_log_integrity_in_answers_metrics_and_readiness(
    server: _Server,
) -> None:
    assert server.post(0)[0] == 202
    tenant = server.ledger.tenant(DEFAULT_TENANT)
    size = server.ledger.checkpoint(tenant).size
    with closing(_connect(server.ledger)) as conn:
        (row,) = conn.execute(
            "SELECT * FROM entries WHERE tenant_id = ? AND idx = ?", (tenant.id, size - 1)
        ).fetchall()
        forged = (*row[:1], size, f"forged-{size}", *row[3:])  # a copy, one index further
        conn.execute(f"INSERT INTO entries VALUES ({','.join('?' * len(forged))})", forged)
    for n in range(1, 4):
        status, body = server.post(n)
        assert status == 503 and body["reason"] == "log_integrity", body
        assert "operator" in str(body["message"])
    assert server.metric("immutablelog_log_integrity_failures ") == 1
    ready = server.client.get("/readyz")
    # One tenant's log is broken; the server still serves the others.
    assert (
        ready.status_code == 200 and ready.json()["checks"]["logs"] == "1 refused (log_integrity)"
    )
    assert server.ledger.checkpoint(tenant).size == size


def _connect(ledger: Ledger) -> sqlite3.Connection:
    """A plain connection to the ledger file: a program writing behind the server's back."""
    assert isinstance(ledger.storage, SQLiteStorage)
    return sqlite3.connect(ledger.storage.path, isolation_level=None)
