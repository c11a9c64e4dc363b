"""PostgreSQL writes of tenants' API keys and viewer links (their reads are shared:
``rows.py``). A statement whose answer was lost may have committed, so each is either
safe to run again or not retried."""

from __future__ import annotations

from collections.abc import Mapping

from immutablelog.ledger.postgres.connection import PooledConnections
from immutablelog.ledger.rows import REVOKE_VIEWER_LINK, psycopg_sql
from immutablelog.ledger.storage import (
    API_KEY_COLUMNS,
    VIEWER_LINK_COLUMNS,
    ApiKey,
    ViewerLink,
    api_key_from_row,
    viewer_link_from_row,
)


class AccountWrites(PooledConnections):
    """API keys and viewer links made, revoked and used."""

    def create_api_key(
        self,
        tenant_id: int,
        key_hash: bytes,
        prefix: str,
        scopes: frozenset[str],
        label: str | None,
        now: str,
    ) -> ApiKey:
        # Not retried through _query: an INSERT whose answer was lost may have committed.
        with self._connection() as conn:
            row = conn.execute(
                "WITH k AS (INSERT INTO api_keys "
                "(tenant_id, key_hash, prefix, scopes, label, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *) "
                f"SELECT {API_KEY_COLUMNS} FROM k JOIN tenants t ON t.id = k.tenant_id",
                (tenant_id, key_hash, prefix, ",".join(sorted(scopes)), label, now),
            ).fetchone()
        assert row is not None  # the foreign key guarantees the join
        return api_key_from_row(row)

    def revoke_api_key(self, prefix: str, now: str) -> ApiKey | None:
        # One statement, safe to retry: a key already revoked keeps its first revocation time.
        rows = self._query(
            "UPDATE api_keys k SET revoked_at = COALESCE(k.revoked_at, %s) "
            "FROM tenants t WHERE t.id = k.tenant_id AND k.prefix = %s "
            f"RETURNING {API_KEY_COLUMNS}",
            (now, prefix),
        )
        return api_key_from_row(rows[0]) if rows else None

    def touch_api_keys(self, last_used: Mapping[int, str]) -> None:
        if last_used:
            self._query(
                "UPDATE api_keys k SET last_used_at = used.at "
                "FROM unnest(%s::int8[], %s::text[]) AS used(id, at) WHERE k.id = used.id",
                (list(last_used), list(last_used.values())),
            )

    def create_viewer_link(
        self,
        tenant_id: int,
        token_hash: bytes,
        prefix: str,
        filters: str,
        label: str | None,
        now: str,
        expires_at: str,
    ) -> ViewerLink:
        # Not retried through _query: an INSERT whose answer was lost may have committed.
        with self._connection() as conn:
            row = conn.execute(
                "WITH v AS (INSERT INTO viewer_links "
                "(tenant_id, token_hash, prefix, filters, label, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *) "
                f"SELECT {VIEWER_LINK_COLUMNS} FROM v JOIN tenants t ON t.id = v.tenant_id",
                (tenant_id, token_hash, prefix, filters, label, now, expires_at),
            ).fetchone()
        assert row is not None  # the foreign key guarantees the join
        return viewer_link_from_row(row)

    def revoke_viewer_link(self, prefix: str, now: str) -> ViewerLink | None:
        with self._connection() as conn:
            conn.execute(psycopg_sql(REVOKE_VIEWER_LINK), (now, prefix))
        found = self._links_where("v.prefix = ?", prefix)
        return found[0] if found else None
