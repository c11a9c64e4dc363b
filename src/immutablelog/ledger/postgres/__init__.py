"""PostgreSQL backend: one shared database behind many API processes."""

from immutablelog.ledger.postgres.storage import PostgresStorage

__all__ = ["PostgresStorage"]
