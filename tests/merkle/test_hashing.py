"""Hashing primitives: exact RFC 6962 definitions and domain separation."""

from hashlib import sha256

from hypothesis import given
from hypothesis import strategies as st

from immutablelog.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash

from .test_reference import LEAF_INPUTS, NODE_HASHES


def test_constants() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_leaf_hash_vectors() -> None:
    assert [leaf_hash(e).hex() for e in LEAF_INPUTS] == NODE_HASHES[0]


def test_node_hash_vectors() -> None:
    # Every interior node of the vector tree is node_hash of its two children.
    for level in range(1, len(NODE_HASHES)):
        below = [bytes.fromhex(h) for h in NODE_HASHES[level - 1]]
        got = [node_hash(below[2 * i], below[2 * i + 1]).hex() for i in range(len(below) // 2)]
        assert got == NODE_HASHES[level]


@given(st.binary(max_size=200))
def test_leaf_hash_definition(entry: bytes) -> None:
    assert leaf_hash(entry) == sha256(b"\x00" + entry).digest()
    assert len(leaf_hash(entry)) == HASH_SIZE


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_node_hash_definition_and_domain_separation(left: bytes, right: bytes) -> None:
    h = node_hash(left, right)
    assert h == sha256(b"\x01" + left + right).digest()
    # The prefix byte keeps a node from being presented as a leaf with the same content.
    assert h != leaf_hash(left + right)
    assert h != sha256(left + right).digest()


def test_leaf_hash_accepts_bytes_like() -> None:
    assert leaf_hash(bytearray(b"abc")) == leaf_hash(b"abc")  # type: ignore[arg-type]
