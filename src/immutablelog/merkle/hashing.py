"""RFC 6962 §2.1 hashing with domain separation between leaves and interior nodes.

The one-byte prefixes (0x00 for leaves, 0x01 for nodes) make it impossible to pass an
interior node off as a leaf (second-preimage attack on the tree), which is why every
hash in this package goes through these two functions.

They sit on the hot path (the ledger hashes ~100k leaves/s, the verifier ~1M nodes/s), so
they call ``hashlib.sha256`` directly and do nothing else.
"""

from hashlib import sha256

HASH_SIZE: int = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT: bytes = sha256(b"").digest()
"""Root of the empty tree: MTH({}) = SHA-256() per RFC 6962 §2.1."""


def is_hash(value: object) -> bool:
    """Whether ``value`` is a hash of this tree: bytes of :data:`HASH_SIZE`."""
    # A tuple, not ``bytes | bytearray``: that expression builds a new union object per call.
    return isinstance(value, (bytes, bytearray)) and len(value) == HASH_SIZE


def leaf_hash(entry: bytes) -> bytes:
    """Return SHA-256(0x00 || entry), the hash of a leaf holding ``entry``."""
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return SHA-256(0x01 || left || right), the hash of an interior node."""
    return sha256(b"\x01" + left + right).digest()
