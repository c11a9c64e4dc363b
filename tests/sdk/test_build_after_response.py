"""The Django, WSGI and ASGI middlewares build each event on the request's own thread (or
event loop) once the response is sent, not in the worker: a batch built there holds the GIL
while requests wait for it. The custom scrubber, which runs inside the build, tells where and
when that happened."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

from immutablelog.asgi import AuditMiddleware as AsgiAudit
from immutablelog.sdk import DeliveryOptions
from immutablelog.wsgi import AuditMiddleware as WsgiAudit
from tests.sdk.fake_ledger import FakeLedger


class Builds:
    """A scrubber that notes the thread each build ran on and what had happened by then."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.response_done = False
        self.done_before_build: list[bool] = []

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        self.done_before_build.append(self.response_done)
        return payload

    def check_one_built_on(self, thread: int, audit: Any, sink: FakeLedger) -> None:
        """One build, on ``thread``, after the response; its event delivered."""
        assert self.threads == [thread]
        assert self.done_before_build == [True]
        assert audit.flush(10)
        assert [s.document["request"]["path"] for s in sink.stored] == ["/orders"]
        audit.close()


def test_wsgi_builds_on_the_request_thread_once_the_response_is_closed(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    builds = Builds()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"o", b"k"]

    audit = WsgiAudit(
        app, api_url=sink.url, api_key="k", service_name="wsgi", scrubber=builds, delivery=delivery
    )
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders", "wsgi.input": None}
    body = audit(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"ok"
    assert builds.threads == [], "nothing is built while the server still sends the response"
    builds.response_done = True
    body.close()  # type: ignore[attr-defined]
    builds.check_one_built_on(threading.get_ident(), audit, sink)


def test_asgi_builds_on_the_event_loop_once_the_last_byte_is_sent(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    builds = Builds()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    audit = AsgiAudit(
        app, api_url=sink.url, api_key="k", service_name="asgi", scrubber=builds, delivery=delivery
    )
    loop_threads: list[int] = []

    async def serve_one() -> None:
        loop_threads.append(threading.get_ident())

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                assert builds.threads == [], "the last byte goes out before the build"
                builds.response_done = True

        scope = {"type": "http", "method": "GET", "path": "/orders", "headers": []}
        await audit(scope, receive, send)

    asyncio.run(serve_one())
    builds.check_one_built_on(loop_threads[0], audit, sink)


def test_a_build_that_fails_on_the_request_thread_still_answers_and_records(
    sink: FakeLedger, delivery: DeliveryOptions
) -> None:
    """A scrubber that raises costs the event its free-form fields, never the response."""

    def scrubber(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("scrubber bug")

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    audit = WsgiAudit(
        app, api_url=sink.url, api_key="k", service_name="wsgi", scrubber=scrubber,
        delivery=delivery,
    )  # fmt: skip
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/p", "QUERY_STRING": "token=t0p"}
    body = audit(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"ok"
    body.close()  # type: ignore[attr-defined]
    assert audit.flush(10)
    (stored,) = sink.stored
    assert stored.document["request"]["path"] == "/p"
    assert "t0p" not in stored.payload
    audit.close()
