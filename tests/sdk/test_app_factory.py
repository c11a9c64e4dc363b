"""An app factory in one process — the way a pytest suite builds an app per test — against the
real ledger server: one delivery thread however many apps, each served request stored exactly
once, apps and their pipelines released when dropped, memory flat."""

from __future__ import annotations

import collections
import gc
import tracemalloc
from pathlib import Path

import pytest
from flask import Flask

from immutablelog.flask import ImmutableLogAudit
from immutablelog.sdk import DeliveryOptions
from tests.live import LiveServer
from tests.sdk.conftest import wait_until, worker_threads

APPS = 500


class FactoryApp(Flask):
    """Counted separately from any other app alive in the test session."""


def live_factory_apps() -> int:
    return sum(isinstance(o, FactoryApp) for o in gc.get_objects())


@pytest.mark.parametrize("pattern", ["an extension per app", "one extension, init_app per app"])
def test_an_app_factory_called_500_times_keeps_one_worker_and_delivers_each_request_once(
    live_server: LiveServer, tmp_path: Path, pattern: str
) -> None:
    delivery = DeliveryOptions(spool_dir=str(tmp_path / "spool"), shutdown_timeout=10)
    shared = ImmutableLogAudit(delivery=delivery) if pattern.startswith("one") else None

    def create_app() -> Flask:
        app = FactoryApp("factory")

        @app.get("/work/<int:n>")
        def work(n: int) -> str:
            return str(n)

        app.config.update(
            IMMUTABLELOG_URL=live_server.url, IMMUTABLELOG_API_KEY=live_server.ingest_key
        )
        if shared is not None:
            shared.init_app(app)
        else:
            ImmutableLogAudit(app, delivery=delivery)
        return app

    request_ids = [f"factory-{'shared' if shared else 'own'}-{n}" for n in range(APPS)]
    tracemalloc.start()
    try:
        for n, request_id in enumerate(request_ids):
            app = create_app()
            response = app.test_client().get(f"/work/{n}", headers={"X-Request-Id": request_id})
            assert response.status_code == 200
            del app, response
            assert len(worker_threads()) <= 1
            if n % 100 == 99:
                gc.collect()
                assert live_factory_apps() == 0, "a dropped app is released"
                if n == 99:
                    baseline = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # Every app is gone: its pipeline delivers what is queued and lets go, and with nothing to
    # serve the delivery thread ends.
    assert wait_until(lambda: not worker_threads(), timeout=30)
    stored = collections.Counter(e["request_id"] for e in live_server.entries())
    assert [rid for rid in request_ids if stored[rid] != 1] == []
    assert sum(stored.values()) == APPS, "no event for anything but the served requests"
    # 400 apps leaked would be tens of MB; a flat process grows by noise (caches, the allocator).
    assert grown < 2_000_000, f"memory grew by {grown} bytes over 400 apps"
    if shared is not None:
        assert shared.close(1)
