"""Compact ranges: the O(log n) state needed to extend an append-only Merkle tree.

A tree of ``size`` leaves is, by RFC 6962's split rule, the right-fold of the perfect
subtrees given by the set bits of ``size`` (largest first). Keeping only those subtree
roots (the "frontier") is enough to append leaves and compute the root, so the ledger
never has to re-read old nodes to grow the tree.

Nodes are addressed as in transparency-dev/merkle: ``(level, index)`` is the perfect
subtree over leaves ``[index << level, (index + 1) << level)``.
"""

from collections.abc import Iterable, Sequence
from typing import TypeAlias

from .hashing import EMPTY_ROOT, HASH_SIZE, is_hash, node_hash

NodeID: TypeAlias = tuple[int, int]
"""``(level, index)``: perfect subtree over leaves ``[index << level, (index + 1) << level)``."""


def aligned_range_ids(begin: int, end: int) -> list[NodeID]:
    """Return the perfect subtrees covering ``[begin, end)``, left to right (largest first).

    Requires ``begin`` to be a multiple of the largest power of two <= ``end - begin`` (always
    true for ``begin == 0``), which is the only shape proofs and frontiers need; that keeps
    this a single pass over the bits of the range length.
    """
    ids: list[NodeID] = []
    pos = begin
    n = end - begin
    while n:
        level = n.bit_length() - 1
        ids.append((level, pos >> level))
        pos += 1 << level
        n ^= 1 << level
    return ids


def frontier_ids(size: int) -> list[NodeID]:
    """Return the node ids of ``CompactRange(size).hashes``, left to right."""
    if size < 0:
        raise ValueError(f"tree size must be non-negative, got {size}")
    return aligned_range_ids(0, size)


class CompactRange:
    """The frontier of a tree with ``size`` leaves: roots of its perfect subtrees, left to right.

    ``hashes`` has exactly ``popcount(size)`` entries; entry ``i`` is the root of the subtree
    ``frontier_ids(size)[i]``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"tree size must be non-negative, got {size}")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} frontier hashes, got {len(hashes)}"
            )
        for h in hashes:
            _check_hash(h)
        self._size = size
        self._hashes: list[bytes] = [bytes(h) for h in hashes]

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Frontier hashes, largest subtree first (ids given by ``frontier_ids(size)``)."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[NodeID, bytes]]:
        """Append a leaf *hash* and return every node this append completed, bottom-up.

        The first element is the leaf itself, ``((0, size_before), leaf)``; each following one
        is a parent that just became a perfect subtree. Across all appends every perfect node
        of the tree is returned exactly once, so storing these is enough to serve any proof.
        """
        leaf_id = (0, self._size)
        return [(leaf_id, leaf), *self.extend((leaf,))]

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[NodeID, bytes]]:
        """Append leaf *hashes* in order and return the interior nodes (level >= 1) they
        completed, in the order :meth:`append` reports them.

        What a writer that stores leaves apart from interior nodes needs, without a list
        and a tuple per leaf for the leaves it already has.
        """
        hashes = self._hashes
        done: list[tuple[NodeID, bytes]] = []
        for leaf in leaves:
            _check_hash(leaf)
            index = self._size
            level = 0
            h = leaf
            # Each trailing 1-bit of the old size is a left sibling waiting for this subtree.
            while index & 1:
                index >>= 1
                level += 1
                h = node_hash(hashes.pop(), h)
                done.append(((level, index), h))
            hashes.append(h)
            self._size += 1
        return done

    def append_subtree(self, level: int, root: bytes) -> None:
        """Append a whole perfect subtree of ``2**level`` leaves, given only its root.

        For a reader that hashed a run of leaves elsewhere (the verifier's worker processes
        send back subtree roots, not leaves). ``size`` must be a multiple of ``2**level``.
        """
        if level < 0 or self._size & ((1 << level) - 1):
            raise ValueError(f"a level-{level} subtree cannot start at leaf {self._size}")
        _check_hash(root)
        hashes = self._hashes
        carry = self._size >> level
        # Each set low bit is a waiting left sibling of the same size: merge upwards.
        while carry & 1:
            root = node_hash(hashes.pop(), root)
            carry >>= 1
        hashes.append(root)
        self._size += 1 << level

    def ranges(self) -> list[tuple[int, int, bytes]]:
        """``(start, end, hash)`` of each frontier subtree, left to right."""
        return [
            (index << level, (index + 1) << level, h)
            for (level, index), h in zip(frontier_ids(self._size), self._hashes, strict=True)
        ]

    def root(self) -> bytes:
        """Return the RFC 6962 Merkle tree hash of ``[0, size)`` (``EMPTY_ROOT`` if empty)."""
        return _fold(self._hashes)

    def copy(self) -> "CompactRange":
        """Return an independent copy (appending to it leaves ``self`` unchanged)."""
        c = CompactRange.__new__(CompactRange)
        c._size = self._size
        c._hashes = list(self._hashes)
        return c

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"CompactRange(size={self._size}, hashes=[{', '.join(h.hex() for h in self._hashes)}])"
        )


def root_from_leaves(leaves: Iterable[bytes]) -> bytes:
    """Return the RFC 6962 root over ``leaves`` (leaf *hashes*, in order)."""
    # Same algorithm as CompactRange.append, minus the bookkeeping of completed nodes.
    stack: list[bytes] = []
    for n, leaf in enumerate(leaves):
        _check_hash(leaf)
        h = leaf
        while n & 1:  # n: leaves before this one, shifted as subtrees merge
            h = node_hash(stack.pop(), h)
            n >>= 1
        stack.append(h)
    return _fold(stack)


def _fold(frontier: list[bytes]) -> bytes:
    # MTH splits at the largest power of two, so the root is a right fold of the frontier.
    if not frontier:
        return EMPTY_ROOT
    h = frontier[-1]
    for i in range(len(frontier) - 2, -1, -1):
        h = node_hash(frontier[i], h)
    return h


def _check_hash(h: bytes) -> None:
    if not is_hash(h):
        raise ValueError(f"expected a {HASH_SIZE}-byte hash, got {h!r}")
