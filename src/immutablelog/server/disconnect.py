"""Blocking work that stops when its client goes away.

A browser that changes its filters aborts the requests of the view it leaves; the server
only learns of it as a closed connection. Work run here gets a :class:`Cancel` that is set
then, so a count nobody will read stops competing with the one that replaced it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from immutablelog.ledger.rollup import Cancel

T = TypeVar("T")


async def unless_disconnected(request: Request, work: Callable[[Cancel], T]) -> T:
    """``work(cancel)`` in a worker thread; ``cancel`` is set if the client disconnects
    before it returns. Its result or exception is this call's."""
    cancel = Cancel()

    async def watch() -> None:
        # The request has no body to read: the next message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        # Hooks may block briefly (PostgreSQL's cancel request): not on the event loop.
        await anyio.to_thread.run_sync(cancel.set)

    result: T | None = None
    failure: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(work, cancel)
        except Exception as exc:  # re-raised below, outside the task group
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result  # type: ignore[return-value]
