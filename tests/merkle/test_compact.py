"""CompactRange, frontier_ids and root_from_leaves against the vectors and the naive oracle."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutablelog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeID,
    frontier_ids,
    leaf_hash,
    root_from_leaves,
)

from .test_reference import (
    BIG_TREE,
    LEAF_INPUTS,
    NODE_HASHES,
    ROOTS,
    NaiveTree,
    UniformTree,
    rfc_leaf,
)

LARGE_SIZES = [
    2**20 - 1,
    2**20,
    2**20 + 1,
    2**20 + 3,
    2**32 - 1,
    2**32 + 5,
    2**40 + 2**39 + 7,
    2**63,
    2**64 - 1,
    2**64 + 12345,
]


def coverage(node: NodeID) -> tuple[int, int]:
    level, index = node
    return index << level, (index + 1) << level


def perfect_nodes(size: int) -> set[NodeID]:
    """Every perfect subtree that lies inside [0, size)."""
    return {(level, index) for level in range(size.bit_length()) for index in range(size >> level)}


def frontier_of(tree: NaiveTree, size: int) -> list[bytes]:
    return [tree.mth(*coverage(n)) for n in frontier_ids(size)]


# --- Vectors ---------------------------------------------------------------------------------


def test_vector_roots_and_frontiers() -> None:
    nh = [[bytes.fromhex(h) for h in row] for row in NODE_HASHES]
    # The compact trees published with the vectors (testonly.CompactTrees).
    want_frontiers = [
        [],
        [nh[0][0]],
        [nh[1][0]],
        [nh[1][0], nh[0][2]],
        [nh[2][0]],
        [nh[2][0], nh[0][4]],
        [nh[2][0], nh[1][2]],
        [nh[2][0], nh[1][2], nh[0][6]],
        [nh[3][0]],
    ]
    cr = CompactRange()
    for size in range(9):
        assert cr.size == size
        assert cr.root().hex() == ROOTS[size]
        assert list(cr.hashes) == want_frontiers[size]
        assert root_from_leaves(leaf_hash(e) for e in LEAF_INPUTS[:size]).hex() == ROOTS[size]
        if size < 8:
            cr.append(leaf_hash(LEAF_INPUTS[size]))


def test_vector_append_reports_every_node() -> None:
    cr = CompactRange()
    stored: dict[NodeID, bytes] = {}
    for entry in LEAF_INPUTS:
        for node, h in cr.append(leaf_hash(entry)):
            assert node not in stored
            stored[node] = h
    want = {
        (level, index): bytes.fromhex(h)
        for level, row in enumerate(NODE_HASHES)
        for index, h in enumerate(row)
    }
    assert stored == want


# --- Empty and tiny trees --------------------------------------------------------------------


def test_empty() -> None:
    cr = CompactRange()
    assert cr.size == 0
    assert cr.hashes == ()
    assert cr.root() == EMPTY_ROOT
    assert frontier_ids(0) == []
    assert root_from_leaves([]) == EMPTY_ROOT
    assert CompactRange(0, []) == cr


def test_size_one() -> None:
    leaf = leaf_hash(b"x")
    cr = CompactRange()
    assert cr.append(leaf) == [((0, 0), leaf)]
    assert cr.root() == leaf
    assert cr.hashes == (leaf,)
    assert frontier_ids(1) == [(0, 0)]


def test_append_ids_follow_trailing_ones() -> None:
    # Appending leaf n completes (0, n) and then one parent per trailing 1-bit of n.
    cr = CompactRange()
    leaf = leaf_hash(b"")
    for n in range(130):
        ids = [node for node, _ in cr.append(leaf)]
        trailing_ones = ((n + 1) & -(n + 1)).bit_length() - 1
        assert ids == [(level, n >> level) for level in range(trailing_ones + 1)]


@given(st.integers(0, 300), st.integers(0, 70))
@settings(max_examples=60)
def test_extend_reports_the_interior_nodes_of_the_appends(start: int, count: int) -> None:
    # extend(leaves) is append per leaf, minus the leaves themselves.
    leaves = BIG_TREE.leaves[start : start + count]
    frontier = [BIG_TREE.mth(i << level, (i + 1) << level) for level, i in frontier_ids(start)]
    one_by_one = CompactRange(start, frontier)
    batched = one_by_one.copy()
    expected = [node for leaf in leaves for node in one_by_one.append(leaf)[1:]]
    assert batched.extend(leaves) == expected
    assert batched == one_by_one
    assert batched.root() == BIG_TREE.root(start + len(leaves))


def test_extend_stops_at_a_non_hash() -> None:
    good = BIG_TREE.leaves[0]
    cr = CompactRange()
    with pytest.raises(ValueError):
        cr.extend([good, b"short", good])
    assert cr == CompactRange(1, [good])  # what came before the bad leaf, consistently


# --- Validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "hashes"),
    [
        (-1, []),
        (1, []),
        (0, [b"\x00" * 32]),
        (3, [b"\x00" * 32]),
        (3, [b"\x00" * 32] * 3),
        (1, [b"\x00" * 31]),
        (1, [b"\x00" * 33]),
        (1, ["00" * 16]),
    ],
)
def test_constructor_rejects_bad_frontier(size: int, hashes: list[bytes]) -> None:
    with pytest.raises(ValueError):
        CompactRange(size, hashes)


@pytest.mark.parametrize("leaf", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 16])
def test_append_rejects_non_hash(leaf: bytes) -> None:
    cr = CompactRange()
    with pytest.raises(ValueError):
        cr.append(leaf)
    assert cr.size == 0  # unchanged
    with pytest.raises(ValueError):
        root_from_leaves([leaf])


def test_frontier_ids_rejects_negative() -> None:
    with pytest.raises(ValueError):
        frontier_ids(-1)


# --- Copy, equality, resuming from a stored frontier -----------------------------------------


def test_copy_is_independent() -> None:
    cr = CompactRange()
    for i in range(5):
        cr.append(BIG_TREE.leaves[i])
    c = cr.copy()
    assert c == cr and c is not cr
    c.append(BIG_TREE.leaves[5])
    assert cr.size == 5 and c.size == 6
    assert cr.root() == BIG_TREE.root(5)
    assert c.root() == BIG_TREE.root(6)
    assert c != cr
    assert cr != "not a range"
    assert "size=5" in repr(cr)


def test_hashes_is_a_snapshot() -> None:
    cr = CompactRange()
    cr.append(BIG_TREE.leaves[0])
    before = cr.hashes
    cr.append(BIG_TREE.leaves[1])
    assert before == (BIG_TREE.leaves[0],)


@given(st.integers(0, 200), st.integers(0, 40))
@settings(max_examples=60, deadline=None)
def test_resume_from_frontier(size: int, more: int) -> None:
    """A range rebuilt from stored frontier hashes behaves exactly like the original."""
    resumed = CompactRange(size, frontier_of(BIG_TREE, size))
    assert resumed.root() == BIG_TREE.root(size)
    for i in range(size, size + more):
        resumed.append(BIG_TREE.leaves[i])
    assert resumed.root() == BIG_TREE.root(size + more)
    assert list(resumed.hashes) == frontier_of(BIG_TREE, size + more)


# --- Property tests against the naive oracle -------------------------------------------------


@given(st.lists(st.binary(max_size=16), max_size=300))
@settings(max_examples=60, deadline=None)
def test_root_matches_naive_for_arbitrary_entries(entries: list[bytes]) -> None:
    naive = NaiveTree(entries)
    leaves = [leaf_hash(e) for e in entries]
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    assert cr.root() == naive.root(len(entries))
    assert root_from_leaves(leaves) == naive.root(len(entries))
    assert root_from_leaves(iter(leaves)) == naive.root(len(entries))


def test_every_prefix_up_to_300() -> None:
    """Append 300 leaves; after each, check frontier, root and the nodes reported."""
    cr = CompactRange()
    stored: dict[NodeID, bytes] = {}
    for size in range(300):
        completed = cr.append(BIG_TREE.leaves[size])
        for node, h in completed:
            assert node not in stored, f"{node} reported twice"
            assert h == BIG_TREE.mth(*coverage(node))
            stored[node] = h
        n = size + 1
        assert set(stored) == perfect_nodes(n)
        assert cr.root() == BIG_TREE.root(n)
        assert list(cr.hashes) == frontier_of(BIG_TREE, n)


@given(st.integers(0, 300))
def test_frontier_ids_tile_the_tree(size: int) -> None:
    _check_frontier_ids(size)


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_frontier_ids_large(size: int) -> None:
    _check_frontier_ids(size)


def test_frontier_ids_example() -> None:
    assert frontier_ids(2**20 + 3) == [(20, 0), (1, 2**19), (0, 2**20 + 2)]
    assert frontier_ids(7) == [(2, 0), (1, 2), (0, 6)]
    assert frontier_ids(8) == [(3, 0)]


def _check_frontier_ids(size: int) -> None:
    ids = frontier_ids(size)
    assert len(ids) == size.bit_count()
    pos = 0
    for node in ids:
        lo, hi = coverage(node)
        assert lo == pos
        pos = hi
    assert pos == size
    levels = [level for level, _ in ids]
    assert levels == sorted(levels, reverse=True) and len(set(levels)) == len(levels)


# --- Large trees via a uniform tree (all leaves equal), so hashes are cheap at any size ------


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_large_sizes_uniform(size: int) -> None:
    leaf = rfc_leaf(b"u")
    uni = UniformTree(leaf)
    cr = CompactRange(size, [uni.perfect[level] for level, _ in frontier_ids(size)])
    assert cr.root() == uni.root(size)
    for n in range(size, size + 5):
        completed = cr.append(leaf)
        trailing_ones = ((n + 1) & -(n + 1)).bit_length() - 1
        assert [node for node, _ in completed] == [
            (level, n >> level) for level in range(trailing_ones + 1)
        ]
        assert [h for _, h in completed] == uni.perfect[: trailing_ones + 1]
        assert cr.root() == uni.root(n + 1)
        assert cr.hashes == tuple(uni.perfect[level] for level, _ in frontier_ids(n + 1))
