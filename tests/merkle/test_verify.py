"""Verification: every honest proof verifies, every tampered or malformed one raises ProofError."""

from collections.abc import Iterator
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutablelog.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_nodes,
    inclusion_nodes,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

from .test_compact import LARGE_SIZES
from .test_proof import build_consistency, build_inclusion, index_and_size, two_sizes
from .test_reference import (
    BIG_TREE,
    CONSISTENCY_PROOFS,
    INCLUSION_PROOFS,
    VECTOR_TREE,
    UniformTree,
    naive_consistency,
    naive_inclusion,
    rfc_leaf,
    split_point,
    symbolic_mth,
)

GARBAGE = sha256(b"garbage").digest()
OTHER = sha256(b"other").digest()

InclusionArgs = tuple[int, int, bytes, list[bytes], bytes]
ConsistencyArgs = tuple[int, int, list[bytes], bytes, bytes]


def flip(h: bytes, bit: int = 0) -> bytes:
    b = bytearray(h)
    b[(bit // 8) % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def proof_mutations(proof: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    for i, h in enumerate(proof):
        yield f"flip proof[{i}]", [*proof[:i], flip(h, 37 * i + 5), *proof[i + 1 :]]
        yield f"drop proof[{i}]", proof[:i] + proof[i + 1 :]
        yield f"duplicate proof[{i}]", [*proof[:i], h, *proof[i:]]
        yield f"short proof[{i}]", [*proof[:i], h[:31], *proof[i + 1 :]]
        yield f"long proof[{i}]", [*proof[:i], h + b"\x00", *proof[i + 1 :]]
    for i in range(len(proof) + 1):
        yield f"insert garbage at {i}", [*proof[:i], GARBAGE, *proof[i:]]
    for i in range(len(proof) - 1):
        yield f"swap {i} and {i + 1}", [*proof[:i], proof[i + 1], proof[i], *proof[i + 2 :]]
    if len(proof) > 2:
        yield "reversed", proof[::-1]
    yield "empty", []


def inclusion_mutations(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> Iterator[tuple[str, InclusionArgs]]:
    for desc, p in proof_mutations(proof):
        if p != proof:
            yield desc, (index, size, leaf, p, root)
    yield "preceding root", (index, size, leaf, [root, *proof], root)
    yield "trailing root", (index, size, leaf, [*proof, root], root)
    for desc, i in [
        ("index+1", index + 1),
        ("index-1", index - 1),
        ("index^1", index ^ 1),
        ("index^2", index ^ 2),
        ("index=size", size),
        ("index=-1", -1),
    ]:
        if i != index:
            yield desc, (i, size, leaf, proof, root)
    for desc, s in [
        ("size+1", size + 1),
        ("size-1", size - 1),
        ("size*2", size * 2),
        ("size//2", size // 2),
        ("size=0", 0),
        ("size=index", index),
        ("size=2**64", 2**64),
    ]:
        if s != size:
            yield desc, (index, s, leaf, proof, root)
    yield "flip leaf", (index, size, flip(leaf), proof, root)
    yield "short leaf", (index, size, leaf[:31], proof, root)
    yield "flip root", (index, size, leaf, proof, flip(root, 255))
    yield "short root", (index, size, leaf, proof, root[:31])
    yield "garbage root", (index, size, leaf, proof, GARBAGE)
    if root != EMPTY_ROOT:
        yield "empty root", (index, size, leaf, proof, EMPTY_ROOT)
    if root != leaf:
        yield "root as leaf", (index, size, root, proof, root)
        yield "leaf as root", (index, size, leaf, proof, leaf)


def consistency_mutations(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> Iterator[tuple[str, ConsistencyArgs]]:
    for desc, p in proof_mutations(proof):
        if p != proof:
            yield desc, (size1, size2, p, root1, root2)
    yield "preceding root1", (size1, size2, [root1, *proof], root1, root2)
    yield "trailing root2", (size1, size2, [*proof, root2], root1, root2)
    sizes = [
        ("size1+1", size1 + 1, size2),
        ("size1-1", size1 - 1, size2),
        ("size1*2", size1 * 2, size2),
        ("size1^2", size1 ^ 2, size2),
        ("size1=0", 0, size2),
        ("size2+1", size1, size2 + 1),
        ("size2-1", size1, size2 - 1),
        ("size2*2", size1, size2 * 2),
        ("size2//2", size1, size2 // 2),
        ("swapped sizes", size2, size1),
    ]
    for desc, s1, s2 in sizes:
        if (s1, s2) == (size1, size2):
            continue
        # The empty tree is a prefix of every tree, and equal sizes with equal roots are
        # consistent whatever the size: those statements stay true, so they are not tampering.
        if s1 == 0 and root1 == EMPTY_ROOT and not proof:
            continue
        if s1 == s2 and root1 == root2 and not proof:
            continue
        yield desc, (s1, s2, proof, root1, root2)
    yield "flip root1", (size1, size2, proof, flip(root1, 100), root2)
    yield "short root1", (size1, size2, proof, root1[:31], root2)
    yield "short root2", (size1, size2, proof, root1, root2[:31])
    if size1 != 0:  # otherwise root2 is unconstrained
        yield "flip root2", (size1, size2, proof, root1, flip(root2, 200))
        yield "garbage root2", (size1, size2, proof, root1, GARBAGE)
    if root1 != root2:
        yield "swapped roots", (size1, size2, proof, root2, root1)
        yield "root2 for root1", (size1, size2, proof, root2, root2)
        if size1 != 0:
            yield "root1 for root2", (size1, size2, proof, root1, root1)


# Hashes do not commit to the tree size: a proof for (index, size) also verifies for any
# (index', size') whose proof combines the same hashes in the same way (e.g. leaf 0 in trees
# of 5..8 leaves). That is inherent to RFC 6962 (sizes are authenticated by the signed
# checkpoint, not by the proof), so a size/index change must fail exactly when the shape of
# the computation changes. The shape is derived from the naive RFC recursion, not from the
# code under test.


def _express(lo: int, hi: int, known: dict[tuple[int, int], object]) -> object:
    if (lo, hi) in known:
        return known[(lo, hi)]
    if hi - lo < 2:
        return ("missing", lo)
    k = split_point(hi - lo)
    return (_express(lo, lo + k, known), _express(lo + k, hi, known))


def inclusion_shape(index: int, size: int) -> object:
    ranges = naive_inclusion(index, size, symbolic_mth)
    known: dict[tuple[int, int], object] = {r: i for i, r in enumerate(ranges)}
    known[(index, index + 1)] = "leaf"
    return len(ranges), _express(0, size, known)


def consistency_shape(size1: int, size2: int) -> object:
    ranges = naive_consistency(size1, size2, symbolic_mth)
    known: dict[tuple[int, int], object] = {r: i for i, r in enumerate(ranges)}
    if size1 & (size1 - 1) == 0:
        known[(0, size1)] = "root1"  # omitted from the proof, the verifier has it
    return len(ranges), _express(0, size1, known), _express(0, size2, known)


def check_inclusion(
    index: int, size: int, tree_root: bytes, leaf: bytes, proof: list[bytes]
) -> None:
    assert root_from_inclusion_proof(index, size, leaf, proof) == tree_root
    verify_inclusion(index, size, leaf, proof, tree_root)
    for desc, args in inclusion_mutations(index, size, leaf, proof, tree_root):
        i, s = args[0], args[1]
        if (i, s) != (index, size) and 0 <= i < s:
            same = inclusion_shape(i, s) == inclusion_shape(index, size)
        else:
            same = False
        if same:
            verify_inclusion(*args)
        else:
            with pytest.raises(ProofError):
                verify_inclusion(*args)
                pytest.fail(f"{desc} verified: {args}")


def check_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    verify_consistency(size1, size2, proof, root1, root2)
    for desc, args in consistency_mutations(size1, size2, proof, root1, root2):
        s1, s2 = args[0], args[1]
        if (s1, s2) != (size1, size2) and 0 < s1 < s2 and 0 < size1 < size2:
            same = consistency_shape(s1, s2) == consistency_shape(size1, size2)
        else:
            same = False
        if same:
            verify_consistency(*args)
        else:
            with pytest.raises(ProofError):
                verify_consistency(*args)
                pytest.fail(f"{desc} verified: {args}")


def test_sizes_are_not_bound_by_hashes() -> None:
    """Documented RFC 6962 property the mutation tests account for."""
    proof = BIG_TREE.inclusion(0, 8)
    for size in (5, 6, 7, 8):
        verify_inclusion(0, size, BIG_TREE.leaves[0], proof, BIG_TREE.root(8))
    with pytest.raises(ProofError):
        verify_inclusion(0, 4, BIG_TREE.leaves[0], proof, BIG_TREE.root(8))
    assert inclusion_shape(0, 7) == inclusion_shape(0, 8) != inclusion_shape(0, 9)
    assert consistency_shape(1, 3) == consistency_shape(1, 4)
    assert consistency_shape(3, 7) == consistency_shape(3, 8) != consistency_shape(3, 9)


# --- Published vectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    check_inclusion(
        index,
        size,
        VECTOR_TREE.root(size),
        VECTOR_TREE.leaves[index],
        [bytes.fromhex(h) for h in proof],
    )


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_PROOFS)
def test_consistency_vectors(size1: int, size2: int, proof: list[str]) -> None:
    check_consistency(
        size1,
        size2,
        [bytes.fromhex(h) for h in proof],
        VECTOR_TREE.root(size1),
        VECTOR_TREE.root(size2),
    )


# --- Edge cases ------------------------------------------------------------------------------

R1 = BIG_TREE.root(1)
R2 = BIG_TREE.root(2)


@pytest.mark.parametrize(
    ("size1", "size2", "proof", "root1", "root2", "ok"),
    [
        # Adapted from transparency-dev testdata/consistency/additional, 32-byte roots.
        (0, 0, [], EMPTY_ROOT, EMPTY_ROOT, True),
        (0, 0, [], GARBAGE, GARBAGE, False),  # size 0 has exactly one root
        (0, 0, [], EMPTY_ROOT, GARBAGE, False),
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
        (0, 1, [], EMPTY_ROOT, R1, True),  # empty tree is a prefix of any tree
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
        (0, 1, [], GARBAGE, R1, False),
        (1, 1, [], R1, R1, True),
        (1, 1, [], GARBAGE, GARBAGE, True),  # equal sizes: consistent iff roots are equal
        (1, 1, [], EMPTY_ROOT, GARBAGE, False),
        (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
        (1, 2, [], R1, R2, False),  # proof needed
        (1, 2, [BIG_TREE.leaves[1]], R1, R2, True),
        (1, 0, [], R1, EMPTY_ROOT, False),
        (2, 1, [], R2, R1, False),
        (-1, 1, [], EMPTY_ROOT, R1, False),
        (-1, -1, [], EMPTY_ROOT, EMPTY_ROOT, False),
    ],
)
def test_consistency_edge_cases(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes, ok: bool
) -> None:
    if ok:
        verify_consistency(size1, size2, proof, root1, root2)
    else:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, root2)


def test_roots_must_be_32_bytes() -> None:
    # transparency-dev accepts these (it never checks root length); a 12-byte root is
    # always a bug here, so it is rejected.
    short = b"don't care 1"
    with pytest.raises(ProofError, match="root1 must be 32 bytes"):
        verify_consistency(1, 1, [], short, short)
    with pytest.raises(ProofError, match="root must be 32 bytes"):
        verify_inclusion(0, 1, R1, [], R1[:12])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (-1, 1), (3, 2), (0, -1)])
def test_inclusion_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ProofError, match="out of range"):
        verify_inclusion(index, size, R1, [], R1)
    with pytest.raises(ProofError, match="out of range"):
        root_from_inclusion_proof(index, size, R1, [])


def test_malformed_proof_elements() -> None:
    proof = BIG_TREE.inclusion(0, 8)
    root = BIG_TREE.root(8)
    leaf = BIG_TREE.leaves[0]
    for bad in [proof[0].hex(), None, 7, proof[0][:16], bytearray(33)]:
        with pytest.raises(ProofError, match=r"proof\[1\] must be 32 bytes"):
            verify_inclusion(0, 8, leaf, [proof[0], bad, proof[2]], root)  # type: ignore[list-item]
        with pytest.raises(ProofError, match=r"proof\[1\] must be 32 bytes"):
            verify_consistency(1, 8, [proof[0], bad, proof[2]], leaf, root)  # type: ignore[list-item]
    # A bytes object is a sequence of ints, not of hashes.
    with pytest.raises(ProofError):
        verify_inclusion(0, 2, leaf, proof[0], BIG_TREE.root(2))  # type: ignore[arg-type]


def test_error_messages_name_the_mismatch() -> None:
    leaf, root = BIG_TREE.leaves[0], BIG_TREE.root(8)
    proof = BIG_TREE.inclusion(0, 8)
    with pytest.raises(ProofError, match=f"calculated root {root.hex()}, expected {GARBAGE.hex()}"):
        verify_inclusion(0, 8, leaf, proof, GARBAGE)
    with pytest.raises(ProofError, match="must have 3 hashes, got 2"):
        verify_inclusion(0, 8, leaf, proof[:2], root)
    with pytest.raises(ProofError, match="must have 3 hashes, got 4"):
        verify_inclusion(0, 8, leaf, [*proof, root], root)
    cproof = BIG_TREE.consistency(3, 8)
    with pytest.raises(ProofError, match=r"\(root1\)"):
        verify_consistency(3, 8, cproof, GARBAGE, root)
    with pytest.raises(ProofError, match=r"\(root2\)"):
        verify_consistency(3, 8, cproof, BIG_TREE.root(3), GARBAGE)
    with pytest.raises(ProofError, match="must have 4 hashes, got 3"):
        verify_consistency(3, 8, cproof[:3], BIG_TREE.root(3), root)


def test_bytearray_hashes_accepted() -> None:
    proof = [bytearray(h) for h in BIG_TREE.inclusion(2, 5)]
    leaf, root = bytearray(BIG_TREE.leaves[2]), bytearray(BIG_TREE.root(5))
    verify_inclusion(2, 5, leaf, proof, root)  # type: ignore[arg-type]


# --- Exhaustive for small trees, random for larger -------------------------------------------


def test_inclusion_exhaustive_with_mutations() -> None:
    for size in range(1, 18):
        for index in range(size):
            check_inclusion(
                index,
                size,
                BIG_TREE.root(size),
                BIG_TREE.leaves[index],
                build_inclusion(index, size),
            )


def test_consistency_exhaustive_with_mutations() -> None:
    for size2 in range(0, 18):
        for size1 in range(0, size2 + 1):
            check_consistency(
                size1,
                size2,
                build_consistency(size1, size2),
                BIG_TREE.root(size1),
                BIG_TREE.root(size2),
            )


@given(index_and_size(300))
@settings(max_examples=60, deadline=None)
def test_inclusion_random_with_mutations(args: tuple[int, int]) -> None:
    index, size = args
    proof = build_inclusion(index, size)
    check_inclusion(index, size, BIG_TREE.root(size), BIG_TREE.leaves[index], proof)


@given(two_sizes(300))
@settings(max_examples=60, deadline=None)
def test_consistency_random_with_mutations(args: tuple[int, int]) -> None:
    size1, size2 = args
    proof = build_consistency(size1, size2)
    check_consistency(size1, size2, proof, BIG_TREE.root(size1), BIG_TREE.root(size2))


@given(two_sizes(), st.integers(0, 2))
@settings(max_examples=100, deadline=None)
def test_every_prefix_is_consistent_with_chained_sizes(args: tuple[int, int], k: int) -> None:
    """Consistency composes: s1 -> s2 and s2 -> s3 both verify for any s1 <= s2 <= s3."""
    size1, size2 = args
    size3 = min(size2 + k * 17, len(BIG_TREE.leaves))
    for a, b in [(size1, size2), (size2, size3), (size1, size3)]:
        verify_consistency(a, b, build_consistency(a, b), BIG_TREE.root(a), BIG_TREE.root(b))


# --- Huge trees (uniform leaves) -------------------------------------------------------------


@pytest.mark.parametrize("size", LARGE_SIZES)
def test_large_sizes_uniform(size: int) -> None:
    leaf = rfc_leaf(b"u")
    uni = UniformTree(leaf)
    root = uni.root(size)
    for index in (0, 1, size // 3, size - 1):
        nodes = inclusion_nodes(index, size)
        proof = nodes.rehash([uni.perfect[level] for level, _ in nodes.ids])
        verify_inclusion(index, size, leaf, proof, root)
        # In a uniform tree all subtrees of a level are equal, so only changes to the proof
        # hashes themselves (not their order, index or size) are detectable.
        for desc, bad in proof_mutations(proof):
            if desc.startswith(("swap", "reversed", "duplicate")):
                continue
            with pytest.raises(ProofError):
                verify_inclusion(index, size, leaf, bad, root)
                pytest.fail(desc)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf, proof, flip(root))
    for size1 in (1, 3, size // 2, size - 1):
        nodes = consistency_nodes(size1, size)
        proof = nodes.rehash([uni.perfect[level] for level, _ in nodes.ids])
        verify_consistency(size1, size, proof, uni.root(size1), root)
        with pytest.raises(ProofError):
            verify_consistency(size1, size, [flip(proof[-1]), *proof[:-1]], uni.root(size1), root)
        with pytest.raises(ProofError):
            verify_consistency(size1 + 1, size, proof, uni.root(size1), root)


# --- Junk never escapes as anything but ProofError -------------------------------------------

hash_or_junk = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
    st.sampled_from([R1, R2, EMPTY_ROOT, GARBAGE]),
)
size_ints = st.one_of(st.integers(-3, 70), st.integers(-(2**70), 2**70))


@given(size_ints, size_ints, hash_or_junk, st.lists(hash_or_junk, max_size=12), hash_or_junk)
@settings(max_examples=300, deadline=None)
def test_junk_inclusion(
    index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


@given(size_ints, size_ints, st.lists(hash_or_junk, max_size=12), hash_or_junk, hash_or_junk)
@settings(max_examples=300, deadline=None)
def test_junk_consistency(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    trivially_true = (
        size1 == size2 >= 1 and not proof and root1 == root2 and len(root1) == 32
    ) or (
        size1 == 0 <= size2
        and not proof
        and root1 == EMPTY_ROOT
        and len(root2) == 32
        and (size2 > 0 or root2 == EMPTY_ROOT)
    )
    if trivially_true:
        verify_consistency(size1, size2, proof, root1, root2)
    else:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, root2)
