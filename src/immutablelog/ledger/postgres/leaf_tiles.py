"""PostgreSQL's packed level-0 tiles (``tiles/source.py``): one row per full tile.

As SQLite's (``sqlite/leaf_tiles.py``): a level-0 tile read from the entries is 256 rows of
about 1 KB; packed, it is one row. Derived data, filled behind the writer by one process at
a time, like the event counts; the rows themselves say how far a tenant is packed (its
highest tile, as the tiles are packed in order), so there is no progress table to keep.
"""

from __future__ import annotations

from typing import Final

from immutablelog.tiles.layout import TILE_WIDTH

#: Each tenant with full tiles not packed yet: the next tile to pack and how many full
#: tiles its latest checkpoint makes (O(tenants) index probes).
PENDING: Final = (
    "SELECT t.id AS tenant_id, coalesce(p.n + 1, 0) AS next_tile, "
    f"c.size / {TILE_WIDTH} AS full_tiles "
    "FROM tenants t "
    "CROSS JOIN LATERAL (SELECT size FROM checkpoints WHERE tenant_id = t.id "
    "ORDER BY size DESC LIMIT 1) c "
    "LEFT JOIN LATERAL (SELECT n FROM leaf_tiles WHERE tenant_id = t.id "
    "ORDER BY n DESC LIMIT 1) p ON true "
    f"WHERE c.size / {TILE_WIDTH} > coalesce(p.n + 1, 0)"
)
#: Tiles ``[first, end)`` of a tenant: (tenant_id, first entry, end entry), whole tiles.
PACK_RANGE: Final = (
    "INSERT INTO leaf_tiles (tenant_id, n, hashes) "
    f"SELECT tenant_id, idx / {TILE_WIDTH}, string_agg(leaf, ''::bytea ORDER BY idx) "
    "FROM entries WHERE tenant_id = %s AND idx >= %s AND idx < %s "
    f"GROUP BY tenant_id, idx / {TILE_WIDTH} ON CONFLICT DO NOTHING"
)
BACKLOG: Final = (
    f"SELECT coalesce(sum(full_tiles - next_tile), 0) * {TILE_WIDTH} FROM ({PENDING}) AS pending"
)
READ: Final = "SELECT hashes FROM leaf_tiles WHERE tenant_id = %s AND n = %s"
