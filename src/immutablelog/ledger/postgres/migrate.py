"""PostgreSQL's schema, created or taken to this release's version on open (``schema.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from immutablelog.ledger import rows
from immutablelog.ledger.postgres.schema import MIGRATION_LOCK_ID, MIGRATIONS, SCHEMA_VERSION
from immutablelog.ledger.postgres.writes import Connection
from immutablelog.ledger.storage import StorageError


def migrate(conn: Connection, where: str, log_name: str) -> str:
    """Migrate the schema in a transaction of its own; return the log's name."""
    with conn.transaction():
        # Several processes may start at once: one migrates, the others wait, then see it.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        # Only the current schema counts: a log in another schema on the search_path
        # (public, say) is a different log.
        row = conn.execute(
            "SELECT current_schema(), to_regclass(format('%I.meta', current_schema()))"
        ).fetchone()
        if row is None or row[0] is None:
            raise StorageError(f"PostgreSQL at {where} has no current schema: check search_path")
        schema = sql.Identifier(row[0])
        version = 0
        if row[1] is not None:
            found = conn.execute(rows.SCHEMA_VERSION).fetchone()
            version = int(found[0]) if found else 0

        def run(text: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
            cur = conn.execute(rows.psycopg_sql(text), params)
            return cur.fetchall() if cur.description else []

        def step(number: int) -> None:
            conn.execute(sql.SQL(MIGRATIONS[number]).format(schema=schema))

        return rows.migrate(run, version, SCHEMA_VERSION, where, step, log_name)
