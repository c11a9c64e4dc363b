"""Optional dependencies: which extra installs which module, and the hint when one is missing.

``pip install immutablelog`` brings only what the SDK needs. The command line, the server,
PostgreSQL and the verifier's HTTP client come with extras, and a command that needs one that
is not installed says which, in one line, instead of a traceback.
"""

from __future__ import annotations

import importlib.util
from typing import Final

#: Top-level module -> (the extra that installs it, what it is needed for).
_EXTRA_OF_MODULE: Final[dict[str, tuple[str, str]]] = {
    "click": ("cli", "the immutablelog command"),
    "rich": ("cli", "the immutablelog command"),
    "httpx": ("cli", "the immutablelog command"),
    "starlette": ("server", "the ledger server"),
    "uvicorn": ("server", "the ledger server"),
    "prometheus_client": ("server", "the ledger server"),
    "psycopg": ("postgres", "PostgreSQL support"),
    "psycopg_pool": ("postgres", "PostgreSQL support"),
    "psycopg_binary": ("postgres", "PostgreSQL support"),
    "flask": ("flask", "the Flask extension"),
}


def missing_extra_hint(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, if ``exc`` is a missing optional dependency."""
    module = (exc.name or "").partition(".")[0]
    if module not in _EXTRA_OF_MODULE:
        return None
    return _hint(*_EXTRA_OF_MODULE[module], module)


def require_extra(extra: str, feature: str, *modules: str) -> None:
    """For a package that is used as a library: fail at import with the extra to install,
    rather than with the first missing module's bare name."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(_hint(extra, feature, module), name=module)


def _hint(extra: str, feature: str, module: str) -> str:
    return (
        f"{feature} needs the '{extra}' extra, which is not installed "
        f"(no module {module!r}): pip install 'immutablelog[{extra}]'"
    )
