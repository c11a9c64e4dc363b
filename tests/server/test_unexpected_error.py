"""A failure nobody foresaw still gets the JSON body, and the client's next request works.

No input provokes a 500 any more, so the fault is injected: the ledger raises where it never
should. The server is real (uvicorn on a socket, with the protocol ``serve`` uses).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from immutablelog.ledger import DEFAULT_TENANT, Ledger
from immutablelog.server.app import create_app
from immutablelog.server.protocol import ApiHttpProtocol
from tests.live import free_port


@pytest.fixture
def failing_server(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    read_key, _ = ledger.create_api_key(DEFAULT_TENANT, frozenset({"read"}))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ledger, "checkpoint", broken)
    port = free_port()
    config = uvicorn.Config(
        create_app(ledger), port=port, http=ApiHttpProtocol, log_level="critical", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", read_key
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_500_closes_the_connection_and_the_next_request_succeeds(
    failing_server: tuple[str, str],
) -> None:
    url, key = failing_server
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:
        failed = client.get(url + "/v1/checkpoint")
        assert failed.status_code == 500
        assert failed.headers["connection"] == "close"
        assert failed.json() == {
            "ok": False,
            "reason": "internal_error",
            "message": "the server failed to handle this request",
        }
        assert "a bug" not in failed.text  # no internals leak
        assert client.get(url + "/healthz").status_code == 200
        assert client.get(url + "/v1/checkpoint").status_code == 500
