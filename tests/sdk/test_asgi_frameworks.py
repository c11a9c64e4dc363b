"""The ASGI middleware around Litestar and Quart apps, each on a real uvicorn server, wrapped
outermost, delivering to a real ledger server: the guarantees the Starlette tests check
(``test_asgi.py``) hold for frameworks with their own routing, error handling, streaming and
CORS."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, MediaType, Request, Response, asgi, get, post
from litestar.background_tasks import BackgroundTask
from litestar.config.cors import CORSConfig
from litestar.response import Stream
from quart import Quart
from quart import request as quart_request
from starlette.middleware.cors import CORSMiddleware

from immutablelog.asgi import AuditMiddleware
from immutablelog.sdk import DeliveryOptions
from tests.live import LiveServer
from tests.sdk.conftest import wait_until
from tests.sdk.test_asgi import Served, by_request_id

ORIGIN = "https://shop.example"
ACTOR = {"id": "user-7", "password": "hunter2"}


async def chunks(n: int, pause: float) -> AsyncIterator[bytes]:
    for i in range(n):
        yield f"chunk {i}\n".encode()
        await asyncio.sleep(pause)


def litestar_app(background_done: threading.Event, inner: Any) -> Any:
    @get("/hello", media_type=MediaType.TEXT)
    async def hello(request: Request[Any, Any, Any]) -> str:
        request.state.imtbl_event_name = "greeting.sent"
        request.state.imtbl_actor = ACTOR
        return "hello"

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("the view failed")

    @get("/stream")
    async def stream(request: Request[Any, Any, Any]) -> Stream:
        args = request.query_params
        return Stream(chunks(int(args.get("n", "3")), float(args.get("pause", "0"))))

    @get("/background", media_type=MediaType.TEXT)
    async def with_background() -> Response[str]:
        return Response("queued", background=BackgroundTask(background_done.set))

    @post("/echo")
    async def echo(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        return Response({"got": await request.json()}, status_code=422)

    @get("/healthz", media_type=MediaType.TEXT)
    async def healthz() -> str:
        return "ok"

    @asgi("/inner", is_mount=True, copy_scope=True)
    async def mounted(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)

    return Litestar(
        route_handlers=[hello, boom, stream, with_background, echo, healthz, mounted],
        cors_config=CORSConfig(allow_origins=[ORIGIN], allow_methods=["*"]),
    )


def quart_app(background_done: threading.Event, inner: Any) -> Any:
    app = Quart("shop")

    @app.get("/hello")
    async def hello() -> str:
        state = quart_request.scope.setdefault("state", {})
        state["imtbl_event_name"] = "greeting.sent"
        state["imtbl_actor"] = ACTOR
        return "hello"

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("the view failed")

    @app.get("/stream")
    async def stream() -> tuple[AsyncIterator[bytes], int]:
        args = quart_request.args
        return chunks(int(args.get("n", "3")), float(args.get("pause", "0"))), 200

    @app.post("/echo")
    async def echo() -> tuple[dict[str, Any], int]:
        return {"got": await quart_request.get_json()}, 422

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    # Quart has no CORS of its own: another ASGI middleware answers the preflight.
    return CORSMiddleware(app, allow_origins=[ORIGIN], allow_methods=["*"])


FRAMEWORKS: dict[str, Callable[[threading.Event, Any], Any]] = {
    "litestar": litestar_app,
    "quart": quart_app,
}


class Shop:
    """One framework's app, instrumented outermost, served; and what it was built with."""

    def __init__(self, framework: str, server: LiveServer, spool: Path) -> None:
        self.framework = framework
        self.background_done = threading.Event()

        async def inner_hi(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"inner"})

        delivery = DeliveryOptions(spool_dir=str(spool))
        self.inner = AuditMiddleware(
            inner_hi,
            api_key=server.ingest_key,
            api_url=server.url,
            service_name="inner",
            delivery=delivery,
        )
        self.audit = AuditMiddleware(
            FRAMEWORKS[framework](self.background_done, self.inner),
            api_key=server.ingest_key,
            api_url=server.url,
            service_name=f"{framework}-shop",
            env="test",
            skip_paths=["/healthz"],
            delivery=delivery,
        )
        self.served = Served(self.audit)
        self.url = self.served.url

    def close(self) -> None:
        self.served.stop()
        self.audit.close(10)
        self.inner.close(10)


@pytest.fixture(params=sorted(FRAMEWORKS))
def shop(request: pytest.FixtureRequest, live_server: LiveServer, tmp_path: Path) -> Iterator[Shop]:
    app = Shop(request.param, live_server, tmp_path / "spool")
    try:
        yield app
    finally:
        app.close()


def test_each_kind_of_request_is_one_event(live_server: LiveServer, shop: Shop) -> None:
    with httpx.Client(base_url=shop.url, timeout=10) as client:
        hello = client.get(
            "/hello?token=abc123",
            headers={"X-Request-Id": "req-hello", "X-Forwarded-For": "6.6.6.6"},
        )
        assert hello.text == "hello" and hello.headers["x-request-id"] == "req-hello"
        boom = httpx.get(shop.url + "/boom", headers={"X-Request-Id": "req-boom"}, timeout=10)
        assert boom.status_code == 500
        streamed = client.get("/stream?n=5", headers={"X-Request-Id": "req-stream"})
        assert streamed.text.count("chunk") == 5
        assert streamed.headers["x-request-id"] == "req-stream"
        echo = client.post(
            "/echo", json={"password": "s3cret", "note": "hi"}, headers={"X-Request-Id": "req-422"}
        )
        assert echo.status_code == 422 and echo.json() == {
            "got": {"password": "s3cret", "note": "hi"}
        }
        preflight = client.options(
            "/hello",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "X-Request-Id": "req-cors",
            },
        )
        assert preflight.status_code in (200, 204)  # answered by the CORS middleware
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert client.get("/nowhere", headers={"X-Request-Id": "req-404"}).status_code == 404
        assert client.get("/healthz", headers={"X-Request-Id": "req-skip"}).text == "ok"
        ids = ["req-hello", "req-boom", "req-stream", "req-422", "req-cors", "req-404"]
        if shop.framework == "litestar":  # background tasks and mounted apps of its own
            assert client.get("/background", headers={"X-Request-Id": "req-bg"}).text == "queued"
            assert client.get("/inner/hi", headers={"X-Request-Id": "req-mount"}).text == "inner"
            ids += ["req-bg", "req-mount"]
    assert wait_until(lambda: shop.audit.flush(5) and bool(by_request_id(live_server, ids[-1])))
    assert shop.audit.flush(30)
    for request_id in ids:
        assert len(by_request_id(live_server, request_id)) == 1, request_id
    assert not by_request_id(live_server, "req-skip")
    assert not [e for e in live_server.entries() if e["service"] == "inner"]
    events = {e["request_id"]: e for e in live_server.entries()}

    hello_event = events["req-hello"]
    assert (hello_event["event_name"], hello_event["service"], hello_event["env"]) == (
        "greeting.sent",
        f"{shop.framework}-shop",
        "test",
    )
    payload = json.loads(hello_event["payload"])
    assert payload["context"]["actor"] == {"id": "user-7", "password": "[Filtered]"}
    assert payload["context"]["ip"] == "127.0.0.1"  # the spoofed X-Forwarded-For is ignored
    assert "abc123" not in hello_event["payload"] and "6.6.6.6" not in hello_event["payload"]

    assert events["req-boom"]["type"] == "error"
    assert json.loads(events["req-boom"]["payload"])["metrics"]["status_code"] == 500
    body_event = events["req-422"]["payload"]
    assert "s3cret" not in body_event and "hi" in body_event
    assert json.loads(events["req-cors"]["payload"])["request"]["method"] == "OPTIONS"
    assert json.loads(events["req-404"]["payload"])["metrics"]["status_code"] == 404


def test_a_client_that_leaves_mid_stream_is_one_event(live_server: LiveServer, shop: Shop) -> None:
    with socket.create_connection(("127.0.0.1", shop.served.port)) as sock:
        sock.sendall(
            b"GET /stream?n=50&pause=0.05 HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-gone\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert wait_until(
        lambda: shop.audit.flush(1) and bool(by_request_id(live_server, "req-gone")), 30
    )
    time.sleep(1)  # anything recorded twice would have arrived by now
    assert shop.audit.flush(30)
    assert len(by_request_id(live_server, "req-gone")) == 1


def test_lifespan_shutdown_delivers_what_is_queued(live_server: LiveServer, tmp_path: Path) -> None:
    for framework in sorted(FRAMEWORKS):
        app = Shop(framework, live_server, tmp_path / framework)
        try:
            with httpx.Client(base_url=app.url, timeout=10) as client:
                for n in range(20):
                    client.get("/hello", headers={"X-Request-Id": f"{framework}-life-{n}"})
            app.served.stop()  # lifespan shutdown: flushed before the server exits
            assert app.audit.stats().backlog == 0
            for n in range(20):
                assert len(by_request_id(live_server, f"{framework}-life-{n}")) == 1
        finally:
            app.close()
