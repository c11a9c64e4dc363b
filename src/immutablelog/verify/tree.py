"""The verifier's own Merkle bookkeeping: a frontier it can grow by whole subtrees.

``merkle.CompactRange`` appends one leaf at a time, which is what the ledger needs. The
verifier hashes pages of entries in worker processes and only sends back the roots of the
aligned perfect subtrees covering each page, so the frontier here also accepts a whole perfect
subtree in one step. Same RFC 6962 tree, same frontier layout (``merkle.frontier_ids``), so a
saved frontier can be checked with ``merkle.CompactRange``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

from immutablelog.merkle import EMPTY_ROOT, HASH_SIZE, CompactRange, frontier_ids, node_hash

# The hot loops below inline RFC 6962's prefixes (0x00 leaf, 0x01 node) instead of calling
# merkle.leaf_hash / merkle.node_hash: a Python call per hash costs ~10% of the verifier's
# throughput. tests/verify/test_tree.py checks they agree with the merkle package.
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes of ``entries``, in order."""
    return [sha256(_LEAF + data).digest() for data in entries]


def perfect_root(leaves: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree, given its leaf hashes (a power-of-two count)."""
    count = len(leaves)
    if count == 0 or count & (count - 1):
        raise ValueError(f"a perfect subtree has a power-of-two number of leaves, not {count}")
    level = list(leaves)
    while len(level) > 1:
        pairs = iter(level)
        # zip over one iterator twice pairs neighbours; the count is even, strict is moot.
        level = [
            sha256(_NODE + left + right).digest() for left, right in zip(pairs, pairs, strict=False)
        ]
    return level[0]


def aligned_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into the fewest aligned perfect subtrees, left to right.

    Returns ``(position, level)`` pairs: the subtree over ``[position, position + 2**level)``.
    Aligned means ``position`` is a multiple of ``2**level``, which is what lets a frontier of
    size ``position`` absorb the subtree in one step.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad range [{start}, {end})")
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1
        if pos:
            level = min(level, (pos & -pos).bit_length() - 1)
        out.append((pos, level))
        pos += 1 << level
    return out


def subtree_roots(start: int, leaves: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """``(level, root)`` of each aligned subtree covering leaves ``[start, start + len)``."""
    roots: list[tuple[int, bytes]] = []
    for pos, level in aligned_subtrees(start, start + len(leaves)):
        offset = pos - start
        roots.append((level, perfect_root(leaves[offset : offset + (1 << level)])))
    return roots


def range_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 root over ``leaves`` (any count), without per-leaf bookkeeping."""
    if not leaves:
        return EMPTY_ROOT
    frontier = Frontier()
    for level, root in subtree_roots(0, leaves):
        frontier.append_subtree(level, root)
    return frontier.root()


class Frontier:
    """Roots of the perfect subtrees of a tree of ``size`` leaves, largest first.

    The layout is ``merkle.CompactRange``'s: entry ``i`` is the root of ``frontier_ids(size)[i]``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        CompactRange(size, hashes)  # validates the count and length of the hashes
        self._size = size
        self._hashes = [bytes(h) for h in hashes]

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append_subtree(self, level: int, root: bytes) -> None:
        """Append a perfect subtree of ``2**level`` leaves; ``size`` must be a multiple of it."""
        if self._size & ((1 << level) - 1):
            raise ValueError(f"a level-{level} subtree cannot start at {self._size}")
        if len(root) != HASH_SIZE:
            raise ValueError("subtree root must be a 32-byte hash")
        hashes = self._hashes
        carry = self._size >> level
        # Each set low bit is a waiting left sibling of the same size: merge upwards.
        while carry & 1:
            root = sha256(_NODE + hashes.pop() + root).digest()
            carry >>= 1
        hashes.append(root)
        self._size += 1 << level

    def append_leaves(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append_subtree(0, leaf)

    def root(self) -> bytes:
        """RFC 6962 root of ``[0, size)``: a right fold of the frontier."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        root = hashes[-1]
        for left in reversed(hashes[:-1]):
            root = node_hash(left, root)
        return root

    def ranges(self) -> list[tuple[int, int, bytes]]:
        """``(start, end, hash)`` of each frontier subtree, left to right."""
        out: list[tuple[int, int, bytes]] = []
        for (level, index), h in zip(frontier_ids(self._size), self._hashes, strict=True):
            out.append((index << level, (index + 1) << level, h))
        return out

    def copy(self) -> Frontier:
        return Frontier(self._size, self._hashes)
