"""The HTTP API over the ledger (Starlette, served by uvicorn)."""

from immutablelog.server.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
