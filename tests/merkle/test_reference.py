"""Test oracle: RFC 6962 §2.1 transcribed literally, plus the published CT test vectors.

The other merkle tests import from here. The oracle is deliberately independent of
``immutablelog.merkle`` (it hashes with hashlib itself) and is generic over the subtree hash
function ``mth(lo, hi)``, so the same recursion yields real hashes, hashes of a tree whose
leaves are all equal (cheap at any size), or symbolic ``(lo, hi)`` ranges.

The vectors are the 8-leaf tree used by Certificate Transparency, Trillian and
transparency-dev/merkle (testonly/constants.go, proof/verify_test.go, testdata/).
"""

from collections.abc import Callable, Sequence
from hashlib import sha256
from typing import TypeVar

T = TypeVar("T")
Mth = Callable[[int, int], T]


def rfc_leaf(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """RFC 6962 k: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def naive_path(m: int, lo: int, hi: int, mth: Mth[T]) -> list[T]:
    """PATH(m, D[lo:hi]) with m an absolute leaf index in [lo, hi)."""
    if hi - lo <= 1:
        return []
    k = split_point(hi - lo)
    if m < lo + k:
        return [*naive_path(m, lo, lo + k, mth), mth(lo + k, hi)]
    return [*naive_path(m, lo + k, hi, mth), mth(lo, lo + k)]


def naive_subproof(m: int, lo: int, hi: int, b: bool, mth: Mth[T]) -> list[T]:
    """SUBPROOF(m, D[lo:hi], b) with m an absolute tree size in (lo, hi]."""
    if m == hi:
        return [] if b else [mth(lo, hi)]
    k = split_point(hi - lo)
    if m - lo <= k:
        return [*naive_subproof(m, lo, lo + k, b, mth), mth(lo + k, hi)]
    return [*naive_subproof(m, lo + k, hi, False, mth), mth(lo, lo + k)]


def naive_inclusion(index: int, size: int, mth: Mth[T]) -> list[T]:
    return naive_path(index, 0, size, mth)


def naive_consistency(size1: int, size2: int, mth: Mth[T]) -> list[T]:
    """PROOF(m, D[n]); empty for m == n and (our convention) for m == 0."""
    if size1 in (0, size2):
        return []
    return naive_subproof(size1, 0, size2, True, mth)


class NaiveTree:
    """MTH over a fixed list of entries, memoised per range (a range's hash never changes)."""

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries = list(entries)
        self.leaves = [rfc_leaf(e) for e in self.entries]
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        assert 0 <= lo <= hi <= len(self.entries)
        if hi == lo:
            return sha256(b"").digest()
        if hi - lo == 1:
            return self.leaves[lo]
        h = self._memo.get((lo, hi))
        if h is None:
            k = split_point(hi - lo)
            h = rfc_node(self.mth(lo, lo + k), self.mth(lo + k, hi))
            self._memo[(lo, hi)] = h
        return h

    def root(self, size: int) -> bytes:
        return self.mth(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return naive_inclusion(index, size, self.mth)

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        return naive_consistency(size1, size2, self.mth)


class UniformTree:
    """MTH of a tree whose leaves all hash to ``leaf``: computable at any size in O(log n)."""

    def __init__(self, leaf: bytes) -> None:
        self.perfect = [leaf]  # perfect[level]: root of a perfect subtree of 2**level leaves
        for _ in range(70):
            self.perfect.append(rfc_node(self.perfect[-1], self.perfect[-1]))
        self._memo: dict[int, bytes] = {}

    def root(self, size: int) -> bytes:
        if size == 0:
            return sha256(b"").digest()
        if size & (size - 1) == 0:
            return self.perfect[size.bit_length() - 1]
        h = self._memo.get(size)
        if h is None:
            k = split_point(size)
            h = rfc_node(self.perfect[k.bit_length() - 1], self.root(size - k))
            self._memo[size] = h
        return h

    def mth(self, lo: int, hi: int) -> bytes:
        return self.root(hi - lo)


def symbolic_mth(lo: int, hi: int) -> tuple[int, int]:
    return (lo, hi)


# --- Published test vectors ------------------------------------------------------------------

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# NODE_HASHES[level][index]: every perfect subtree of the 8-leaf tree.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

# ROOTS[size] for size 0..8.
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# (leaf index (0-based), tree size, proof)
INCLUSION_PROOFS: list[tuple[int, int, list[str]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (size1, size2, proof)
CONSISTENCY_PROOFS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

VECTOR_TREE = NaiveTree(LEAF_INPUTS)

# A larger tree for property tests; its first 8 entries are the vector leaves, so every
# vector is also a prefix of it.
MAX_SIZE = 1100
BIG_TREE = NaiveTree(LEAF_INPUTS + [b"entry-%d" % i for i in range(len(LEAF_INPUTS), MAX_SIZE)])


def hx(hashes: Sequence[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


# --- The oracle itself must reproduce the published vectors ----------------------------------


def test_naive_leaves_and_nodes_match_vectors() -> None:
    for level, row in enumerate(NODE_HASHES):
        for index, want in enumerate(row):
            lo, hi = index << level, (index + 1) << level
            assert VECTOR_TREE.mth(lo, hi).hex() == want


def test_naive_roots_match_vectors() -> None:
    assert [VECTOR_TREE.root(n).hex() for n in range(9)] == ROOTS


def test_naive_inclusion_matches_vectors() -> None:
    for index, size, proof in INCLUSION_PROOFS:
        assert hx(VECTOR_TREE.inclusion(index, size)) == proof


def test_naive_consistency_matches_vectors() -> None:
    for size1, size2, proof in CONSISTENCY_PROOFS:
        assert hx(VECTOR_TREE.consistency(size1, size2)) == proof


def test_big_tree_extends_vectors() -> None:
    assert [BIG_TREE.root(n).hex() for n in range(9)] == ROOTS


def test_uniform_tree_matches_naive() -> None:
    leaf = rfc_leaf(b"same")
    naive = NaiveTree([b"same"] * 70)
    uniform = UniformTree(leaf)
    for n in range(71):
        assert uniform.root(n) == naive.root(n)


def test_symbolic_proofs_name_the_right_ranges() -> None:
    # Hand-checked against RFC 6962 §2.1.3 examples (tree of 7 leaves d0..d6).
    assert naive_inclusion(0, 7, symbolic_mth) == [(1, 2), (2, 4), (4, 7)]
    assert naive_inclusion(5, 7, symbolic_mth) == [(4, 5), (6, 7), (0, 4)]
    assert naive_inclusion(6, 7, symbolic_mth) == [(4, 6), (0, 4)]
    assert naive_consistency(3, 7, symbolic_mth) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert naive_consistency(4, 7, symbolic_mth) == [(4, 7)]
    assert naive_consistency(6, 7, symbolic_mth) == [(4, 6), (6, 7), (0, 4)]
