"""A Django middleware, outermost, that counts the requests reaching the middleware chain (one
line each in the file ``AUDIT_SUITE_COUNT`` names), sync and async."""

from __future__ import annotations

import os
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

_count = open(os.environ["AUDIT_SUITE_COUNT"], "a", buffering=1)  # noqa: SIM115 (process-long)


class Counter:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        _count.write(f"{request.method} {request.path}\n")
        return self.get_response(request)
