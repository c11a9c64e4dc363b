"""The ASGI middleware, end to end: a Starlette app on a real uvicorn server, wrapped outermost,
delivering to a real ledger server; every assertion reads what the ledger durably stored."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from immutablelog.asgi import AuditMiddleware
from immutablelog.sdk import DeliveryOptions
from tests.live import LiveServer, free_port
from tests.sdk.conftest import wait_until


async def hello(request: Request) -> PlainTextResponse:
    request.state.imtbl_event_name = "greeting.sent"
    request.state.imtbl_actor = {"id": "user-7", "password": "hunter2"}
    return PlainTextResponse("hello")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("the view failed")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(int(request.query_params.get("n", "3"))):
            yield f"chunk {n}\n".encode()
            await asyncio.sleep(float(request.query_params.get("pause", "0")))

    return StreamingResponse(chunks())


async def with_background(request: Request) -> PlainTextResponse:
    done = request.app.state.background_done
    return PlainTextResponse("queued", background=BackgroundTask(done.set))


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"got": body}, status_code=422)


async def inner_hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("inner")


def fresh_scope(app: Any) -> Any:
    """A dispatcher that hands ``app`` a brand-new scope dict, as some routers do: neither the
    parent's scope nor a copy of it."""

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        keys = ("type", "asgi", "http_version", "method", "scheme", "server", "client",
                "root_path", "path", "raw_path", "query_string", "headers")  # fmt: skip
        await app({key: scope[key] for key in keys if key in scope}, receive, send)

    return dispatch


def make_app(server: LiveServer, spool: Path) -> tuple[AuditMiddleware, AuditMiddleware]:
    """The app, instrumented outermost, and the instrumented app mounted inside it (twice: once
    given the scope, once a brand-new one)."""
    inner = AuditMiddleware(
        Starlette(routes=[Route("/hi", inner_hello)]),
        api_key=server.ingest_key,
        api_url=server.url,
        service_name="inner",
        delivery=DeliveryOptions(spool_dir=str(spool)),
    )
    app = Starlette(
        routes=[
            Route("/hello", hello),
            Route("/boom", boom),
            Route("/stream", stream),
            Route("/background", with_background),
            Route("/echo", echo, methods=["POST"]),
            Route("/healthz", inner_hello),
            Mount("/inner", app=inner),
            Mount("/fresh", app=fresh_scope(inner)),
        ],
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["https://shop.example"], allow_methods=["*"])
        ],
    )
    app.state.background_done = threading.Event()
    outer = AuditMiddleware(
        app,
        api_key=server.ingest_key,
        api_url=server.url,
        service_name="asgi-shop",
        env="test",
        delivery=DeliveryOptions(spool_dir=str(spool)),
    )
    return outer, inner


class Served:
    """An ASGI app run by uvicorn in a thread (a real server on a real socket)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # proxy_headers off: uvicorn would otherwise take the client address from
        # X-Forwarded-For itself, for connections from 127.0.0.1 (as every test's are).
        config = uvicorn.Config(
            app, port=self.port, log_level="warning", lifespan="on", proxy_headers=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def served(live_server: LiveServer, tmp_path: Path) -> Iterator[tuple[Served, AuditMiddleware]]:
    audit, inner = make_app(live_server, tmp_path / "spool")
    app = Served(audit)
    try:
        yield app, audit
    finally:
        app.stop()
        audit.close(10)
        inner.close(10)


def stored(server: LiveServer, service: str = "asgi-shop") -> list[dict[str, Any]]:
    return [e for e in server.entries() if e["service"] == service]


def by_request_id(server: LiveServer, request_id: str) -> list[dict[str, Any]]:
    return [e for e in server.entries() if e.get("request_id") == request_id]


def test_each_kind_of_request_is_one_event(
    live_server: LiveServer, served: tuple[Served, AuditMiddleware]
) -> None:
    app, audit = served
    with httpx.Client(base_url=app.url, timeout=10) as client:
        hello = client.get("/hello", headers={"X-Request-Id": "req-hello"})
        assert hello.text == "hello" and hello.headers["x-request-id"] == "req-hello"
        # (An unhandled exception makes the server close that connection: a fresh one.)
        boom = httpx.get(app.url + "/boom", headers={"X-Request-Id": "req-boom"}, timeout=10)
        assert boom.status_code == 500
        streamed = client.get("/stream?n=5", headers={"X-Request-Id": "req-stream"})
        assert streamed.text.count("chunk") == 5
        assert client.get("/background", headers={"X-Request-Id": "req-bg"}).text == "queued"
        preflight = client.options(
            "/hello",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "X-Request-Id": "req-cors",
            },
        )
        assert preflight.status_code == 200  # answered by CORSMiddleware, not the app
        assert client.get("/inner/hi", headers={"X-Request-Id": "req-mount"}).text == "inner"
        assert client.get("/fresh/hi", headers={"X-Request-Id": "req-fresh"}).text == "inner"
        assert client.get("/nowhere", headers={"X-Request-Id": "req-404"}).status_code == 404
        assert client.get("/healthz", headers={"X-Request-Id": "req-skip"}).status_code == 200
    # A request with a background task is recorded once the task is done, after its response.
    assert wait_until(lambda: audit.flush(5) and bool(by_request_id(live_server, "req-bg")), 30)
    events = {e["request_id"]: e for e in stored(live_server)}
    ids = ["req-hello", "req-boom", "req-stream", "req-bg", "req-cors", "req-mount", "req-fresh",
           "req-404"]  # fmt: skip
    for request_id in ids:
        assert len(by_request_id(live_server, request_id)) == 1, request_id
    assert not by_request_id(live_server, "req-skip")
    assert not stored(live_server, "inner")  # the mounted app's own middleware passed them on

    hello_event = events["req-hello"]
    assert hello_event["event_name"] == "greeting.sent" and hello_event["env"] == "test"
    payload = json.loads(hello_event["payload"])
    assert payload["context"]["actor"] == {"id": "user-7", "password": "[Filtered]"}
    assert payload["metrics"]["status_code"] == 200

    boom = json.loads(events["req-boom"]["payload"])
    assert events["req-boom"]["type"] == "error"
    assert boom["metrics"]["status_code"] == 500
    assert "RuntimeError" in json.dumps(boom)
    assert json.loads(events["req-cors"]["payload"])["request"]["method"] == "OPTIONS"
    assert json.loads(events["req-404"]["payload"])["metrics"]["status_code"] == 404


def test_a_generated_request_id_is_echoed_and_recorded(
    live_server: LiveServer, served: tuple[Served, AuditMiddleware]
) -> None:
    app, audit = served
    answer = httpx.get(app.url + "/hello", headers={"X-Request-Id": "bad id with spaces"})
    request_id = answer.headers["x-request-id"]
    assert request_id != "bad id with spaces"
    ok = audit.flush(30)

    assert ok
    (event,) = by_request_id(live_server, request_id)
    # An id of our own is the event's id too (the id the response echoed finds the event);
    # a client's accepted id never is.
    assert json.loads(event["payload"])["id"] == request_id == event["idempotency_key"]
    httpx.get(app.url + "/hello", headers={"X-Request-Id": "req-own"})
    assert audit.flush(30)
    (event,) = by_request_id(live_server, "req-own")
    assert json.loads(event["payload"])["id"] == event["idempotency_key"] != "req-own"


def test_a_spoofed_forwarded_for_is_ignored_and_secrets_are_redacted(
    live_server: LiveServer, served: tuple[Served, AuditMiddleware]
) -> None:
    app, audit = served
    httpx.get(
        app.url + "/hello?token=abc123&page=2",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Request-Id": "req-spoof"},
    )
    assert audit.flush(30)
    (event,) = by_request_id(live_server, "req-spoof")
    payload = json.loads(event["payload"])
    assert payload["context"]["ip"] == "127.0.0.1"
    assert payload["request"]["query_params"] == {"token": "[Filtered]", "page": "2"}
    assert "abc123" not in event["payload"] and "6.6.6.6" not in event["payload"]


def test_an_error_keeps_the_redacted_body(
    live_server: LiveServer, served: tuple[Served, AuditMiddleware]
) -> None:
    app, audit = served
    answer = httpx.post(
        app.url + "/echo",
        json={"card": "4111", "password": "s3cret", "note": "hi"},
        headers={"X-Request-Id": "req-body"},
    )
    assert answer.status_code == 422
    assert audit.flush(30)
    (event,) = by_request_id(live_server, "req-body")
    assert "s3cret" not in event["payload"] and "hi" in event["payload"]


def test_a_client_that_leaves_mid_stream_is_one_event(
    live_server: LiveServer, served: tuple[Served, AuditMiddleware]
) -> None:
    app, audit = served
    with socket.create_connection(("127.0.0.1", app.port)) as sock:
        sock.sendall(
            b"GET /stream?n=50&pause=0.05 HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-gone\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert wait_until(lambda: audit.flush(1) and bool(by_request_id(live_server, "req-gone")), 30)
    time.sleep(1)  # anything recorded twice would have arrived by now
    assert audit.flush(30)
    assert len(by_request_id(live_server, "req-gone")) == 1


def test_lifespan_shutdown_delivers_what_is_queued(live_server: LiveServer, tmp_path: Path) -> None:
    audit, inner = make_app(live_server, tmp_path / "spool")
    app = Served(audit)
    with httpx.Client(base_url=app.url, timeout=10) as client:
        for n in range(20):
            client.get("/hello", headers={"X-Request-Id": f"req-life-{n}"})
    app.stop()  # lifespan shutdown: flushed before the server exits
    try:
        assert audit.stats().backlog == 0
        for n in range(20):
            assert len(by_request_id(live_server, f"req-life-{n}")) == 1
    finally:
        audit.close(10)
        inner.close(10)


def test_settings_come_from_the_environment(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMMUTABLELOG_URL", live_server.url)
    monkeypatch.setenv("IMMUTABLELOG_API_KEY", live_server.ingest_key)
    monkeypatch.setenv("IMMUTABLELOG_SERVICE_NAME", "from-env")
    monkeypatch.setenv("IMMUTABLELOG_ENV", "staging")
    monkeypatch.setenv("IMMUTABLELOG_SKIP_PATHS", "/hello, /ping")
    audit = AuditMiddleware(
        Starlette(routes=[Route("/hello", hello), Route("/other", inner_hello)]),
        env="explicit",  # an explicit argument beats the environment
        delivery=DeliveryOptions(spool_dir=str(tmp_path / "spool")),
    )
    app = Served(audit)
    try:
        httpx.get(app.url + "/hello", headers={"X-Request-Id": "req-env-skipped"})
        httpx.get(app.url + "/other", headers={"X-Request-Id": "req-env"})
        assert audit.flush(30)
        (event,) = by_request_id(live_server, "req-env")
        assert (event["service"], event["env"]) == ("from-env", "explicit")
        assert not by_request_id(live_server, "req-env-skipped")
    finally:
        app.stop()
        audit.close(10)


async def tenant(request: Request) -> PlainTextResponse:
    # The application's own X-Request-Id: replaced by the request's, as the seed did.
    return PlainTextResponse("tenant", headers={"X-Request-Id": "the-app-s-own"})


def test_headers_proxies_and_redaction_when_the_worker_builds_the_event(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """The event loop keeps the raw headers; the worker decodes them: the allowlisted headers
    are still redacted, the forwarded address still trusted through the configured hops only,
    and the response still carries the request's id, once."""
    audit = AuditMiddleware(
        Starlette(routes=[Route("/tenant", tenant)]),
        api_key=live_server.ingest_key,
        api_url=live_server.url,
        service_name="asgi-headers",
        trusted_proxies=1,
        capture_headers=["X-Tenant", "Authorization"],
        delivery=DeliveryOptions(spool_dir=str(tmp_path / "spool")),
    )
    app = Served(audit)
    try:
        answer = httpx.get(
            app.url + "/tenant?password=pw&page=3",
            headers={
                "X-Request-Id": "req-headers",
                "X-Tenant": "acme",
                "Authorization": "Bearer s3cret",
                "X-Forwarded-For": "6.6.6.6, 203.0.113.9",
                "User-Agent": "probe/1.0",
            },
        )
        assert answer.headers.get_list("x-request-id") == ["req-headers"]
        assert audit.flush(30)
    finally:
        app.stop()
        audit.close(10)
    (event,) = by_request_id(live_server, "req-headers")
    payload = json.loads(event["payload"])
    assert payload["request"]["headers"] == {"X-Tenant": "acme", "Authorization": "[Filtered]"}
    assert payload["request"]["query_params"] == {"password": "[Filtered]", "page": "3"}
    assert payload["context"]["ip"] == "203.0.113.9"  # one trusted hop: not the client's 6.6.6.6
    assert payload["context"]["user_agent"] == "probe/1.0"
    assert "s3cret" not in event["payload"] and "pw" not in event["payload"]
