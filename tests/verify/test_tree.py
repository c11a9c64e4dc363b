"""The verifier's frontier agrees with the merkle package it must interoperate with."""

from __future__ import annotations

import hashlib

import pytest

from immutablelog.merkle import CompactRange, leaf_hash, node_hash, root_from_leaves
from immutablelog.verify.tree import (
    Frontier,
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
def test_frontier_matches_compact_range_and_root(size: int) -> None:
    compact = CompactRange()
    for leaf in LEAVES[:size]:
        compact.append(leaf)
    frontier = Frontier()
    frontier.append_leaves(LEAVES[:size])
    assert frontier.hashes == compact.hashes
    assert frontier.root() == compact.root() == root_from_leaves(LEAVES[:size])
    assert range_root(LEAVES[:size]) == frontier.root()


@pytest.mark.parametrize(("start", "end"), [(0, 300), (5, 300), (100, 201), (256, 257), (7, 7)])
def test_subtree_appends_equal_leaf_appends(start: int, end: int) -> None:
    frontier = Frontier()
    frontier.append_leaves(LEAVES[:start])
    for level, root in subtree_roots(start, LEAVES[start:end]):
        frontier.append_subtree(level, root)
    assert frontier.root() == root_from_leaves(LEAVES[:end])


def test_aligned_subtrees_cover_the_range_with_aligned_pieces() -> None:
    for start in range(0, 40):
        for end in range(start, 80):
            pieces = aligned_subtrees(start, end)
            position = start
            for piece_start, level in pieces:
                assert piece_start == position and piece_start % (1 << level) == 0
                position += 1 << level
            assert position == end


def test_frontier_refuses_misaligned_subtrees_and_bad_state() -> None:
    frontier = Frontier()
    frontier.append_leaves(LEAVES[:3])
    with pytest.raises(ValueError):
        frontier.append_subtree(1, LEAVES[0])  # size 3 is not a multiple of 2
    with pytest.raises(ValueError):
        Frontier(3, [LEAVES[0]])  # size 3 has two frontier hashes
    assert Frontier(3, frontier.hashes).root() == frontier.root()
    assert hashlib.sha256(b"").digest() == Frontier().root()
