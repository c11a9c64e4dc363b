"""SQLite writes of tenants' API keys and viewer links (their reads are shared: ``rows.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from immutablelog.ledger.rows import REVOKE_VIEWER_LINK
from immutablelog.ledger.sqlite.base import SQLiteBase
from immutablelog.ledger.storage import ApiKey, ViewerLink


class AccountWrites(SQLiteBase):
    """API keys and viewer links made, revoked and used, each in a write transaction."""

    def create_api_key(
        self,
        tenant_id: int,
        key_hash: bytes,
        prefix: str,
        scopes: frozenset[str],
        label: str | None,
        now: str,
    ) -> ApiKey:
        with self.write() as tx:
            cur = tx._conn.execute(
                "INSERT INTO api_keys (tenant_id, key_hash, prefix, scopes, label, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tenant_id, key_hash, prefix, ",".join(sorted(scopes)), label, now),
            )
            key_id = cur.lastrowid
        found = self._key_where("k.id = ?", key_id)
        assert found is not None
        return found

    def revoke_api_key(self, prefix: str, now: str) -> ApiKey | None:
        with self.write() as tx:
            tx._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                (now, prefix),
            )
        return self._key_where("k.prefix = ?", prefix)

    def touch_api_keys(self, last_used: Mapping[int, str]) -> None:
        if not last_used:
            return
        with self.write() as tx:
            tx._conn.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                [(when, key_id) for key_id, when in last_used.items()],
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
        with self.write() as tx:
            cur = tx._conn.execute(
                "INSERT INTO viewer_links "
                "(tenant_id, token_hash, prefix, filters, label, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant_id, token_hash, prefix, filters, label, now, expires_at),
            )
            link_id = cur.lastrowid
        found = self._links_where("v.id = ?", link_id)
        return found[0]

    def revoke_viewer_link(self, prefix: str, now: str) -> ViewerLink | None:
        with self.write() as tx:
            tx._conn.execute(REVOKE_VIEWER_LINK, (now, prefix))
        found = self._links_where("v.prefix = ?", prefix)
        return found[0] if found else None
