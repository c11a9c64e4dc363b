"""What the parts of :class:`~immutablelog.ledger.sqlite.storage.SQLiteStorage` use of it:
this thread's ledger connection, its write transaction and the search file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from immutablelog.ledger.rows import SharedRows
from immutablelog.ledger.sqlite.search import SearchFile
from immutablelog.ledger.sqlite.writes import Transaction


class SQLiteBase(SharedRows):
    """The storage's connections, as its mixins (reads, accounts, erasure) see them."""

    path: Path
    search: SearchFile

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection to the ledger file."""
        raise NotImplementedError

    def write(self) -> AbstractContextManager[Transaction]:
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()
