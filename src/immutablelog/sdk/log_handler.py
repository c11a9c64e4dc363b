"""A ``logging.Handler`` that ships log records as audit events.

For code that already says what happened through :mod:`logging` (``logger.warning("refund
issued", extra={...})``), attaching this handler to a chosen logger turns those records into
ledger events without touching the call sites. The handler is as cheap as the SDK's other entry
points: ``emit`` copies a few record fields and enqueues; formatting, redaction and delivery
happen in the background worker.

It forwards to anything with the SDK's ``record(event_name, kind, *, message, **data)`` method —
an :class:`~immutablelog.sdk.client.ImmutableLogClient` or the Flask extension (which then adds
the current request's id, path and client to events logged during a request).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final, Protocol

#: Records from these loggers are never shipped: the SDK's own diagnostics would feed back into
#: the pipeline (a log line per delivery, forever); httpx's per-request lines are noise.
IGNORED_LOGGER_PREFIXES: Final = ("immutablelog", "httpx", "httpcore")


class EventRecorder(Protocol):
    """What the handler forwards to."""

    def record(
        self, event_name: str, kind: str = "info", *, message: str | None = None, **data: Any
    ) -> str: ...


def kind_for_level(levelno: int) -> str:
    """ERROR and above → ``error``, WARNING → ``warning``, everything else → ``info``."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    return "info"


class ImmutableLogHandler(logging.Handler):
    """Ships each log record at or above ``level`` as an event.

    The event name is ``extra={"imtbl_event_name": ...}`` if given, else
    ``f"{event_name_prefix}.{record.name}"``; extra structured fields can be passed as
    ``extra={"imtbl_data": {...}}`` (redacted like any event data). The message is the record's
    formatted message (``getMessage()``), evaluated now, because arguments may change later.
    """

    def __init__(
        self,
        recorder: EventRecorder,
        level: int = logging.INFO,
        *,
        event_name_prefix: str = "log",
    ) -> None:
        super().__init__(level)
        self.recorder = recorder
        self.event_name_prefix = event_name_prefix
        self._reentry = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(IGNORED_LOGGER_PREFIXES) or getattr(
            self._reentry, "active", False
        ):
            return
        self._reentry.active = True
        try:
            data: dict[str, Any] = {
                "logger": record.name,
                "level": record.levelname,
                "module": record.module,
                "function": record.funcName,
                "line": record.lineno,
            }
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                data["exception"] = {"type": type(exc).__name__, "message": str(exc)}
            extra = getattr(record, "imtbl_data", None)
            if isinstance(extra, dict):
                data["extra"] = extra
            event_name = getattr(record, "imtbl_event_name", None) or (
                f"{self.event_name_prefix}.{record.name}"
            )
            self.recorder.record(
                str(event_name),
                kind_for_level(record.levelno),
                message=record.getMessage(),
                **data,
            )
        except Exception:
            self.handleError(record)
        finally:
            self._reentry.active = False
