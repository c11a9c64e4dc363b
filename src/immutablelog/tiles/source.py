"""Tile contents, read from what the ledger already stores.

Level-0 hashes are the leaf hashes kept in entry rows, higher levels the perfect-subtree
nodes the writer stores anyway (``merkle.CompactRange.append`` reports each once), and
bundles are the entry bytes: nothing is written twice for tiles.
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
