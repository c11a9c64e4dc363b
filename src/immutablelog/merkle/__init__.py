"""Pure RFC 6962 / RFC 9162 Merkle tree core: hashing, compact ranges, proofs, verification.

No I/O lives here. Storage persists the nodes ``CompactRange.append`` reports, fetches the
ids named by ``inclusion_nodes`` / ``consistency_nodes``, and ``ProofNodes.rehash`` turns
them into proofs byte-identical to those of Trillian, transparency-dev and CT, so any RFC 9162
verifier can check them.
"""

from .compact import CompactRange, NodeID, frontier_ids, root_from_leaves
from .hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from .proof import ProofNodes, consistency_nodes, inclusion_nodes
from .verify import (
    ProofError,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "NodeID",
    "ProofError",
    "ProofNodes",
    "consistency_nodes",
    "frontier_ids",
    "inclusion_nodes",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]
