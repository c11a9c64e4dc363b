"""Which stored nodes make up an RFC 9162 inclusion or consistency proof.

Proof *construction* is split in two, as in transparency-dev/merkle ``proof.Nodes``: this
module computes node ids only (pure arithmetic, no I/O), storage fetches the hashes of those
perfect nodes, and ``ProofNodes.rehash`` turns them into the proof. Only perfect subtrees are
ever stored; the single non-perfect ("ephemeral") node a proof may need, the root of the
tree's unfinished right edge, is rebuilt from the perfect nodes beneath it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .compact import NodeID, aligned_range_ids
from .hashing import HASH_SIZE, is_hash, node_hash


@dataclass(frozen=True)
class ProofNodes:
    """The stored perfect nodes a proof needs, in proof order.

    ``ids[begin:end]`` (possibly empty) must be folded into ONE ephemeral node: the root of a
    non-perfect subtree on the right edge of the tree. They are listed lowest level first, so
    the fold is ``h = hashes[begin]; h = node_hash(hashes[i], h)`` for the rest, i.e. the
    subtree's hashes combined right to left.
    """

    ids: tuple[NodeID, ...]
    begin: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.begin <= self.end <= len(self.ids):
            raise ValueError(f"bad ephemeral range [{self.begin}, {self.end}) of {len(self.ids)}")

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Return the RFC 9162 proof, given the hashes of ``ids`` in the same order."""
        if len(hashes) != len(self.ids):
            raise ValueError(f"got {len(hashes)} hashes for {len(self.ids)} node ids")
        for node_id, h in zip(self.ids, hashes, strict=True):
            if not is_hash(h):
                raise ValueError(f"hash for node {node_id} is not {HASH_SIZE} bytes: {h!r}")
        begin, end = self.begin, self.end
        if end - begin < 2:
            return list(hashes)
        h = hashes[begin]
        for i in range(begin + 1, end):
            h = node_hash(hashes[i], h)
        return [*hashes[:begin], h, *hashes[end:]]


def inclusion_nodes(index: int, size: int) -> ProofNodes:
    """Return the nodes of the inclusion proof for leaf ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    return _skip_first(*_path_nodes(index, 0, size))


def consistency_nodes(size1: int, size2: int) -> ProofNodes:
    """Return the nodes of the consistency proof from tree size ``size1`` to ``size2``.

    The proof is empty when ``size1 == size2`` and when ``size1 == 0`` (the empty tree is a
    prefix of every tree; RFC 9162 leaves that case undefined).
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"need 0 <= size1 <= size2, got size1={size1}, size2={size2}")
    if size1 in (0, size2):
        return ProofNodes((), 0, 0)
    # Start from the rightmost perfect subtree of [0, size1); the proof is its inclusion
    # path in [0, size2). If size1 is a power of two that subtree is the old root, which the
    # verifier already has, so it is left out.
    level = (size1 & -size1).bit_length() - 1
    ids, begin, end = _path_nodes((size1 - 1) >> level, level, size2)
    if size1 & (size1 - 1) == 0:
        return _skip_first(ids, begin, end)
    return ProofNodes(tuple(ids), begin, end)


def _path_nodes(index: int, level: int, size: int) -> tuple[list[NodeID], int, int]:
    """Nodes proving that node ``(level, index)`` is in the tree of ``size`` leaves.

    Returns ``(ids, begin, end)`` with ``ids[0]`` the node itself and ``ids[begin:end]`` the
    ephemeral node's parts (``begin == end == 0`` if there is none). Requires the node to be
    perfect and strictly left of ``size`` at its level.
    """
    # The fork is the highest ancestor of the node that is still complete: its sibling is the
    # ephemeral node covering [end, size), and everything left of it is [0, begin).
    inner = (index ^ (size >> level)).bit_length() - 1
    fork_level = level + inner
    fork_index = index >> inner
    begin = fork_index << fork_level
    end = (fork_index + 1) << fork_level

    ids: list[NodeID] = [(level, index)]
    # Siblings along the path up to the fork.
    ids.extend((lv, (index >> (lv - level)) ^ 1) for lv in range(level, fork_level))
    # The ephemeral node's parts, lowest level first, so they fold right to left.
    eph_begin = len(ids)
    ids.extend(reversed(aligned_range_ids(end, size)))
    eph_end = len(ids)
    # Perfect left siblings above the fork, lowest level first.
    ids.extend(reversed(aligned_range_ids(0, begin)))
    if eph_begin == eph_end:
        eph_begin = eph_end = 0
    return ids, eph_begin, eph_end


def _skip_first(ids: list[NodeID], begin: int, end: int) -> ProofNodes:
    # Drop ids[0] (known to the verifier) and shift the ephemeral range accordingly.
    if begin < end:
        return ProofNodes(tuple(ids[1:]), begin - 1, end - 1)
    return ProofNodes(tuple(ids[1:]), 0, 0)
