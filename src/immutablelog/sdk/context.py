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
from typing import Any, Final

from immutablelog.sdk.capture import PLAIN_ACTOR_TYPES, plain_actor


class AuditContext:
    """A request id, and how to tell who acted in that request. (A plain slotted class: one is
    made per request, and a frozen dataclass costs several times as much to make.)"""

    __slots__ = ("actor_of", "request_id")

    def __init__(self, request_id: str, actor_of: Callable[[], Any] = lambda: None) -> None:
        self.request_id = request_id
        self.actor_of = actor_of

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


#: The bound context; a request binds a plain (request id, actor_of) tuple, the cheapest thing
#: to make on every request, turned into an AuditContext only when someone asks.
_Bound = AuditContext | tuple[str, Callable[[], Any]] | None
_CURRENT: ContextVar[_Bound] = ContextVar("immutablelog_audit_context", default=None)


def current() -> AuditContext | None:
    """The audit context of the running code, if any."""
    value = _CURRENT.get()
    if type(value) is tuple:
        return AuditContext(*value)
    return value  # type: ignore[return-value]


def bind(context: AuditContext | None) -> Token[_Bound]:
    return _CURRENT.set(context)


#: What is bound, as it is: a serving integration's (request id, actor_of) tuple, an
#: AuditContext or None. The context variable's own getter (no Python frame), for the ASGI
#: middleware's check on every request for an outer one that records it (its ``actor_of``
#: is the exchange in flight).
bound_value: Final = _CURRENT.get

#: Bind the context of a request being served, given as a ``(request id, actor_of)`` pair (its
#: id; who acted, asked when needed); returns the token for :func:`unbind`. The context
#: variable's own setter: no Python frame on every request.
bind_request: Final = _CURRENT.set

#: Undo a bind, given its token (the context variable's own ``reset``).
unbind: Final = _CURRENT.reset


@contextmanager
def bound(context: AuditContext | None) -> Iterator[None]:
    """Run a block in ``context`` (a job runner does, with what the job carried)."""
    token = _CURRENT.set(context)
    try:
        yield
    finally:
        _CURRENT.reset(token)
