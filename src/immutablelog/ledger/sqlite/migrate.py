"""SQLite's schema, created or taken to this release's version on open (``schema.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from immutablelog.ledger import rows
from immutablelog.ledger.sqlite.schema import MIGRATIONS, SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, where: str, log_name: str) -> str:
    """Migrate the ledger inside the caller's write transaction; return the log's name."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    version = 0
    if has_meta:
        row = conn.execute(rows.SCHEMA_VERSION).fetchone()
        version = int(row[0]) if row else 0

    def run(sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        return conn.execute(sql, params).fetchall()

    def step(number: int) -> None:
        for statement in split_sql(MIGRATIONS[number]):
            conn.execute(statement)

    return rows.migrate(run, version, SCHEMA_VERSION, where, step, log_name)


def split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN … END;) whole."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
