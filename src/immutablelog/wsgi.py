"""WSGI middleware for any framework, and the request path the Flask extension shares.

::

    application = AuditMiddleware(application, api_key=..., api_url=..., service_name="shop")

One event per request the application serves, recorded when the server closes the response
(after the last byte of a streamed body) or when the application raises. A view names its
event and actor in the WSGI environ (``environ["immutablelog.event_name"]``,
``environ["immutablelog.actor"]``), or ``actor=`` takes a callable of the environ. Settings
are the Flask extension's, as keyword arguments or ``IMMUTABLELOG_*`` environment variables.

The pieces that touch a request — settling its id, keeping a small body for error events,
noting the status and setting ``X-Request-Id``, turning the environ into a capture — live
here, and the Flask extension is built on them, so there is one implementation of the event
shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, Unpack

from immutablelog.sdk.capture import (
    MAX_EXCEPTION_MESSAGE,
    PLAIN_ACTOR_TYPES,
    plain_actor,
    request_ids,
)
from immutablelog.sdk.context import bind_request, unbind
from immutablelog.sdk.events import UUIDS
from immutablelog.sdk.integration import AuditOptions, Integration
from immutablelog.sdk.settings import environment_config

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


#: Where per-request state lives: the WSGI environ (namespaced, as PEP 3333 recommends).
STATE_KEY: Final = "immutablelog.state"
EVENT_NAME_KEY: Final = "immutablelog.event_name"
ACTOR_KEY: Final = "immutablelog.actor"
DEFAULT_SERVICE_NAME: Final = "wsgi-service"

ActorFromEnviron = Callable[[dict[str, Any]], Any]


class BodyRecorder:
    """Stands in for ``wsgi.input``: passes every read through and keeps a copy of the bytes.

    Only installed when ``Content-Length`` is small, so the copy is bounded. It deliberately has
    no ``readinto``: Werkzeug's ``LimitedStream`` then reads through ``read()``, which records.
    Nothing is ever read on the view's behalf (a client announcing more bytes than it sends
    would otherwise stall the request), so a body the view did not read is not captured.
    """

    __slots__ = ("_chunks", "_expected", "_seen", "_stream")

    def __init__(self, stream: Any, expected: int) -> None:
        self._stream = stream
        self._expected = expected
        self._chunks: list[bytes] = []
        self._seen = 0

    def _keep(self, data: bytes) -> bytes:
        if data and self._seen < self._expected:
            self._chunks.append(data[: self._expected - self._seen])
            self._seen += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._keep(self._stream.read())
        return self._keep(self._stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._keep(self._stream.readline())
        return self._keep(self._stream.readline(size))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return [self._keep(line) for line in self._stream.readlines(hint)]

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def body(self) -> bytes | None:
        """The whole body if the view read all of it, else ``None``."""
        if self._seen < self._expected:
            return None
        return b"".join(self._chunks)


class KeptBody(Protocol):
    """A request body kept for error events (the WSGI :class:`BodyRecorder`, or a framework's
    own copy)."""

    def body(self) -> bytes | None: ...


class RequestState:
    """What one request's capture needs, kept in its environ from start to end.

    ``started`` is ``None`` for a state made outside the middleware (a custom event recorded
    in a request context pushed by hand): such a context is not a served request and yields
    no event.

    ``candidate`` is the client's ``X-Request-Id``; the request and event ids follow from it
    (:func:`~immutablelog.sdk.capture.request_ids`).
    """

    __slots__ = ("body", "emitted", "event_id", "request_id", "started", "status")

    def __init__(self, started: float | None, candidate: str | None) -> None:
        self.started = started
        self.request_id, self.event_id = request_ids(candidate)
        self.status: int | None = None
        self.body: KeptBody | None = None
        self.emitted = False


def late_state(environ: dict[str, Any]) -> RequestState:
    """State for a request the middleware did not see (it gives custom events their request
    id; it never makes the request count as served)."""
    state = RequestState(None, environ.get("HTTP_X_REQUEST_ID"))
    environ[STATE_KEY] = state
    return state


def kept_body_length(content_length: object, limit: int) -> int | None:
    """The body's declared length if the body is small enough to keep for error events.
    ``CONTENT_LENGTH`` is text in WSGI, but Django's handler also takes an int there."""
    if type(content_length) is int:
        content_length = str(content_length)
    if isinstance(content_length, str) and content_length.isascii() and content_length.isdigit():
        length = int(content_length)
        if 0 < length <= limit:
            return length
    return None


def begin(
    environ: dict[str, Any], skip_paths: frozenset[str], max_body_bytes: int
) -> RequestState | None:
    """Start auditing a request: its state in the environ, or None for a skipped path."""
    path = environ.get("PATH_INFO") or "/"
    if path in skip_paths or (path[0] != "/" and "/" + path in skip_paths):
        return None
    state = RequestState(time.perf_counter(), environ.get("HTTP_X_REQUEST_ID"))
    environ[STATE_KEY] = state
    if max_body_bytes:
        expected = kept_body_length(environ.get("CONTENT_LENGTH"), max_body_bytes)
        if expected is not None and "wsgi.input" in environ:
            state.body = recorder = BodyRecorder(environ["wsgi.input"], expected)
            environ["wsgi.input"] = recorder
    return state


def noting_start_response(state: RequestState, start_response: StartResponse) -> StartResponse:
    """``start_response`` that notes the status and sets ``X-Request-Id`` (replacing one the
    application set: the seed *set* the header)."""
    request_id = state.request_id

    def start_with_request_id(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        code = status[:3]
        if code.isascii() and code.isdigit():
            state.status = int(code)
        for index, (name, _) in enumerate(headers):
            if name.lower() == "x-request-id":
                del headers[index]
                break
        headers.append(("X-Request-Id", request_id))
        return start_response(status, headers, exc_info)

    return start_with_request_id


def request_capture(
    state: RequestState,
    environ: dict[str, Any],
    exc: BaseException | None,
    *,
    method: str,
    path: str,
    event_name: str | None,
    actor_of: Callable[[], Any],
    header_keys: tuple[tuple[str, str], ...],
) -> tuple[Any, ...] | None:
    """The request's one capture (a RequestCapture as a plain tuple), or None if it has one
    already or was never served: a context pushed by hand, or one whose request has neither a
    response nor an exception yet (a copy of the context that ends first). ``actor_of`` is
    called only for a capture that is made."""
    status = state.status
    if state.started is None or state.emitted or (status is None and exc is None):
        return None
    state.emitted = True
    latency = time.perf_counter() - state.started
    actor = actor_of()
    if actor is not None and type(actor) not in PLAIN_ACTOR_TYPES:
        actor = plain_actor(actor)
    exc_type = exc_message = None
    if exc is not None:
        exc_type = type(exc).__name__
        exc_message = str(exc)[:MAX_EXCEPTION_MESSAGE]
        if status is None:  # propagated: no response was made
            status = 500
    body = content_type = None
    if state.body is not None and (exc is not None or (status or 0) >= 400):
        body = state.body.body()
        content_type = environ.get("CONTENT_TYPE")
    headers = None
    if header_keys:
        headers = tuple((name, environ[key]) for name, key in header_keys if key in environ)
    return (
        state.event_id or UUIDS.take(),
        time.time(),
        latency,
        method,
        path,
        environ.get("QUERY_STRING", ""),
        status,
        exc_type,
        exc_message,
        environ.get("REMOTE_ADDR"),
        environ.get("HTTP_X_FORWARDED_FOR"),
        environ.get("HTTP_USER_AGENT"),
        event_name,
        actor,
        state.request_id,
        body,
        content_type,
        headers,
    )


def header_keys(names: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(header name, its WSGI environ key) for the headers to capture."""
    return tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in names)


class AuditMiddleware(Integration):
    """Records every request the wrapped WSGI application serves (see the module docstring).

    Keyword arguments: ``actor``, a function of the environ naming who acted, and the settings
    of :class:`~immutablelog.sdk.integration.AuditOptions`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        actor: ActorFromEnviron | None = None,
        **options: Unpack[AuditOptions],
    ) -> None:
        super().__init__(environment_config(), DEFAULT_SERVICE_NAME, options)
        self.app = app
        self._actor = actor
        self._header_keys = header_keys(self.settings.capture_headers)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            state = begin(environ, self.settings.skip_paths, self.settings.max_body_bytes)
        except Exception:
            self._log_hook_error()  # never let the audit layer fail the request itself
            state = None
        if state is None:
            return self.app(environ, start_response)
        token = bind_request((state.request_id, lambda: self._actor_of(environ)))
        try:
            result = self.app(environ, noting_start_response(state, start_response))
        except BaseException as exc:
            self._record(environ, state, exc)
            raise
        finally:
            unbind(token)
        return _RecordedOnClose(result, self, environ, state)

    def _actor_of(self, environ: dict[str, Any]) -> Any:
        actor = environ.get(ACTOR_KEY)
        if actor is None and self._actor is not None:
            actor = self._actor_from(self._actor, environ)
        return actor

    def _record(
        self, environ: dict[str, Any], state: RequestState, exc: BaseException | None
    ) -> None:
        try:
            capture = request_capture(
                state,
                environ,
                exc,
                method=environ.get("REQUEST_METHOD", "GET"),
                path=(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/",
                event_name=environ.get(EVENT_NAME_KEY),
                actor_of=lambda: self._actor_of(environ),
                header_keys=self._header_keys,
            )
            if capture is not None:
                self.submit(capture)
        except Exception:
            self._log_hook_error()


class _RecordedOnClose:
    """The application's response, recorded when the server closes it (PEP 3333: always), or
    when producing it raises."""

    __slots__ = ("_audit", "_environ", "_result", "_state")

    def __init__(
        self,
        result: Iterable[bytes],
        audit: AuditMiddleware,
        environ: dict[str, Any],
        state: RequestState,
    ) -> None:
        self._result = result
        self._audit = audit
        self._environ = environ
        self._state = state

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._result
        except BaseException as exc:
            self._audit._record(self._environ, self._state, exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            # A status is known once the body started; a response never started is a 500.
            if self._state.status is None:
                self._state.status = 500
            self._audit._record(self._environ, self._state, None)
