"""ImmutableLog: a self-hostable, tamper-evident audit log for Python web applications.

The public API is small: the Flask extension, the framework-neutral client, the version.
They are imported lazily so that ``import immutablelog`` pulls in neither Flask nor the
server's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ImmutableLogAudit", "ImmutableLogClient", "__version__"]

if TYPE_CHECKING:
    from immutablelog.flask import ImmutableLogAudit
    from immutablelog.sdk import ImmutableLogClient


def __getattr__(name: str) -> Any:
    if name == "ImmutableLogAudit":
        from immutablelog.flask import ImmutableLogAudit

        return ImmutableLogAudit
    if name == "ImmutableLogClient":
        from immutablelog.sdk import ImmutableLogClient

        return ImmutableLogClient
    raise AttributeError(f"module 'immutablelog' has no attribute {name!r}")
