"""A pytest plugin for running another project's test suite with the ASGI middleware installed:
every Starlette (FastAPI) ``TestClient`` the suite makes serves its app wrapped outermost in
:class:`immutablelog.asgi.AuditMiddleware`, delivering to ``IMMUTABLELOG_URL``.

Each HTTP request that reaches the wrapper is counted in the file ``AUDIT_SUITE_COUNT`` names
(one line per request), so that the caller can check that every request gave one event. The
suite itself is not changed.
"""

from __future__ import annotations

import os
from typing import Any

from starlette import testclient

from immutablelog.asgi import AuditMiddleware
from immutablelog.sdk import DeliveryOptions

_original_init = testclient.TestClient.__init__
_count = open(os.environ["AUDIT_SUITE_COUNT"], "a", buffering=1)  # noqa: SIM115 (process-long)


def _audited(app: Any) -> Any:
    audit = AuditMiddleware(
        app,
        service_name="third-party-suite",
        delivery=DeliveryOptions(spool_dir=os.environ["AUDIT_SUITE_SPOOL"]),
    )

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _count.write(f"{scope['method']} {scope['path']}\n")
        await audit(scope, receive, send)

    return counted


def _init(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, _audited(app), *args, **kwargs)


testclient.TestClient.__init__ = _init  # type: ignore[method-assign]
