"""Durability: what got a 2xx survives kill -9 and SIGTERM, exactly once, in an intact tree."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from immutablelog.checkpoint import Checkpoint, Verifier, open_checkpoint
from tests.live import LiveServer

META = {"type": "info", "event_name": "crash.test", "service": "load", "env": "test"}


def hammer(server: LiveServer, client_id: int, acked: list[str], stop: threading.Event) -> None:
    """Send events until told to stop or the server dies; remember every acknowledged key."""
    with httpx.Client(timeout=10) as client:
        n = 0
        while not stop.is_set():
            key = f"c{client_id}-{n}"
            n += 1
            try:
                if n % 3 == 0:
                    items = [
                        {
                            "payload": json.dumps({"k": f"{key}-{i}"}),
                            "meta": META,
                            "idempotency_key": f"{key}-{i}",
                        }
                        for i in range(20)
                    ]
                    response = client.post(
                        server.url + "/v1/events/batch",
                        json={"events": items},
                        headers=server.headers(),
                    )
                    if response.status_code == 200:
                        acked.extend(r["tx_id"] for r in response.json()["results"] if r["ok"])
                else:
                    response = client.post(
                        server.url + "/v1/events",
                        json={"payload": json.dumps({"k": key}), "meta": META},
                        headers=server.headers(**{"Idempotency-Key": key}),
                    )
                    if response.status_code == 202:
                        acked.append(response.json()["tx_id"])
            except httpx.HTTPError:
                if server.process is not None and server.process.poll() is not None:
                    return


def watch_checkpoints(server: LiveServer, seen: list[Checkpoint], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            seen.append(server.checkpoint())
        except (httpx.HTTPError, ValueError):
            if server.process is not None and server.process.poll() is not None:
                return
        time.sleep(0.02)


def run_load(server: LiveServer, seconds: float, finish: str) -> tuple[list[str], list[Checkpoint]]:
    acked: list[str] = []
    seen: list[Checkpoint] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server, i, acked, stop)) for i in range(8)]
    threads.append(threading.Thread(target=watch_checkpoints, args=(server, seen, stop)))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(seconds)
    if finish == "kill":
        server.kill()
    else:
        assert server.stop() in (0, -15)
    stop.set()
    for thread in threads:
        thread.join(30)
    return acked, seen


@pytest.mark.parametrize("finish", ["kill", "sigterm"])
def test_acknowledged_events_survive_the_end_of_the_process(tmp_path: Path, finish: str) -> None:
    server = LiveServer(tmp_path / "data")
    server.start()
    try:
        acked, seen = run_load(server, 0.3, finish)
        assert len(acked) >= 300 and len(seen) > 1
        assert "Traceback" not in server.log()
        server.start()
        final = server.assert_tree_intact()
        stored = Counter(entry["id"] for entry in server.entries())
        assert all(stored[tx_id] == 1 for tx_id in acked), "an acknowledged event was lost"
        assert max(stored.values()) == 1
        # Every checkpoint signed before the end — those clients saw and those stored — is
        # consistent with the one signed after the restart: history was only extended.
        verifier = Verifier(server.verifier_key)
        conn = sqlite3.connect(server.data_dir / "ledger.db")
        stored_notes = [row[0] for row in conn.execute("SELECT note FROM checkpoints")]
        conn.close()
        signed = [open_checkpoint(verifier, note) for note in stored_notes]
        for old in {(c.size, c.root_hash): c for c in seen + signed}.values():
            server.assert_consistent(old, final)
        # And the server still takes writes where it left off.
        response = httpx.post(
            server.url + "/v1/events",
            json={"payload": "{}", "meta": META},
            headers=server.headers(),
        )
        assert response.json()["index"] == final.size
    finally:
        server.kill()
