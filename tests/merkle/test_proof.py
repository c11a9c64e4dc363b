"""Proof construction: node ids + rehash from simulated storage must equal the RFC proofs."""

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutablelog.merkle import (
    CompactRange,
    NodeID,
    ProofNodes,
    consistency_nodes,
    inclusion_nodes,
)

from .test_compact import LARGE_SIZES, coverage
from .test_reference import (
    BIG_TREE,
    CONSISTENCY_PROOFS,
    INCLUSION_PROOFS,
    MAX_SIZE,
    UniformTree,
    hx,
    naive_consistency,
    naive_inclusion,
    rfc_leaf,
    symbolic_mth,
)


def _build_store() -> dict[NodeID, bytes]:
    """What a ledger would persist: every node CompactRange.append reports, once."""
    store: dict[NodeID, bytes] = {}
    cr = CompactRange()
    for leaf in BIG_TREE.leaves:
        for node, h in cr.append(leaf):
            assert node not in store
            store[node] = h
    return store


STORE = _build_store()


def fetch(nodes: ProofNodes, size: int) -> list[bytes]:
    """Look the ids up like storage would; a node outside the size-`size` tree is a bug."""
    for node in nodes.ids:
        assert coverage(node)[1] <= size, f"{node} is not yet complete at size {size}"
    return [STORE[node] for node in nodes.ids]


def check_shape(nodes: ProofNodes) -> None:
    assert len(set(nodes.ids)) == len(nodes.ids)
    assert 0 <= nodes.begin <= nodes.end <= len(nodes.ids)
    if nodes.begin == nodes.end:
        assert nodes.begin == 0  # normalised, as in transparency-dev
    # Ephemeral parts: lowest level first, each directly left of the previous one.
    part = nodes.ids[nodes.begin : nodes.end]
    for (l1, _), (l2, _) in pairwise(part):
        assert l1 < l2
    for right, left in pairwise(part):
        assert coverage(left)[1] == coverage(right)[0]


def symbolic(nodes: ProofNodes) -> list[tuple[int, int]]:
    """Rehash on ranges instead of hashes: the ephemeral node covers the union of its parts."""
    check_shape(nodes)
    ranges = [coverage(n) for n in nodes.ids]
    if nodes.end - nodes.begin >= 2:
        merged = (ranges[nodes.end - 1][0], ranges[nodes.begin][1])
        ranges[nodes.begin : nodes.end] = [merged]
    return ranges


def build_inclusion(index: int, size: int) -> list[bytes]:
    nodes = inclusion_nodes(index, size)
    check_shape(nodes)
    return nodes.rehash(fetch(nodes, size))


def build_consistency(size1: int, size2: int) -> list[bytes]:
    nodes = consistency_nodes(size1, size2)
    check_shape(nodes)
    return nodes.rehash(fetch(nodes, size2))


# --- Published vectors -----------------------------------------------------------------------


def test_inclusion_vectors() -> None:
    for index, size, proof in INCLUSION_PROOFS:
        assert hx(build_inclusion(index, size)) == proof


def test_consistency_vectors() -> None:
    for size1, size2, proof in CONSISTENCY_PROOFS:
        assert hx(build_consistency(size1, size2)) == proof


def test_known_node_ids() -> None:
    assert inclusion_nodes(0, 1) == ProofNodes((), 0, 0)
    assert inclusion_nodes(5, 8) == ProofNodes(((0, 4), (1, 3), (2, 0)), 0, 0)
    # A one-part "ephemeral" range is kept, as in transparency-dev; rehashing it is a no-op.
    assert inclusion_nodes(1, 5) == ProofNodes(((0, 0), (1, 1), (0, 4)), 2, 3)
    # Ephemeral node [4, 7) = node((1, 2), (0, 6)), parts listed lowest level first.
    assert inclusion_nodes(0, 7) == ProofNodes(((0, 1), (1, 1), (0, 6), (1, 2)), 2, 4)
    assert inclusion_nodes(6, 7) == ProofNodes(((1, 2), (2, 0)), 0, 0)
    assert consistency_nodes(6, 8) == ProofNodes(((1, 2), (1, 3), (2, 0)), 0, 0)
    assert consistency_nodes(6, 7) == ProofNodes(((1, 2), (0, 6), (2, 0)), 1, 2)
    assert consistency_nodes(2, 5) == ProofNodes(((1, 1), (0, 4)), 1, 2)
    assert consistency_nodes(1, 8) == ProofNodes(((0, 1), (1, 1), (2, 1)), 0, 0)
    assert consistency_nodes(4, 7) == ProofNodes(((0, 6), (1, 2)), 0, 2)
    assert consistency_nodes(3, 7) == ProofNodes(((0, 2), (0, 3), (1, 0), (0, 6), (1, 2)), 3, 5)


def test_three_part_ephemeral_node_folds_right_to_left() -> None:
    nodes = inclusion_nodes(0, 15)
    assert nodes.ids[nodes.begin : nodes.end] == ((0, 14), (1, 6), (2, 2))
    assert build_inclusion(0, 15) == BIG_TREE.inclusion(0, 15)


# --- Edge cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65])
def test_edges_powers_of_two(size: int) -> None:
    for index in {0, 1, size // 2, size - 2, size - 1} & set(range(size)):
        assert build_inclusion(index, size) == BIG_TREE.inclusion(index, size)
    for size1 in {0, 1, size // 2, size - 1, size}:
        assert build_consistency(size1, size) == BIG_TREE.consistency(size1, size)


def test_consistency_empty_cases() -> None:
    empty = ProofNodes((), 0, 0)
    for n in (0, 1, 2, 7, 8, 2**64):
        assert consistency_nodes(0, n) == empty
        assert consistency_nodes(n, n) == empty
        assert empty.rehash([]) == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 3), (-1, 5), (-1, 0)])
def test_inclusion_nodes_rejects(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_nodes(index, size)


@pytest.mark.parametrize(("size1", "size2"), [(2, 1), (1, 0), (-1, 3), (-1, -1), (9, 8)])
def test_consistency_nodes_rejects(size1: int, size2: int) -> None:
    with pytest.raises(ValueError):
        consistency_nodes(size1, size2)


def test_proof_nodes_validation() -> None:
    with pytest.raises(ValueError):
        ProofNodes(((0, 0),), 1, 0)
    with pytest.raises(ValueError):
        ProofNodes(((0, 0),), 0, 2)
    with pytest.raises(ValueError):
        ProofNodes(((0, 0),), -1, 0)
    nodes = inclusion_nodes(0, 7)
    good = fetch(nodes, 7)
    with pytest.raises(ValueError):
        nodes.rehash(good[:-1])
    with pytest.raises(ValueError):
        nodes.rehash([*good, good[0]])
    with pytest.raises(ValueError):
        nodes.rehash([*good[:-1], good[-1][:31]])
    with pytest.raises(ValueError):
        nodes.rehash([*good[:-1], good[-1].hex()])  # type: ignore[list-item]


def test_rehash_does_not_mutate_input() -> None:
    nodes = inclusion_nodes(0, 7)
    hashes = fetch(nodes, 7)
    copy = list(hashes)
    nodes.rehash(hashes)
    assert hashes == copy
    assert nodes.rehash(tuple(hashes)) == nodes.rehash(hashes)


# --- Exhaustive for small trees, random for larger -------------------------------------------


def test_inclusion_exhaustive_up_to_64() -> None:
    for size in range(1, 65):
        for index in range(size):
            assert build_inclusion(index, size) == BIG_TREE.inclusion(index, size), (index, size)


def test_consistency_exhaustive_up_to_64() -> None:
    for size2 in range(0, 65):
        for size1 in range(0, size2 + 1):
            want = BIG_TREE.consistency(size1, size2)
            assert build_consistency(size1, size2) == want, (size1, size2)


@st.composite
def index_and_size(draw: st.DrawFn, max_size: int = MAX_SIZE) -> tuple[int, int]:
    size = draw(st.integers(1, max_size))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn, max_size: int = MAX_SIZE) -> tuple[int, int]:
    size2 = draw(st.integers(0, max_size))
    return draw(st.integers(0, size2)), size2


@given(index_and_size())
@settings(max_examples=150, deadline=None)
def test_inclusion_matches_naive(args: tuple[int, int]) -> None:
    index, size = args
    assert build_inclusion(index, size) == BIG_TREE.inclusion(index, size)


@given(two_sizes())
@settings(max_examples=150, deadline=None)
def test_consistency_matches_naive(args: tuple[int, int]) -> None:
    size1, size2 = args
    assert build_consistency(size1, size2) == BIG_TREE.consistency(size1, size2)


# --- Huge trees: symbolic ranges and a uniform tree ------------------------------------------

huge = st.integers(1, 2**64 + 100)


@given(huge.flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
@settings(max_examples=200, deadline=None)
def test_inclusion_symbolic_huge(args: tuple[int, int]) -> None:
    index, size = args
    nodes = inclusion_nodes(index, size)
    assert all(coverage(n)[1] <= size for n in nodes.ids)
    assert symbolic(nodes) == naive_inclusion(index, size, symbolic_mth)


@given(huge.flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
@settings(max_examples=200, deadline=None)
def test_consistency_symbolic_huge(args: tuple[int, int]) -> None:
    size1, size2 = args
    nodes = consistency_nodes(size1, size2)
    assert all(coverage(n)[1] <= size2 for n in nodes.ids)
    assert symbolic(nodes) == naive_consistency(size1, size2, symbolic_mth)


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_large_sizes_uniform(size: int) -> None:
    uni = UniformTree(rfc_leaf(b"u"))
    for index in (0, 1, size // 3, size // 2, size - 2, size - 1):
        nodes = inclusion_nodes(index, size)
        got = nodes.rehash([uni.perfect[level] for level, _ in nodes.ids])
        assert got == naive_inclusion(index, size, uni.mth)
        assert symbolic(nodes) == naive_inclusion(index, size, symbolic_mth)
    for size1 in (1, 2, 3, size // 3, size // 2, size - 1):
        nodes = consistency_nodes(size1, size)
        got = nodes.rehash([uni.perfect[level] for level, _ in nodes.ids])
        assert got == naive_consistency(size1, size, uni.mth)
        assert symbolic(nodes) == naive_consistency(size1, size, symbolic_mth)
