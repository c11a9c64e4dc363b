"""docs/protocol-vectors.json, the test vectors docs/PROTOCOL.md publishes, hold for this code.

Each vector is checked twice: with the package (what the server, the SDK's embedded mode and
the verifier run), and from the written rules alone with hashlib and ``cryptography`` (what a
third party implementing docs/PROTOCOL.md would do), so the document and the code cannot
drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from immutablelog.checkpoint import Checkpoint, Signer, Verifier, open_checkpoint, sign_checkpoint
from immutablelog.entry import (
    ENTRY_RECORD,
    build_entry,
    decode_entry,
    decode_erasable,
    encode_entry,
    payload_hash,
    reveal,
    validate_submission,
)
from immutablelog.erasure import read_erasure
from immutablelog.merkle import (
    CompactRange,
    ProofNodes,
    consistency_nodes,
    inclusion_nodes,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from tests.merkle.test_reference import NaiveTree

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "protocol-vectors.json").read_text("utf-8")
)
ENTRIES = VECTORS["entries"]
ENTRY_BYTES = [bytes.fromhex(e["entry_hex"]) for e in ENTRIES]
LEAVES = [bytes.fromhex(e["leaf_hash"]) for e in ENTRIES]


@pytest.mark.parametrize("vector", ENTRIES, ids=[str(e["index"]) for e in ENTRIES])
def test_format_1_entries_stay_readable(vector: dict[str, Any]) -> None:
    """Format 1 (the payload inside the hashed bytes) is what earlier releases wrote."""
    submitted = vector["submission"]
    submission = validate_submission(
        submitted["payload"], submitted["meta"], submitted["idempotency_key"]
    )
    data = bytes.fromhex(vector["entry_hex"])
    assert data == vector["entry"].encode("utf-8")
    entry = decode_entry(data)
    assert entry["v"] == 1 and entry["payload"] == submission.payload
    assert {k: entry[k] for k in submission.meta} == dict(submission.meta)
    assert submission.payload_hash == vector["payload_hash"]
    assert leaf_hash(data).hex() == vector["leaf_hash"]


@pytest.mark.parametrize("vector", ENTRIES, ids=[str(e["index"]) for e in ENTRIES])
def test_entry_bytes_and_leaf_from_the_written_rules(vector: dict[str, Any]) -> None:
    entry = json.loads(vector["entry"])
    # RFC 8785 for this subset: keys sorted, no whitespace, non-ASCII as UTF-8.
    jcs = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert jcs.encode("utf-8") == bytes.fromhex(vector["entry_hex"])
    payload = json.loads(vector["entry"])["payload"]
    assert hashlib.sha256(payload.encode("utf-8")).hexdigest() == vector["payload_hash"]
    leaf = hashlib.sha256(b"\x00" + bytes.fromhex(vector["entry_hex"])).hexdigest()
    assert leaf == vector["leaf_hash"]


def test_roots_of_every_size() -> None:
    tree = NaiveTree(ENTRY_BYTES)
    compact = CompactRange()
    assert root_from_leaves([]).hex() == VECTORS["roots"]["0"]
    for size in range(1, len(LEAVES) + 1):
        compact.append(LEAVES[size - 1])
        want = VECTORS["roots"][str(size)]
        assert root_from_leaves(LEAVES[:size]).hex() == want
        assert compact.root().hex() == want
        assert tree.root(size).hex() == want


def _served(wanted: ProofNodes) -> list[bytes]:
    """The proof as the server builds it: from the perfect nodes stored while appending."""
    compact = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES:
        nodes.update(compact.append(leaf))
    return wanted.rehash([nodes[i] for i in wanted.ids])


@pytest.mark.parametrize(
    "vector",
    VECTORS["inclusion_proofs"],
    ids=[f"{p['index']}-in-{p['tree_size']}" for p in VECTORS["inclusion_proofs"]],
)
def test_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["tree_size"]
    proof = [bytes.fromhex(h) for h in vector["hashes"]]
    root = bytes.fromhex(VECTORS["roots"][str(size)])
    verify_inclusion(index, size, LEAVES[index], proof, root)
    assert _served(inclusion_nodes(index, size)) == proof


@pytest.mark.parametrize(
    "vector",
    VECTORS["consistency_proofs"],
    ids=[f"{p['first']}-to-{p['second']}" for p in VECTORS["consistency_proofs"]],
)
def test_consistency_proofs(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    proof = [bytes.fromhex(h) for h in vector["hashes"]]
    roots = VECTORS["roots"]
    verify_consistency(
        first, second, proof, bytes.fromhex(roots[str(first)]), bytes.fromhex(roots[str(second)])
    )
    assert _served(consistency_nodes(first, second)) == proof


def test_key_strings_and_the_signed_checkpoint() -> None:
    key = VECTORS["key"]
    seed = bytes.fromhex(key["ed25519_seed_hex"])
    signer = Signer(key["name"], Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.verifier_key() == key["verifier_key"]
    assert signer.private_key_string() == key["private_key"]
    assert Signer.from_private_key_string(key["private_key"]).verifier_key() == key["verifier_key"]
    vector = VECTORS["checkpoint"]
    checkpoint = Checkpoint(
        vector["origin"], vector["tree_size"], bytes.fromhex(vector["root_hash"])
    )
    assert checkpoint.to_text() == vector["body"]
    assert sign_checkpoint(signer, checkpoint) == vector["signed_note"]  # Ed25519 is deterministic
    assert (
        open_checkpoint(Verifier(key["verifier_key"]), vector["signed_note"], vector["origin"])
        == checkpoint
    )


def test_the_signed_checkpoint_from_the_written_rules() -> None:
    key, vector = VECTORS["key"], VECTORS["checkpoint"]
    name, key_id_hex, encoded = key["verifier_key"].split("+")
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01 and raw[1:].hex() == key["public_key_hex"]
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_id.hex() == key_id_hex == key["key_id_hex"]
    body, _, signatures = vector["signed_note"].partition("\n\n")
    body += "\n"
    assert body == vector["body"]
    assert body.split("\n")[:3] == [
        vector["origin"],
        str(vector["tree_size"]),
        base64.b64encode(bytes.fromhex(vector["root_hash"])).decode(),
    ]
    (line,) = signatures.splitlines()
    dash, signer_name, signature = line.split(" ")
    assert dash == "\u2014" and signer_name == name
    signature_bytes = base64.b64decode(signature)
    assert signature_bytes[:4] == key_id
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(signature_bytes[4:], body.encode("utf-8"))


def test_the_binary_entries_record() -> None:
    vector = VECTORS["entries_record"]
    data = ENTRY_BYTES[vector["index"]]
    assert (ENTRY_RECORD.pack(vector["index"], len(data), 0) + data).hex() == vector["hex"]
    record = bytes.fromhex(vector["hex"])
    assert int.from_bytes(record[:8], "big") == vector["index"]
    assert int.from_bytes(record[8:12], "big") == len(record) - 16
    assert int.from_bytes(record[12:16], "big") == 0  # a format 1 entry has no erasable part


V2 = VECTORS["format_2"]


@pytest.mark.parametrize("vector", V2["entries"], ids=[str(e["index"]) for e in V2["entries"]])
def test_format_2_a_submission_becomes_exactly_the_entry_bytes(vector: dict[str, Any]) -> None:
    submitted = vector["submission"]
    salt = bytes.fromhex(vector["salt_hex"])
    submission = validate_submission(
        submitted["payload"], submitted["meta"], submitted["idempotency_key"], salt=salt
    )
    entry = build_entry(
        submission,
        tenant=vector["tenant"],
        index=vector["index"],
        entry_id=vector["id"],
        received_at=vector["received_at"],
    )
    data = encode_entry(entry)
    assert data == bytes.fromhex(vector["entry_hex"]) == vector["entry"].encode("utf-8")
    assert decode_entry(data) == entry
    assert submission.erasable is not None
    assert submission.erasable.values == vector["erasable_values"].encode("utf-8")
    assert submission.erasable.commitment == vector["erasable_hash"] == entry["erasable_hash"]
    event = reveal(entry, decode_erasable(entry, submission.erasable.to_bytes()))
    assert payload_hash(event) == submission.payload_hash == vector["payload_hash"]
    assert leaf_hash(data).hex() == vector["leaf_hash"]


@pytest.mark.parametrize("vector", V2["entries"], ids=[str(e["index"]) for e in V2["entries"]])
def test_format_2_from_the_written_rules(vector: dict[str, Any]) -> None:
    submitted = vector["submission"]
    payload = submitted["payload"]
    if not isinstance(payload, str):  # an object is sent on as its compact serialization
        payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    clear = ("type", "event_name", "service", "request_id", "env")
    values = {k: v for k, v in submitted["meta"].items() if k not in clear}
    values["payload"] = payload
    jcs = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert jcs == vector["erasable_values"]
    salt = bytes.fromhex(vector["salt_hex"])
    commitment = hashlib.sha256(b"\x02" + salt + jcs.encode("utf-8")).hexdigest()
    assert commitment == vector["erasable_hash"]
    entry = {name: submitted["meta"].get(name) for name in clear}
    entry |= {
        "v": 2,
        "tenant": vector["tenant"],
        "index": vector["index"],
        "id": vector["id"],
        "received_at": vector["received_at"],
        "idempotency_key": submitted["idempotency_key"],
        "erasable_hash": commitment,
    }
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text == vector["entry"]
    leaf = hashlib.sha256(b"\x00" + text.encode("utf-8")).hexdigest()
    assert leaf == vector["leaf_hash"]


def test_format_2_erasure_record_and_root() -> None:
    vector = V2["erasure_record"]
    record = read_erasure(decode_entry(bytes.fromhex(vector["entry_hex"])))
    assert record is not None
    assert (record.index, record.ranges) == (2, ((0, 1),))
    assert json.loads(vector["entry"])["payload"] == vector["payload"]
    assert "zoe" not in vector["entry"]  # a record names indexes, never values
    leaves = [bytes.fromhex(e["leaf_hash"]) for e in V2["entries"]]
    leaves.append(bytes.fromhex(vector["leaf_hash"]))
    assert root_from_leaves(leaves).hex() == V2["root"]


def test_format_2_binary_entries_record() -> None:
    vector = V2["entries_record"]
    record = bytes.fromhex(vector["hex"])
    index, length, part_length = ENTRY_RECORD.unpack_from(record)
    assert index == vector["index"] and len(record) == 16 + length + part_length
    entry = V2["entries"][index]
    assert record[16 : 16 + length].hex() == entry["entry_hex"]
    part = record[16 + length :]
    assert part[:16].hex() == entry["salt_hex"]
    assert part[16:].decode("utf-8") == entry["erasable_values"]
