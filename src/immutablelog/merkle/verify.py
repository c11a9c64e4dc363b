"""RFC 9162 §2.1.3.2 and §2.1.4.2 proof verification.

These functions are what an auditor trusts, so they fail closed: anything malformed (bad
sizes, wrong proof length, hashes that are not 32 bytes) is rejected with ``ProofError``
before any hashing, so callers have exactly one exception to handle and a truncated or
padded proof can never be mistaken for a valid one.

Note that hashes do not commit to the tree size: RFC 6962 relies on the signed checkpoint
to authenticate ``size``, and a proof can verify for a different size whose proof has the
same shape (e.g. leaf 0 of 5..8 leaves). Always take sizes from a verified checkpoint.
"""

from collections.abc import Sequence

from .hashing import EMPTY_ROOT, HASH_SIZE, is_hash, node_hash


class ProofError(Exception):
    """A proof is malformed or does not match the claimed root(s)."""


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the root implied by ``proof`` for leaf hash ``leaf`` at ``index`` in ``size``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} out of range for tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_proof(proof)
    inner, border = _decomp_inclusion(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof for index {index} in size {size} must have "
            f"{inner + border} hashes, got {len(proof)}"
        )
    return _chain_border(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the tree of ``size`` with ``root``."""
    _check_hash("root", root)
    calculated = root_from_inclusion_proof(index, size, leaf, proof)
    _check_match("inclusion proof", calculated, root)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (``size1``, ``root1``) is a prefix of (``size2``, ``root2``).

    ``size1 == 0`` is accepted with an empty proof when ``root1`` is ``EMPTY_ROOT``: the empty
    tree is a prefix of every tree. (transparency-dev rejects that case as meaningless.)
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"need 0 <= size1 <= size2, got size1={size1}, size2={size2}")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    _check_proof(proof)
    if size1 == 0 or size1 == size2:
        if proof:
            raise ProofError(f"consistency proof {size1} -> {size2} must be empty")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise ProofError(f"root1 {root1.hex()} of the empty tree is not {EMPTY_ROOT.hex()}")
        if size1 == size2:
            _check_match("consistency proof (equal sizes)", root1, root2)
        return
    if not proof:
        raise ProofError(f"consistency proof {size1} -> {size2} is empty")

    # The proof starts at the rightmost perfect subtree of [0, size1) and is that subtree's
    # inclusion path in [0, size2). When size1 is a power of two that subtree is the whole
    # old tree, so its hash is root1 and not repeated in the proof.
    shift = (size1 & -size1).bit_length() - 1
    inner, border = _decomp_inclusion(size1 - 1, size2)
    inner -= shift
    perfect = size1 == 1 << shift
    seed, path = (root1, proof) if perfect else (proof[0], proof[1:])
    if len(path) != inner + border:
        raise ProofError(
            f"consistency proof {size1} -> {size2} must have "
            f"{inner + border + len(proof) - len(path)} hashes, got {len(proof)}"
        )
    mask = (size1 - 1) >> shift
    if not perfect:
        # Left-hand siblings only rebuild the old root; all of the path rebuilds the new one.
        calculated1 = _chain_border(_chain_inner_left(seed, path[:inner], mask), path[inner:])
        _check_match("consistency proof (root1)", calculated1, root1)
    calculated2 = _chain_border(_chain_inner(seed, path[:inner], mask), path[inner:])
    _check_match("consistency proof (root2)", calculated2, root2)


def _decomp_inclusion(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion path into (inner, border) lengths.

    Inner nodes lie below the level where the paths to ``index`` and ``size - 1`` diverge and
    may be on either side; border nodes are above it and are always left siblings.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(h, seed) if (index >> i) & 1 else node_hash(seed, h)
    return seed


def _chain_inner_left(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    # Like _chain_inner but skipping right siblings: yields the hash of the older tree.
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def _check_hash(what: str, h: bytes) -> None:
    if not is_hash(h):
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {h!r}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h)


def _check_match(what: str, calculated: bytes, expected: bytes) -> None:
    if calculated != expected:
        raise ProofError(
            f"{what} does not match: calculated root {calculated.hex()}, expected {expected.hex()}"
        )
