"""ASGI middleware (FastAPI, Starlette, Litestar, Quart): one audit event per HTTP request.

::

    app = FastAPI()
    app = AuditMiddleware(app, api_key=..., api_url=..., service_name="shop")

A pure ASGI middleware, so it sees every request the server hands the application and adds no
task, thread or buffering of its own. Install it **outermost** (wrap the finished app, as
above, rather than ``app.add_middleware``, which puts it inside Starlette's error handling):
then a CORS preflight, an HTTPS redirect or a trusted-host rejection answered by another
middleware is still recorded, and so is the 500 an unhandled exception becomes.

Exactly one event per request, recorded when the application is done with it: it returned
(after the last body chunk of a streaming response, and after its background tasks) or
raised — an exception that follows a 500 already sent, as Starlette's error handling does, is
in the same event. The latency is the time until the server is handed the response's last
byte. A client that left before any response started gives status 499. The event is built
on the event loop once the server has the response (a few µs; a build in the worker would hold
the GIL for a whole batch while requests wait for it) and appended to the queue: the event
loop never waits for delivery, which the SDK's one background worker does. A request that
passes through several instrumented (mounted) applications is recorded once, by the
outermost: the audit context it binds tells the inner ones, whatever scope they are given.
The lifespan's shutdown flushes what is queued.

A view names its event and actor through the request's state (``request.state`` in
Starlette and FastAPI, ``scope["state"]`` in any ASGI app): ``imtbl_event_name`` and
``imtbl_actor``; or give ``actor=`` a callable that takes the scope.

Settings are the Flask extension's, as keyword arguments or ``IMMUTABLELOG_*`` environment
variables (see :mod:`immutablelog.sdk.settings`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, Unpack

from immutablelog.sdk.capture import (
    MAX_EXCEPTION_MESSAGE,
    PLAIN_ACTOR_TYPES,
    EventBuilder,
    RequestCapture,
    plain_actor,
    request_ids,
)
from immutablelog.sdk.context import bind_request, bound_value, unbind
from immutablelog.sdk.events import UUIDS, WireEvent
from immutablelog.sdk.integration import AuditOptions, Integration
from immutablelog.sdk.pipeline import already_built
from immutablelog.sdk.settings import environment_config
from immutablelog.wsgi import kept_body_length

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ActorFromScope = Callable[[Scope], Any]

DEFAULT_SERVICE_NAME: Final = "asgi-service"
#: The status recorded for a request whose client left before any response started
#: (nginx's "client closed request").
CLIENT_CLOSED_REQUEST: Final = 499


class AuditMiddleware(Integration):
    """Records every HTTP request the wrapped ASGI application answers (module docstring).

    Keyword arguments: ``actor``, a function of the scope naming who acted, and the settings
    of :class:`~immutablelog.sdk.integration.AuditOptions`.
    """

    def __init__(
        self, app: ASGIApp, *, actor: ActorFromScope | None = None, **options: Unpack[AuditOptions]
    ) -> None:
        super().__init__(environment_config(), DEFAULT_SERVICE_NAME, options)
        self.app = app
        self._actor = actor
        self._skip_paths = self.settings.skip_paths
        self._max_body_bytes = self.settings.max_body_bytes
        self._finish = _Finisher(self._builder, self.settings.capture_headers)
        self._queue = self._lease.pipeline.submit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        outer = bound_value()  # (request id, exchange) of an instrumented app further out?
        if (
            kind == "http"
            and scope["path"] not in self._skip_paths
            and not (type(outer) is tuple and type(outer[1]) is _Exchange and not outer[1].recorded)
        ):
            # The whole exchange here rather than in a coroutine of its own: one frame less.
            exchange = _Exchange(self, scope, receive, send)
            # The exchange is the context's actor function: a mounted instrumented application
            # (whatever scope it is given) finds it there, unrecorded, and passes the request
            # through. (A request a background task makes after this one was recorded is its
            # own.)
            bound = bind_request((exchange.request_id, exchange))
            try:
                await self.app(scope, exchange.receive_and_note, exchange.send_and_note)
            except BaseException as exc:
                exchange.record(exc)
                raise
            finally:
                unbind(bound)
            exchange.record(None)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def send_after_flush(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                timeout = self.settings.delivery.shutdown_timeout
                await asyncio.to_thread(self.flush, timeout)
            await send(message)

        return send_after_flush


class _Exchange:
    """One request on its way through the application: the raw facts its event will tell.

    While the request runs, only what cannot wait is done: the request id (echoed in the
    response), the status, the times, the actor and the exception as plain data. Decoding the
    headers and query string and building the event wait until the response is sent
    (:class:`_Finisher`, in :meth:`record`). The wrappers of
    ``receive`` and ``send`` are bound methods, not closures made per request.
    """

    __slots__ = (
        "audit",
        "body",
        "body_limit",
        "disconnected",
        "event_id",
        "finished",
        "headers",
        "receive",
        "recorded",
        "request_id",
        "scope",
        "send",
        "started",
        "status",
    )

    def __init__(self, audit: AuditMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.started = time.perf_counter()
        self.audit = audit
        self.scope = scope
        self.receive = receive
        self.send = send
        self.status: int | None = None
        self.disconnected = False
        self.finished: float | None = None
        self.recorded = False
        self.body: list[bytes] | None = None
        self.body_limit = 0
        # Copies: the event tells the request as it came, whatever the application did to the
        # scope's list meanwhile. Looked up by the lower-case names ASGI servers give.
        self.headers = headers = tuple(scope.get("headers") or ())
        named = dict(headers)
        candidate = named.get(b"x-request-id")
        self.request_id, self.event_id = request_ids(
            None if candidate is None else candidate.decode("latin-1")
        )
        length = named.get(b"content-length")
        if length is not None and audit._max_body_bytes:
            kept = kept_body_length(length.decode("latin-1"), audit._max_body_bytes)
            if kept is not None:
                self.body, self.body_limit = [], kept

    def __call__(self) -> Any:
        """Who acted, as the view or the middleware's ``actor`` function tells (the audit
        context's ``actor_of``)."""
        actor = (self.scope.get("state") or {}).get("imtbl_actor")
        if actor is None and self.audit._actor is not None:
            actor = self.audit._actor_from(self.audit._actor, self.scope)
        return actor

    async def receive_and_note(self) -> Message:
        message = await self.receive()
        kind = message["type"]
        if kind == "http.request":
            if self.body is not None:
                self.body.append(message.get("body", b""))
        elif kind == "http.disconnect":
            self.disconnected = True
        return message

    def send_and_note(self, message: Message) -> Awaitable[None]:
        """The server's ``send`` of ``message``, noted (and the request id added to the
        response's headers): a plain function that returns the server's awaitable, so that a
        message passes through no coroutine of ours. The last byte's time is when the server
        is handed it."""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", ())
            # Names are lower case in a response (ASGI): one of the application's own is
            # replaced, as the seed set the header.
            if b"x-request-id" in dict(headers):
                headers = [pair for pair in headers if pair[0] != b"x-request-id"]
            # The message is the application's to give away (Starlette's middleware edit it
            # in place too); its list of headers may be a response's own, so it is not.
            message["headers"] = [*headers, (b"x-request-id", self.request_id.encode("latin-1"))]
            return self.send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.finished = time.perf_counter()
        return self.send(message)

    def record(self, exc: BaseException | None) -> None:
        """Build and queue the request's one event (later calls do nothing). A bug here is
        logged, and never fails the request."""
        if self.recorded:
            return
        self.recorded = True
        try:
            latency = (self.finished or time.perf_counter()) - self.started
            status = self.status
            exc_type = exc_message = None
            if exc is not None and isinstance(exc, asyncio.CancelledError):
                exc, self.disconnected = None, True  # the server gave up on a departed client
            if exc is not None:
                exc_type = type(exc).__name__
                exc_message = str(exc)[:MAX_EXCEPTION_MESSAGE]
                if status is None:
                    status = 500
            elif status is None:
                # No response: the client left, or the application returned without answering
                # (the server then sends a 500 itself).
                status = CLIENT_CLOSED_REQUEST if self.disconnected else 500
            scope, audit = self.scope, self.audit
            state = scope.get("state") or {}
            actor = state.get("imtbl_actor")
            if actor is None and audit._actor is not None:
                actor = audit._actor_from(audit._actor, scope)
            if actor is not None and type(actor) not in PLAIN_ACTOR_TYPES:
                actor = plain_actor(actor)
            body = None
            if self.body is not None and (exc is not None or status >= 400):
                whole = b"".join(self.body)
                if len(whole) == self.body_limit:
                    body = whole
            # Built here, once the server has the response, not in the worker: a build there
            # holds the GIL while a request may be waiting for it (the p99 of BENCHMARKS.md).
            event = audit._finish(
                (  # an exchange's raw capture: see _Finisher
                    self.event_id or UUIDS.take(),
                    time.time(),
                    latency,
                    scope.get("method", "GET"),
                    scope.get("path", "/"),
                    scope.get("query_string", b""),
                    status,
                    exc_type,
                    exc_message,
                    scope.get("client"),
                    self.headers,
                    state.get("imtbl_event_name"),
                    actor,
                    self.request_id,
                    body,
                )
            )
            audit._queue(event, already_built)
        except Exception:
            self.audit._log_hook_error()


class _Finisher:
    """Turns an exchange's raw capture into the shared
    :class:`~immutablelog.sdk.capture.RequestCapture` and builds its event, after the response:
    the header and query decoding the request did not wait for."""

    __slots__ = ("_builder", "_captured", "_wanted")

    def __init__(self, builder: EventBuilder, capture_headers: Iterable[str]) -> None:
        self._builder = builder
        self._captured = tuple(
            (name, name.lower().encode("latin-1", errors="replace")) for name in capture_headers
        )
        self._wanted = frozenset(
            {b"user-agent", b"x-forwarded-for", b"content-type", *(k for _, k in self._captured)}
        )

    def __call__(self, raw: tuple[Any, ...]) -> WireEvent:
        try:
            capture = self.capture(raw)
        except Exception as exc:  # never raises: a marked event rather than none
            return self._builder.stub(_identity(raw), exc)
        return self._builder.build(capture)

    def capture(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        """The RequestCapture (as a plain tuple) of an exchange's raw capture."""
        (event_id, timestamp, latency, method, path, query, status, exc_type, exc_message,
         client, raw_headers, event_name, actor, request_id, body) = raw  # fmt: skip
        headers = _header_map(raw_headers, self._wanted)
        captured = None
        if self._captured:
            captured = tuple((name, headers[key]) for name, key in self._captured if key in headers)
        return (
            event_id,
            timestamp,
            latency,
            method,
            path,
            query.decode("latin-1"),
            status,
            exc_type,
            exc_message,
            client[0] if client else None,
            headers.get(b"x-forwarded-for"),
            headers.get(b"user-agent"),
            event_name,
            actor,
            request_id,
            body,
            headers.get(b"content-type") if body is not None else None,
            captured,
        )


def _identity(raw: Any) -> Any:
    """What a stub event can tell of a raw capture that could not be read: its ids, time,
    method, path and name (or the raw capture itself, if even those are not there)."""
    try:
        return RequestCapture(
            raw[0], raw[1], None, raw[3], raw[4], "", None, None, None, None, None, None,
            raw[11], None, raw[13], None, None, None,
        )  # fmt: skip
    except Exception:
        return raw


def _header_map(raw: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes]) -> dict[bytes, str]:
    """The ``wanted`` request headers by lower-case name; repeated ones joined with ", "
    (RFC 9110)."""
    headers: dict[bytes, str] = {}
    for name, value in raw:
        key = name.lower()
        if key in wanted:
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers
