"""Faults nobody can provoke from outside, injected into a real server's ledger (uvicorn on a
socket, with the protocol ``serve`` uses):

- a failure nobody foresaw still gets the JSON body, and the client's next request works;
- a database that hangs holds up the reads that wait for it, never the event loop: health,
  ingest and other reads are answered meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from immutablelog.ledger import DEFAULT_TENANT, Ledger
from immutablelog.server.app import create_app
from immutablelog.server.protocol import ApiHttpProtocol
from tests.live import served_in_thread

META = {"type": "info", "event_name": "e", "service": "s"}


@pytest.fixture
def keys(ledger: Ledger) -> dict[str, str]:
    scopes = {"read": {"read"}, "ingest": {"ingest"}}
    return {
        name: ledger.create_api_key(DEFAULT_TENANT, frozenset(scope))[0]
        for name, scope in scopes.items()
    }


@pytest.fixture
def failing_server(
    ledger: Ledger, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ledger, "checkpoint", broken)
    with served_in_thread(create_app(ledger), http=ApiHttpProtocol) as url:
        yield url


def test_a_500_closes_the_connection_and_the_next_request_succeeds(
    failing_server: str, keys: dict[str, str]
) -> None:
    url = failing_server
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {keys['read']}"}) as client:
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


def test_a_hanging_read_holds_up_only_itself(
    ledger: Ledger, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    release, entered = threading.Event(), threading.Event()
    real_entries = ledger.entry_bytes

    def hanging_entries(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test never released the read"
        return real_entries(*args, **kwargs)

    monkeypatch.setattr(ledger, "entry_bytes", hanging_entries)
    read = {"Authorization": f"Bearer {keys['read']}"}
    with served_in_thread(create_app(ledger), http=ApiHttpProtocol) as url:
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(httpx.get(url + "/v1/entries", headers=read, timeout=30))
        )
        slow.start()
        try:
            assert entered.wait(10)
            # While that read hangs, the server answers everything else (a blocked event loop
            # would time these out).
            assert httpx.get(url + "/livez", timeout=5).status_code == 200
            assert httpx.get(url + "/v1/checkpoint", headers=read, timeout=5).status_code == 200
            ingested = httpx.post(
                url + "/v1/events",
                json={"payload": "{}", "meta": META},
                headers={"Authorization": f"Bearer {keys['ingest']}"},
                timeout=5,
            )
            assert ingested.status_code == 202
            assert not answers  # the hanging read is still waiting
        finally:
            release.set()
            slow.join(30)
    assert answers and answers[0].status_code == 200
