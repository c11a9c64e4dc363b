"""A tiny real HTTP peer that speaks the ingest API, with faults on demand.

It is a real server on 127.0.0.1 (``http.server``, HTTP/1.1 keep-alive), so the SDK's transport
is exercised over real sockets: connection refused when stopped, resets, hangs, status codes and
``Retry-After`` headers. It implements the parts of docs/PROTOCOL.md §1 the SDK depends on,
including idempotency (same key + same payload → duplicate; same key + different payload →
rejected), so the seed's key-collision defect can be shown end to end.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    """A scripted answer: an HTTP status (+ Retry-After), or ``hang`` until released."""

    status: int = 503
    retry_after: str | None = None
    hang: bool = False
    reason: str = "unavailable"


@dataclass
class Stored:
    idempotency_key: str
    payload: str
    meta: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.payload)
        return doc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class FakeLedger:
    """Start with :meth:`start`; inspect :attr:`stored`; script faults with :meth:`fail_next`."""

    def __init__(self) -> None:
        self.port = 0
        self.stored: list[Stored] = []
        self._by_key: dict[str, Stored] = {}
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections_seen: set[tuple[str, int]] = set()
        self.faults: list[Fault] = []
        self.permanent_fault: Fault | None = None
        self.reject_event_names: set[str] = set()
        self.batch_endpoint = True
        self.max_batch_events: int | None = None
        self.hang_release = threading.Event()
        self.request_arrived = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLedger:
        ledger = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with ledger._lock:
                    ledger._connections.add(self.connection)

            def finish(self) -> None:
                with ledger._lock:
                    ledger._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                ledger._handle(self)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self.hang_release.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away like a crashed server: stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self.hang_release.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeLedger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and inspection -----------------------------------------------------------

    def fail_next(self, count: int, fault: Fault) -> None:
        with self._lock:
            self.faults.extend([fault] * count)

    def stored_keys(self) -> list[str]:
        with self._lock:
            return [s.idempotency_key for s in self.stored]

    def event_names(self) -> list[str]:
        with self._lock:
            return [s.meta.get("event_name", "") for s in self.stored]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate()`` holds (re-checked on every request) or time runs out."""
        deadline = time.monotonic() + timeout
        with self.request_arrived:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.request_arrived.wait(min(remaining, 0.05))
        return True

    def wait_for_stored(self, count: int, timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: len(self.stored) >= count, timeout)

    # -- request handling -------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = {k: v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append((handler.path, headers, body))
            self.connections_seen.add(handler.client_address)
            fault = self.faults.pop(0) if self.faults else self.permanent_fault
        self._notify()
        if fault is not None:
            if fault.hang:
                self.hang_release.wait(30)
                handler.close_connection = True
                return
            self._answer(
                handler,
                fault.status,
                {"ok": False, "reason": fault.reason, "message": f"scripted {fault.status}"},
                {"Retry-After": fault.retry_after} if fault.retry_after else {},
            )
            return
        if handler.path == "/v1/events/batch" and self.batch_endpoint:
            self._batch(handler, body, headers)
        elif handler.path == "/v1/events":
            self._single(handler, body, headers)
        else:
            self._answer(handler, 404, {"ok": False, "reason": "not_found", "message": "no"})

    def _store(
        self, key: str, payload: Any, meta: dict[str, Any], headers: dict[str, str]
    ) -> tuple[bool, bool]:
        """Returns (ok, duplicate)."""
        text = (  # as the ledger stores a payload sent as a document
            payload
            if isinstance(payload, str)
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        )
        with self._lock:
            known = self._by_key.get(key)
            if known is not None:
                return (known.payload == text, True)
            stored = Stored(key, text, dict(meta), headers)
            self._by_key[key] = stored
            self.stored.append(stored)
            return (True, False)

    def _batch(self, handler: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str]) -> None:
        try:
            items = json.loads(body)["events"]
        except (ValueError, KeyError):
            self._answer(handler, 400, {"ok": False, "reason": "malformed", "message": "bad"})
            return
        if self.max_batch_events is not None and len(items) > self.max_batch_events:
            self._answer(handler, 413, {"ok": False, "reason": "too_large", "message": "split"})
            return
        results = []
        for item in items:
            meta = item.get("meta") or {}
            if meta.get("event_name") in self.reject_event_names:
                results.append({"ok": False, "reason": "invalid_event", "message": "rejected"})
                continue
            ok, duplicate = self._store(item["idempotency_key"], item["payload"], meta, headers)
            if ok:
                results.append({"ok": True, "status": "accepted", "duplicate": duplicate})
            else:
                results.append(
                    {"ok": False, "reason": "idempotency_key_reused", "message": "different body"}
                )
        self._answer(handler, 200, {"ok": True, "results": results})
        self._notify()

    def _single(
        self, handler: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str]
    ) -> None:
        key = headers.get("Idempotency-Key") or ""
        event = json.loads(body)
        meta = event.get("meta") or {}
        if meta.get("event_name") in self.reject_event_names:
            self._answer(handler, 422, {"ok": False, "reason": "invalid_event", "message": "no"})
            return
        ok, duplicate = self._store(key, event["payload"], meta, headers)
        if ok:
            self._answer(handler, 202, {"ok": True, "status": "accepted", "duplicate": duplicate})
        else:
            self._answer(
                handler, 422, {"ok": False, "reason": "idempotency_key_reused", "message": "no"}
            )
        self._notify()

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        document: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(document).encode()
        with contextlib.suppress(OSError):
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (extra_headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)

    def _notify(self) -> None:
        with self.request_arrived:
            self.request_arrived.notify_all()


@contextlib.contextmanager
def running_ledger() -> Iterator[FakeLedger]:
    ledger = FakeLedger().start()
    try:
        yield ledger
    finally:
        ledger.stop()
