"""C2SP tlog-tiles: the log's Merkle tree and entries as immutable static resources.

``layout`` is pure arithmetic and path syntax; ``source`` reads tile contents from what the
ledger already stores (entry rows and perfect-subtree nodes; full level-0 tiles from the
rows the upkeep thread packs them into), so serving tiles costs the write path nothing;
``sync`` writes the same tree into a directory for any web server.
"""

from .layout import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    TileError,
    TileRef,
    parse_tile_path,
    tiles_for_size,
)

__all__ = [
    "ENTRIES_LEVEL",
    "TILE_WIDTH",
    "TileError",
    "TileRef",
    "parse_tile_path",
    "tiles_for_size",
]
