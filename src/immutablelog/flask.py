"""Flask extension: the seed's ``ImmutableLogAudit``, without its defects.

Drop-in compatible with the seed (same constructor and defaults, ``init_app``,
``app.extensions["immutablelog"]``, ``g.imtbl_event_name``, the ``X-Request-Id`` response header,
the payload and meta schema), but the request thread only copies a few values into a tuple and
appends it to a queue; all the rest — redaction, JSON, the network — happens in the SDK's
background worker (:mod:`immutablelog.sdk.pipeline`, :mod:`immutablelog.sdk.worker`).

Two places touch a request:

* A thin WSGI middleware around ``app.wsgi_app`` starts a monotonic clock; accepts the client's
  ``X-Request-Id`` only if it is ≤ 128 safe characters, else takes a fresh UUIDv7; if the body is
  small (``Content-Length`` ≤ ``max_body_bytes``), wraps the WSGI input so the bytes the view
  reads are also kept — the view still streams and parses forms and files normally, and nothing
  is read on its behalf; and notes the status and sets ``X-Request-Id`` as the response starts.
* ``teardown_request`` is the *only* place an event is emitted, so a request yields exactly one
  event even when an unhandled exception makes Flask produce a 500 response *and* report the
  exception — the seed emitted one event for each (sharing one idempotency key, so the server
  kept the one without the exception).

An event is recorded only for a request the app served: one that went through the middleware
and produced a response or an unhandled exception. A request context pushed by hand —
``test_request_context`` to build URLs in a script or a task, ``app_context``, a context pushed
and popped explicitly — runs the same teardown hooks, but was never served, and an audit log
must not contain requests that never happened.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, current_app, g, has_app_context, has_request_context, request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication

from immutablelog.sdk.capture import (
    PLAIN_ACTOR_TYPES,
    EventBuilder,
    RequestInfo,
    custom_capture,
    plain_actor,
    validate_kind,
)
from immutablelog.sdk.context import bind_request, unbind
from immutablelog.sdk.context import current as current_context
from immutablelog.sdk.log_handler import ImmutableLogHandler
from immutablelog.sdk.options import DeliveryOptions
from immutablelog.sdk.pipeline import Build, DeliveryPipeline
from immutablelog.sdk.redaction import Scrubber
from immutablelog.sdk.settings import (
    DEFAULT_ENV,
    DEFAULT_SKIP_PATHS,
    UNSET,
    _Unset,
    resolve_settings,
)
from immutablelog.sdk.sharing import PipelineLease
from immutablelog.sdk.stats import DeliveryStats
from immutablelog.sdk.transport import Transport
from immutablelog.wsgi import (
    STATE_KEY,
    begin,
    header_keys,
    late_state,
    noting_start_response,
    request_capture,
)

logger = logging.getLogger("immutablelog.flask")


#: Seed defaults.
DEFAULT_SERVICE_NAME: Final = "flask-service"


ActorLoader = Callable[[], Any]


class _AppBinding:
    """The extension's state for one Flask app: its resolved settings and its pipeline lease.

    It owns the ``teardown_request`` hook, so a request never has to look anything up to find
    its configuration. ``init_app`` on the same app again updates it in place. It holds no
    reference to the app: the extension keeps bindings by app weakly, and an app that is gone
    gives its lease back (see :mod:`immutablelog.sdk.sharing`).
    """

    def __init__(self, audit: ImmutableLogAudit) -> None:
        self.audit = audit
        # Made once: who acted in the current request (bound methods are made on each access).
        self.actor_of = audit._request_actor
        self.skip_paths: frozenset[str] = frozenset()
        self.max_body_bytes = 0
        self.header_keys: tuple[tuple[str, str], ...] = ()
        self.lease: PipelineLease | None = None
        self.pipeline: DeliveryPipeline | None = None
        self.build: Build | None = None
        self._hook_error_logged = False

    def configure(
        self,
        *,
        skip_paths: frozenset[str],
        max_body_bytes: int,
        capture_headers: tuple[str, ...],
        builder: EventBuilder,
        lease: PipelineLease,
    ) -> None:
        previous = self.lease
        self.skip_paths = skip_paths
        self.max_body_bytes = max_body_bytes
        self.header_keys = header_keys(capture_headers)
        self.build = builder.build
        self.lease, self.pipeline = lease, lease.pipeline
        if previous is not None:
            previous.retire()  # init_app again: what the old configuration queued still goes out

    # -- teardown: the one place an event is emitted ------------------------------------------

    def teardown_request(self, exc: BaseException | None) -> None:
        try:
            req = request._get_current_object()  # type: ignore[attr-defined]
            environ = req.environ
            state = environ.get(STATE_KEY)
            if state is None:
                return  # a context pushed by hand, or a path the middleware skipped
            flask_g = g._get_current_object().__dict__
            audit = self.audit

            def actor_of() -> Any:  # g's own dict: far cheaper than through its proxy
                actor = flask_g.get("imtbl_actor")
                if actor is None and audit.actor_loader is not None:
                    actor = audit._load_actor()
                return actor

            capture = request_capture(
                state,
                environ,
                exc,
                method=req.method,
                path=req.path,
                event_name=flask_g.get("imtbl_event_name"),
                actor_of=actor_of,
                header_keys=self.header_keys,
            )
            if capture is not None:
                assert self.pipeline is not None
                self.pipeline.submit(capture, self.build)
        except Exception:
            self._log_hook_error()

    def _log_hook_error(self) -> None:
        # A bug in the audit hooks must not fail the application's request; log it once.
        if not self._hook_error_logged:
            self._hook_error_logged = True
            logger.exception("ImmutableLog: error in a request hook (logged once)")


class _Middleware:
    """Wrapped around ``app.wsgi_app``: starts the clock, settles the request id, installs the
    body recorder, notes the status and sets ``X-Request-Id`` as the response starts.

    WSGI middleware rather than before/after_request hooks: a third of the cost on the request
    path. Only a request that passes through here can yield an event.
    """

    __slots__ = ("binding", "wsgi_app")

    def __init__(self, binding: _AppBinding, wsgi_app: WSGIApplication) -> None:
        self.binding = binding
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        binding = self.binding
        try:
            state = begin(environ, binding.skip_paths, binding.max_body_bytes)
        except Exception:
            binding._log_hook_error()  # never let the audit layer fail the request itself
            state = None
        if state is None:
            return self.wsgi_app(environ, start_response)
        # Work the view starts (a Celery task, say) carries the request id and actor along.
        token = bind_request((state.request_id, binding.actor_of))
        try:
            return self.wsgi_app(environ, noting_start_response(state, start_response))
        finally:
            unbind(token)


class ImmutableLogAudit:
    """Flask extension for ImmutableLog audit logging (seed-compatible; see module docstring).

    Positional/keyword arguments and defaults are the seed's. Configuration is resolved per app
    in :meth:`init_app`: explicit arguments first, then ``app.config`` (``IMMUTABLELOG_API_KEY``,
    ``IMMUTABLELOG_URL``, ``IMMUTABLELOG_SERVICE_NAME``, ``IMMUTABLELOG_ENV``,
    ``IMMUTABLELOG_SKIP_PATHS``, ``IMMUTABLELOG_TRUSTED_PROXIES``, ``IMMUTABLELOG_REDACT_KEYS``,
    ``IMMUTABLELOG_ALLOW_KEYS``, ``IMMUTABLELOG_CAPTURE_HEADERS``, ``IMMUTABLELOG_MAX_BODY_BYTES``,
    ``IMMUTABLELOG_SPOOL_DIR``, ``IMMUTABLELOG_DEAD_LETTER_PATH``), then the environment
    (``IMTBL_API_KEY``, ``IMTBL_URL``), then the defaults.

    Keyword-only options beyond the seed:

    ``actor_loader``
        Called in the request (at teardown) to name who acted, unless the view set
        ``g.imtbl_actor``; return a string, a dict, or ``None``.
    ``trusted_proxies``
        How many reverse proxies append to ``X-Forwarded-For`` (ProxyFix ``x_for``). Default 0:
        the header is ignored and the socket peer is recorded.
    ``redact_keys`` / ``allow_keys`` / ``scrubber``
        Extra denylist fragments, keys never redacted, and a callable that post-processes each
        payload (see :mod:`immutablelog.sdk.redaction`).
    ``capture_headers``
        Request headers to record (none by default); denylisted names are still redacted.
    ``max_body_bytes``
        Largest request body kept for error events (0 disables body capture).
    ``delivery``
        :class:`~immutablelog.sdk.options.DeliveryOptions` (queue, batches, spool, backoff).
    ``transport``
        Replace the HTTP transport (embedded mode, tests).
    """

    def __init__(
        self,
        app: Flask | None = None,
        api_key: str = "",
        api_url: str = "",
        service_name: str | _Unset = UNSET,
        env: str | _Unset = UNSET,
        skip_paths: list[str] | None = None,
        *,
        actor_loader: ActorLoader | None = None,
        trusted_proxies: int | None = None,
        redact_keys: Iterable[str] = (),
        allow_keys: Iterable[str] = (),
        scrubber: Scrubber | None = None,
        capture_headers: Iterable[str] = (),
        max_body_bytes: int | None = None,
        delivery: DeliveryOptions | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.api_key = api_key
        self.api_url = api_url
        self.service_name = DEFAULT_SERVICE_NAME if service_name is UNSET else service_name
        self.env = DEFAULT_ENV if env is UNSET else env
        self.skip_paths = set(skip_paths if skip_paths is not None else DEFAULT_SKIP_PATHS)
        self.actor_loader = actor_loader
        # What the caller passed, kept apart from the public attributes (which init_app updates
        # to what the latest app resolved), so a second app resolves from the same arguments.
        self._args = (api_key, api_url, service_name, env)
        self._explicit_skip_paths = skip_paths is not None
        self._skip_paths_arg = set(self.skip_paths)
        self._trusted_proxies = trusted_proxies
        self._redact_keys = tuple(redact_keys)
        self._allow_keys = tuple(allow_keys)
        self._scrubber = scrubber
        self._capture_headers = tuple(capture_headers)
        self._max_body_bytes = max_body_bytes
        self._delivery = delivery
        self._transport = transport
        # Weak: an app that is gone takes its binding along (a binding never refers to its app).
        self._bindings: weakref.WeakKeyDictionary[Flask, _AppBinding] = weakref.WeakKeyDictionary()
        self._last_binding: _AppBinding | None = None
        self._actor_error_logged = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the hooks on ``app`` (application-factory pattern); blueprints need nothing."""
        arg_key, arg_url, arg_service, arg_env = self._args
        settings = resolve_settings(
            app.config,
            default_service_name=DEFAULT_SERVICE_NAME,
            api_key=arg_key,
            api_url=arg_url,
            service_name=arg_service,
            env=arg_env,
            skip_paths=self._skip_paths_arg if self._explicit_skip_paths else None,
            trusted_proxies=self._trusted_proxies,
            redact_keys=self._redact_keys,
            allow_keys=self._allow_keys,
            capture_headers=self._capture_headers,
            max_body_bytes=self._max_body_bytes,
            delivery=self._delivery,
        )
        builder = settings.builder(self._scrubber)
        lease = settings.lease(builder, owner=app, transport=self._transport)
        binding = self._bindings.get(app)
        if binding is None:
            binding = _AppBinding(self)
            app.wsgi_app = _Middleware(binding, app.wsgi_app)  # type: ignore[method-assign]
            # Teardown stays a Flask hook: it sees g and unhandled exceptions.
            app.teardown_request(binding.teardown_request)
            self._bindings[app] = binding
        binding.configure(
            skip_paths=settings.skip_paths,
            max_body_bytes=settings.max_body_bytes,
            capture_headers=settings.capture_headers,
            builder=builder,
            lease=lease,
        )
        self._last_binding = binding
        # Reflect what this app resolved to, like the seed's attributes.
        self.api_key, self.api_url = settings.api_key, settings.api_url
        self.service_name, self.env = settings.service_name, settings.env
        self.skip_paths = set(settings.skip_paths)

        app.extensions["immutablelog"] = self

    # -- custom events ------------------------------------------------------------------------

    def record(
        self,
        event_name: str,
        kind: str = "info",
        *,
        message: str | None = None,
        actor: Any = None,
        request_id: str | None = None,
        **data: Any,
    ) -> str:
        """Record a custom event (``audit.record("invoice.deleted", invoice_id=42)``).

        Works inside a request (the event then carries the request's id, method, path, client
        and actor) and outside one (CLI commands, background jobs). Returns the event's id.
        """
        validate_kind(kind)
        binding = self._binding()
        info = None
        if has_request_context():
            req = request._get_current_object()  # type: ignore[attr-defined]
            environ = req.environ
            state = environ.get(STATE_KEY) or late_state(environ)
            info = RequestInfo(
                state.request_id,
                req.method,
                req.path,
                environ.get("REMOTE_ADDR"),
                environ.get("HTTP_X_FORWARDED_FOR"),
                environ.get("HTTP_USER_AGENT"),
            )
            if actor is None:
                actor = self._request_actor()
        else:
            context = current_context()
            if context is not None:  # work a request started (a job, a copied context)
                request_id = request_id or context.request_id
                actor = actor if actor is not None else context.actor()
        if actor is not None and type(actor) not in PLAIN_ACTOR_TYPES:
            actor = plain_actor(actor)
        capture = custom_capture(
            event_name,
            kind,
            message=message,
            data=data,
            actor=actor,
            request=info,
            request_id=request_id,
        )
        assert binding.pipeline is not None
        binding.pipeline.submit(capture, binding.build)
        return capture.event_id

    def _request_actor(self) -> Any:
        """Who acted in the current request: ``g.imtbl_actor``, else the actor loader's."""
        actor = g.get("imtbl_actor")
        if actor is None and self.actor_loader is not None:
            actor = self._load_actor()
        return actor

    def _load_actor(self) -> Any:
        assert self.actor_loader is not None
        try:
            return self.actor_loader()
        except Exception:
            if not self._actor_error_logged:
                self._actor_error_logged = True
                logger.exception(
                    "ImmutableLog: actor_loader raised; actor left empty (logged once)"
                )
            return None

    # -- delivery control ---------------------------------------------------------------------

    def _binding(self, app: Flask | None = None) -> _AppBinding:
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        binding = self._bindings.get(app) if app is not None else None
        binding = binding or self._last_binding
        if binding is None:
            raise RuntimeError("ImmutableLogAudit.init_app(app) has not been called")
        return binding

    def pipeline(self, app: Flask | None = None) -> DeliveryPipeline:
        """The delivery pipeline of ``app`` (default: the current app, else the last one)."""
        pipeline = self._binding(app).pipeline
        assert pipeline is not None
        return pipeline

    def flush(self, timeout: float | None = 5.0, app: Flask | None = None) -> bool:
        """Wait until the events captured so far are delivered; False on timeout."""
        return self.pipeline(app).flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush and let go of the pipelines of every app (also done at exit; an app that is
        garbage-collected lets go of its own). A pipeline no other app or client uses is closed.
        ``timeout`` bounds the whole call (default: the delivery options' ``shutdown_timeout``).
        """
        leases = [b.lease for b in list(self._bindings.values()) if b.lease is not None]
        if self._last_binding is not None and self._last_binding.lease is not None:
            leases.append(self._last_binding.lease)
        if not leases:
            return True
        if timeout is None:
            timeout = max(lease.pipeline.options.shutdown_timeout for lease in leases)
        deadline = time.monotonic() + timeout
        results = [lease.close(max(0.0, deadline - time.monotonic())) for lease in leases]
        return all(results)

    def stats(self, app: Flask | None = None) -> DeliveryStats:
        """Delivery counters (queued, sent, retried, spooled, dead_lettered, dropped, …)."""
        return self.pipeline(app).stats()

    def logging_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A :class:`logging.Handler` recording log records as events through this extension."""
        return ImmutableLogHandler(self, level=level)
