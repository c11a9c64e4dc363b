"""SQLite's erasure of values: out of the search file first, then out of the ledger.

The search file's lock is held throughout (``SearchFile.purging``): the indexer must not
read the values between their purge from the index and their deletion.
"""

from __future__ import annotations

from collections.abc import Sequence

from immutablelog.ledger.sqlite.base import SQLiteBase
from immutablelog.ledger.sqlite.sql import chunks
from immutablelog.ledger.storage import erasable_filters


class Erasure(SQLiteBase):
    """Which values may be erased, erasing them, and the clean-up behind it."""

    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        if not indexes:
            return 0
        erased = 0
        with self.search.purging(tenant_id, indexes), self.write() as tx:
            for chunk in chunks(indexes):
                marks = ",".join("?" * len(chunk))
                erased += tx._conn.execute(
                    f"DELETE FROM erasables WHERE tenant_id = ? AND idx IN ({marks})",
                    (tenant_id, *chunk),
                ).rowcount
                tx._conn.execute(
                    f"UPDATE entries SET actor = NULL WHERE tenant_id = ? "
                    f"AND idx IN ({marks}) AND actor IS NOT NULL",
                    (tenant_id, *chunk),
                )
        # Old page images stay in the write-ahead log until it is reset.
        self._conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchall()
        return erased

    def purge_erased(self) -> bool:
        return self.search.purge_erased()

    def erasable_indexes(
        self,
        tenant_id: int,
        *,
        actor: str | None = None,
        received_before: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> list[int]:
        where, params = erasable_filters(tenant_id, "?", start, end, received_before)
        join = "JOIN main.erasables AS x ON x.tenant_id = e.tenant_id AND x.idx = e.idx"
        if actor is None:
            rows = self._conn.execute(
                f"SELECT x.idx FROM main.entries AS e {join} WHERE {' AND '.join(where)} "
                "ORDER BY x.idx",
                params,
            )
            return [int(idx) for (idx,) in rows]
        return self.search.actor_indexes(tenant_id, actor, join, where, params)
