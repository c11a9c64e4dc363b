"""The verifier's page hashing agrees with the merkle package: subtree roots grow a compact
range exactly as leaf by leaf appends do."""

from __future__ import annotations

import hashlib

import pytest

from immutablelog.merkle import CompactRange, frontier_ids, leaf_hash, node_hash, root_from_leaves
from immutablelog.verify.tree import (
    aligned_subtrees,
    leaf_hashes,
    perfect_root,
    range_root,
    subtree_roots,
)

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(300)]


def test_inlined_hashing_is_rfc6962() -> None:
    assert leaf_hashes([b"abc"]) == [leaf_hash(b"abc")]
    a, b = LEAVES[0], LEAVES[1]
    assert perfect_root([a, b]) == node_hash(a, b)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 100, 255, 256, 257, 300])
def test_range_root_is_the_rfc6962_root(size: int) -> None:
    assert range_root(LEAVES[:size]) == root_from_leaves(LEAVES[:size])


@pytest.mark.parametrize(("start", "end"), [(0, 300), (5, 300), (100, 201), (256, 257), (7, 7)])
def test_subtree_appends_equal_leaf_appends(start: int, end: int) -> None:
    by_subtree = CompactRange()
    by_subtree.extend(LEAVES[:start])
    for level, root in subtree_roots(start, LEAVES[start:end]):
        by_subtree.append_subtree(level, root)
    by_leaf = CompactRange()
    by_leaf.extend(LEAVES[:end])
    assert by_subtree == by_leaf
    assert by_subtree.root() == root_from_leaves(LEAVES[:end])
    assert [(a, b) for a, b, _ in by_subtree.ranges()] == [
        (index << level, (index + 1) << level) for level, index in frontier_ids(end)
    ]


def test_aligned_subtrees_cover_the_range_with_aligned_pieces() -> None:
    for start in range(0, 40):
        for end in range(start, 80):
            pieces = aligned_subtrees(start, end)
            position = start
            for piece_start, level in pieces:
                assert piece_start == position and piece_start % (1 << level) == 0
                position += 1 << level
            assert position == end


def test_subtree_appends_refuse_misaligned_subtrees_and_bad_hashes() -> None:
    tree = CompactRange()
    tree.extend(LEAVES[:3])
    with pytest.raises(ValueError):
        tree.append_subtree(1, LEAVES[0])  # size 3 is not a multiple of 2
    with pytest.raises(ValueError):
        tree.append_subtree(0, b"short")
    with pytest.raises(ValueError):
        tree.append_subtree(-1, LEAVES[0])
    assert tree.size == 3
    assert hashlib.sha256(b"").digest() == CompactRange().root()
