"""Django middleware: one audit event per request, with the Flask extension's event shape.

::

    MIDDLEWARE = ["immutablelog.django.AuditMiddleware", ...]   # first
    IMMUTABLELOG = {"api_url": "https://audit.example", "api_key": "...",
                    "service_name": "shop", "env": "production"}

Put it first in ``MIDDLEWARE`` so that it sees every request, including those another
middleware answers or fails. It works in sync and async middleware chains (runserver,
gunicorn sync or gthread, uvicorn with ASGI Django).

``IMMUTABLELOG`` takes the Flask extension's settings under the names of its keyword
arguments (``api_key``, ``api_url``, ``service_name``, ``env``, ``skip_paths``,
``trusted_proxies``, ``redact_keys``, ``allow_keys``, ``capture_headers``,
``max_body_bytes``, ``delivery``) plus ``actor``: a function of the request naming who acted
(default: the authenticated ``request.user``'s primary key and username). What it leaves out
comes from the ``IMMUTABLELOG_*`` environment variables, then the defaults.

A view names its event with ``request.imtbl_event_name = "invoice.deleted"`` (and may set
``request.imtbl_actor``). Exactly one event per request: when the response is returned, or,
for a streaming response, when its stream ends (finished, failed or abandoned by a client
that left); an exception a view raised is in the event of the 500 Django makes of it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from immutablelog.sdk.context import bind_request, unbind
from immutablelog.sdk.integration import AuditOptions, Integration
from immutablelog.sdk.settings import environment_config
from immutablelog.wsgi import (
    RequestState,
    header_keys,
    kept_body_length,
    request_capture,
)

DEFAULT_SERVICE_NAME: Final = "django-service"
_EXCEPTION_ATTR: Final = "_immutablelog_exception"
ActorOfRequest = Callable[[HttpRequest], Any]


def default_actor(request: HttpRequest) -> Any:
    """The authenticated user (primary key and username), if ``django.contrib.auth`` is on."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return {"id": str(user.pk), "username": user.get_username()}


class _Body:
    """The request body, for error events, if Django already read it (never read for us)."""

    __slots__ = ("_request",)

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    def body(self) -> bytes | None:
        if not getattr(self._request, "_read_started", False):
            return None
        try:
            body: bytes = self._request.body
        except Exception:  # read as a stream by upload handlers: not kept
            return None
        return body


class AuditMiddleware(Integration):
    """See the module docstring."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        configured = dict(getattr(django_settings, "IMMUTABLELOG", {}) or {})
        actor = configured.pop("actor", None)
        unknown = set(configured) - set(AuditOptions.__annotations__)
        if unknown:
            raise ValueError(f"unknown IMMUTABLELOG settings: {', '.join(sorted(unknown))}")
        super().__init__(environment_config(), DEFAULT_SERVICE_NAME, cast(AuditOptions, configured))
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self._actor: ActorOfRequest = actor or default_actor
        self._header_keys = header_keys(self.settings.capture_headers)
        self._skip_paths = self.settings.skip_paths
        self._max_body_bytes = self.settings.max_body_bytes

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        state = self._begin(request)
        if state is None:
            return self.get_response(request)

        def actor_of() -> Any:
            return self._actor_of(request)

        token = bind_request((state.request_id, actor_of))
        try:
            response = self.get_response(request)
        except BaseException as exc:
            self._record(request, state, exc, actor_of)
            raise
        finally:
            unbind(token)
        return self._finish(request, state, response, actor_of)

    async def __acall__(self, request: HttpRequest) -> Any:
        state = self._begin(request)
        if state is None:
            return await self.get_response(request)
        token = bind_request((state.request_id, lambda: self._actor_of(request)))
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            actor = await sync_to_async(self._actor_of)(request)
            self._record(request, state, exc, lambda: actor)
            raise
        finally:
            unbind(token)
        # request.user may query the database, which async code must not do directly.
        actor = await sync_to_async(self._actor_of)(request)
        return self._finish(request, state, response, lambda: actor)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Django turns a view's exception into a 500 response: keep it for the event."""
        setattr(request, _EXCEPTION_ATTR, exception)

    def _begin(self, request: HttpRequest) -> RequestState | None:
        try:
            if request.path_info in self._skip_paths:
                return None
            meta = request.META
            state = RequestState(time.perf_counter(), meta.get("HTTP_X_REQUEST_ID"))
            length = meta.get("CONTENT_LENGTH")
            if length and kept_body_length(length, self._max_body_bytes) is not None:
                state.body = _Body(request)
            return state
        except Exception:
            self._log_hook_error()  # never let the audit layer fail the request itself
            return None

    def _actor_of(self, request: HttpRequest) -> Any:
        actor = getattr(request, "imtbl_actor", None)
        return actor if actor is not None else self._actor_from(self._actor, request)

    def _finish(
        self,
        request: HttpRequest,
        state: RequestState,
        response: HttpResponseBase,
        actor_of: Callable[[], Any],
    ) -> HttpResponseBase:
        try:
            state.status = response.status_code
            try:
                # What response["X-Request-Id"] = … stores, without Django's charset and line
                # break checks (7,000 instructions): the id is safe ASCII already.
                response.headers._store["x-request-id"] = ("X-Request-Id", state.request_id)
            except AttributeError:  # headers kept otherwise (another Django)
                response["X-Request-Id"] = state.request_id
            if isinstance(response, StreamingHttpResponse):
                response.streaming_content = self._recorded_stream(
                    request, state, response.streaming_content, actor_of
                )
                # A stream never read (a client that left first, a test that does not look)
                # never runs its generator: closing the response records the event then.
                response._resource_closers.append(
                    lambda: self._record(request, state, None, actor_of)
                )
                return response
        except Exception:
            self._log_hook_error()
        self._record(request, state, getattr(request, _EXCEPTION_ATTR, None), actor_of)
        return response

    def _recorded_stream(
        self,
        request: HttpRequest,
        state: RequestState,
        content: Any,
        actor_of: Callable[[], Any],
    ) -> Any:
        if hasattr(content, "__aiter__"):

            async def recorded_async() -> AsyncIterator[bytes]:
                failure: BaseException | None = None
                try:
                    async for chunk in content:
                        yield chunk
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    self._record(request, state, failure, actor_of)

            return recorded_async()

        def recorded() -> Iterator[bytes]:
            failure: BaseException | None = None
            try:
                yield from content
            except GeneratorExit:
                raise  # closed early: the client left; recorded below with its status
            except BaseException as exc:
                failure = exc
                raise
            finally:
                self._record(request, state, failure, actor_of)

        return recorded()

    def _record(
        self,
        request: HttpRequest,
        state: RequestState,
        exc: BaseException | None,
        actor_of: Callable[[], Any],
    ) -> None:
        try:
            capture = request_capture(
                state,
                request.META,
                exc,
                method=request.method or "GET",
                path=request.path,
                event_name=getattr(request, "imtbl_event_name", None),
                actor_of=actor_of,
                header_keys=self._header_keys,
            )
            if capture is not None:
                self.submit(capture)
        except Exception:
            self._log_hook_error()
