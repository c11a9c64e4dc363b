"""Several API processes on one SQLite file: one tree, no fork, every event once."""

from __future__ import annotations

import gc
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from immutablelog.server import app_from_env
from tests.live import HTTP, LiveServer

META = {"type": "info", "event_name": "multi.worker", "service": "s"}


def test_two_worker_processes_share_one_log(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", workers=2)
    server.start()
    try:

        def send(n: int) -> httpx.Response:
            return HTTP.post(
                server.url + "/v1/events",
                json={"payload": json.dumps({"n": n % 150}), "meta": META},
                headers=server.headers(**{"Idempotency-Key": f"k{n % 150}"}),
                timeout=30,
            )

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(send, range(300)))
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers][:3]
        # 300 requests, 150 distinct keys: each key stored once, whichever process took it.
        by_key: dict[str, set[str]] = {}
        for n, answer in enumerate(answers):
            by_key.setdefault(f"k{n % 150}", set()).add(answer.json()["tx_id"])
        assert all(len(ids) == 1 for ids in by_key.values())
        checkpoint = server.assert_tree_intact()
        assert len(server.entries()) == 150 and checkpoint.size == 150 + 4  # + admin events
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert "immutablelog_events_ingested_total" in metrics
    finally:
        server.kill()


def test_the_worker_factory_tunes_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Process-wide, so only the factory a worker process runs does it (never create_app).
    monkeypatch.setenv("IMMUTABLELOG_DATA_DIR", str(tmp_path / "data"))
    before = gc.get_threshold()
    try:
        app = app_from_env()
        assert gc.get_threshold() == (10_000, 20, 20)
        assert gc.get_freeze_count() > 0
        app.state.ledger.close()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
