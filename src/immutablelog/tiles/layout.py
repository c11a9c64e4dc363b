"""Which tiles a tree has and what they are called (https://c2sp.org/tlog-tiles).

A hash tile at level ``L``, index ``N`` lists up to 256 consecutive hashes of tree level
``8 * L``, starting at node ``N * 256``: the perfect subtrees over leaves
``[(N * 256 + i) << 8L, (N * 256 + i + 1) << 8L)``. A full tile has 256 of them; a partial
one, named with ``.p/<W>``, has the ``W`` (1-255) that a tree size makes available. Entry
bundles (level ``entries``) follow the level-0 layout with the entries themselves.

Parsing is strict: one spelling per tile, ASCII digits only, no leading zeros, no index
past what an int64 tree size can reach. A wrong path is a :class:`TileError`, never a
guess at what was meant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
#: Tree levels ``8 * L`` stay below 64 because tree sizes are int64.
MAX_LEVEL: Final = 63
MAX_TREE_SIZE: Final = (1 << 63) - 1
#: The ``level`` of entry bundles, which share the level-0 tile geometry.
ENTRIES_LEVEL: Final = -1
#: The bytes of a full hash tile: 256 SHA-256 hashes.
FULL_TILE_BYTES: Final = TILE_WIDTH * 32

_LEVEL = re.compile(r"0|[1-9][0-9]?")
_WIDTH = re.compile(r"[1-9][0-9]{0,2}")
_ELEMENT = re.compile(r"[0-9]{3}")
#: Room for any index below 2**63 (seven elements) with a level and a width.
_MAX_PATH_CHARS: Final = 64


class TileError(ValueError):
    """A tile path that is not one the spec allows."""


class TileBeyondTrees(TileError):
    """A well-formed tile path past what any tree (int64 sizes) can have: never found."""


@dataclass(frozen=True, slots=True)
class TileRef:
    """One tile: ``level`` (``ENTRIES_LEVEL`` for an entry bundle), ``index``, ``width``."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def tree_level(self) -> int:
        """The Merkle tree level of the hashes listed (entries sit on level 0's leaves)."""
        return TILE_HEIGHT * max(self.level, 0)

    @property
    def first(self) -> int:
        """Index, at :attr:`tree_level`, of the tile's first hash (or entry)."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        """The tile's path below the log's prefix, e.g. ``tile/0/x001/234.p/5``."""
        level = "entries" if self.level == ENTRIES_LEVEL else str(self.level)
        name = "tile/" + level + "/" + encode_index(self.index)
        return f"{name}.p/{self.width}" if self.partial else name


def encode_index(index: int) -> str:
    """``1234067`` -> ``x001/x234/067``: three digits an element, all but the last x-prefixed."""
    if index < 0:
        raise TileError(f"tile index {index} is negative")
    elements = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        elements.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(elements))


def level_width(size: int, level: int) -> int:
    """How many hashes tile level ``level`` has for a tree of ``size`` leaves."""
    return size >> (TILE_HEIGHT * max(level, 0))


def available(tile: TileRef, size: int) -> bool:
    """Whether a tree of ``size`` leaves contains all of ``tile``'s hashes."""
    return tile.first + tile.width <= level_width(size, tile.level)


def full_leaf_tiles(first: int, leaves: Sequence[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(index, bytes)`` of each full level-0 tile among ``leaves``, the leaf hashes from
    index ``first`` on (a tile's first index); a partial tile at the end is left out."""
    if first % TILE_WIDTH:
        raise ValueError(f"leaf {first} does not start a tile")
    for start in range(0, len(leaves) - TILE_WIDTH + 1, TILE_WIDTH):
        yield (first + start) // TILE_WIDTH, b"".join(leaves[start : start + TILE_WIDTH])


def tiles_for_size(size: int, *, entries: bool = True) -> Iterator[TileRef]:
    """Every tile of a tree of ``size`` leaves: full ones, then the partial one, per level.

    Levels go up while they have a hash; level 0 first, then the entry bundles (if asked),
    then the levels above.
    """
    levels: list[int] = [0, ENTRIES_LEVEL] if entries else [0]
    level = 1
    while level_width(size, level):
        levels.append(level)
        level += 1
    for lv in levels:
        full, rest = divmod(level_width(size, lv), TILE_WIDTH)
        for n in range(full):
            yield TileRef(lv, n)
        if rest:
            yield TileRef(lv, full, rest)


def parse_tile_path(path: str) -> TileRef:
    """The tile named by ``path``, the part after ``<prefix>/tile/``: ``<L>/<N>[.p/<W>]``
    or ``entries/<N>[.p/<W>]``."""
    if len(path) > _MAX_PATH_CHARS:
        raise TileError("tile path is too long")
    parts = path.split("/")
    if len(parts) < 2:
        raise TileError("a tile path is <L>/<N>[.p/<W>] or entries/<N>[.p/<W>]")
    head, rest = parts[0], parts[1:]
    if head == "entries":
        level = ENTRIES_LEVEL
    elif _LEVEL.fullmatch(head) and int(head) <= MAX_LEVEL:
        level = int(head)
    else:
        raise TileError(f"tile level {head!r} is not a decimal from 0 to {MAX_LEVEL}")
    width = TILE_WIDTH
    if rest[-1:] and rest[-2:-1] and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= TILE_WIDTH:
            raise TileError(f"partial tile width {rest[-1]!r} is not a decimal from 1 to 255")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    index = _parse_index(rest)
    tile = TileRef(level, index, width)
    # The first hash must be a node of a tree whose size fits in int64.
    if (tile.first + tile.width - 1) > (MAX_TREE_SIZE >> tile.tree_level):
        raise TileBeyondTrees(f"tile index {index} is beyond any tree size")
    return tile


def _parse_index(elements: list[str]) -> int:
    *upper, last = elements
    if not _ELEMENT.fullmatch(last) or not all(
        e[:1] == "x" and _ELEMENT.fullmatch(e[1:]) for e in upper
    ):
        raise TileError("a tile index is 3-digit path elements, all but the last x-prefixed")
    if upper and upper[0] == "x000":
        raise TileError("a tile index has no leading x000 element")
    index = 0
    for element in upper:
        index = index * 1000 + int(element[1:])
    return index * 1000 + int(last)
