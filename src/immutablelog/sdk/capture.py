"""Capture: what a request (or a custom event) becomes as an audit event.

Capture is split in two halves so the request itself waits for almost nothing:

* While the request runs, a framework integration copies a handful of raw values into a
  :class:`RequestCapture` (a tuple: cheap to build, immutable, safe to hand to another thread).
  No JSON, no redaction, no formatting happens there.
* Later, :class:`EventBuilder` turns the capture into the seed's payload and meta schema:
  client IP through the trusted proxies, redaction, messages, severity, the 12 KB clamp,
  serialization. The result is a :class:`~immutablelog.sdk.events.WireEvent`. The Flask
  extension and ``record()`` leave that to the background worker; the WSGI and ASGI
  middlewares do it on the request's thread once the response is sent (Django's as it hands
  the response back), so that the worker never holds the GIL for a batch of builds while a
  request waits for it.

Nothing here imports a web framework, so WSGI, ASGI, Django or FastAPI integrations can be thin
layers that fill the same captures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring as _escape
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl

from immutablelog.sdk.events import (
    EVENT_KINDS,
    MAX_PAYLOAD_BYTES,
    RETRYABLE_STATUSES,
    SEED_BODY_TEXT_LIMIT,
    UUIDS,
    WireEvent,
    clamp_payload,
    finite,
    http_message,
    meta_text,
    prebuilt_event,
    severity_from,
    severity_level,
)
from immutablelog.sdk.redaction import FILTERED, Redactor, Scrubber

logger = logging.getLogger("immutablelog.sdk")

#: Longest client-supplied ``X-Request-Id`` that is accepted.
MAX_REQUEST_ID_LENGTH: Final = 128

# Letters, digits and the punctuation real request-id schemes use (UUIDs, ULIDs, base64, AWS
# trace ids, "host:pid/seq"). No spaces, quotes, control characters or CR/LF, so an accepted id
# can be echoed in a response header and stored without escaping surprises.
_SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:+=@/-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def accept_request_id(candidate: str | None) -> str | None:
    """Return ``candidate`` if it is a safe request id (≤ 128 safe characters), else ``None``.

    The seed echoed any ``X-Request-Id`` into the log and the response header, whatever its
    length or characters. A rejected id is replaced by a generated one by the caller.
    """
    if candidate and _SAFE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return None


def request_ids(candidate: str | None) -> tuple[str, str | None]:
    """The request id for a client's ``X-Request-Id`` ``candidate``, and the event id that
    goes with it: the client's id if it is safe, the request's event taking an id of its own
    later (``None``); otherwise a fresh UUIDv7 that is both. One id fewer to make per request,
    and the id the response echoes names the event itself; a client's id never does."""
    accepted = accept_request_id(candidate) if candidate is not None else None
    if accepted is not None:
        return accepted, None
    fresh = UUIDS.take()
    return fresh, fresh


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int) -> str:
    """The client's address, trusting ``X-Forwarded-For`` only through ``trusted_proxies`` hops.

    Same rule as Werkzeug's ``ProxyFix(x_for=trusted_proxies)``: each trusted proxy appends the
    address it received the request from, so the client is the ``trusted_proxies``-th value
    from the *right*. Values further left were written by the client and can be forged. With
    too few values, or no trusted proxies (the default), the socket peer address is used.
    """
    if trusted_proxies > 0 and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if len(hops) >= trusted_proxies and hops[-trusted_proxies]:
            return hops[-trusted_proxies]
    return remote_addr or "unknown"


def first_query_values(query_string: str) -> dict[str, str]:
    """Parse a raw WSGI ``QUERY_STRING`` like Werkzeug's ``request.args``, first value per key.

    WSGI hands the query string over as bytes decoded with Latin-1; re-encoding restores the
    bytes so percent-escapes and raw UTF-8 decode the way Flask decodes them.
    """
    try:
        text = query_string.encode("latin-1").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        text = query_string
    values: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        values.setdefault(key, value)
    return values


#: Exception messages are cut to this many characters at capture: a huge message would sit in
#: the queue only to make the 12 KB clamp drop the whole error block, exception type included.
MAX_EXCEPTION_MESSAGE: Final = 4000


#: Actor types kept as they are without a call (the common ones).
PLAIN_ACTOR_TYPES: Final = frozenset({str, int, dict})


def plain_actor(actor: Any) -> Any:
    """Turn an actor object (say, an ORM user) into data *now*, in the request thread.

    The worker serializes events later, in another thread, where touching a lazy-loading model
    or a request-bound proxy would be unsafe. Dicts, lists, tuples, floats and booleans are kept
    as they are, other mappings become dicts, and anything else becomes its ``str()``.
    """
    if isinstance(actor, dict | list | tuple | float | bool):
        return actor
    if isinstance(actor, Mapping):
        return dict(actor)
    return str(actor)


class RequestCapture(NamedTuple):
    """Raw facts about one finished HTTP request, copied in the request thread.

    ``event_id`` is a fresh UUIDv7 taken at capture time: the event's payload ``id`` and its
    idempotency key, so every event has its own identity from the moment it exists, independent
    of anything the client sent.

    An integration may submit the plain tuple of these fields instead (``tuple(capture)``): the
    garbage collector stops tracking a plain tuple of plain values at its first pass — it never
    does for a NamedTuple — so captures waiting in the queue do not pile up in its older
    generations and make its full collections (tens of milliseconds) more frequent. A tuple
    display is also cheaper to make on the request path.
    """

    event_id: str
    timestamp: float
    latency_seconds: float | None
    method: str
    path: str
    query_string: str
    status_code: int | None
    exc_type: str | None
    exc_message: str | None
    remote_addr: str | None
    forwarded_for: str | None
    user_agent: str | None
    event_name: str | None
    actor: Any
    request_id: str
    body: bytes | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...] | None


class RequestInfo(NamedTuple):
    """The request a custom event was recorded in, if any (for context and correlation)."""

    request_id: str
    method: str
    path: str
    remote_addr: str | None
    forwarded_for: str | None
    user_agent: str | None


class CustomCapture(NamedTuple):
    """A custom event (``record()``, a log record): its fields as the caller gave them."""

    event_id: str
    timestamp: float
    event_name: str
    kind: str
    message: str | None
    data: dict[str, Any]
    actor: Any
    request: RequestInfo | None
    request_id: str | None = None


Capture = RequestCapture | CustomCapture | tuple[Any, ...]


def validate_kind(kind: str) -> str:
    """Reject an unknown event kind in the caller's thread, where the mistake can be fixed."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"kind must be one of {sorted(EVENT_KINDS)}, not {kind!r}")
    return kind


def custom_capture(
    event_name: str,
    kind: str,
    *,
    message: str | None,
    data: dict[str, Any],
    actor: Any,
    request: RequestInfo | None,
    request_id: str | None,
) -> CustomCapture:
    """A ``record()`` call as a capture, its id and time taken in the caller's thread (which
    has already checked ``kind`` with :func:`validate_kind`)."""
    return CustomCapture(
        event_id=UUIDS.take(),
        timestamp=time.time(),
        event_name=event_name,
        kind=kind,
        message=message,
        data=data,
        actor=actor,
        request=request,
        request_id=request_id,
    )


_iso_second: tuple[float, str] = (-1.0, "")


def _iso(timestamp: float) -> str:
    """``datetime.fromtimestamp(timestamp, UTC).isoformat()``, the seed's timestamp format.

    The date-and-time part is cached per second (formatting it dominates the cost), the
    microseconds are rounded exactly as ``datetime`` rounds them (half to even).
    """
    global _iso_second
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    cached_whole, prefix = _iso_second  # one tuple: safe if two threads race here
    if cached_whole != whole:
        prefix = datetime.fromtimestamp(whole, UTC).isoformat()[:-6]
        _iso_second = (whole, prefix)
    if micros:
        # Six digits without a format specification (parsing one costs more than the rest).
        return f"{prefix}.{str(1_000_000 + micros)[1:]}+00:00"
    return f"{prefix}+00:00"


# json.dumps(ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False), the
# payload's compact form (the ledger's own serialization of a payload sent as an object),
# configured once (benchmarks/sdk_encoder.py: 1.07x the build with the C encoder built by hand,
# through CPython's private API; orjson does not always write the same bytes).
_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
)


def _json(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    try:
        return _ENCODER.encode(value)
    except ValueError:  # NaN or infinity: JSON has no such numbers, the ledger refuses them
        return _ENCODER.encode(finite(value))


def _request_text(
    event_id: str,
    kind: str,
    message: str,
    timestamp: str,
    ip: str,
    user_agent: str,
    actor: Any,
    request_id: str,
    method: str,
    path: str,
    query: dict[str, str] | None,
    headers: dict[str, str] | None,
    latency_ms: int | None,
    status: int | None,
    block: dict[str, Any] | None,
) -> str:
    """The request event's payload JSON, exactly as ``json.dumps(..., ensure_ascii=False,
    separators=(",", ":"))`` writes the dict that :meth:`EventBuilder._build_request` would
    otherwise build."""
    actor_part = f',"actor":{_json(actor)}' if actor is not None else ""
    headers_part = f',"headers":{_json(headers)}' if headers else ""
    return (
        f'{{"id":{_escape(event_id)},"kind":"{kind}","message":{_escape(message)},'
        f'"timestamp":"{timestamp}",'
        f'"context":{{"ip":{_escape(ip)},"user_agent":{_escape(user_agent)}{actor_part}}},'
        f'"request":{{"request_id":{_escape(request_id)},"method":{_escape(method)},'
        f'"path":{_escape(path)},"query_params":{_json(query)}{headers_part}}},'
        f'"metrics":{{"latency_ms":{_json(latency_ms)},"status_code":{_json(status)}}},'
        f'"severity":"{severity_level(kind)}"{_block_part(kind, status, block)}}}'
    )


def _block_part(kind: str, status: int | None, block: dict[str, Any] | None) -> str:
    """A request event's outcome block (``"success":{…}``, …) as written in its payload."""
    if block is None:
        return ""
    if kind == "success":  # the common blocks by hand: the C encoder's set-up costs more
        return f',"success":{{"status_code":{status},"result":"{block["result"]}"}}'
    if kind == "info":
        return f',"info":{{"status_code":{_json(status)},"action":{_escape(block["action"])}}}'
    return f',"{kind}":{_json(block)}'


# The glue between the variable parts of a request event's payload.
_ID: Final = '{"id":'
_IP: Final = '","context":{"ip":'
_AGENT: Final = ',"user_agent":'
_REQUEST_ID: Final = '},"request":{"request_id":'
_LATENCY: Final = '},"metrics":{"latency_ms":'


def _block(kind: str, status: int | None, method: str) -> dict[str, Any] | None:
    """A request event's success or info block (the error block needs the builder)."""
    if kind == "success":
        return {"status_code": status, "result": "ok" if status == 200 else "processed"}
    if kind == "info":
        return {"status_code": status, "action": method.lower()}
    return None


#: Routes (method, path, status, event name) whose constant parts a builder keeps; beyond this
#: many it starts over (paths with ids in them would otherwise grow it without end).
ROUTE_CACHE_SIZE: Final = 1024
#: User agents whose JSON form a builder keeps, likewise.
AGENT_CACHE_SIZE: Final = 256


class _Route(NamedTuple):
    """The parts of a request event that depend only on its route and status (see
    :meth:`EventBuilder._route`)."""

    kind: str
    event_name: str
    after_id: str  # from the id to the timestamp's opening quote
    request: str  # method and path, up to the query parameters
    tail: str  # from the status code to the end of the document
    item_meta: str  # the batch item's meta, up to the request id


class EventBuilder:
    """Turns captures into wire events, off the request path (module docstring).

    It holds everything that is constant for an integration: service name, environment,
    redaction policy, how many proxies to trust, an optional custom scrubber.
    """

    def __init__(
        self,
        *,
        service_name: str,
        env: str,
        redactor: Redactor | None = None,
        trusted_proxies: int = 0,
        scrubber: Scrubber | None = None,
    ) -> None:
        if trusted_proxies < 0:
            raise ValueError("trusted_proxies must be >= 0")
        self.service_name = service_name
        self.env = env
        self.redactor = redactor or Redactor()
        self.trusted_proxies = trusted_proxies
        self.scrubber = scrubber
        self._scrubber_failed_logged = False
        # Escaped once: every event's batch item repeats them.
        self._service_json = _escape(service_name)
        self._env_json = _escape(env)
        self._routes: dict[tuple[str, str, int | None, str | None], _Route] = {}
        self._agents: dict[str, str] = {}  # user agents as JSON strings (see _agent_json)

    def build(self, capture: Capture) -> WireEvent:
        """Build the wire event for ``capture``; never raises.

        A capture that cannot be turned into its full payload (a custom scrubber that raises, an
        actor that cannot be serialized) still produces an event: an audit trail with a marked
        gap is better than a silent hole.
        """
        try:
            if isinstance(capture, CustomCapture):
                return self._build_custom(capture)
            return self._build_request(capture)  # a RequestCapture, or its plain tuple
        except Exception as exc:
            return self.stub(capture, exc)

    def stub(self, capture: Capture, exc: BaseException) -> WireEvent:
        """The event of a capture that could not be built: its identity and the error's type
        (logged). An integration that reads its own raw captures (ASGI's) uses it too."""
        logger.exception("ImmutableLog: could not build an event; recording a stub instead")
        return self._build_stub(capture, exc)

    # -- request events -------------------------------------------------------------------

    def _build_request(self, cap: RequestCapture | tuple[Any, ...]) -> WireEvent:
        (event_id, timestamp, latency_seconds, method, path, query_string, status, exc_type,
         exc_message, remote_addr, forwarded_for, user_agent, event_name, actor, request_id,
         body, content_type, captured) = cap  # fmt: skip
        redactor = self.redactor
        ip = client_ip(remote_addr, forwarded_for, self.trusted_proxies)
        user_agent = user_agent or "unknown"
        if actor is not None:
            actor = redactor.scrub(actor)
        query = (
            redactor.scrub_query(first_query_values(query_string)) or None if query_string else None
        )
        headers = (
            {name: (FILTERED if redactor.is_sensitive(name) else value) for name, value in captured}
            if captured
            else None
        )
        latency_ms = int(latency_seconds * 1000) if latency_seconds is not None else None
        if self.scrubber is None and exc_type is None and not body:
            # The common case: what depends only on the route comes from the route cache.
            route = self._routes.get((method, path, status, event_name))
            if route is None:
                route = self._route(method, path, status, event_name)
            id_json = _escape(event_id)
            # The request id is the event's own when the SDK made it: escaped once.
            rid_json = id_json if request_id is event_id else _escape(request_id)
            actor_part = f',"actor":{_json(actor)}' if actor is not None else ""
            headers_part = f',"headers":{_json(headers)}' if headers else ""
            stamp = _iso(timestamp)  # digits, "-", ":", "T", "+", ".": nothing to escape
            agent_json = self._agents.get(user_agent) or self._agent_json(user_agent)
            text = (
                f"{_ID}{id_json}{route.after_id}{stamp}{_IP}{_escape(ip)}{_AGENT}"
                f"{agent_json}{actor_part}{_REQUEST_ID}{rid_json},{route.request}"
                f"{_json(query)}{headers_part}{_LATENCY}{_json(latency_ms)}{route.tail}"
            )
            if len(text) * 4 <= MAX_PAYLOAD_BYTES or len(text.encode("utf-8")) <= MAX_PAYLOAD_BYTES:
                if not text.isascii():
                    text = text.encode("utf-8", errors="replace").decode("utf-8")
                meta = {
                    "type": route.kind,
                    "event_name": route.event_name,
                    "service": self.service_name,
                    "request_id": request_id,
                    "env": self.env,
                }
                # The payload travels as the document itself, not as a string holding it: the
                # ledger stores a document's compact serialization, which is this very text,
                # and no second escaping of the whole payload is needed (half of the build).
                encoded = (
                    f'{{"payload":{text}{route.item_meta}{rid_json},"env":{self._env_json}}},'
                    f'"idempotency_key":{id_json}}}'
                ).encode("utf-8", errors="replace")
                return prebuilt_event(event_id, text, meta, encoded)
        if status is None and exc_type is not None:
            status = 500
        kind = severity_from(status, exc_type)
        message = http_message(method, path, status, exc_type)
        timestamp_text = _iso(timestamp)
        block = _block(kind, status, method)
        if kind == "error":
            block = self._error_block(status, exc_type, exc_message, body, content_type)
        meta = {
            "type": kind,
            "event_name": meta_text(event_name or f"http.{method}.{path}"),
            "service": self.service_name,
            "request_id": request_id,
            "env": self.env,
        }
        if self.scrubber is None:
            # Fast path: the seed's document written directly (about twice as fast as building
            # and encoding the dict). The result is character for character what json.dumps
            # makes of the dict below (tested), so either path stores the same bytes.
            text = _request_text(
                event_id, kind, message, timestamp_text, ip, user_agent, actor, request_id,
                method, path, query, headers, latency_ms, status, block,
            )  # fmt: skip
            if len(text) * 4 <= MAX_PAYLOAD_BYTES or len(text.encode("utf-8")) <= MAX_PAYLOAD_BYTES:
                if not text.isascii():
                    text = text.encode("utf-8", errors="replace").decode("utf-8")
                return WireEvent(event_id, text, meta, self._encode_item(event_id, text, meta))
        context: dict[str, Any] = {"ip": ip, "user_agent": user_agent}
        if actor is not None:
            context["actor"] = actor
        request: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "query_params": query,
        }
        if headers:
            request["headers"] = headers
        payload: dict[str, Any] = {
            "id": event_id,
            "kind": kind,
            "message": message,
            "timestamp": timestamp_text,
            "context": context,
            "request": request,
            "metrics": {"latency_ms": latency_ms, "status_code": status},
            "severity": severity_level(kind),
        }
        if block is not None:
            payload[kind] = block
        return WireEvent(event_id, clamp_payload(self._custom_scrub(payload)), meta)

    def _route(self, method: str, path: str, status: int | None, event_name: str | None) -> _Route:
        """The parts of a request event without exception or body that depend only on its
        route and status, written as :func:`_request_text` writes them; kept for next time."""
        kind = severity_from(status, None)
        block = _block(kind, status, method)
        if kind == "error":
            block = self._error_block(status, None, None, None, None)
        name = meta_text(event_name or f"http.{method}.{path}")
        after_id = (
            f',"kind":"{kind}","message":'
            f'{_escape(http_message(method, path, status, None))},"timestamp":"'
        )
        request = f'"method":{_escape(method)},"path":{_escape(path)},"query_params":'
        tail = (
            f',"status_code":{_json(status)}}},"severity":"{severity_level(kind)}"'
            f"{_block_part(kind, status, block)}}}"
        )
        route = _Route(
            kind=kind,
            event_name=name,
            after_id=after_id,
            request=request,
            tail=tail,
            item_meta=(
                f',"meta":{{"type":"{kind}","event_name":{_escape(name)},'
                f'"service":{self._service_json},"request_id":'
            ),
        )
        if len(self._routes) >= ROUTE_CACHE_SIZE:
            self._routes.clear()  # paths with ids in them: start over rather than grow
        self._routes[(method, path, status, event_name)] = route
        return route

    def _agent_json(self, user_agent: str) -> str:
        """``user_agent`` as a JSON string, kept for next time: a service sees few distinct
        user agents, each about a hundred characters that cost 3,000 instructions to escape
        and a third of that to look up."""
        if len(self._agents) >= AGENT_CACHE_SIZE:
            self._agents.clear()
        escaped = self._agents[user_agent] = _escape(user_agent)
        return escaped

    def _encode_item(self, event_id: str, payload: str, meta: dict[str, str]) -> bytes:
        """The batch item bytes, like ``WireEvent`` would encode them, with less work."""
        return (
            f'{{"payload":{_escape(payload)},"meta":{{"type":"{meta["type"]}",'
            f'"event_name":{_escape(meta["event_name"])},"service":{self._service_json},'
            f'"request_id":{_escape(meta["request_id"])},"env":{self._env_json}}},'
            f'"idempotency_key":{_escape(event_id)}}}'
        ).encode("utf-8", errors="replace")

    def _error_block(
        self,
        status: int | None,
        exc_type: str | None,
        exc_message: str | None,
        body: bytes | None,
        content_type: str | None,
    ) -> dict[str, Any]:
        error: dict[str, Any] = {
            "status_code": status,
            "retryable": status in RETRYABLE_STATUSES if status else False,
        }
        if exc_type is not None:
            error["exception"] = exc_type
            error["exception_message"] = exc_message or ""
        if body:
            stored = self.redactor.scrub_body(body, content_type)
            if stored is not None:
                # Hash what is stored, not the raw bytes: a hash of a small login body is
                # enough to brute-force a weak password offline.
                encoded = stored.encode("utf-8")
                error["request_body_hash"] = hashlib.sha256(encoded).hexdigest()
                if len(encoded) < SEED_BODY_TEXT_LIMIT:
                    error["request_body"] = stored
        return error

    # -- custom events --------------------------------------------------------------------

    def _build_custom(self, cap: CustomCapture) -> WireEvent:
        redactor = self.redactor
        payload: dict[str, Any] = {
            "id": cap.event_id,
            "kind": cap.kind,
            "message": cap.message or cap.event_name,
            "timestamp": _iso(cap.timestamp),
        }
        context: dict[str, Any] = {}
        req = cap.request
        if req is not None:
            context["ip"] = client_ip(req.remote_addr, req.forwarded_for, self.trusted_proxies)
            context["user_agent"] = req.user_agent or "unknown"
        if cap.actor is not None:
            context["actor"] = redactor.scrub(cap.actor)
        if context:
            payload["context"] = context
        if req is not None:
            payload["request"] = {
                "request_id": req.request_id,
                "method": req.method,
                "path": req.path,
            }
        if cap.data:
            payload["data"] = redactor.scrub(cap.data)
        payload["severity"] = severity_level(cap.kind)
        meta = {
            "type": cap.kind,
            "event_name": meta_text(cap.event_name),
            "service": self.service_name,
            "request_id": meta_text(
                req.request_id if req is not None else (cap.request_id or cap.event_id)
            ),
            "env": self.env,
        }
        return WireEvent(cap.event_id, clamp_payload(self._custom_scrub(payload)), meta)

    # -- helpers --------------------------------------------------------------------------

    def _custom_scrub(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.scrubber is None:
            return payload
        try:
            scrubbed = self.scrubber(payload)
        except Exception:
            if not self._scrubber_failed_logged:
                self._scrubber_failed_logged = True
                logger.exception(
                    "ImmutableLog: the custom scrubber raised; storing the event without its "
                    "query parameters, body, headers and data (logged once)"
                )
            return _strip_free_form(payload)
        if not isinstance(scrubbed, Mapping):
            logger.error("ImmutableLog: the custom scrubber must return the payload dict")
            return _strip_free_form(payload)
        return dict(scrubbed)

    def _build_stub(self, capture: Capture, exc: BaseException) -> WireEvent:
        timestamp = time.time()
        if type(capture) is tuple and len(capture) == len(RequestCapture._fields):
            capture = RequestCapture._make(capture)
        if isinstance(capture, RequestCapture):
            event_id = capture.event_id
            event_name = capture.event_name or f"http.{capture.method}.{capture.path}"
            request_id = capture.request_id
            timestamp = capture.timestamp
        elif isinstance(capture, CustomCapture):
            event_id = capture.event_id
            event_name = capture.event_name
            request_id = (
                capture.request.request_id if capture.request else (capture.request_id or event_id)
            )
            timestamp = capture.timestamp
        else:  # a plain tuple that is not a request capture (an integration's bug)
            event_id = request_id = UUIDS.take()
            event_name = "capture.malformed"
        payload = {
            "id": event_id,
            "kind": "error",
            "message": f"event could not be built: {type(exc).__name__}",
            "timestamp": _iso(timestamp),
            "severity": "high",
        }
        meta = {
            "type": "error",
            "event_name": meta_text(str(event_name)),
            "service": self.service_name,
            "request_id": request_id,
            "env": self.env,
        }
        return WireEvent(event_id, clamp_payload(payload), meta)


def _strip_free_form(payload: dict[str, Any]) -> dict[str, Any]:
    """Drop every field whose content a custom scrubber was responsible for vetting."""
    stripped = dict(payload)
    stripped.pop("data", None)
    if isinstance(stripped.get("request"), dict):
        request = dict(stripped["request"])
        request.pop("headers", None)
        if request.get("query_params"):
            request["query_params"] = FILTERED
        stripped["request"] = request
    if isinstance(stripped.get("error"), dict):
        error = dict(stripped["error"])
        error.pop("request_body", None)
        error.pop("request_body_hash", None)
        stripped["error"] = error
    return stripped
