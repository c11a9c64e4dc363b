"""PostgreSQL's erasure of values: the search rows, the actor and the erasable part go in
one transaction; the pages they leave are vacuumed later (``purge_erased``)."""

from __future__ import annotations

from collections.abc import Sequence

from immutablelog.ledger.postgres.connection import PooledConnections
from immutablelog.ledger.postgres.schema import SEARCH_LOCK_ID
from immutablelog.ledger.storage import erasable_filters


class Erasure(PooledConnections):
    """Which values may be erased, erasing them, and the clean-up behind it."""

    def erase(self, tenant_id: int, indexes: Sequence[int]) -> int:
        if not indexes:
            return 0
        with self.write() as tx:
            conn = tx._conn
            # The search indexer holds this lock while it reads values: it must not put
            # back what is erased here.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SEARCH_LOCK_ID,))
            wanted = list(indexes)
            conn.execute(
                "DELETE FROM entries_search WHERE tenant_id = %s AND idx = ANY(%s::int8[])",
                (tenant_id, wanted),
            )
            conn.execute(
                "UPDATE entries SET actor = NULL WHERE tenant_id = %s AND idx = ANY(%s::int8[]) "
                "AND actor IS NOT NULL",
                (tenant_id, wanted),
            )
            erased = conn.execute(
                "DELETE FROM erasables WHERE tenant_id = %s AND idx = ANY(%s::int8[])",
                (tenant_id, wanted),
            ).rowcount
            if erased:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('purge_pending', '1') "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
        return int(erased)

    def purge_erased(self) -> bool:
        if not self._query("SELECT 1 FROM meta WHERE key = 'purge_pending'"):
            return False
        self._query("DELETE FROM meta WHERE key = 'purge_pending'")
        # Deleted rows and old row versions (the nulled actor, its index entries) stay in
        # the pages until vacuumed. (Autocommit: VACUUM runs outside a transaction.)
        self._query("VACUUM (INDEX_CLEANUP ON) erasables, entries_search, entries")
        return True

    def erasable_indexes(
        self,
        tenant_id: int,
        *,
        actor: str | None = None,
        received_before: str | None = None,
        start: int = 0,
        end: int | None = None,
    ) -> list[int]:
        where, params = erasable_filters(tenant_id, "%s", start, end, received_before)
        if actor is not None:
            # Driven by the actor's index, each part probed by its key: a join would let
            # the planner scan every erasable part of a big log.
            rows = self._query(
                "SELECT e.idx FROM entries AS e WHERE e.tenant_id = %s AND e.actor = %s "
                f"AND {' AND '.join(w.replace('x.', 'e.') for w in where)} "
                "AND EXISTS (SELECT 1 FROM erasables AS x "
                "WHERE x.tenant_id = e.tenant_id AND x.idx = e.idx) ORDER BY e.idx",
                [tenant_id, actor, *params],
            )
            return [int(idx) for (idx,) in rows]
        rows = self._query(
            "SELECT x.idx FROM entries AS e JOIN erasables AS x "
            "ON x.tenant_id = e.tenant_id AND x.idx = e.idx "
            f"WHERE e.tenant_id = %s AND {' AND '.join(where)} ORDER BY x.idx",
            [tenant_id, *params],
        )
        return [int(idx) for (idx,) in rows]
