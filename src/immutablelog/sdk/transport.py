"""Transports: how a batch of events leaves the process.

The delivery pipeline only knows the :class:`Transport` interface: ``send_batch(events)`` returns
one :class:`ItemResult` per event, in order, or raises :class:`RetryableDeliveryError` (nothing
is known to be stored; send the whole batch again later) or :class:`RejectedBatchError` (the
request as a whole is refused and resending it cannot help).

:class:`HttpTransport` speaks the ingest protocol (docs/PROTOCOL.md §1) to a server;
:class:`~immutablelog.sdk.embedded.LedgerTransport`, returned by :func:`embedded_transport` when
no URL is configured, appends to a local ledger with the server's own ledger code.
"""

from __future__ import annotations

import email.message
import email.utils

# The socket module imports the IDNA codec on first use. Were that to happen in the worker
# thread while another thread forks (gunicorn --preload forks right after the app, which may have
# recorded an event, is imported), the child would inherit a half-initialized module and never
# be able to send. So it is imported here, by whoever imports the SDK, and HttpTransport builds
# its TLS context eagerly for the same reason.
import encodings.idna  # noqa: F401
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol, runtime_checkable

import orjson

from immutablelog.retry_policy import is_transient, parse_retry_after
from immutablelog.sdk.events import WireEvent

USER_AGENT: Final = "immutablelog-python/0.1"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The server's verdict on one event of a batch.

    ``accepted`` covers both a fresh commit and a duplicate (already stored under the same
    idempotency key): either way the event is in the ledger. A ``False`` is a permanent,
    per-event rejection (``reason`` is the server's machine code).
    """

    accepted: bool
    duplicate: bool = False
    reason: str | None = None
    message: str | None = None


class DeliveryError(Exception):
    """Base class for batch-level delivery failures."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class RetryableDeliveryError(DeliveryError):
    """A transient failure (connection error, timeout, 5xx, 429): resend the whole batch.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class RejectedBatchError(DeliveryError):
    """The server refused the request as a whole with a permanent 4xx.

    ``splittable`` says whether smaller batches might succeed (413: too large).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        splittable: bool = False,
    ):
        super().__init__(message, status=status, reason=reason)
        self.splittable = splittable


@runtime_checkable
class Transport(Protocol):
    """Where batches go. Called from the pipeline's single worker thread only."""

    def send_batch(self, events: Sequence[WireEvent]) -> list[ItemResult]:
        """Deliver ``events``; return one result per event, in order."""
        ...

    def close(self) -> None:
        """Release connections. The transport may be used again afterwards (reconnects)."""
        ...


EndpointMode = Literal["auto", "batch", "single"]


class _Answer(NamedTuple):
    """An HTTP response, read in full."""

    status: int
    reason: str
    headers: email.message.Message
    body: bytes


# How a reused keep-alive connection fails when the server has closed it meanwhile.
_STALE_CONNECTION: Final = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _StaleConnection(Exception):
    """A reused connection failed: retried once on a fresh one (resending is safe: the server
    deduplicates by idempotency key)."""


def _tls_context() -> ssl.SSLContext:
    """Certificate checks against certifi's CA bundle when installed, else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class HttpTransport:
    """``POST {url}/v1/events/batch`` over one keep-alive HTTP/1.1 connection.

    Deliberately lean: the worker shares the GIL with the application, and each time it takes
    the GIL back from a busy thread (after every blocking call) that thread waits. So a request
    is one pre-built head plus the body in a single write, and the answer is parsed by the
    standard library's ``http.client.HTTPResponse``. No proxy from the environment is used: it
    would silently reroute audit events.

    A forked child opens its own connection and never uses or shuts down the parent's: that would
    disturb the parent's stream.

    A batch asks for the server's minimal answer (``Prefer: return=minimal``): the counts and
    the positions of duplicates and refused items, instead of one result of about 350 bytes
    per event to read and parse. A server that ignores the preference answers per item, which
    is read as before.

    ``endpoint="auto"`` falls back to the seed's single-event ``POST /v1/events`` (with the
    seed's headers) for the rest of the process when a server answers the batch endpoint with
    404 or 405, so the SDK still works against servers that predate batching.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        endpoint: EndpointMode = "auto",
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not url:
            raise ValueError("HttpTransport needs the server URL")
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the server URL must be http(s)://host[:port][/path], not {url!r}")
        self._tls = _tls_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._path = urllib.parse.quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        headers = {
            "Host": _host_header(self._host, parts.port),
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Client-TZ": "UTC",
            "X-Client-Offset-Minutes": "0",
            **(extra_headers or {}),
        }
        self._head = _header_lines(headers)
        self._mode: EndpointMode = endpoint
        self._sock: socket.socket | None = None
        self._sock_pid = 0

    def _socket(self) -> tuple[socket.socket, bool]:
        """The connection, opened if needed, and whether it was already open (reused)."""
        sock = self._sock
        if sock is not None and self._sock_pid == os.getpid():
            return sock, True
        sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock, self._sock_pid = sock, os.getpid()
        return sock, False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._sock_pid == os.getpid():
            sock.close()

    def send_batch(self, events: Sequence[WireEvent]) -> list[ItemResult]:
        if self._mode == "single":
            return [self._send_single(event) for event in events]
        body = b'{"events":[' + b",".join([event.encoded for event in events]) + b"]}"
        answer = self._post("/v1/events/batch", body, _PREFER_MINIMAL)
        if answer.status in (404, 405) and self._mode == "auto":
            self._mode = "single"
            return [self._send_single(event) for event in events]
        if answer.status // 100 != 2:
            raise _error_for(answer)
        try:
            data = orjson.loads(answer.body)  # ~2x json's speed
            if "results" in data:  # a server that answers per item
                return _per_item_results(data["results"], len(events))
            return _summary_results(data, len(events))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Some events may be stored, some not: resending is safe (idempotency keys).
            raise RetryableDeliveryError(
                f"unreadable batch answer ({exc.__class__.__name__}: {exc})", status=answer.status
            ) from exc

    def _send_single(self, event: WireEvent) -> ItemResult:
        body = json.dumps(
            {"payload": event.payload, "meta": event.meta}, ensure_ascii=False
        ).encode("utf-8")
        headers = {
            "Idempotency-Key": event.idempotency_key,
            "Request-Id": event.meta.get("request_id", ""),
        }
        answer = self._post("/v1/events", body, headers)
        if answer.status // 100 == 2:
            data = _json_or_empty(answer)
            return ItemResult(accepted=True, duplicate=bool(data.get("duplicate", False)))
        error = _error_for(answer)
        if isinstance(error, RetryableDeliveryError):
            raise error
        return ItemResult(accepted=False, reason=error.reason, message=str(error))

    def _post(self, path: str, body: bytes, headers: dict[str, str] | bytes) -> _Answer:
        request = b"".join(
            [
                f"POST {self._path}{path} HTTP/1.1\r\n".encode("ascii"),
                self._head,
                headers if isinstance(headers, bytes) else _header_lines(headers),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            ]
        )
        try:
            try:
                return self._exchange(request)
            except _StaleConnection:
                self.close()
                return self._exchange(request)
        except (OSError, http.client.HTTPException) as exc:
            # Connection refused/reset, timeouts, TLS and protocol errors: nothing is known to be
            # stored. The connection may be broken, so start a fresh one next time.
            self.close()
            raise RetryableDeliveryError(f"{exc.__class__.__name__}: {exc}") from exc

    def _exchange(self, request: bytes) -> _Answer:
        sock, reused = self._socket()
        try:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock, method="POST")
            response.begin()
        except _STALE_CONNECTION as exc:
            if reused:
                raise _StaleConnection from exc
            raise
        data = response.read()
        if response.will_close:
            self.close()
        return _Answer(response.status, response.reason, response.headers, data)


def _host_header(host: str, port: int | None) -> str:
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _header_lines(headers: Mapping[str, str]) -> bytes:
    """Header lines; CR and LF in a value (which would end the header) become spaces, and
    characters Latin-1 cannot carry become ``?``."""
    lines = []
    for name, value in headers.items():
        value = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1", errors="replace")


def _json_or_empty(answer: _Answer) -> dict[str, Any]:
    try:
        data = json.loads(answer.body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_for(answer: _Answer) -> DeliveryError:
    data = _json_or_empty(answer)
    status = answer.status
    reason = str(data.get("reason")) if data.get("reason") is not None else None
    message = f"HTTP {status}: {data.get('message') or answer.reason}"
    if is_transient(status):
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        return RetryableDeliveryError(
            message, status=status, reason=reason, retry_after=retry_after
        )
    return RejectedBatchError(message, status=status, reason=reason, splittable=status == 413)


#: The verdict of an event stored anew (shared: the worker settles hundreds per batch).
ACCEPTED: Final = ItemResult(accepted=True)
_DUPLICATE: Final = ItemResult(accepted=True, duplicate=True)
#: RFC 7240: the batch answer as a summary (docs/PROTOCOL.md §1).
_PREFER_MINIMAL: Final = b"Prefer: return=minimal\r\n"


def _per_item_results(results: Any, count: int) -> list[ItemResult]:
    """The verdicts of an answer with one result per event."""
    if not isinstance(results, list) or len(results) != count:
        raise ValueError("the batch answer does not list one result per event")
    return [_item_result(result) for result in results]


def _summary_results(data: Any, count: int) -> list[ItemResult]:
    """The verdicts of a ``return=minimal`` answer: every event stored, except the listed
    duplicates (stored before) and refused ones. An answer that does not add up to exactly
    ``count`` events raises ValueError (the batch is then sent again)."""
    duplicates, errors = data["duplicates"], data["errors"]
    if (
        not isinstance(duplicates, list)
        or not isinstance(errors, list)
        or data["accepted"] != count - len(errors)
        or data["rejected"] != len(errors)
        or len(set(duplicates)) != len(duplicates)
    ):
        raise ValueError("the batch summary does not add up to the events sent")
    results = [ACCEPTED] * count
    for position in duplicates:
        _check_position(position, count)
        results[position] = _DUPLICATE
    refused = set()
    for error in errors:
        position = error["index"]
        _check_position(position, count)
        if position in refused or results[position] is _DUPLICATE or error.get("ok") is not False:
            raise ValueError("the batch summary settles an event twice")
        refused.add(position)
        results[position] = _item_result(error)
    return results


def _check_position(position: Any, count: int) -> None:
    if type(position) is not int or not 0 <= position < count:
        raise ValueError(f"no event at position {position!r} of the batch")


def _item_result(result: Any) -> ItemResult:
    if not isinstance(result, dict):
        return ItemResult(accepted=False, reason="bad_result", message=repr(result)[:200])
    if result.get("ok"):
        # Shared instances: the worker settles hundreds of these per batch.
        return _DUPLICATE if result.get("duplicate") else ACCEPTED
    return ItemResult(
        accepted=False,
        reason=str(result.get("reason") or "rejected"),
        message=str(result.get("message") or ""),
    )


def embedded_transport(ledger_path: str | None = None) -> Transport:
    """Embedded mode: events appended straight into a local ledger (no server needed).

    The data directory is ``ledger_path``, else ``$IMMUTABLELOG_DATA_DIR``, else
    ``./immutablelog-data`` — the same default as ``immutablelog serve``, which can later
    serve (and ``immutablelog verify`` check) exactly this log.
    """
    from immutablelog.sdk.embedded import LedgerTransport  # the ledger: only when used

    return LedgerTransport(ledger_path or embedded_data_dir())


def embedded_data_dir() -> str:
    """Where embedded mode keeps its ledger: ``$IMMUTABLELOG_DATA_DIR``, else
    ``./immutablelog-data`` (as an absolute path: it names the destination)."""
    return os.path.abspath(os.environ.get("IMMUTABLELOG_DATA_DIR") or "immutablelog-data")
