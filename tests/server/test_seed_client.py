"""The seed's own ImmutableLogAudit, unchanged, in a real Flask app against the real server."""

from __future__ import annotations

import json

from flask import Flask, g, jsonify

from tests.fixtures.seed_middleware import ImmutableLogAudit
from tests.live import LiveServer


def test_every_request_of_the_seed_extension_lands_as_an_entry(live_server: LiveServer) -> None:
    app = Flask(__name__)
    ImmutableLogAudit(
        app,
        api_key=live_server.ingest_key,
        api_url=live_server.url,
        service_name="seed-app",
        env="test",
    )

    @app.post("/checkout")
    def checkout() -> object:
        g.imtbl_event_name = "payment.checkout.initiated"
        return jsonify({"status": "ok"})

    @app.get("/missing")
    def missing() -> object:
        return jsonify({"error": "nope"}), 404

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    client = app.test_client()
    assert client.post("/checkout", json={"amount": 10}).status_code == 200
    assert client.get("/missing?x=1").status_code == 404
    assert client.get("/redirect").status_code == 404
    assert client.get("/healthz").status_code == 200  # skipped by the extension

    entries = live_server.entries()
    assert [e["event_name"] for e in entries] == [
        "payment.checkout.initiated",
        "http.GET./missing",
        "http.GET./redirect",
    ]
    assert [e["type"] for e in entries] == ["success", "error", "error"]
    assert all(e["service"] == "seed-app" and e["env"] == "test" for e in entries)
    assert all(e["client_tz"] == "UTC" and e["client_offset_minutes"] == 0 for e in entries)
    payload = json.loads(entries[1]["payload"])
    assert payload["request"]["query_params"] == {"x": "1"}
    assert payload["metrics"]["status_code"] == 404
    # The seed's Idempotency-Key is event_name-request_id, kept as sent.
    assert entries[0]["idempotency_key"] == f"payment.checkout.initiated-{entries[0]['request_id']}"
    live_server.assert_tree_intact()
