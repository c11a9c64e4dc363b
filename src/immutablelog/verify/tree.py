"""The verifier's hashing of pages: leaf hashes, and the roots of the aligned perfect subtrees
that cover a page.

Worker processes hash pages of entries and send back only those subtree roots; the main
process grows its ``merkle.CompactRange`` by whole subtrees (``append_subtree``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

from immutablelog.merkle import EMPTY_ROOT, CompactRange

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
    tree = CompactRange()
    for level, root in subtree_roots(0, leaves):
        tree.append_subtree(level, root)
    return tree.root()
