"""The audit context: which request (and whose) the current work belongs to.

Every integration binds it while it serves a request, so that work started there — a Celery
task, an RQ job, a thread that copies the context — can carry the request id and actor along,
and events recorded in that work name the request that caused it. ``ImmutableLogClient.record``
uses it when no request id or actor is given.

The actor is kept as a function and resolved only when the context is carried or used: a view
usually learns who acted after the request started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from immutablelog.sdk.capture import PLAIN_ACTOR_TYPES, plain_actor


@dataclass(frozen=True, slots=True)
class AuditContext:
    request_id: str
    actor_of: Callable[[], Any] = lambda: None

    def actor(self) -> Any:
        """Who acted, as plain data (never raises: an actor that cannot be told is None)."""
        try:
            actor = self.actor_of()
        except Exception:
            return None
        if actor is not None and type(actor) not in PLAIN_ACTOR_TYPES:
            actor = plain_actor(actor)
        return actor

    def carried(self) -> dict[str, Any]:
        """What travels with a job (JSON-friendly)."""
        return {"request_id": self.request_id, "actor": self.actor()}

    @classmethod
    def from_carried(cls, carried: Any) -> AuditContext | None:
        if not isinstance(carried, dict) or not isinstance(carried.get("request_id"), str):
            return None
        actor = carried.get("actor")
        return cls(carried["request_id"], lambda: actor)


_CURRENT: ContextVar[AuditContext | None] = ContextVar("immutablelog_audit_context", default=None)


def current() -> AuditContext | None:
    """The audit context of the running code, if any."""
    return _CURRENT.get()


def bind(context: AuditContext | None) -> Token[AuditContext | None]:
    return _CURRENT.set(context)


def unbind(token: Token[AuditContext | None]) -> None:
    _CURRENT.reset(token)


@contextmanager
def bound(context: AuditContext | None) -> Iterator[None]:
    """Run a block in ``context`` (a job runner does, with what the job carried)."""
    token = _CURRENT.set(context)
    try:
        yield
    finally:
        _CURRENT.reset(token)
