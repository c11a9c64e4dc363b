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
in the same event. The latency is the time to the response's last byte. A client that left
before any response started gives status 499. Recording is an
in-memory append: the event loop never waits for delivery, which the SDK's one background
worker does. A request that passes through several instrumented (mounted) applications is
recorded once, by the outermost. The lifespan's shutdown flushes what is queued.

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
from contextvars import ContextVar
from typing import Any, Final, Unpack

from immutablelog.sdk.capture import MAX_EXCEPTION_MESSAGE, accept_request_id, plain_actor
from immutablelog.sdk.context import bind_request, unbind
from immutablelog.sdk.events import UUIDS
from immutablelog.sdk.integration import AuditOptions, Integration
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

#: Set while the outermost instrumented application handles a request, so that mounted
#: instrumented applications inside it pass the request through (one event, not two).
_RECORDING: ContextVar[bool] = ContextVar("immutablelog_asgi_recording", default=False)


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
        self._header_names = tuple((name, name.lower()) for name in self.settings.capture_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            kind == "http"
            and not _RECORDING.get()
            and scope["path"] not in self.settings.skip_paths
        ):
            token = _RECORDING.set(True)
            try:
                await _Exchange(self, scope).run(receive, send)
            finally:
                _RECORDING.reset(token)
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
    """One request on its way through the application: what the event will say."""

    __slots__ = (
        "audit",
        "body",
        "body_limit",
        "disconnected",
        "finished",
        "headers",
        "recorded",
        "request_id",
        "scope",
        "started",
        "status",
    )

    def __init__(self, audit: AuditMiddleware, scope: Scope) -> None:
        self.audit = audit
        self.scope = scope
        self.started = time.perf_counter()
        self.headers = _header_map(scope.get("headers") or ())
        candidate = self.headers.get("x-request-id")
        self.request_id = (candidate and accept_request_id(candidate)) or UUIDS.take()
        self.status: int | None = None
        self.disconnected = False
        self.finished: float | None = None
        self.recorded = False
        self.body: list[bytes] | None = None
        self.body_limit = 0
        length = kept_body_length(self.headers.get("content-length"), audit.settings.max_body_bytes)
        if length is not None:
            self.body, self.body_limit = [], length

    async def run(self, receive: Receive, send: Send) -> None:
        token = bind_request(self.request_id, self._actor)
        try:
            await self.audit.app(self.scope, self._receiver(receive), self._sender(send))
        except BaseException as exc:
            self.record(exc)
            raise
        finally:
            unbind(token)
        self.record(None)

    def _actor(self) -> Any:
        actor = (self.scope.get("state") or {}).get("imtbl_actor")
        if actor is None and self.audit._actor is not None:
            actor = self.audit._actor_from(self.audit._actor, self.scope)
        return actor

    def _receiver(self, receive: Receive) -> Receive:
        async def receive_and_note() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                if self.body is not None:
                    self.body.append(message.get("body", b""))
            elif kind == "http.disconnect":
                self.disconnected = True
            return message

        return receive_and_note

    def _sender(self, send: Send) -> Send:
        request_id = self.request_id.encode("latin-1")

        async def send_and_note(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                self.status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
                await send(message)
            elif kind == "http.response.body" and not message.get("more_body", False):
                await send(message)
                self.finished = time.perf_counter()
            else:
                await send(message)

        return send_and_note

    def record(self, exc: BaseException | None) -> None:
        """Queue the request's one event (later calls do nothing)."""
        if self.recorded:
            return
        self.recorded = True
        try:
            self._submit(exc)
        except Exception:
            self.audit._log_hook_error()

    def _submit(self, exc: BaseException | None) -> None:
        latency = (self.finished or time.perf_counter()) - self.started
        status = self.status
        exc_type = exc_message = None
        if isinstance(exc, asyncio.CancelledError):
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
        scope, headers, audit = self.scope, self.headers, self.audit
        state = scope.get("state") or {}
        actor = self._actor()
        if actor is not None:
            actor = plain_actor(actor)
        body = content_type = None
        if self.body is not None and (exc is not None or status >= 400):
            whole = b"".join(self.body)
            if len(whole) == self.body_limit:
                body, content_type = whole, headers.get("content-type")
        captured = None
        if audit._header_names:
            captured = tuple(
                (name, headers[key]) for name, key in audit._header_names if key in headers
            )
        client = scope.get("client")
        audit.submit(
            (  # a RequestCapture as a plain tuple (see there why)
                UUIDS.take(),
                time.time(),
                latency,
                scope.get("method", "GET"),
                scope.get("path", "/"),
                scope.get("query_string", b"").decode("latin-1"),
                status,
                exc_type,
                exc_message,
                client[0] if client else None,
                headers.get("x-forwarded-for"),
                headers.get("user-agent"),
                state.get("imtbl_event_name"),
                actor,
                self.request_id,
                body,
                content_type,
                captured,
            )
        )


def _header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined with ", " (RFC 9110)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers
