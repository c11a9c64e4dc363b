"""The HTTP/1.1 connection handling ``immutablelog serve`` gives uvicorn.

uvicorn's httptools protocol, with two changes an API that must always answer in JSON needs:

- a request the HTTP parser cannot read (``Content-Length: abc``, a CR or NUL inside a
  header) gets the API's JSON error body instead of uvicorn's plain text;
- a client must send a request's headers within ``read_timeout`` seconds of starting it (or
  of connecting), and its body within ``BODY_TIMEOUT_FACTOR`` times that, else it gets a 408
  and the connection is closed. uvicorn has no such limit, so a client trickling bytes held a
  connection (and its memory) for as long as it liked.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds, read once per connection from the environment that ``serve`` sets for its workers.
READ_TIMEOUT_ENV: Final = "IMMUTABLELOG_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT: Final = 10.0
#: A body may take this many times the header timeout (8 MiB batches over slow links).
BODY_TIMEOUT_FACTOR: Final = 6

_STATUS_LINES: Final = {400: b"HTTP/1.1 400 Bad Request", 408: b"HTTP/1.1 408 Request Timeout"}


def read_timeout() -> float:
    try:
        value = float(os.environ.get(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT))
    except ValueError:
        return DEFAULT_READ_TIMEOUT
    return value if value > 0 else DEFAULT_READ_TIMEOUT


def raw_error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response with the API's JSON body, closing the connection."""
    body = orjson.dumps({"ok": False, "reason": reason, "message": message})
    head = (
        _STATUS_LINES[status] + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


class ApiHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout()
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self._read_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._read_timeout * BODY_TIMEOUT_FACTOR)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(
            raw_error_response(400, "bad_request", f"malformed HTTP request: {msg}")
        )
        self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(
                raw_error_response(408, "request_timeout", "the request was not received in time")
            )
        # Closing tells a handler still waiting for the body that the client is gone.
        self.transport.close()
