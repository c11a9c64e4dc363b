"""Embedded mode: no URL configured, events go straight into a local ledger file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from immutablelog.flask import ImmutableLogAudit
from immutablelog.ledger import Ledger, LedgerConfig
from immutablelog.sdk import DeliveryOptions, ImmutableLogClient
from immutablelog.sdk.embedded import LedgerTransport
from immutablelog.sdk.events import WireEvent
from tests.live import HTTP, LiveServer


@pytest.fixture
def local_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("IMTBL_URL", "IMMUTABLELOG_URL"):
        monkeypatch.delenv(var, raising=False)
    data_dir = tmp_path / "embedded"
    monkeypatch.setenv("IMMUTABLELOG_DATA_DIR", str(data_dir))
    return data_dir


def stored(data_dir: Path) -> list[dict[str, object]]:
    with Ledger.open(LedgerConfig(data_dir=data_dir)) as ledger:
        tenant = ledger.tenant("default")
        assert ledger.check_integrity(tenant).valid
        size = ledger.checkpoint(tenant).size
        return [json.loads(e.data) for e in ledger.entries(tenant, 0, size)]


def test_client_without_url_writes_a_verifiable_local_log(local_ledger: Path) -> None:
    client = ImmutableLogClient(api_url="", delivery=DeliveryOptions(spool_dir=False))
    try:
        for n in range(3):
            client.record("invoice.deleted", kind="warning", invoice=n)
        assert client.flush(30)
        assert client.stats().sent == 3 and client.stats().dropped == 0
    finally:
        client.close(10)
    names = [e["event_name"] for e in stored(local_ledger) if e["service"] != "immutablelog"]
    assert names == ["invoice.deleted"] * 3


def test_flask_without_url_then_served_by_immutablelog_serve(local_ledger: Path) -> None:
    app = Flask(__name__)
    audit = ImmutableLogAudit(
        app, service_name="embedded-app", delivery=DeliveryOptions(spool_dir=False)
    )

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    client = app.test_client()
    for _ in range(4):
        assert client.get("/hello").status_code == 200
    assert audit.flush(timeout=30, app=app)
    audit.close(timeout=10)
    # The same directory, served: the events are there, and the tree checks out.
    server = LiveServer(local_ledger, create=False)
    server.start()
    try:
        events = HTTP.get(
            server.url + "/v1/events",
            params={"service": "embedded-app"},
            headers=server.headers(server.read_key),
        ).json()["events"]
        assert [e["event_name"] for e in events] == ["http.GET./hello"] * 4
        server.assert_tree_intact()
    finally:
        server.kill()


def test_invalid_events_are_rejected_one_by_one(tmp_path: Path) -> None:
    transport = LedgerTransport(tmp_path / "t")
    try:
        good = WireEvent("k1", "{}", {"type": "info", "event_name": "ok", "service": "s"})
        bad = WireEvent("k2", "not json", {"type": "info", "event_name": "bad", "service": "s"})
        results = transport.send_batch([good, bad, good])
        assert [r.accepted for r in results] == [True, False, True]
        assert results[1].reason == "invalid_field" and results[2].duplicate
    finally:
        transport.close()
