"""Celery: the audit context of the code that queues a task travels with it.

::

    from immutablelog.celery import carry_audit_context
    carry_audit_context()   # once, where the Celery app is defined (producers and workers)

A task queued while a request is served carries that request's id and actor in its message
headers; while the task runs they are the current audit context again, so
``ImmutableLogClient.record(...)`` in the task names the request that caused it.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any, Final

from celery import signals

from immutablelog.sdk.context import AuditContext, bind, current, unbind

#: The message header that carries the context.
HEADER: Final = "immutablelog_context"

_tokens: dict[str, Token[Any]] = {}


def carry_audit_context() -> None:
    """Connect the signals (idempotent; Celery's signals are process-wide)."""
    signals.before_task_publish.connect(_attach, weak=False, dispatch_uid=f"{HEADER}.publish")
    signals.task_prerun.connect(_enter, weak=False, dispatch_uid=f"{HEADER}.prerun")
    signals.task_postrun.connect(_leave, weak=False, dispatch_uid=f"{HEADER}.postrun")


def _attach(headers: dict[str, Any] | None = None, **_: Any) -> None:
    context = current()
    if context is not None and headers is not None:
        headers[HEADER] = context.carried()


def _enter(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    carried = getattr(getattr(task, "request", None), HEADER, None)
    if task_id is not None:
        _tokens[task_id] = bind(AuditContext.from_carried(carried))


def _leave(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        unbind(token)
