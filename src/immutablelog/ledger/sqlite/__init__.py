"""SQLite backend: the embedded default."""

from immutablelog.ledger.sqlite.storage import SQLiteStorage

__all__ = ["SQLiteStorage"]
