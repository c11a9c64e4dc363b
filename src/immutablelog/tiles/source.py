"""Tile contents, read from what the ledger already stores.

Level-0 hashes are the leaf hashes kept in entry rows, higher levels the perfect-subtree
nodes the writer stores anyway (``merkle.CompactRange.append`` reports each once), and
bundles are the entry bytes: the write path stores nothing for tiles.

Read from the entry rows, a full level-0 tile is 256 rows of about 1 KB: at 10,000,000
entries some 60 pages of the ledger, from disk when they are not cached (p99 15-70 ms).
So the upkeep thread copies each full level-0 tile, once the log has it, into one row of
derived data (``Storage.pack_tiles``: SQLite's search file, a PostgreSQL table), +32 bytes
per entry, and a full tile is served from that row. A tile not packed yet (the packing
runs behind the writer, and catches up on a log filled before it existed) and every
partial tile are read from the entries; the bytes are the same either way, and the server's
integrity check (``ledger/integrity.py``) compares each packed row with the entries.
"""

from __future__ import annotations

from typing import Final

from immutablelog.ledger import Ledger, Tenant
from immutablelog.tiles.layout import ENTRIES_LEVEL, TileRef

#: Bundles prefix each entry with a big-endian uint16 length.
MAX_BUNDLED_ENTRY_BYTES: Final = 0xFFFF


class EntryTooLarge(ValueError):
    """An entry longer than a bundle's uint16 length prefix can say."""


def tile_bytes(ledger: Ledger, tenant: Tenant, tile: TileRef) -> bytes:
    """The tile's bytes; the caller has checked that the tenant's tree contains it."""
    if tile.level == ENTRIES_LEVEL:
        return entry_bundle(ledger, tenant, tile)
    if tile.level == 0 and not tile.partial:
        packed = ledger.storage.packed_tile(tenant.id, tile.index)
        if packed is not None:
            return packed
    level = tile.tree_level
    ids = [(level, i) for i in range(tile.first, tile.first + tile.width)]
    return b"".join(ledger.storage.nodes(tenant.id, ids))


def entry_bundle(ledger: Ledger, tenant: Tenant, tile: TileRef) -> bytes:
    parts: list[bytes] = []
    for index, data, _ in ledger.entry_bytes(tenant, tile.first, tile.first + tile.width):
        if len(data) > MAX_BUNDLED_ENTRY_BYTES:
            raise EntryTooLarge(
                f"entry {index} is {len(data)} bytes, more than a tile bundle can hold; "
                "read it from /v1/entries"
            )
        parts.append(len(data).to_bytes(2, "big"))
        parts.append(data)
    return b"".join(parts)
